"""Zero-cost proxies: definitions checked on tiny networks with closed forms, and the score API."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cgnf_fast import Cell
from cgnf_fast.nets import count_flops, count_params
from cgnf_fast.zc import ALL_PROXIES, score
from cgnf_fast.zc import proxies as P

from helpers import BEST_ISH, needs_cuda


def tiny(seed: int = 0) -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3))
    return net, (torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2]))


def test_grad_norm_and_snip_use_weight_gradients():
    net, (x, y) = tiny()
    F.cross_entropy(net(x), y).backward()
    w = [net[0].weight, net[2].weight]
    assert P.grad_norm(net, (x, y)) == pytest.approx(sum(float(t.grad.norm()) for t in w), rel=1e-6)
    assert P.snip(net, (x, y)) == pytest.approx(sum(float((t.grad * t.detach()).abs().sum()) for t in w), rel=1e-6)


def test_synflow_closed_form():
    # R = 1' |W2| |W1| 1 is bilinear in the two weight matrices, so sum |W * dR/dW| = 2 R.
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 3, bias=False), nn.Linear(3, 1, bias=False))
    with torch.no_grad():
        R = float(net[1].weight.abs() @ net[0].weight.abs() @ torch.ones(2))
    assert P.synflow(net, (torch.randn(5, 2), torch.zeros(5, dtype=torch.int64))) == pytest.approx(math.log(2 * R))
    assert net[0].weight.min() < 0  # the caller's network keeps its signs


def test_nwot_kernel():
    # codes [1,0,1] and [1,1,0] agree on 1 position: K = [[3, 1], [1, 3]], det 8
    x = torch.tensor([[1.0, -1.0, 1.0], [1.0, 1.0, -1.0]])
    assert P.nwot(nn.Sequential(nn.ReLU()), (x, torch.zeros(2, dtype=torch.int64))) == pytest.approx(math.log(8))
    same = torch.ones(2, 3)
    assert P.nwot(nn.Sequential(nn.ReLU()), (same, torch.zeros(2, dtype=torch.int64))) == -math.inf


def test_jacob_cov_formula():
    # a linear map has the same input Jacobian for every sample: correlations all 1,
    # eigenvalues (n, 0, ..., 0)
    net = nn.Sequential(nn.Linear(3, 2))
    x = torch.randn(4, 3)
    k = 1e-5
    want = -((math.log(4 + k) + 1 / (4 + k)) + 3 * (math.log(k) + 1 / k))
    assert P.jacob_cov(net, (x, torch.zeros(4, dtype=torch.int64))) == pytest.approx(want, rel=1e-4)


def test_grasp_against_an_explicit_hessian():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 2, bias=False))
    x, y = torch.randn(5, 3), torch.tensor([0, 1, 0, 1, 1])
    w0 = net[0].weight.detach().clone()

    def loss(flat):
        return F.cross_entropy(x @ flat.view(2, 3).t(), y)

    flat = w0.reshape(-1).clone().requires_grad_(True)
    g = torch.autograd.grad(loss(flat), flat)[0]
    H = torch.autograd.functional.hessian(loss, w0.reshape(-1))
    want = float(-(w0.reshape(-1) * (H @ g)).sum())
    assert P.grasp(net, (x, y)) == pytest.approx(want, rel=1e-4, abs=1e-7)


def test_fisher_definition():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4))
    x, y = torch.randn(5, 3), torch.tensor([0, 1, 2, 3, 0])
    a = net(x)
    a.retain_grad()
    F.cross_entropy(a, y).backward()
    want = float(0.5 * (a.detach() * a.grad).pow(2).mean(0).sum())
    assert P.fisher(net, (x, y)) == pytest.approx(want, rel=1e-5)


@pytest.mark.slow
def test_score_api():
    cell = Cell.from_nb201(BEST_ISH)
    small = (torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]))
    a = score(cell, ["synflow", "nwot", "snip", "params", "flops"], batch=small, seed=3)
    assert a == score(cell, "synflow,nwot,snip,params,flops", batch=small, seed=3)  # deterministic
    assert a != score(cell, ["synflow", "nwot", "snip", "params", "flops"], batch=small, seed=4)
    assert a["params"] == count_params(cell) / 1e6 and a["flops"] == count_flops(cell) / 1e6
    assert set(ALL_PROXIES) >= {"synflow", "snip", "grasp", "fisher", "grad_norm", "jacob_cov", "nwot", "zen", "params", "flops"}
    z = score(BEST_ISH, ["zen", "jacob_cov"], batch=small)
    assert all(math.isfinite(v) for v in z.values())


def test_score_bad_input():
    small = (torch.randn(2, 3, 8, 8), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="unknown proxies \\['synflw'\\]"):
        score(BEST_ISH, ["synflw"], batch=small)
    with pytest.raises(ValueError, match="non-empty"):
        score(BEST_ISH, [], batch=small)
    with pytest.raises(ValueError, match="\\[B, 3, H, W\\]"):
        score(BEST_ISH, ["nwot"], batch=(torch.randn(2, 8, 8), torch.tensor([0, 1])))
    with pytest.raises(ValueError, match="labels"):
        score(BEST_ISH, ["nwot"], batch=(torch.randn(2, 3, 8, 8), torch.tensor([0])))
    with pytest.raises(ValueError, match="no input -> output path"):
        score(Cell([[0, 1, 0], [0, 0, 0], [0, 0, 0]], ["input", "maxpool3x3", "output"]), ["nwot"], skeleton="nb101", batch=small)


@needs_cuda
@pytest.mark.parametrize("skeleton", ["nb201", "nb101"])
def test_score_on_cuda_matches_cpu(skeleton):
    # every proxy on the GPU: deterministic for a seed there, and equal to the CPU scores up to
    # float32 summation order (run by benches/gpu_check.sh)
    from helpers import INCEPTION

    cell = BEST_ISH if skeleton == "nb201" else INCEPTION
    cpu = score(cell, ALL_PROXIES, skeleton=skeleton, seed=0, batch=None)
    gpu = score(cell, ALL_PROXIES, skeleton=skeleton, seed=0, batch=None, device="cuda")
    again = score(cell, ALL_PROXIES, skeleton=skeleton, seed=0, batch=None, device="cuda")
    assert gpu == again
    for p in ALL_PROXIES:
        assert gpu[p] == pytest.approx(cpu[p], rel=2e-3, abs=1e-4), p


def test_score_shows_its_progress_when_asked(capsys):
    """`zc.score(cell)` with five proxies ran 33 s without a word: it shows a bar over the proxies
    when asked (and by default when stderr is a terminal; not here, where it is captured)."""
    from cgnf_fast.zc import score

    arch = "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|none~0|none~1|avg_pool_3x3~2|"
    quiet = score(arch, ["params", "flops"])
    assert capsys.readouterr().err == ""
    shown = score(arch, ["params", "flops"], progress=True)
    err = capsys.readouterr().err
    assert "zc.score" in err and "/2 " in err and "flops" in err and shown == quiet  # (the proxy running is named)


def test_the_default_batch_is_the_first_16_embedded_images():
    """The shipped models' labels used 16 images; the default was 64, so a measured nwot (~820)
    looked nothing like the prediction (~207)."""
    from cgnf_fast.zc import calibration_batch, score

    arch = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"
    assert score(arch, ["nwot"]) == score(arch, ["nwot"], batch=calibration_batch(16))
    assert score(arch, ["nwot"])["nwot"] < 400  # (with 64 images: ~820)
