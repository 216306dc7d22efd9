"""The CNF dynamics fused into one native kernel (CPU/CUDA; reference: ``cgnf_fast.reference.cnf``).

One evaluation of the flow's ConcatSquash MLP (every layer) and, optionally, its divergence
(exact for latent sizes ``D <= 64``, or the Hutchinson estimate) in one kernel:

    t [] or [1], z [B, D], c [B, C], weights: per layer (W, b, G, g, H)  ->  dz/dt [B, D], div [B]

Layers: :func:`cnf_dynamics` (validation, backend switch) -> custom op
``cgnf_fast::cnf_dynamics`` (fake kernel, autograd; skipped for plain eager calls autograd does
not record) -> ``_C.cnf_dynamics_fwd_cpu`` / ``_cuda`` (csrc/cnf/cnf_dynamics_cpu.cpp,
cnf_dynamics_cuda.cu). :class:`CnfPlan` validates the weights and condition once and then calls
the same entry points with a few microseconds of Python per evaluation: what an ODE solve uses.

Backward (first order): **native**. The op's autograd formula calls the custom op
``cgnf_fast::cnf_dynamics_vjp`` (:func:`cnf_dynamics_vjp`; ``_C.cnf_adjoint_cpu`` /
``_C.cnf_adjoint_cuda``, csrc/cnf/cnf_adjoint_cpu.cpp / cnf_adjoint_cuda.cu), one fused kernel
that recomputes the MLP and returns the vector-Jacobian products with respect to ``t``, ``z``,
``c`` and every weight, through ``dz/dt`` and the divergence (whose products are second-order
terms of the MLP). The reference runs the backward instead for higher orders
(``create_graph``) and for a gradient with respect to the Hutchinson ``noise``. Whole adjoint
solves on the CPU: :meth:`CnfPlan.adjoint_solve` (torchdiffeq's ``odeint_adjoint`` backward
pass, step for step). The CUDA kernel is checked by the host emulation
(python_tests/test_cuda_host_emulation.py); its speed has not been measured on a GPU.

Limits (csrc/cnf/cnf.h): every width (latent and hidden) ``<= CNF_MAX_WIDTH`` (512), at most
``CNF_MAX_LAYERS`` (32) layers, the exact divergence for ``D <= CNF_MAX_EXACT_LATENT`` (64); the
reference has none of these limits. Anything else that does not fit (dtype, shape,
device) is a ``ValueError`` naming the argument, raised before any pointer reaches C++.
Non-contiguous inputs are copied to contiguous memory first.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .. import _native
from .._checks import check_tensor
from .._native import _C
from ..reference import cnf as reference

_NP_DTYPE = {torch.float32: np.float32, torch.float64: np.float64}

#: Widest layer (latent or hidden) of the native kernels (csrc/cnf/cnf.h: kCnfMaxWidth).
CNF_MAX_WIDTH = int(_C.build_config()["cnf_max_width"])
#: Largest latent size of the native exact divergence (csrc/cnf/cnf.h: kCnfMaxExactLatent).
CNF_MAX_EXACT_LATENT = int(_C.build_config()["cnf_max_exact_latent"])
#: Most layers the native kernels take (csrc/cnf/cnf.h: kCnfMaxLayers).
CNF_MAX_LAYERS = int(_C.build_config()["cnf_max_layers"])
#: Implementations :func:`cnf_dynamics` can run: the native kernels, or the PyTorch reference.
BACKENDS = ("native", "torch")
#: Nonlinearities between ConcatSquash layers (none after the last one).
ACTIVATIONS = ("tanh", "softplus")
#: What the divergence output holds: nothing, ``tr(df/dz)``, or ``noise^T (df/dz) noise``.
DIVERGENCES = (None, "exact", "hutchinson")
_DTYPES = (torch.float32, torch.float64)
_OP_DIVERGENCE = {None: "none", "exact": "exact", "hutchinson": "hutchinson"}  # the op's schema takes a str
_DIV_CODE = {"none": 0, "exact": 1, "hutchinson": 2}  # csrc/cnf/cnf.h: CnfDivergence
_ACT_CODE = {"tanh": 0, "softplus": 1}  # csrc/cnf/cnf.h: CnfActivation
_PARTS = ("W", "b", "G", "g", "H")


def _check_like(name: str, x: object, shape: tuple[int, ...], doc: str, like: torch.Tensor) -> None:
    """``x`` of ``shape`` with z's (``like``) dtype and device."""
    check_tensor(name, x, doc, dtype=like.dtype, shape=shape, device=like.device, dtype_of="z", device_of="z is",
                 device_hint="; all tensors must be on one device")


def _check_inputs(
    t: torch.Tensor, z: torch.Tensor, c: torch.Tensor, weights: Sequence[torch.Tensor], activation: str,
    divergence: str, noise: torch.Tensor | None, native: bool = True,
) -> list[int]:
    """Validates the op's arguments (``weights`` flat: W, b, G, g, H per layer; ``divergence``
    "none" | "exact" | "hutchinson"); returns the widths ``[D, h_1, ..., D]``. The limits of the
    kernels bind only when ``native``."""
    check_tensor("z", z, "[B, D]", dtype=_DTYPES)
    if z.dim() != 2 or z.shape[1] < 1:
        raise ValueError(f"z must have shape [B, D] with D >= 1, got {list(z.shape)}")
    if z.device.type not in ("cpu", "cuda", "meta"):
        raise ValueError(f"z is on {z.device}; cnf_dynamics supports cpu and cuda tensors")
    B, D = z.shape
    if not isinstance(t, torch.Tensor) or t.numel() != 1 or t.dim() > 1:
        got = f"shape {list(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(f"t must be a 0-d or one-element tensor [1] (the time), got {got}")
    _check_like("t", t, tuple(t.shape), "[] or [1]", z)
    if not isinstance(c, torch.Tensor) or c.dim() != 2:
        got = list(c.shape) if isinstance(c, torch.Tensor) else type(c).__name__
        raise ValueError(f"c must be a torch.Tensor [B, C] (C may be 0), got {got}")
    C = c.shape[1]
    _check_like("c", c, (B, C), "[B, C]", z)
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    if divergence not in _DIV_CODE:
        raise ValueError(f"divergence must be one of {tuple(_DIV_CODE)}, got {divergence!r}")
    if isinstance(weights, torch.Tensor) or not isinstance(weights, (list, tuple)):
        raise ValueError(f"weights must be a list of tensors (W, b, G, g, H per layer), got {type(weights).__name__}")
    if len(weights) == 0 or len(weights) % 5:
        raise ValueError(f"weights must hold 5 tensors (W, b, G, g, H) per layer, got {len(weights)}")
    widths = [D]
    nl = len(weights) // 5
    for i in range(nl):
        W = weights[5 * i]
        if not isinstance(W, torch.Tensor) or W.dim() != 2:
            got = list(W.shape) if isinstance(W, torch.Tensor) else type(W).__name__
            raise ValueError(f"layer {i} W must be a tensor [out, in], got {got}")
        out = W.shape[0] if i < nl - 1 else D
        shapes = {"W": (out, widths[-1]), "b": (out,), "G": (out, 1 + C), "g": (out,), "H": (out, 1 + C)}
        docs = {"W": "[out, in]", "b": "[out]", "G": "[out, 1 + C]", "g": "[out]", "H": "[out, 1 + C]"}
        for j, part in enumerate(_PARTS):
            _check_like(f"layer {i} {part}", weights[5 * i + j], shapes[part], docs[part], z)
        widths.append(out)
    if native and nl > CNF_MAX_LAYERS:
        raise ValueError(f"cnf_dynamics supports at most {CNF_MAX_LAYERS} layers natively, got {nl} "
                         f"(use backend='torch')")
    if native and max(widths) > CNF_MAX_WIDTH:
        raise ValueError(f"cnf_dynamics supports layer widths <= {CNF_MAX_WIDTH} natively, got widths {widths} "
                         f"(use backend='torch')")
    if native and divergence == "exact" and D > CNF_MAX_EXACT_LATENT:
        raise ValueError(f"the native exact divergence supports latent sizes D <= {CNF_MAX_EXACT_LATENT}, got "
                         f"z of shape {list(z.shape)} (use divergence='hutchinson' or backend='torch')")
    if divergence == "hutchinson":
        if noise is None:
            raise ValueError("noise [B, D] is required when divergence='hutchinson', got None")
        _check_like("noise", noise, (B, D), "[B, D]", z)
    elif noise is not None:
        raise ValueError(f"noise must be None unless divergence='hutchinson' (got divergence={divergence!r})")
    return widths


def _launch(t, z, c, weights, noise, dz, div, widths, activation: str, divergence: str) -> None:
    B, C = z.shape[0], c.shape[1]
    ptr = lambda x: 0 if x is None or x.numel() == 0 else x.data_ptr()  # noqa: E731
    args = (ptr(t), ptr(z), ptr(c), ptr(noise), [w.data_ptr() for w in weights], widths, ptr(dz), ptr(div))
    codes = (B, C, _ACT_CODE[activation], _DIV_CODE[divergence], z.dtype == torch.float64)
    if z.device.type == "cuda":
        _native.require_cuda("cnf_dynamics")
        size = _C.cnf_cuda_workspace(B, widths, _DIV_CODE[divergence])
        work = z.new_empty(size)
        with torch.cuda.device(z.device):
            _C.cnf_dynamics_fwd_cuda(*args, ptr(work), size, *codes, _native.stream_of(z))
    else:
        _C.cnf_dynamics_fwd_cpu(*args, *codes, _native.num_threads())


def _forward(
    t: torch.Tensor, z: torch.Tensor, c: torch.Tensor, weights: list[torch.Tensor], activation: str,
    divergence: str, noise: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The op's computation (validated here): ``(dz/dt [B, D], div [B] or [0])``."""
    widths = _check_inputs(t, z, c, weights, activation, divergence, noise)
    t, z, c = t.contiguous(), z.contiguous(), c.contiguous()
    weights = [w.contiguous() for w in weights]
    noise = None if noise is None else noise.contiguous()
    dz = torch.empty_like(z)  # [B, D]
    div = z.new_empty(z.shape[0] if divergence != "none" else 0)  # [B] or [0]
    _launch(t, z, c, weights, noise, dz, div, widths, activation, divergence)
    return dz, div


@torch.library.custom_op("cgnf_fast::cnf_dynamics", mutates_args=())
def _cnf_dynamics(
    t: torch.Tensor, z: torch.Tensor, c: torch.Tensor, weights: list[torch.Tensor], activation: str,
    divergence: str, noise: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(dz/dt [B, D], div)``; ``div`` is ``[B]``, or an empty ``[0]`` tensor when
    ``divergence == "none"`` (not computed)."""
    return _forward(t, z, c, weights, activation, divergence, noise)


@_cnf_dynamics.register_fake
def _(t, z, c, weights, activation, divergence, noise):
    _check_inputs(t, z, c, weights, activation, divergence, noise)
    return torch.empty_like(z), z.new_empty(z.shape[0] if divergence != "none" else 0)


def _setup(ctx, inputs: tuple, output: tuple) -> None:
    t, z, c, weights, activation, divergence, noise = inputs
    ctx.activation, ctx.divergence, ctx.n_weights = activation, divergence, len(weights)
    ctx.has_noise = noise is not None
    ctx.save_for_backward(t, z, c, *weights, *((noise,) if noise is not None else ()))


def _backward(ctx, g_dz: torch.Tensor, g_div: torch.Tensor) -> tuple:
    """Vector-Jacobian products: the native kernel (``cnf_dynamics_vjp``) for first-order
    gradients on the CPU, else autograd on the reference (recomputed here). With
    ``create_graph`` the saved inputs are differentiated directly, so higher orders are exact."""
    saved = ctx.saved_tensors
    t, z, c = saved[:3]
    weights = list(saved[3:3 + ctx.n_weights])
    noise = saved[3 + ctx.n_weights] if ctx.has_noise else None
    need_t, need_z, need_c, need_w, _, _, need_noise = ctx.needs_input_grad
    need_w = list(need_w) if isinstance(need_w, (list, tuple)) else [bool(need_w)] * len(weights)
    create = torch.is_grad_enabled()
    if not create and not (noise is not None and need_noise) and z.device.type in ("cpu", "cuda"):
        g_div = g_div if ctx.divergence != "none" else z.new_zeros(0)
        g_t, g_z, g_c, g_w = torch.ops.cgnf_fast.cnf_dynamics_vjp(t, z, c, weights, ctx.activation, ctx.divergence,
                                                                   noise, g_dz, g_div)
        keep = lambda g, need: g if need else None  # noqa: E731
        return (keep(g_t, need_t), keep(g_z, need_z), keep(g_c, need_c),
                [keep(g, n) for g, n in zip(g_w, need_w)], None, None, None)
    flat = [t, z, c, *weights] + ([noise] if noise is not None else [])
    needs = [need_t, need_z, need_c, *need_w] + ([need_noise] if noise is not None else [])
    with torch.enable_grad():
        xs = [x if (create and need) else x.detach().requires_grad_(bool(need)) for x, need in zip(flat, needs)]
        ws = xs[3:3 + len(weights)]
        layers = [tuple(ws[5 * i:5 * i + 5]) for i in range(len(ws) // 5)]
        div_kind = None if ctx.divergence == "none" else ctx.divergence
        dz, div = reference.cnf_dynamics(xs[0], xs[1], xs[2], layers, ctx.activation, div_kind,
                                         xs[-1] if noise is not None else None)
        outs, grads_out = [dz], [g_dz]
        if div is not None:
            outs.append(div)
            grads_out.append(g_div)
        wanted = [i for i, need in enumerate(needs) if need]
        got = torch.autograd.grad(outs, [xs[i] for i in wanted], grads_out, allow_unused=True,
                                  create_graph=create) if wanted else ()
    grads: list[torch.Tensor | None] = [None] * len(flat)
    for i, g in zip(wanted, got):
        grads[i] = torch.zeros_like(flat[i]) if g is None else g
    g_noise = grads[-1] if noise is not None else None
    return grads[0], grads[1], grads[2], grads[3:3 + len(weights)], None, None, g_noise


_cnf_dynamics.register_autograd(_backward, setup_context=_setup)


def _vjp_reference(t, z, c, weights, activation, divergence, noise, g_dz, g_div) -> tuple:
    with torch.enable_grad():
        xs = [x.detach().requires_grad_(True) for x in (t, z, c, *weights)]
        ws = xs[3:]
        layers = [tuple(ws[5 * i:5 * i + 5]) for i in range(len(ws) // 5)]
        kind = None if divergence == "none" else divergence
        dz, div = reference.cnf_dynamics(xs[0], xs[1], xs[2], layers, activation, kind, noise)
        outs, cots = [dz], [g_dz]
        if div is not None:
            outs.append(div)
            cots.append(g_div)
        got = torch.autograd.grad(outs, xs, cots, allow_unused=True)
    return tuple(torch.zeros_like(x) if g is None else g for x, g in zip(xs, got))


def _vjp(t, z, c, weights, activation, divergence, noise, g_dz, g_div, outputs: bool = False) -> tuple:
    """The validated vector-Jacobian products (the op's computation): native on the CPU and
    CUDA, the reference elsewhere. ``outputs``: also return ``dz/dt`` and ``div`` (computed anyway)."""
    widths = _check_inputs(t, z, c, weights, activation, divergence, noise)
    B, D = z.shape
    check_tensor("g_dz", g_dz, "[B, D]", dtype=z.dtype, shape=(B, D), device=z.device, dtype_of="z", device_of="z is")
    want_div = (B,) if divergence != "none" else (0,)
    check_tensor("g_div", g_div, "[B] ([0] without a divergence)", dtype=z.dtype, shape=want_div, device=z.device,
                 dtype_of="z", device_of="z is")
    native_cuda = z.device.type == "cuda" and _native.cuda_available()
    if z.device.type != "cpu" and not native_cuda:  # meta / a CUDA build-less install: the reference
        g = _vjp_reference(t, z, c, weights, activation, divergence, noise, g_dz, g_div)
        res = (g[0].reshape(t.shape), g[1], g[2], list(g[3:]))
        if outputs:
            dz, div = _forward(t, z, c, weights, activation, divergence, noise)
            return res + (dz, div)
        return res
    t, z, c, g_dz, g_div = (x.contiguous() for x in (t, z, c, g_dz, g_div))
    weights = [w.contiguous() for w in weights]
    noise = None if noise is None else noise.contiguous()
    g_t, g_z, g_c = torch.empty_like(t), torch.empty_like(z), torch.empty_like(c)
    g_w = [torch.empty_like(w) for w in weights]
    dz = torch.empty_like(z) if outputs else None
    div = z.new_empty(B) if outputs and divergence != "none" else None
    ptr = lambda x: 0 if x is None or x.numel() == 0 else x.data_ptr()  # noqa: E731
    args = (ptr(t), ptr(z), ptr(c), ptr(noise), [w.data_ptr() for w in weights], widths, ptr(g_dz), ptr(g_div),
            ptr(dz), ptr(div), g_t.data_ptr(), ptr(g_z), ptr(g_c), [w.data_ptr() for w in g_w])
    codes = (B, c.shape[1], _ACT_CODE[activation], _DIV_CODE[divergence], z.dtype == torch.float64)
    if native_cuda:
        size = _C.cnf_adjoint_workspace_cuda(B, widths, c.shape[1], _DIV_CODE[divergence])
        work = z.new_empty(size)
        with torch.cuda.device(z.device):
            _C.cnf_adjoint_cuda(*args, work.data_ptr(), size, *codes, _native.stream_of(z))
    else:
        _C.cnf_adjoint_cpu(*args, *codes, _native.num_threads())
    res = (g_t, g_z, g_c, g_w)
    return res + (dz, div if div is not None else z.new_zeros(0)) if outputs else res


@torch.library.custom_op("cgnf_fast::cnf_dynamics_vjp", mutates_args=())
def _cnf_dynamics_vjp(
    t: torch.Tensor, z: torch.Tensor, c: torch.Tensor, weights: list[torch.Tensor], activation: str,
    divergence: str, noise: torch.Tensor | None, g_dz: torch.Tensor, g_div: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """``(g_t, g_z, g_c, g_weights)``: the products of ``(g_dz [B, D], g_div [B] or [0])`` with
    the Jacobians of ``cgnf_fast::cnf_dynamics``'s outputs."""
    g_t, g_z, g_c, g_w = _vjp(t, z, c, weights, activation, divergence, noise, g_dz, g_div)
    return g_t, g_z, g_c, list(g_w)


@_cnf_dynamics_vjp.register_fake
def _(t, z, c, weights, activation, divergence, noise, g_dz, g_div):
    _check_inputs(t, z, c, weights, activation, divergence, noise)
    return torch.empty_like(t), torch.empty_like(z), torch.empty_like(c), [torch.empty_like(w) for w in weights]


def _flatten(weights: object) -> list[torch.Tensor]:
    if isinstance(weights, torch.Tensor) or not isinstance(weights, Sequence) or not all(
            isinstance(lw, Sequence) and not isinstance(lw, torch.Tensor) and len(lw) == 5 for lw in weights):
        raise ValueError("weights must be a sequence of per-layer tuples (W, b, G, g, H), got "
                         f"{type(weights).__name__}")
    return [x for lw in weights for x in lw]


def _check_call(backend: str, divergence: str | None, z: object, weights: object) -> list[torch.Tensor]:
    """The checks every public entry point makes first; returns the flat weights."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(map(repr, BACKENDS))}")
    if divergence not in DIVERGENCES:
        raise ValueError(f"divergence must be None, 'exact' or 'hutchinson', got {divergence!r}")
    if not isinstance(z, torch.Tensor):
        raise ValueError(f"z must be a torch.Tensor [B, D] float32 or float64, got {type(z).__name__}")
    return _flatten(weights)


def as_time(t: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The time as a one-element tensor ``[1]`` of ``like``'s dtype and device (differentiable
    when ``t`` is a tensor that requires grad)."""
    return torch.as_tensor(t, dtype=like.dtype, device=like.device).reshape(1)


def native_supports(latent: int, hidden: Sequence[int], divergence: str | None, device: torch.device,
                    dtype: torch.dtype = torch.float32) -> bool:
    """Whether the native kernels take the dynamics ``latent -> *hidden -> latent``: widths
    within :data:`CNF_MAX_WIDTH`, layers within :data:`CNF_MAX_LAYERS`, the exact divergence
    within :data:`CNF_MAX_EXACT_LATENT`, float32/float64, and a CPU or usable CUDA device."""
    if dtype not in (torch.float32, torch.float64):
        return False
    if max([latent, *hidden]) > CNF_MAX_WIDTH or len(hidden) + 1 > CNF_MAX_LAYERS:
        return False
    if divergence == "exact" and latent > CNF_MAX_EXACT_LATENT:
        return False
    return device.type == "cpu" or (device.type == "cuda" and _native.cuda_available())


def cnf_dynamics(
    t: float | torch.Tensor,
    z: torch.Tensor,
    c: torch.Tensor,
    weights: Sequence[tuple[torch.Tensor, ...]],
    activation: str = "tanh",
    divergence: str | None = None,
    noise: torch.Tensor | None = None,
    backend: str = "native",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One evaluation of the CNF dynamics ``dz/dt = f(t, z, c)`` (the ConcatSquash MLP of
    ``cgnf_fast.models.flow.ODEDynamics``) and optionally its divergence, fused into one native
    kernel (differentiable in every tensor argument; the backward runs the reference).

    Shapes:
        t      a float, or a 0-d / one-element tensor
        z      [B, D] float32|float64
        c      [B, C] same dtype and device (C may be 0)
        weights  per layer ``(W [out, in], b [out], G [out, 1 + C], g [out], H [out, 1 + C])``,
               widths ``D -> h_1 -> ... -> D``, each <= 512
        noise  [B, D] (``divergence="hutchinson"`` only)
        -> ``(dz/dt [B, D], div [B] or None)``

    Args:
        activation: ``"tanh"`` or ``"softplus"`` between layers.
        divergence: None, ``"exact"`` (``tr(df/dz)``; native for ``D <= 64``) or
            ``"hutchinson"`` (``noise^T (df/dz) noise``).
        backend: ``"native"`` (csrc/cnf) or ``"torch"`` (``cgnf_fast.reference.cnf.cnf_dynamics``);
            both validate alike, except that the limits on widths and D bind the native one only.
    """
    flat = _check_call(backend, divergence, z, weights)
    if isinstance(t, torch.Tensor):
        tt = t
    elif isinstance(t, (int, float)) and not isinstance(t, bool):
        tt = as_time(t, z) if z.dtype in _DTYPES else torch.tensor([float(t)])
    else:
        raise ValueError(f"t must be a float or a one-element tensor, got {type(t).__name__}")
    if backend == "torch":
        _check_inputs(tt, z, c, flat, activation, _OP_DIVERGENCE[divergence], noise, native=False)
        return reference.cnf_dynamics(tt, z, c, weights, activation, divergence, noise)
    args = (tt, z, c, flat, activation, _OP_DIVERGENCE[divergence], noise)
    if _native.eager_plain(tt, z, c, noise, *flat):  # nothing to record or trace: skip the dispatcher (~100 us)
        dz, div = _forward(*args)
    else:
        dz, div = _cnf_dynamics(*args)
    return dz, (div if divergence is not None else None)


def cnf_dynamics_vjp(
    t: float | torch.Tensor,
    z: torch.Tensor,
    c: torch.Tensor,
    weights: Sequence[tuple[torch.Tensor, ...]],
    g_dz: torch.Tensor,
    g_div: torch.Tensor | None = None,
    activation: str = "tanh",
    divergence: str | None = None,
    noise: torch.Tensor | None = None,
    backend: str = "native",
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor, torch.Tensor, list[tuple[torch.Tensor, ...]]]:
    """One evaluation of the adjoint dynamics: ``dz/dt``, the divergence and the
    vector-Jacobian products ``g_v = g_dz^T d(dz/dt)/dv + g_div d(div)/dv`` for ``v = t`` (summed
    over the batch), ``z``, ``c`` and every weight (summed over the batch), what the adjoint's
    backward solve evaluates at every stage. ``backend="native"``: one fused kernel on the CPU
    (``cgnf_fast::cnf_dynamics_vjp``; the reference on other devices); ``"torch"``: autograd over
    :func:`cgnf_fast.reference.cnf.cnf_dynamics`. The Hutchinson ``noise`` is treated as a constant.

    Shapes:
        as :func:`cnf_dynamics`; g_dz [B, D]; g_div [B] (required with a divergence, else None)
        -> ``(dz/dt [B, D], div [B] or None, g_t [1], g_z [B, D], g_c [B, C], g_weights)`` with
        ``g_weights`` per layer ``(gW, gb, gG, gg, gH)`` shaped as the weights.
    """
    flat = _check_call(backend, divergence, z, weights)
    tt = t if isinstance(t, torch.Tensor) else as_time(t, z) if z.dtype in _DTYPES else torch.tensor([float(t)])
    if divergence is None:
        if g_div is not None:
            raise ValueError("g_div must be None when divergence is None (there is no divergence output)")
        g_div = z.new_zeros(0) if z.dtype in _DTYPES else torch.zeros(0)
    elif g_div is None:
        raise ValueError(f"g_div [B] is required with divergence={divergence!r}")
    kind = _OP_DIVERGENCE[divergence]
    if backend == "torch":
        _check_inputs(tt, z, c, flat, activation, kind, noise, native=False)
        dz, div = reference.cnf_dynamics(tt, z, c, weights, activation, divergence, noise)
        g = _vjp_reference(tt, z, c, flat, activation, kind, noise, g_dz, g_div)
        g_t, g_z, g_c, g_w = g[0].reshape(tt.shape), g[1], g[2], list(g[3:])
    else:
        g_t, g_z, g_c, g_w, dz, div = _vjp(tt, z, c, flat, activation, kind, noise, g_dz, g_div, outputs=True)
    layers = [tuple(g_w[5 * i:5 * i + 5]) for i in range(len(g_w) // 5)]
    return dz.detach(), (div.detach() if divergence is not None else None), g_t, g_z, g_c, layers


class CnfPlan:
    """Native evaluations of fixed weights and condition, validated once: what one ODE solve
    needs (``ODEDynamics`` builds one per solve). Each call checks only the state and takes
    ~10 us of Python, against ~50 us for :func:`cnf_dynamics` (validation of every weight) and
    ~150 us through the custom op's dispatcher.

    Not differentiable: for evaluations that autograd does not record (``torch.no_grad``, the
    forward solve of ``odeint_adjoint``). The plan keeps contiguous versions of the weights and
    condition it was given: in-place updates of contiguous tensors show at the next call, those
    of non-contiguous ones (copied at construction) do not; rebuild the plan after changing or
    replacing them. One plan serves one solve at a time: on CUDA it owns one workspace buffer,
    so it must not be called from several threads or streams at once (build one per solve, as
    ``ODEDynamics`` does).

    Shapes:
        weights  per layer ``(W, b, G, g, H)`` as for :func:`cnf_dynamics`
        c        [B, C]; noise [B, D] (Hutchinson only)
        call: t (float or one-element tensor), z [B, D] -> ``(dz/dt [B, D], div [B] or None)``
    """

    def __init__(self, weights: Sequence[tuple[torch.Tensor, ...]], c: torch.Tensor, activation: str = "tanh",
                 divergence: str | None = None, noise: torch.Tensor | None = None) -> None:
        if divergence not in DIVERGENCES:
            raise ValueError(f"divergence must be None, 'exact' or 'hutchinson', got {divergence!r}")
        flat = [w.detach() for w in _flatten(weights)]
        if not isinstance(c, torch.Tensor) or c.dim() != 2:
            raise ValueError(f"c must be a torch.Tensor [B, C], got {getattr(c, 'shape', type(c).__name__)}")
        if not flat or flat[0].dim() != 2:
            raise ValueError("weights must start with a layer whose W is a tensor [out, D]")
        z_like = c.new_empty(c.shape[0], flat[0].shape[1]) if c.dtype in _DTYPES else c
        kind = _OP_DIVERGENCE[divergence]
        self.widths = _check_inputs(as_time(0.0, z_like), z_like, c, flat, activation, kind, noise)
        if z_like.device.type == "cuda":
            _native.require_cuda("CnfPlan")
        elif z_like.device.type != "cpu":
            raise ValueError(f"CnfPlan runs on cpu or cuda tensors, got {z_like.device}")
        self.shape, self.dtype, self.device = tuple(z_like.shape), z_like.dtype, z_like.device
        self.divergence = divergence
        self._flat = [w.contiguous() for w in flat]  # kept alive: the pointers below are theirs
        self._c = c.detach().contiguous()
        self._noise = None if noise is None else noise.detach().contiguous()
        self._ptrs = [w.data_ptr() for w in self._flat]
        self._codes = (self.shape[0], self._c.shape[1], _ACT_CODE[activation], _DIV_CODE[kind],
                       self.dtype == torch.float64)
        self._c_ptr = self._c.data_ptr() if self._c.numel() else 0
        self._noise_ptr = 0 if self._noise is None else self._noise.data_ptr()
        self._cuda = self.device.type == "cuda"
        self._work = None
        if self._cuda:
            size = _C.cnf_cuda_workspace(self.shape[0], self.widths, _DIV_CODE[kind])
            self._work = z_like.new_empty(size)

    def _check_state(self, z: object) -> None:
        if not isinstance(z, torch.Tensor) or z.dtype != self.dtype or tuple(z.shape) != self.shape or \
                z.device != self.device:
            got = f"{z.dtype} {list(z.shape)} on {z.device}" if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(f"z must be a {self.dtype} tensor of shape {list(self.shape)} on {self.device} "
                             f"(the plan's), got {got}")

    def __call__(self, t: float | torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        self._check_state(z)
        t = torch.as_tensor(t, dtype=self.dtype, device=self.device)
        if t.numel() != 1:
            raise ValueError(f"t must be a float or a one-element tensor, got shape {list(t.shape)}")
        z = z.contiguous()
        dz = torch.empty_like(z)
        div = z.new_empty(self.shape[0]) if self.divergence is not None else None
        args = (t.data_ptr(), z.data_ptr(), self._c_ptr, self._noise_ptr, self._ptrs, self.widths,
                dz.data_ptr(), 0 if div is None else div.data_ptr())
        if self._cuda:
            with torch.cuda.device(self.device):
                _C.cnf_dynamics_fwd_cuda(*args, self._work.data_ptr() if self._work.numel() else 0,
                                         self._work.numel(), *self._codes, _native.stream_of(z))
        else:
            _C.cnf_dynamics_fwd_cpu(*args, *self._codes, _native.num_threads())
        return dz, div

    def solve(self, z: torch.Tensor, t0: float, t1: float, *, rtol: float, atol: float,
              max_steps: int = 100_000) -> tuple[torch.Tensor, torch.Tensor | None, int]:
        """Integrates ``dz/dt`` (and ``d logdet/dt = div`` when the plan has a divergence) from
        ``t0`` to ``t1`` with torchdiffeq's dopri5, re-implemented natively around the kernel
        (csrc/cnf/cnf_solve_cpu.cpp; CPU plans only): the same steps, tolerances and end-point
        interpolation as ``torchdiffeq.odeint(f, z, [t0, t1], method="dopri5")``, without
        Python or tensor ops per step. ``logdet`` starts at 0.

        Returns ``(z(t1) [B, D], logdet(t1) [B] or None, dynamics evaluations)``. A state that
        becomes non-finite, a step that underflows or more than ``max_steps`` steps raise a
        RuntimeError.
        """
        if self._cuda:
            raise ValueError("CnfPlan.solve runs on the CPU (use torchdiffeq with the plan on CUDA)")
        self._check_state(z)
        for name, v in (("t0", t0), ("t1", t1)):
            if not isinstance(v, (int, float)) or v != v or v in (float("inf"), float("-inf")):
                raise ValueError(f"{name} must be a finite number, got {v!r}")
        if t0 == t1:
            raise ValueError(f"t0 and t1 must differ, got {t0!r} twice")
        for name, v in (("rtol", rtol), ("atol", atol)):
            if not isinstance(v, (int, float)) or not v > 0 or v == float("inf"):
                raise ValueError(f"{name} must be a positive finite number, got {v!r}")
        if not isinstance(max_steps, int) or max_steps < 1:
            raise ValueError(f"max_steps must be an int >= 1, got {max_steps!r}")
        B = self.shape[0]
        state = torch.empty(z.numel() + (B if self.divergence is not None else 0), dtype=self.dtype)
        state[: z.numel()] = z.reshape(-1)
        state[z.numel():] = 0
        nfe = _C.cnf_solve_dopri5_cpu(state.data_ptr(), self._c_ptr, self._noise_ptr, self._ptrs, self.widths,
                                      *self._codes, float(t0), float(t1), float(rtol), float(atol), max_steps,
                                      _native.num_threads())
        logdet = state[z.numel():] if self.divergence is not None else None
        return state[: z.numel()].view(self.shape), logdet, int(nfe)

    def adjoint_solve(self, z1: torch.Tensor, logdet1: torch.Tensor | None, g_z1: torch.Tensor,
                      g_logdet1: torch.Tensor | None, t0: float, t1: float, params: Sequence[int], *, rtol: float,
                      atol: float, max_steps: int = 100_000) -> tuple[torch.Tensor, list[torch.Tensor], int]:
        """The backward pass of ``torchdiffeq.odeint_adjoint(f, (z, logdet), [t0, t1],
        method="dopri5", adjoint_params=...)`` natively (csrc/cnf/cnf_solve_cpu.cpp, CPU plans):
        the augmented state ``(a_t, y, a_y, a_params)`` integrated from ``t1`` back to ``t0`` with
        :func:`cnf_dynamics_vjp`'s kernel at every stage, torchdiffeq's dopri5 step for step
        (same accepted and rejected steps; its default adjoint norm and tolerances ``rtol``,
        ``atol``). ``z1``, ``logdet1``: the forward solve's state at ``t1``; ``g_*1``: the loss's
        gradients there; ``params``: the adjoint parameters in torchdiffeq's order, each the index
        of a weight in the flat ``(W, b, G, g, H)``-per-layer list or ``-1`` for the condition.

        Returns ``(g_z0 [B, D], [gradient of each of params], dynamics evaluations)``. Same
        failures as :meth:`solve`.
        """
        if self._cuda:
            raise ValueError("CnfPlan.adjoint_solve runs on the CPU (use torchdiffeq's odeint_adjoint on CUDA)")
        self._check_state(z1)
        self._check_state(g_z1)
        B = self.shape[0]
        div = self.divergence is not None
        for name, v in (("logdet1", logdet1), ("g_logdet1", g_logdet1)):
            if div:
                check_tensor(name, v, "[B]", dtype=self.dtype, shape=(B,), device=self.device)
            elif v is not None:
                raise ValueError(f"{name} must be None for a plan without a divergence")
        flat_n = len(self._flat)
        idx = [int(q) for q in params]
        if len(set(idx)) != len(idx) or any(q < -1 or q >= flat_n for q in idx) or (-1 in idx and not self._c.numel()):
            raise ValueError(f"params must be distinct weight indices in [0, {flat_n}) or -1 (the condition, C > 0), "
                             f"got {idx}")
        sizes = [self._c.numel() if q < 0 else self._flat[q].numel() for q in idx]
        ny = z1.numel() + (B if div else 0)
        # (NumPy's zeros: a torch fill this size runs an OpenMP region, whose idle workers then spin
        # for milliseconds on the cores the solve's threads need)
        state = torch.from_numpy(np.zeros(1 + 2 * ny + sum(sizes), dtype=_NP_DTYPE[self.dtype]))
        state[1:1 + z1.numel()] = z1.detach().reshape(-1)
        state[1 + ny:1 + ny + z1.numel()] = g_z1.detach().reshape(-1)
        if div:
            state[1 + z1.numel():1 + ny] = logdet1.detach()
            state[1 + ny + z1.numel():1 + 2 * ny] = g_logdet1.detach()
        nfe = _C.cnf_adjoint_solve_dopri5_cpu(state.data_ptr(), self._c_ptr, self._noise_ptr, self._ptrs, self.widths,
                                              idx, *self._codes, float(t1), float(t0), float(rtol), float(atol),
                                              int(max_steps), _native.num_threads())
        g_z0 = state[1 + ny:1 + ny + z1.numel()].view(self.shape)
        out, off = [], 1 + 2 * ny
        for q, n in zip(idx, sizes):
            shape = self._c.shape if q < 0 else self._flat[q].shape
            out.append(state[off:off + n].view(shape))
            off += n
        return g_z0, out, int(nfe)
