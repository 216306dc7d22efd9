"""Fused GNN message passing on batches of tiny dense graphs (native CPU/CUDA kernels;
reference: ``cgnf_fast.reference.gnn``).

Batches hold graphs of ``1 <= N <= 16`` vertices with feature rows of any width ``H``:

    adj [B, N, N] float32|float64   adj[b, j, i] = weight of the edge j -> i (0/1 or soft)
    h   [B, N, H] same dtype and device as adj

Layers: :func:`gin_aggregate` (validation, backend switch) -> custom op
``cgnf_fast::gin_aggregate`` (fake kernel, autograd) -> ``_C.gin_aggregate_fwd_cpu`` /
``_cuda`` (csrc/gnn/gin_aggregate_cpu.cpp, gin_aggregate_cuda.cu). The backward is the custom
op ``cgnf_fast::gin_aggregate_bwd`` (-> ``_C.gin_aggregate_bwd_cpu`` / ``_cuda``), which has an
autograd formula of its own written with the same two native ops, so double backward (and any
higher order) runs natively too; ``gradgradcheck`` checks it in the tests.

Non-contiguous inputs are accepted and copied to contiguous memory first (as stock PyTorch ops
do); everything else that does not fit (dtype, shape, device, N, H) is a ``ValueError`` naming
the argument, the expectation and what arrived, raised before any pointer reaches C++.
"""

from __future__ import annotations

import math

import torch

from .. import _native
from .._checks import check_tensor
from .._native import _C
from ..reference import gnn as reference

#: Largest number of vertices per graph (csrc/gnn/gnn.h: kGinMaxNodes).
GIN_MAX_NODES = int(_C.build_config()["gin_max_nodes"])
#: Implementations :func:`gin_aggregate` can run: the native kernels, or the PyTorch reference.
BACKENDS = ("native", "torch")
_DTYPES = (torch.float32, torch.float64)


def _check_inputs(adj: torch.Tensor, h: torch.Tensor) -> tuple[int, int, int]:
    """Validates ``adj [B, N, N]`` and ``h [B, N, H]``; returns ``(B, N, H)``."""
    check_tensor("h", h, "[B, N, H]", dtype=_DTYPES, ndim=3)
    B, N, H = h.shape
    if not 1 <= N <= GIN_MAX_NODES:
        raise ValueError(f"h must have shape [B, N, H] with 1 <= N <= {GIN_MAX_NODES}, got {list(h.shape)}")
    if H < 1:
        raise ValueError(f"h must have shape [B, N, H] with H >= 1, got {list(h.shape)}")
    if not isinstance(adj, torch.Tensor):  # (said as for h: either float dtype)
        check_tensor("adj", adj, "[B, N, N]", dtype=_DTYPES)
    check_tensor("adj", adj, "[B, N, N]", dtype=h.dtype, dtype_of="h", device=h.device, device_of="h is",
                 device_hint="; both must be on one device")
    if adj.dim() != 3 or tuple(adj.shape) != (B, N, N):
        raise ValueError(f"adj must have shape [B, N, N] = {[B, N, N]} (h is {list(h.shape)}), got {list(adj.shape)}")
    if h.device.type not in ("cpu", "cuda", "meta"):
        raise ValueError(f"h is on {h.device}; gin_aggregate supports cpu and cuda tensors")
    return B, N, H


def _check_grad_out(grad_out: torch.Tensor, h: torch.Tensor) -> None:
    B, N, H = h.shape
    if grad_out.dtype != h.dtype or grad_out.device != h.device or tuple(grad_out.shape) != (B, N, 2 * H):
        raise ValueError(
            f"grad_out must be a {h.dtype} tensor of shape [B, N, 2H] = {[B, N, 2 * H]} on {h.device}, "
            f"got {grad_out.dtype} {list(grad_out.shape)} on {grad_out.device}"
        )


def _check_eps(eps: object) -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(float(eps)):
        raise ValueError(f"eps must be a finite Python float, got {eps!r}")
    return float(eps)


def _launch(kind: str, *ptrs: torch.Tensor | None, h: torch.Tensor, eps: float) -> None:
    """Runs ``_C.gin_aggregate_<kind>_cpu`` or ``_cuda`` on (pointers..., B, N, H, eps, float64)."""
    B, N, H = h.shape
    args = (*(0 if t is None else t.data_ptr() for t in ptrs), B, N, H, eps, h.dtype == torch.float64)
    if h.device.type == "cuda":
        _native.require_cuda(f"gin_aggregate_{kind}")
        with torch.cuda.device(h.device):
            getattr(_C, f"gin_aggregate_{kind}_cuda")(*args, _native.stream_of(h))
    else:
        getattr(_C, f"gin_aggregate_{kind}_cpu")(*args, _native.num_threads())


def _gin_forward(adj: torch.Tensor, h: torch.Tensor, eps: float) -> torch.Tensor:
    """The forward kernel on real cpu/cuda tensors (the custom op's implementation)."""
    B, N, H = _check_inputs(adj, h)
    adj, h = adj.contiguous(), h.contiguous()
    out = h.new_empty(B, N, 2 * H)  # [B, N, 2H]
    _launch("fwd", adj, h, out, h=h, eps=eps)
    return out


_gin_aggregate = torch.library.custom_op("cgnf_fast::gin_aggregate", mutates_args=())(_gin_forward)


@_gin_aggregate.register_fake
def _(adj: torch.Tensor, h: torch.Tensor, eps: float) -> torch.Tensor:
    B, N, H = _check_inputs(adj, h)
    return h.new_empty(B, N, 2 * H)


@torch.library.custom_op("cgnf_fast::gin_aggregate_bwd", mutates_args=())
def _gin_aggregate_bwd(
    grad_out: torch.Tensor, adj: torch.Tensor, h: torch.Tensor, eps: float, adj_grad: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(grad_h [B, N, H], grad_adj)``; ``grad_adj`` is ``[B, N, N]`` when ``adj_grad``, else an
    empty ``[0]`` tensor (not computed)."""
    _check_inputs(adj, h)
    _check_grad_out(grad_out, h)
    grad_out, adj, h = grad_out.contiguous(), adj.contiguous(), h.contiguous()
    grad_h = torch.empty_like(h)
    grad_adj = torch.empty_like(adj) if adj_grad else adj.new_empty(0)
    _launch("bwd", grad_out, adj, h if adj_grad else None, grad_h, grad_adj if adj_grad else None, h=h, eps=eps)
    return grad_h, grad_adj


@_gin_aggregate_bwd.register_fake
def _(
    grad_out: torch.Tensor, adj: torch.Tensor, h: torch.Tensor, eps: float, adj_grad: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    _check_inputs(adj, h)
    _check_grad_out(grad_out, h)
    return torch.empty_like(h), (torch.empty_like(adj) if adj_grad else adj.new_empty(0))


def _setup_fwd(ctx, inputs: tuple, output: torch.Tensor) -> None:
    adj, h, eps = inputs
    ctx.eps = eps
    ctx.save_for_backward(adj, h)


def _backward_fwd(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
    adj, h = ctx.saved_tensors
    need_adj, need_h = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    grad_h, grad_adj = _gin_aggregate_bwd(grad, adj, h, ctx.eps, need_adj)
    return (grad_adj if need_adj else None), (grad_h if need_h else None), None


_gin_aggregate.register_autograd(_backward_fwd, setup_context=_setup_fwd)


def _setup_bwd(ctx, inputs: tuple, output: tuple) -> None:
    grad_out, adj, h, eps, adj_grad = inputs
    ctx.eps, ctx.adj_grad = eps, adj_grad
    ctx.save_for_backward(grad_out, adj, h)


def _backward_bwd(ctx, gg_h: torch.Tensor | None, gg_adj: torch.Tensor | None) -> tuple:
    """Double backward. The backward is linear in grad_out and bilinear in (adj, h), and its
    adjoints are the two ops again:
        from grad_h   (cotangent gg_h):   d grad_out = fwd(adj, gg_h, eps),
                                          d adj      = bwd(grad_out, adj, h=gg_h).grad_adj
        from grad_adj (cotangent gg_adj): d grad_out = fwd(gg_adj, h, eps=-1)   (no self term)
                                          d h        = bwd(grad_out, adj=gg_adj, eps=-1).grad_h
    """
    grad_out, adj, h = ctx.saved_tensors
    need_g, need_adj, need_h = ctx.needs_input_grad[:3]
    d_g = d_adj = d_h = None
    if gg_h is not None:
        if need_g:
            d_g = _gin_aggregate(adj, gg_h, ctx.eps)
        if need_adj:
            d_adj = _gin_aggregate_bwd(grad_out, adj, gg_h, ctx.eps, True)[1]
    if ctx.adj_grad and gg_adj is not None:
        if need_g:
            extra = _gin_aggregate(gg_adj, h, -1.0)
            d_g = extra if d_g is None else d_g + extra
        if need_h:
            d_h = _gin_aggregate_bwd(grad_out, gg_adj, h, -1.0, False)[0]
    return d_g, d_adj, d_h, None, None


_gin_aggregate_bwd.register_autograd(_backward_bwd, setup_context=_setup_bwd)


def gin_aggregate(adj: torch.Tensor, h: torch.Tensor, eps: float = 0.0, backend: str = "native") -> torch.Tensor:
    """One GIN message-passing step over a batch of small dense graphs, along and against the
    edges, fused into one kernel (forward and backward; differentiable in ``h`` and ``adj``).

    Shapes:
        adj [B, N, N] float32|float64: ``adj[b, j, i]`` weighs the edge ``j -> i``; 1 <= N <= 16
        h   [B, N, H] same dtype and device; any H >= 1, B >= 0

    Returns:
        ``[B, N, 2H]``::

            out[b, i, :H] = (1 + eps) * h[b, i] + sum_j adj[b, j, i] * h[b, j]   (predecessors)
            out[b, i, H:] =                       sum_j adj[b, i, j] * h[b, j]   (successors)

    Args:
        eps: GIN's self weight offset (a Python float).
        backend: ``"native"`` (the kernels in csrc/gnn) or ``"torch"`` (the reference,
            ``cgnf_fast.reference.gnn.gin_aggregate``: bmm + cat); both validate alike.

    Zero weights are skipped by the native kernels, so a non-finite feature behind a zero
    weight does not leak into the output (the bmm reference gives NaN there).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(map(repr, BACKENDS))}")
    eps = _check_eps(eps)
    _check_inputs(adj, h)
    if backend == "torch":
        return reference.gin_aggregate(adj, h, eps)
    if _native.eager_plain(adj, h):  # inference: the kernel itself (see _native.eager_plain)
        return _gin_forward(adj, h, eps)
    return _gin_aggregate(adj.contiguous(), h.contiguous(), eps)
