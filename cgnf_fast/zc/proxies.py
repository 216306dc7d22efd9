"""Zero-cost proxies, each from its paper's definition (conventions as in DESIGN.md).

Every proxy takes a freshly initialised network (``torch.nn.Module``), a batch
``(x [B, 3, H, W] float, y [B] int64)`` and returns one float. Weights that are scored are
those of convolutions and linear layers. Networks are scored in training mode (batch
statistics), as in the zero-cost proxy literature.

* ``grad_norm`` (Abdelfattah et al. 2021): sum over layers of ``||dL/dW||_2``.
* ``snip`` (Lee et al. 2019): ``sum |W * dL/dW|``.
* ``grasp`` (Wang et al. 2020): ``sum -W * (H g)`` with ``g = dL/dW`` and ``H`` the Hessian,
  via a Hessian-vector product.
* ``fisher`` (Turner et al. 2020; Theis et al. 2018): for every convolution/linear output
  activation ``a`` with gradient ``g``: ``0.5 * mean_batch(sum_spatial(a * g))**2`` summed over
  channels and layers.
* ``jacob_cov`` (Mellor et al. 2021, v1): input Jacobians of the summed output, their
  correlation matrix's eigenvalues ``v``: ``-sum(log(v + k) + 1 / (v + k))``, ``k = 1e-5``.
* ``nwot`` (Mellor et al. 2021, v2): ``log|det K|`` of the Hamming-similarity kernel of the
  binary ReLU activation patterns, summed over ReLUs.
* ``synflow`` (Tanaka et al. 2020): in float64 with all weights replaced by ``|W|``, batch norm
  replaced by identity, an all-ones input of one image: ``sum |W * dR/dW|`` with ``R`` the
  summed output; reported as ``log`` (values span 1e30..1e60).
* ``zen`` (Lin et al. 2021): ``log ||f(x) - f(x + 0.01 eps)||_1`` of the features before global
  pooling for Gaussian ``x``, ``eps``, plus ``sum log sqrt(mean BN running variance)``.
* ``params``, ``flops``: trainable parameters and FLOPs (``cgnf_fast.nets``), in millions.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

Batch = tuple[torch.Tensor, torch.Tensor]


def _scored(net: nn.Module) -> list[nn.Module]:
    return [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def grad_norm(net: nn.Module, batch: Batch) -> float:
    x, y = batch
    net.zero_grad(set_to_none=True)
    F.cross_entropy(net(x), y).backward()
    return float(sum(float(m.weight.grad.norm()) for m in _scored(net) if m.weight.grad is not None))


def snip(net: nn.Module, batch: Batch) -> float:
    x, y = batch
    net.zero_grad(set_to_none=True)
    F.cross_entropy(net(x), y).backward()
    return float(sum(float((m.weight.grad * m.weight.detach()).abs().sum()) for m in _scored(net) if m.weight.grad is not None))


def grasp(net: nn.Module, batch: Batch) -> float:
    x, y = batch
    weights = [m.weight for m in _scored(net)]
    net.zero_grad(set_to_none=True)
    g = torch.autograd.grad(F.cross_entropy(net(x), y), weights, allow_unused=True)
    g = [torch.zeros_like(w) if gi is None else gi.detach() for w, gi in zip(weights, g)]
    g2 = torch.autograd.grad(F.cross_entropy(net(x), y), weights, create_graph=True, allow_unused=True)
    z = sum((a * b).sum() for a, b in zip(g, g2) if b is not None)
    hg = torch.autograd.grad(z, weights, allow_unused=True)  # H g
    return float(sum(float((-w.detach() * h).sum()) for w, h in zip(weights, hg) if h is not None))


def fisher(net: nn.Module, batch: Batch) -> float:
    x, y = batch
    acts: list[torch.Tensor] = []

    def keep(_m, _i, out):
        out.retain_grad()
        acts.append(out)

    hooks = [m.register_forward_hook(keep) for m in _scored(net)]
    try:
        net.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
    finally:
        for h in hooks:
            h.remove()
    total = 0.0
    for a in acts:
        if a.grad is None:
            continue
        prod = a.detach() * a.grad
        per = prod.sum(dim=(2, 3)) if prod.dim() == 4 else prod  # [B, C]
        total += float(0.5 * per.pow(2).mean(dim=0).sum())
    return total


def jacob_cov(net: nn.Module, batch: Batch) -> float:
    x, _ = batch
    x = x.clone().requires_grad_(True)
    net.zero_grad(set_to_none=True)
    net(x).sum().backward()
    jac = x.grad.reshape(x.shape[0], -1).double()
    corr = torch.corrcoef(jac)
    corr = torch.nan_to_num(corr, nan=0.0)
    v = torch.linalg.eigvalsh(corr)
    k = 1e-5
    return float(-(torch.log(v.clamp_min(0) + k) + 1.0 / (v.clamp_min(0) + k)).sum())


def nwot(net: nn.Module, batch: Batch) -> float:
    x, _ = batch
    n = x.shape[0]
    K = torch.zeros(n, n, dtype=torch.float64, device=x.device)

    def count(_m, _i, out):
        codes = (out.detach().reshape(n, -1) > 0).double()
        K.add_(codes @ codes.t() + (1 - codes) @ (1 - codes).t())

    hooks = [m.register_forward_hook(count) for m in net.modules() if isinstance(m, nn.ReLU)]
    try:
        with torch.no_grad():
            net(x)
    finally:
        for h in hooks:
            h.remove()
    return float(torch.linalg.slogdet(K)[1])


def synflow(net: nn.Module, batch: Batch) -> float:
    x, _ = batch
    net = copy.deepcopy(net).double()
    for m in list(net.modules()):
        for name, child in list(m.named_children()):
            if isinstance(child, nn.BatchNorm2d):
                setattr(m, name, nn.Identity())
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()
    net.zero_grad(set_to_none=True)
    net(torch.ones(1, *x.shape[1:], dtype=torch.float64, device=x.device)).sum().backward()
    s = sum(float((m.weight.detach() * m.weight.grad).abs().sum()) for m in _scored(net) if m.weight.grad is not None)
    return math.log(s) if s > 0 else float("-inf")


def zen(net: nn.Module, batch: Batch) -> float:
    x, _ = batch
    features = getattr(net, "features", None)
    if features is None:
        raise ValueError("zen needs a network with a features(x) method returning the maps before global pooling")
    g = torch.Generator().manual_seed(0)
    a = torch.randn(x.shape, generator=g).to(x.device)  # (drawn on the CPU: the same on every device)
    b = torch.randn(x.shape, generator=g).to(x.device)
    with torch.no_grad():
        diff = (features(a) - features(a + 0.01 * b)).abs().sum(dim=(1, 2, 3)).mean().item()
    bn_term = sum(
        math.log(math.sqrt(float(m.running_var.mean())))
        for m in net.modules()
        if isinstance(m, nn.BatchNorm2d) and m.running_var is not None and float(m.running_var.mean()) > 0
    )
    return (math.log(diff) if diff > 0 else float("-inf")) + bn_term


PROXIES: dict[str, Callable[[nn.Module, Batch], float]] = {
    "grad_norm": grad_norm,
    "snip": snip,
    "grasp": grasp,
    "fisher": fisher,
    "jacob_cov": jacob_cov,
    "nwot": nwot,
    "synflow": synflow,
    "zen": zen,
}
