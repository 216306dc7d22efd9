"""The fused GIN aggregation (cgnf_fast.ops.gnn) against its PyTorch reference, on every device."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cgnf_fast import _C
from cgnf_fast.ops import gnn
from cgnf_fast.ops.gnn import gin_aggregate
from cgnf_fast.reference import gnn as ref

from helpers import DEVICE_PARAMS, needs_cuda, use_simd


# Tolerances, atol scaled by the largest value: the kernels sum the same terms as bmm, in
# another order (and with FMA). Measured on the 2-core dev CPU: float32 differences up to ~2e-5
# on grad_adj entries of size ~30 (H = 256 terms), float64 up to ~4e-14.
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.float64: dict(rtol=1e-12, atol=1e-12)}


def random_graphs(
    B: int, N: int, H: int, *, density: float = 0.35, soft: bool = False, dag: bool = False,
    dtype: torch.dtype = torch.float32, device: str = "cpu", seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(adj [B, N, N], h [B, N, H])``: 0/1 (or soft, signed) weights on a random ``density`` of
    the entries (strictly upper triangular when ``dag``)."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(B, N, N, generator=g) < density
    if dag:
        mask &= torch.ones(N, N, dtype=torch.bool).triu(1)
    w = torch.randn(B, N, N, generator=g, dtype=torch.float64) if soft else torch.ones(B, N, N, dtype=torch.float64)
    adj = (w * mask).to(dtype)
    h = torch.randn(B, N, H, generator=g, dtype=torch.float64).to(dtype)
    return adj.to(device), h.to(device)


def outputs_and_grads(adj, h, eps, fn, grad_out=None):
    """``(out, grad_out, grad_h, grad_adj)`` of ``fn(adj, h, eps)`` for a fixed ``grad_out``."""
    adj = adj.detach().clone().requires_grad_(True)
    h = h.detach().clone().requires_grad_(True)
    out = fn(adj, h, eps)
    if grad_out is None:
        grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype).to(out.device)
    gh, ga = torch.autograd.grad(out, (h, adj), grad_out)
    return out.detach(), grad_out, gh, ga


def native(adj, h, eps):
    return gin_aggregate(adj, h, eps)


def assert_close(got, want, dtype):
    scale = max(1.0, float(want.abs().max())) if want.numel() else 1.0
    tol = TOL[dtype]
    torch.testing.assert_close(got.cpu(), want.cpu(), rtol=tol["rtol"], atol=tol["atol"] * scale)


def assert_matches_reference(adj, h, eps):
    dtype = h.dtype
    out, g, gh, ga = outputs_and_grads(adj, h, eps, native)
    r_out, _, r_gh, r_ga = outputs_and_grads(adj, h, eps, ref.gin_aggregate, grad_out=g)
    assert out.shape == (h.shape[0], h.shape[1], 2 * h.shape[2]) and out.dtype == dtype and out.device == h.device
    assert_close(out, r_out, dtype)
    assert_close(gh, r_gh, dtype)
    assert_close(ga, r_ga, dtype)


@pytest.mark.parametrize("device", DEVICE_PARAMS)
@settings(max_examples=40, deadline=None)
@given(
    B=st.integers(0, 40),
    N=st.integers(1, 16),
    # widths around the vector (16 floats / 8 doubles) and tile (x4) sizes of the CPU kernel
    H=st.one_of(st.integers(1, 20), st.sampled_from([31, 32, 33, 63, 64, 65, 100, 129])),
    eps=st.floats(-2.0, 2.0),
    density=st.sampled_from([0.0, 0.2, 0.5, 1.0]),
    soft=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    seed=st.integers(0, 2**31 - 1),
)
def test_matches_reference(device, B, N, H, eps, density, soft, dtype, seed):
    adj, h = random_graphs(B, N, H, density=density, soft=soft, dtype=dtype, device=device, seed=seed)
    assert_matches_reference(adj, h, eps)


@pytest.mark.parametrize("simd", ["default", "avx2", "generic"])
def test_every_cpu_simd_path(simd, monkeypatch):
    """Each instruction-set copy of the CPU kernels this machine can run (the choice is made
    per call, so CGNF_SIMD can be switched in-process), on widths that hit tiles, single vectors
    and scalar tails, with multi-threaded batches."""
    use_simd(monkeypatch, simd, "gin_simd")
    for dtype in (torch.float32, torch.float64):
        for i, (B, N, H) in enumerate([(100, 8, 256), (50, 16, 17), (64, 3, 5), (7, 5, 100)]):
            adj, h = random_graphs(B, N, H, density=0.4, soft=True, dtype=dtype, seed=i)
            assert_matches_reference(adj, h, 0.25)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_outputs_advised_onto_huge_pages_are_right(dtype):
    """B = 2,048, N = 8, H = 256: out (32 / 64 MiB) and grad_h (16 / 32 MiB) are above the 8 MiB
    from which the CPU launchers advise them onto huge pages before writing them."""
    adj, h = random_graphs(2048, 8, 256, density=0.35, soft=False, dtype=dtype, seed=5)
    assert_matches_reference(adj, h, 0.0)


def test_encoder_shapes_and_dags():
    """The shapes the encoder uses: 0/1 strictly upper-triangular DAGs, N = 8, H = 256."""
    adj, h = random_graphs(400, 8, 256, density=0.35, dag=True)
    assert_matches_reference(adj, h, 0.0)


def test_gradcheck_float64():
    adj, h = random_graphs(3, 4, 5, density=0.6, soft=True, dtype=torch.float64, seed=3)
    adj.requires_grad_(True)
    h.requires_grad_(True)
    fn = lambda a, x: gin_aggregate(a, x, 0.3)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (adj, h))
    assert torch.autograd.gradcheck(lambda x: gin_aggregate(adj.detach(), x, -0.5), (h,))


def test_double_backward_is_native_and_correct():
    """Double backward runs through the native ops (gin_aggregate_bwd has its own autograd
    formula) and agrees with autograd on the reference, and gradgradcheck holds."""
    adj, h = random_graphs(3, 4, 5, density=0.6, soft=True, dtype=torch.float64, seed=4)
    adj.requires_grad_(True)
    h.requires_grad_(True)
    assert torch.autograd.gradgradcheck(lambda a, x: gin_aggregate(a, x, 0.3), (adj, h))

    def hvp(fn):
        out = fn(adj, h, 0.3)
        gh, ga = torch.autograd.grad((out**2).sum(), (h, adj), create_graph=True)
        return torch.autograd.grad((gh**3).sum() + (ga * ga.detach()).sum(), (h, adj))

    for got, want in zip(hvp(native), hvp(ref.gin_aggregate)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_opcheck_forward():
    for dtype in (torch.float32, torch.float64):
        adj, h = random_graphs(6, 5, 7, soft=True, dtype=dtype)
        torch.library.opcheck(torch.ops.cgnf_fast.gin_aggregate.default, (adj, h, 0.5))
        torch.library.opcheck(
            torch.ops.cgnf_fast.gin_aggregate.default, (adj.requires_grad_(True), h.requires_grad_(True), 0.5)
        )


def test_opcheck_backward():
    adj, h = random_graphs(6, 5, 7, soft=True, dtype=torch.float64)
    g = torch.randn(6, 5, 14, dtype=torch.float64)
    for adj_grad in (True, False):
        torch.library.opcheck(torch.ops.cgnf_fast.gin_aggregate_bwd.default, (g, adj, h, 0.5, adj_grad))
    torch.library.opcheck(
        torch.ops.cgnf_fast.gin_aggregate_bwd.default,
        (g.requires_grad_(True), adj.requires_grad_(True), h.requires_grad_(True), 0.5, True),
    )


def test_backward_op_matches_written_out_reference():
    """cgnf_fast::gin_aggregate_bwd == reference.gin_aggregate_bwd == autograd of the reference;
    grad_adj is empty (not computed) when not asked for."""
    adj, h = random_graphs(20, 7, 33, soft=True, dtype=torch.float64, seed=5)
    g = torch.randn(20, 7, 66, dtype=torch.float64)
    gh, ga = torch.ops.cgnf_fast.gin_aggregate_bwd(g, adj, h, 0.7, True)
    w_gh, w_ga = ref.gin_aggregate_bwd(g, adj, h, 0.7)
    _, _, a_gh, a_ga = outputs_and_grads(adj, h, 0.7, ref.gin_aggregate, grad_out=g)
    for got, want in ((gh, w_gh), (ga, w_ga), (w_gh, a_gh), (w_ga, a_ga)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    gh2, empty = torch.ops.cgnf_fast.gin_aggregate_bwd(g, adj, h, 0.7, False)
    assert empty.shape == (0,)
    torch.testing.assert_close(gh2, gh, rtol=0, atol=0)


def test_adj_without_grad_gets_none_and_h_only():
    adj, h = random_graphs(5, 4, 6)
    h.requires_grad_(True)
    out = gin_aggregate(adj, h)
    out.sum().backward()
    assert adj.grad is None and h.grad is not None and h.grad.shape == h.shape


@pytest.mark.parametrize("device", DEVICE_PARAMS)
def test_empty_batch(device):
    for dtype in (torch.float32, torch.float64):
        adj = torch.zeros(0, 6, 6, dtype=dtype, device=device, requires_grad=True)
        h = torch.zeros(0, 6, 9, dtype=dtype, device=device, requires_grad=True)
        out = gin_aggregate(adj, h, 0.1)
        assert out.shape == (0, 6, 18)
        out.sum().backward()
        assert h.grad.shape == (0, 6, 9) and adj.grad.shape == (0, 6, 6)


@pytest.mark.parametrize("device", DEVICE_PARAMS)
def test_non_contiguous_inputs_are_made_contiguous(device):
    """Chosen behaviour: non-contiguous adj/h are copied to contiguous memory (no error), and
    gradients flow back to the original views."""
    adj0, h0 = random_graphs(9, 6, 11, soft=True, device=device)
    adj_t = adj0.transpose(1, 2).contiguous().transpose(1, 2).requires_grad_(True)  # same values, strided
    h_t = h0.transpose(1, 2).contiguous().transpose(1, 2).requires_grad_(True)
    assert not adj_t.is_contiguous() and not h_t.is_contiguous()
    out = gin_aggregate(adj_t, h_t, 0.2)
    want = ref.gin_aggregate(adj0, h0, 0.2)
    assert_close(out.detach(), want, torch.float32)
    out.square().sum().backward()
    _, _, gh, ga = outputs_and_grads(adj0, h0, 0.2, ref.gin_aggregate, grad_out=2 * want)
    assert_close(h_t.grad, gh, torch.float32)
    assert_close(adj_t.grad, ga, torch.float32)
    # a sliced batch (offset storage) works too
    adj, h = random_graphs(10, 4, 8, device=device)
    assert_close(gin_aggregate(adj[3:7], h[3:7]), ref.gin_aggregate(adj[3:7], h[3:7]), torch.float32)


def test_zero_weights_are_skipped():
    """Pinned, documented difference: a zero weight adds nothing even when the feature behind it
    is not finite (the bmm reference computes 0 * inf = nan there)."""
    adj = torch.zeros(1, 3, 3)
    adj[0, 0, 1] = 1.0
    h = torch.ones(1, 3, 4)
    h[0, 2] = float("inf")  # vertex 2 has no edges
    out = gin_aggregate(adj, h)
    assert torch.isfinite(out[0, :2]).all()
    assert torch.isnan(ref.gin_aggregate(adj, h)[0, :2]).any()


def test_backend_switch():
    adj, h = random_graphs(12, 5, 10, soft=True)
    want = ref.gin_aggregate(adj, h, 0.3)
    torch.testing.assert_close(gin_aggregate(adj, h, 0.3, backend="torch"), want, rtol=0, atol=0)
    assert_close(gin_aggregate(adj, h, 0.3, backend="native"), ref.gin_aggregate(adj, h, 0.3), torch.float32)
    with pytest.raises(ValueError, match=r"unknown backend 'cuda'; choose one of 'native', 'torch'"):
        gin_aggregate(adj, h, backend="cuda")
    # both backends validate alike
    with pytest.raises(ValueError, match="adj must have the dtype of h"):
        gin_aggregate(adj.double(), h, backend="torch")


def test_meta_tensors_give_shapes():
    out = gin_aggregate(torch.empty(3, 4, 4, device="meta"), torch.empty(3, 4, 5, device="meta"))
    assert out.shape == (3, 4, 10) and out.device.type == "meta"


def test_bad_inputs_are_clear_errors():
    adj, h = random_graphs(4, 5, 3)
    cases = [
        ((adj.numpy(), h), r"adj must be a torch.Tensor \[B, N, N\] float32 or float64, got ndarray"),
        ((adj, [1.0]), r"h must be a torch.Tensor \[B, N, H\] float32 or float64, got list"),
        (
            (adj.half(), h.half()),
            r"h must have dtype torch.float32 or torch.float64 \(shape \[B, N, H\]\), got torch.float16",
        ),
        ((adj.double(), h), r"adj must have the dtype of h \(torch.float32\), got torch.float64"),
        ((adj.to(torch.uint8), h), r"adj must have the dtype of h \(torch.float32\), got torch.uint8"),
        ((adj, h[0]), r"h must have shape \[B, N, H\], got \[5, 3\]"),
        (
            (torch.zeros(2, 17, 17), torch.zeros(2, 17, 3)),
            r"h must have shape \[B, N, H\] with 1 <= N <= 16, got \[2, 17, 3\]",
        ),
        ((torch.zeros(2, 0, 0), torch.zeros(2, 0, 3)), r"1 <= N <= 16, got \[2, 0, 3\]"),
        ((adj, h[..., :0]), r"h must have shape \[B, N, H\] with H >= 1, got \[4, 5, 0\]"),
        ((adj[..., :4], h), r"adj must have shape \[B, N, N\] = \[4, 5, 5\] \(h is \[4, 5, 3\]\), got \[4, 5, 4\]"),
        ((adj[:3], h), r"adj must have shape \[B, N, N\] = \[4, 5, 5\] \(h is \[4, 5, 3\]\), got \[3, 5, 5\]"),
        ((adj[0], h), r"adj must have shape \[B, N, N\] = \[4, 5, 5\] \(h is \[4, 5, 3\]\), got \[5, 5\]"),
        ((adj.to("meta"), h), r"adj is on meta but h is on cpu; both must be on one device"),
    ]
    for args, msg in cases:
        for backend in gnn.BACKENDS:
            with pytest.raises(ValueError, match=msg):
                gin_aggregate(*args, backend=backend)
    for eps in (float("nan"), float("inf"), True, "0.1", torch.tensor(0.1)):
        with pytest.raises(ValueError, match="eps must be a finite Python float, got"):
            gin_aggregate(adj, h, eps)
    assert gin_aggregate(adj, h, 1).shape == (4, 5, 6)  # an int eps is a float


def test_custom_op_validates_when_called_directly():
    adj, h = random_graphs(4, 5, 3)
    with pytest.raises(ValueError, match="adj must have the dtype of h"):
        torch.ops.cgnf_fast.gin_aggregate(adj.double(), h, 0.0)
    msg = r"grad_out must be a torch.float32 tensor of shape \[B, N, 2H\] = \[4, 5, 6\]"
    with pytest.raises(ValueError, match=msg):
        torch.ops.cgnf_fast.gin_aggregate_bwd(torch.zeros(4, 5, 3), adj, h, 0.0, False)


def test_native_entry_rejects_bad_arguments():
    with pytest.raises(ValueError, match="adj is a null pointer"):
        _C.gin_aggregate_fwd_cpu(0, 0, 0, 3, 4, 5, 0.0, False, 1)
    with pytest.raises(ValueError, match=r"N must be in \[1, 16\]"):
        _C.gin_aggregate_fwd_cpu(0, 0, 0, 0, 17, 5, 0.0, False, 1)
    with pytest.raises(ValueError, match="H must be >= 1"):
        _C.gin_aggregate_bwd_cpu(0, 0, 0, 0, 0, 0, 4, 0, 0.0, False, 1)
    g, adj, gh = torch.zeros(2, 3, 8), torch.zeros(2, 3, 3), torch.zeros(2, 3, 4)
    with pytest.raises(ValueError, match=r"h \(needed for grad_adj\) is a null pointer"):
        _C.gin_aggregate_bwd_cpu(g.data_ptr(), adj.data_ptr(), 0, gh.data_ptr(), adj.data_ptr(), 2, 3, 4, 0.0, False, 1)
    assert _C.build_config()["gin_max_nodes"] == gnn.GIN_MAX_NODES == 16


# --- CUDA (skipped without a GPU; run by benches/gpu_check.sh) -------------------------------


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gin_cuda_devices_agree(dtype):
    """CUDA == CPU == reference, outputs and both gradients, over every NMAX bucket (N <= 4, 8,
    16), widths below / at / above one block of columns, and batches larger than one grid
    (grid-stride loops: 65,535 blocks x 1 graph at H = 256)."""
    cases = [(1, 1, 1), (33, 3, 5), (200, 8, 256), (50, 12, 300), (17, 16, 64)]
    if dtype == torch.float32:  # the grid-stride case once (it does not depend on the dtype)
        cases.append((66_000, 9, 256))
    for i, (B, N, H) in enumerate(cases):
        adj, h = random_graphs(B, N, H, density=0.4, soft=True, dtype=dtype, seed=i)
        cpu = outputs_and_grads(adj, h, 0.3, native)
        cuda = outputs_and_grads(adj.cuda(), h.cuda(), 0.3, native, grad_out=cpu[1].cuda())
        for c, g in zip(cpu, cuda):
            assert_close(g, c, dtype)
        if B <= 1000:
            assert_matches_reference(adj.cuda(), h.cuda(), 0.3)


@needs_cuda
def test_gin_cuda_side_stream_and_opcheck():
    adj, h = random_graphs(40, 7, 50, soft=True, device="cuda")
    want = ref.gin_aggregate(adj, h, 0.1)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        got = gin_aggregate(adj, h, 0.1)
    torch.cuda.current_stream().wait_stream(s)
    assert_close(got, want, torch.float32)
    torch.library.opcheck(torch.ops.cgnf_fast.gin_aggregate.default, (adj, h.requires_grad_(True), 0.1))
    g = torch.randn(40, 7, 100, device="cuda")
    torch.library.opcheck(torch.ops.cgnf_fast.gin_aggregate_bwd.default, (g, adj, h.detach(), 0.1, True))


def test_inference_calls_the_kernel_without_the_dispatcher_and_agrees() -> None:
    # no gradient to record: gin_aggregate (and the dag ops) call their kernel directly, which
    # keeps the custom op's first-call import of torch._dynamo (seconds) out of inference
    import subprocess
    import sys

    code = ("import sys, torch; from cgnf_fast.ops import gin_aggregate; from cgnf_fast.ops.dag import "
            "dag_canonical_code; from cgnf_fast.space import batch_from_cells; from cgnf_fast import get_space; "
            "gin_aggregate(torch.zeros(2, 3, 3), torch.randn(2, 3, 4)); "
            "dag_canonical_code(*batch_from_cells(get_space('nb201-like').sample(5, seed=0))); "
            "assert 'torch._dynamo' not in sys.modules, 'dynamo was imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd="/")
    assert r.returncode == 0, r.stderr
    g = torch.Generator().manual_seed(0)
    adj = (torch.rand(5, 6, 6, generator=g) < 0.4).float().triu(1)
    h = torch.randn(5, 6, 16, generator=g)
    fast = gin_aggregate(adj, h, 0.3)
    through_op = gin_aggregate(adj, h.clone().requires_grad_(), 0.3)
    assert torch.equal(fast, through_op.detach())


def test_tracing_and_modes_go_through_the_custom_op() -> None:
    # the direct-kernel shortcut is for plain eager inference only: make_fx must record the op
    from torch.fx.experimental.proxy_tensor import make_fx

    from cgnf_fast import _native

    adj, h = torch.zeros(2, 3, 3), torch.randn(2, 3, 4)
    g = make_fx(lambda a, x: gin_aggregate(a, x))(adj, h)
    assert "cgnf_fast.gin_aggregate" in str(g.graph)
    assert _native.eager_plain(adj, h) and not _native.eager_plain(adj, h.requires_grad_())
    with torch.no_grad():
        assert _native.eager_plain(adj, h)
    assert not _native.eager_plain(torch.zeros(2, device="meta"))
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False):
        assert not _native.eager_plain(adj)
