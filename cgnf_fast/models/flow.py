"""The conditional continuous normalizing flow (CCNF) over G-VAE latents, FFJORD style.

A CNF moves a latent ``z`` along the ODE ``dz/dt = f(t, z, c)`` from *data* at ``t = 0`` to
*noise* at ``t = T`` (FFJORD's convention). ``f`` is an MLP of :class:`ConcatSquashLinear`
layers that read the time and the condition vector ``c`` (predicted attributes: ZC proxies,
log-params, log-FLOPs). Densities follow the instantaneous change of variables
``d log p(z(t)) / dt = -tr(df/dz)``, so

    log p(z | c) = log N(z(T); 0, I) + integral_0^T tr(df/dz)(t, z(t), c) dt.

Sign convention used throughout: every map here returns ``logdet = log |det d out / d in|`` of
the map it applied. For the CNF that is the integral of the divergence along the solve, in the
direction of the solve: ``+integral_0^T div dt`` from data to noise (:meth:`ConditionalCNF.transform`
with ``reverse=False``), ``-integral_0^T div dt`` from noise to data (``reverse=True``). Hence
``log_prob(z) = log N(noise) + logdet_forward`` and, for a sample ``z`` drawn from noise ``e``,
``log_prob(z) = log N(e) - logdet_reverse``.

Divergence ``tr(df/dz)``: ``"exact"`` propagates the Jacobian through the MLP in forward mode
(``J_k = diag(act'(pre_k) * gate_k) W_k J_{k-1}``, ``J_0 = I``; the trace of the last layer is
read without forming its matrix), one batched pass of ``[B, H, D]`` tangents, no autograd, so it
runs under ``torch.no_grad`` and stays differentiable for training (latent sizes up to 64 are
cheap this way). ``"hutchinson"`` propagates one noise vector ``e`` the same way and returns
``e^T J e``, an unbiased estimate; the noise is drawn once per solve (Rademacher or Gaussian)
and kept fixed for every evaluation of that solve, including the adjoint's backward pass.

Backends: ``backend="native"`` (the default) runs the fused kernels of ``cgnf_fast.ops.cnf``
(the whole MLP and its divergence in one kernel, CPU or CUDA). On the CPU a dopri5 solve runs
whole in native code: under ``torch.no_grad`` by ``CnfPlan.solve``, and training with the adjoint
by ``cgnf_fast.ops.cnf_adjoint.NativeAdjoint`` (``CnfPlan.solve`` forward, ``CnfPlan.adjoint_solve``
backward: torchdiffeq's dopri5 and ``odeint_adjoint`` step for step, each backward stage one
fused kernel for the dynamics and their vector-Jacobian products). float64 results equal
torchdiffeq's to ~1e-14; a native solve gives up with a RuntimeError after 100,000 steps. Other
solvers, training without the adjoint and CUDA go through torchdiffeq: its unrecorded evaluations
run the kernel, the recorded ones (and single evaluations) the op, whose backward is the fused
vector-Jacobian kernel (CPU, CUDA). Sizes outside the kernel's limits (widths > 512, the exact divergence for latents > 64)
fall back to the reference; ``backend="torch"`` always runs it (same function to rounding).

Adjoint: with ``adjoint=True`` the solve uses ``torchdiffeq.odeint_adjoint``; the ODE function
is an ``nn.Module`` holding the dynamics (so the adjoint sees its parameters) and the condition,
which is passed to the adjoint as an extra parameter when it requires grad, so gradients reach
``c`` as well as the weights.

Optional moving batch-norm (FFJORD's ``MovingBatchNorm1d``, ``moving_batchnorm=True``): the flow
becomes ``bn_in -> CNF -> bn_out`` from data to noise. In training mode the forward direction
normalises with batch statistics and updates the running ones; in eval mode, and in the reverse
direction always, it uses the running statistics (as FFJORD), so ``sample`` inverts ``log_prob``.

Shapes:
    z [B, D] (D = ``latent``), c [B, C] (C = ``cond_dim``, may be 0), log-densities [B],
    one flow dtype (float32 or float64) and device for all of them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .._checks import check_choice, check_int, check_positive, check_tensor
from ..ops import cnf as cnf_ops
from ..ops.cnf_adjoint import NativeAdjoint
from ..reference import cnf as cnf_reference

__all__ = [
    "ACTIVATIONS",
    "BACKENDS",
    "DIVERGENCES",
    "FIXED_STEP_SOLVERS",
    "HUTCHINSON_NOISES",
    "SOLVERS",
    "ConcatSquashLinear",
    "ConditionalCNF",
    "FlowSolveError",
    "MovingBatchNorm1d",
    "ODEDynamics",
    "standard_normal_log_prob",
]

#: Nonlinearities between ConcatSquash layers (none after the last one).
ACTIVATIONS = cnf_ops.ACTIVATIONS
#: Implementations of the dynamics: the fused native kernel (csrc/cnf) or stock PyTorch ops.
BACKENDS = cnf_ops.BACKENDS
#: Ways to compute ``tr(df/dz)``.
DIVERGENCES = ("exact", "hutchinson")
#: Noise distributions for the Hutchinson estimator.
HUTCHINSON_NOISES = ("rademacher", "gaussian")
#: torchdiffeq solvers the flow accepts (all of torchdiffeq >= 0.2.3 except ``scipy_solver``).
SOLVERS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun", "euler", "midpoint", "rk4",
           "explicit_adams", "implicit_adams")
#: The fixed-grid solvers of :data:`SOLVERS`: they need ``step_size``.
FIXED_STEP_SOLVERS = ("euler", "midpoint", "rk4", "explicit_adams", "implicit_adams")

_LOG_2PI = math.log(2.0 * math.pi)
_DTYPES = (torch.float32, torch.float64)


# -- argument checks ------------------------------------------------------------------------
def _check_hidden(hidden: object) -> tuple[int, ...]:
    if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence) or not all(
            isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in hidden):
        raise ValueError(f"hidden must be a sequence of ints >= 1 (widths of the hidden layers), got {hidden!r}")
    return tuple(int(h) for h in hidden)


def _check_tensor(name: str, x: object, shape_doc: str, dim1: int, dtype: torch.dtype, device: torch.device,
                  batch: int | None = None, finite: bool = True) -> torch.Tensor:
    """``x`` must be a ``[B, dim1]`` tensor of the flow's dtype and device (and ``B == batch``)."""
    return check_tensor(name, x, shape_doc, dtype=dtype, shape=(batch, dim1), device=device,
                        dtype_note="the flow's parameter dtype", device_of="the flow's parameters are", finite=finite)


def _check_generator(generator: object, device: torch.device) -> torch.Generator | None:
    if generator is None:
        return None
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    if generator.device.type != device.type:
        raise ValueError(f"generator is a {generator.device.type} generator but the flow is on {device}")
    return generator


def standard_normal_log_prob(e: torch.Tensor) -> torch.Tensor:
    """``log N(e; 0, I)`` per row.

    Shapes:
        e [B, D] -> [B]
    """
    return -0.5 * (e * e).sum(-1) - 0.5 * e.shape[-1] * _LOG_2PI


# -- layers ---------------------------------------------------------------------------------
class ConcatSquashLinear(nn.Module):
    """FFJORD's ConcatSquash layer with a context vector instead of the time alone.

    ``out = (W x + b) * sigmoid(G ctx + g) + H ctx`` where ``ctx = [t, c]`` (time first, then
    the condition). ``W, b`` is :attr:`layer`; ``G, g`` is :attr:`hyper_gate`; ``H`` (no bias:
    ``b`` already shifts the output) is :attr:`hyper_bias`. The gate rescales each output unit
    by a factor in (0, 1) that depends on time and condition; ``H ctx`` shifts it.

    Shapes:
        x [B, dim_in], ctx [B, dim_ctx] -> [B, dim_out]
    """

    def __init__(self, dim_in: int, dim_out: int, dim_ctx: int) -> None:
        super().__init__()
        dim_in = check_int("dim_in", dim_in, 1)
        dim_out = check_int("dim_out", dim_out, 1)
        dim_ctx = check_int("dim_ctx", dim_ctx, 1)
        self.layer = nn.Linear(dim_in, dim_out)
        self.hyper_gate = nn.Linear(dim_ctx, dim_out)
        self.hyper_bias = nn.Linear(dim_ctx, dim_out, bias=False)

    def forward_with_gate(self, x: torch.Tensor, ctx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(out [B, dim_out], gate [B, dim_out])``; ``d out / d x = diag(gate) W``."""
        gate = torch.sigmoid(self.hyper_gate(ctx))  # [B, dim_out]
        return self.layer(x) * gate + self.hyper_bias(ctx), gate

    def forward(self, x: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        return self.forward_with_gate(x, ctx)[0]


class ODEDynamics(nn.Module):
    """``dz/dt = f(t, z, c)``: ConcatSquash layers ``latent -> *hidden -> latent``, each fed
    with ``ctx = [t, c]``, an activation between layers and none after the last.

    ``zero_init=True`` zeroes the last layer (``W``, ``b`` and ``H``), so ``f == 0`` and the flow
    starts as the identity (gradients still reach every weight). ``backend``: ``"native"`` or
    ``"torch"`` (see the module docstring).

    Shapes:
        t scalar (float or 0-d / one-element tensor), z [B, latent], c [B, cond_dim]
        -> dz/dt [B, latent] (and divergence [B]).
    """

    def __init__(self, latent: int, cond_dim: int, hidden: Sequence[int] = (256, 256), activation: str = "tanh",
                 zero_init: bool = False, backend: str = "native") -> None:
        super().__init__()
        self.latent = check_int("latent", latent, 1)
        self.cond_dim = check_int("cond_dim", cond_dim, 0)
        self.hidden = _check_hidden(hidden)
        self.activation = check_choice("activation", activation, ACTIVATIONS)
        self.backend = check_choice("backend", backend, BACKENDS)
        dims = (self.latent, *self.hidden, self.latent)
        self.layers = nn.ModuleList(
            ConcatSquashLinear(dims[i], dims[i + 1], 1 + self.cond_dim) for i in range(len(dims) - 1))
        if zero_init:
            last = self.layers[-1]
            with torch.no_grad():
                last.layer.weight.zero_()
                last.layer.bias.zero_()
                last.hyper_bias.weight.zero_()

    def extra_repr(self) -> str:
        return (f"latent={self.latent}, cond_dim={self.cond_dim}, hidden={self.hidden}, activation={self.activation!r}, "
                f"backend={self.backend!r}")

    # public, validated entry points ------------------------------------------------------
    def forward(self, t: float | torch.Tensor, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """``dz/dt`` [B, latent]."""
        self._check(z, c, None)
        return self._eval(t, z, c, None, None)[0]

    def forward_with_divergence(self, t: float | torch.Tensor, z: torch.Tensor, c: torch.Tensor,
                                divergence: str = "exact",
                                noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(dz/dt [B, latent], div [B])`` with ``div = tr(df/dz)`` (``"exact"``) or its
        Hutchinson estimate ``noise^T (df/dz) noise`` (``"hutchinson"``; ``noise [B, latent]``
        is required: zero-mean, identity-covariance probes such as Rademacher or Gaussian)."""
        check_choice("divergence", divergence, DIVERGENCES)
        if divergence == "hutchinson" and noise is None:
            raise ValueError("noise [B, latent] is required when divergence='hutchinson', got None")
        if divergence == "exact" and noise is not None:
            raise ValueError("noise must be None when divergence='exact' (the trace is computed exactly)")
        self._check(z, c, noise)
        return self._eval(t, z, c, divergence, noise)  # type: ignore[return-value]

    def _check(self, z: torch.Tensor, c: torch.Tensor, noise: torch.Tensor | None) -> None:
        p = self.layers[0].layer.weight
        _check_tensor("z", z, "[B, latent]", self.latent, p.dtype, p.device, finite=False)
        _check_tensor("c", c, "[B, cond_dim]", self.cond_dim, p.dtype, p.device, batch=z.shape[0], finite=False)
        if noise is not None:
            _check_tensor("noise", noise, "[B, latent]", self.latent, p.dtype, p.device, batch=z.shape[0],
                          finite=False)

    # the computation (no checks; solves evaluate through _ODEFunc) -------------------------
    def weights(self) -> list[tuple[torch.Tensor, ...]]:
        """Per layer ``(W [out, in], b [out], G [out, 1 + C], g [out], H [out, 1 + C])``: the
        weights in the layout of ``cgnf_fast.ops.cnf`` / ``cgnf_fast.reference.cnf``."""
        return [(lay.layer.weight, lay.layer.bias, lay.hyper_gate.weight, lay.hyper_gate.bias,
                 lay.hyper_bias.weight) for lay in self.layers]

    def native_applies(self, divergence: str | None, device: torch.device) -> bool:
        """Whether ``backend="native"`` runs the kernel for this divergence on ``device`` (sizes
        within its limits, a device it serves); evaluations recorded by autograd aside."""
        return self.backend == "native" and cnf_ops.native_supports(self.latent, self.hidden, divergence, device,
                                                                    self.layers[0].layer.weight.dtype)

    def _eval(self, t: float | torch.Tensor, z: torch.Tensor, c: torch.Tensor, divergence: str | None,
              noise: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One evaluation, by the backend: the native op (differentiable, its backward runs the
        reference) or the reference. Solves go through :class:`_ODEFunc` instead."""
        ws = self.weights()
        if self.native_applies(divergence, z.device):
            return cnf_ops.cnf_dynamics(t, z, c, ws, self.activation, divergence, noise)
        return cnf_reference.cnf_dynamics(t, z, c, ws, self.activation, divergence, noise)


class MovingBatchNorm1d(nn.Module):
    """FFJORD's moving batch-norm as an invertible map with its log-determinant.

    Data -> noise direction: ``y = (x - m) / sqrt(v + eps) * exp(weight) + bias`` with
    ``(m, v)`` the batch mean and biased variance in training mode (the running statistics are
    then updated: ``r <- (1 - decay) r + decay * batch``) and the running statistics in eval
    mode; ``logdet = sum(weight - 0.5 log(v + eps))``, the same for every row. The reverse
    direction always uses the running statistics. ``weight`` is a log-scale (0 at init).

    Shapes:
        x [B, dim] -> (y [B, dim], logdet [B])
    """

    def __init__(self, dim: int, eps: float = 1e-4, decay: float = 0.1) -> None:
        super().__init__()
        self.dim = check_int("dim", dim, 1)
        self.eps = check_positive("eps", eps)
        self.decay = check_positive("decay", decay)
        if self.decay > 1:
            raise ValueError(f"decay must be in (0, 1], got {decay!r}")
        self.weight = nn.Parameter(torch.zeros(self.dim))
        self.bias = nn.Parameter(torch.zeros(self.dim))
        self.register_buffer("running_mean", torch.zeros(self.dim))
        self.register_buffer("running_var", torch.ones(self.dim))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, eps={self.eps}, decay={self.decay}"

    def transform(self, x: torch.Tensor, reverse: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        if not reverse and self.training:
            mean = x.mean(0)  # [dim]
            var = ((x - mean) ** 2).mean(0)  # [dim], biased
            with torch.no_grad():
                self.running_mean.lerp_(mean.detach(), self.decay)
                self.running_var.lerp_(var.detach(), self.decay)
        else:
            mean, var = self.running_mean, self.running_var
        log_scale = self.weight - 0.5 * torch.log(var + self.eps)  # [dim]
        logdet = log_scale.sum().expand(x.shape[0])  # [B]
        if reverse:
            return (x - self.bias) * torch.exp(-log_scale) + mean, -logdet
        return (x - mean) * torch.exp(log_scale) + self.bias, logdet

    def forward(self, x: torch.Tensor, reverse: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(x, reverse)


class _ODEFunc(nn.Module):
    """What torchdiffeq integrates for one solve: the dynamics with this solve's condition
    and Hutchinson noise bound. State: ``z [B, D]`` alone (``divergence=None``) or the tuple
    ``(z [B, D], logdet [B])`` with ``d logdet / dt = div``. Kept alive by the adjoint's graph,
    so the backward pass sees the same condition and noise."""

    def __init__(self, dynamics: ODEDynamics, c: torch.Tensor, divergence: str | None,
                 noise: torch.Tensor | None) -> None:
        super().__init__()
        self.dynamics = dynamics
        self.c = c  # [B, C]
        self.divergence = divergence
        self.noise = noise  # [B, D] or None
        self.nfe = 0
        # The native backend's weights and condition, validated once for the whole solve; used
        # for the evaluations autograd does not record (the others run the reference).
        self._plan: cnf_ops.CnfPlan | None = None
        self._weights_need_grad = False
        if c.shape[0] > 0 and dynamics.native_applies(divergence, c.device):
            ws = dynamics.weights()
            self._plan = cnf_ops.CnfPlan(ws, c, dynamics.activation, divergence, noise)
            self._weights_need_grad = c.requires_grad or (noise is not None and noise.requires_grad) or any(
                w.requires_grad for lw in ws for w in lw)

    def _native(self, z: torch.Tensor, t: torch.Tensor | float | None = None) -> bool:
        """The native plan can evaluate at (t, z): there is one, and autograd records nothing."""
        if self._plan is None:
            return False
        if not torch.is_grad_enabled():
            return True
        return not (self._weights_need_grad or z.requires_grad or (isinstance(t, torch.Tensor) and t.requires_grad))

    def native_adjoint_applies(self, z: torch.Tensor) -> bool:
        """A recorded solve can run as :class:`cgnf_fast.ops.cnf_adjoint.NativeAdjoint` (both passes natively): a CPU
        plan, autograd recording, and no gradient wanted for the Hutchinson noise."""
        return (self._plan is not None and self._plan.device.type == "cpu" and torch.is_grad_enabled()
                and not (self.noise is not None and self.noise.requires_grad))

    def native_solve_applies(self, z: torch.Tensor) -> bool:
        """A whole solve can run natively (``CnfPlan.solve``): a CPU plan, and nothing for
        autograd to record."""
        return self._native(z) and self._plan.device.type == "cpu"  # type: ignore[union-attr]

    def forward(self, t: torch.Tensor, state: torch.Tensor | tuple[torch.Tensor, torch.Tensor]):
        self.nfe += 1
        z = state if self.divergence is None else state[0]
        if self._native(z, t):
            dz, div = self._plan(t, z)  # type: ignore[misc]
        else:  # recorded by autograd: the op where the kernels apply (its backward is native), else the reference
            ev = cnf_ops.cnf_dynamics if self._plan is not None else cnf_reference.cnf_dynamics
            dz, div = ev(t, z, self.c, self.dynamics.weights(), self.dynamics.activation, self.divergence, self.noise)
        return dz if self.divergence is None else (dz, div)


class ConditionalCNF(nn.Module):
    """The conditional CNF: log-density of latents given a condition, and sampling.

    Args:
        latent: D, the latent size (the G-VAE's, 32 by default there).
        cond_dim: C, the condition size (0 for an unconditional flow).
        hidden, activation, zero_init: the dynamics MLP (:class:`ODEDynamics`).
        divergence: ``"exact"`` or ``"hutchinson"`` (default of :meth:`log_prob`).
        hutchinson_noise: ``"rademacher"`` or ``"gaussian"``.
        T: integration time (data at 0, noise at T).
        solver, rtol, atol: torchdiffeq method and tolerances (``rtol``/``atol`` also for the
            adjoint solve). ``step_size`` is required by the fixed-grid solvers
            (:data:`FIXED_STEP_SOLVERS`) and refused by the adaptive ones.
        adjoint: backpropagate with ``odeint_adjoint`` (memory O(1) in the number of steps)
            instead of through the solver's operations.
        moving_batchnorm: wrap the CNF as ``bn_in -> CNF -> bn_out`` (:class:`MovingBatchNorm1d`).
        backend: ``"native"`` (the fused kernel where it applies, see the module docstring) or
            ``"torch"``; configs saved before this argument existed load with the default.

    :meth:`forward` is :meth:`log_prob` (so ``loss = -flow(z, c).mean()``).

    Shapes:
        z [B, D], c [B, C], noise [B, D] -> log_prob [B], sample [B, D]; the flow's dtype and
        device (that of its parameters) for every tensor. ``B = 0`` is allowed.
    """

    def __init__(self, latent: int, cond_dim: int, *, hidden: Sequence[int] = (256, 256), activation: str = "tanh",
                 divergence: str = "exact", hutchinson_noise: str = "rademacher", T: float = 1.0,
                 solver: str = "dopri5", rtol: float = 1e-5, atol: float = 1e-5, step_size: float | None = None,
                 adjoint: bool = True, moving_batchnorm: bool = False, zero_init: bool = False,
                 backend: str = "native") -> None:
        super().__init__()
        self.divergence = check_choice("divergence", divergence, DIVERGENCES)
        self.hutchinson_noise = check_choice("hutchinson_noise", hutchinson_noise, HUTCHINSON_NOISES)
        self.T = check_positive("T", T)
        self.solver = check_choice("solver", solver, SOLVERS)
        self.rtol = check_positive("rtol", rtol)
        self.atol = check_positive("atol", atol)
        if self.solver in FIXED_STEP_SOLVERS:
            if step_size is None:
                raise ValueError(f"step_size is required for the fixed-grid solver {solver!r}, got None")
            self.step_size: float | None = check_positive("step_size", step_size)
        elif step_size is not None:
            raise ValueError(f"step_size must be None for the adaptive solver {solver!r} (it picks its own steps; "
                             f"use rtol/atol), got {step_size!r}")
        else:
            self.step_size = None
        for name, flag in (("adjoint", adjoint), ("moving_batchnorm", moving_batchnorm), ("zero_init", zero_init)):
            if not isinstance(flag, bool):
                raise ValueError(f"{name} must be a bool, got {flag!r}")
        self.adjoint = adjoint
        self.moving_batchnorm = moving_batchnorm
        self._zero_init = zero_init
        self.dynamics = ODEDynamics(latent, cond_dim, hidden, activation, zero_init=zero_init, backend=backend)
        self.latent, self.cond_dim = self.dynamics.latent, self.dynamics.cond_dim
        if moving_batchnorm:
            self.bn_in: MovingBatchNorm1d | None = MovingBatchNorm1d(self.latent)
            self.bn_out: MovingBatchNorm1d | None = MovingBatchNorm1d(self.latent)
        else:
            self.bn_in = self.bn_out = None
        #: Dynamics evaluations of the last forward solve (0 before any, and for an empty batch).
        self.nfe = 0

    def config(self) -> dict[str, Any]:
        """Constructor arguments: ``ConditionalCNF(**flow.config())`` rebuilds the architecture."""
        d = self.dynamics
        return dict(latent=d.latent, cond_dim=d.cond_dim, hidden=list(d.hidden), activation=d.activation,
                    divergence=self.divergence, hutchinson_noise=self.hutchinson_noise, T=self.T,
                    solver=self.solver, rtol=self.rtol, atol=self.atol, step_size=self.step_size,
                    adjoint=self.adjoint, moving_batchnorm=self.moving_batchnorm, zero_init=self._zero_init,
                    backend=d.backend)

    def extra_repr(self) -> str:
        return (f"divergence={self.divergence!r}, T={self.T}, solver={self.solver!r}, rtol={self.rtol}, "
                f"atol={self.atol}, adjoint={self.adjoint}, backend={self.dynamics.backend!r}")

    @property
    def _param(self) -> torch.Tensor:
        return self.dynamics.layers[0].layer.weight

    @property
    def device(self) -> torch.device:
        """Where the flow's parameters are (inputs must be there too)."""
        return self._param.device

    @property
    def dtype(self) -> torch.dtype:
        """The flow's parameter dtype (inputs must have it too)."""
        return self._param.dtype

    # solving ---------------------------------------------------------------------------------
    def _hutchinson_noise(self, shape: tuple[int, int], like: torch.Tensor,
                          generator: torch.Generator | None) -> torch.Tensor:
        if self.hutchinson_noise == "gaussian":
            return torch.randn(shape, generator=generator, dtype=like.dtype, device=like.device)
        bits = torch.randint(0, 2, shape, generator=generator, device=like.device)
        return bits.to(like.dtype) * 2 - 1

    def _solve(self, z: torch.Tensor, c: torch.Tensor, t0: float, t1: float, divergence: str | None,
               generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Integrates ``z [B, D]`` from ``t0`` to ``t1``; returns ``(z(t1), integral of div or None)``."""
        noise = self._hutchinson_noise(tuple(z.shape), z, generator) if divergence == "hutchinson" else None
        func = _ODEFunc(self.dynamics, c, divergence, noise)
        if self.solver == "dopri5" and func.native_solve_applies(z):
            # The whole solve natively (CnfPlan.solve: torchdiffeq's dopri5, step for step).
            try:
                out_z, out_ld, self.nfe = func._plan.solve(z, t0, t1, rtol=self.rtol,  # type: ignore[union-attr]
                                                           atol=self.atol)
            except RuntimeError as e:
                raise _solve_error(e) from None
            return out_z, out_ld
        if self.solver == "dopri5" and self.adjoint and func.native_adjoint_applies(z):
            try:
                out_z, out_ld = NativeAdjoint.apply(func, (t0, t1, self.rtol, self.atol), z, c,
                                                    *(p for p in self.dynamics.parameters() if p.requires_grad))
            except RuntimeError as e:
                raise _solve_error(e) from None
            self.nfe = func.nfe
            return out_z, (out_ld if divergence is not None else None)
        from torchdiffeq import odeint, odeint_adjoint  # (imports SciPy: ~1 s, so only when needed)

        t = torch.tensor([t0, t1], dtype=z.dtype, device=z.device)
        state: torch.Tensor | tuple[torch.Tensor, torch.Tensor]
        state = z if divergence is None else (z, z.new_zeros(z.shape[0]))
        kw: dict[str, Any] = dict(rtol=self.rtol, atol=self.atol, method=self.solver)
        if self.step_size is not None:
            kw["options"] = dict(step_size=self.step_size)
        try:
            if self.adjoint:
                params = tuple(p for p in self.dynamics.parameters() if p.requires_grad)
                params += (c,) if c.requires_grad else ()
                out = odeint_adjoint(func, state, t, adjoint_params=params, **kw)
            else:
                out = odeint(func, state, t, **kw)
        except (RuntimeError, AssertionError) as e:  # torchdiffeq asserts "underflow in dt"
            raise _solve_error(e) from None
        self.nfe = func.nfe
        if divergence is None:
            return out[-1], None
        return out[0][-1], out[1][-1]

    # public API --------------------------------------------------------------------------
    def _check_inputs(self, z: torch.Tensor, c: torch.Tensor, divergence: str | None,
                      generator: torch.Generator | None, z_name: str = "z", batch: int | None = None) -> str:
        p = self._param
        _check_tensor(z_name, z, "[B, latent]", self.latent, p.dtype, p.device, batch=batch)
        _check_tensor("c", c, "[B, cond_dim]", self.cond_dim, p.dtype, p.device, batch=z.shape[0])
        _check_generator(generator, p.device)
        return self.divergence if divergence is None else check_choice("divergence", divergence, DIVERGENCES)

    def transform(self, z: torch.Tensor, c: torch.Tensor, *, reverse: bool = False, divergence: str | None = None,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Runs the flow: data -> noise (``reverse=False``) or noise -> data (``reverse=True``).

        Returns ``(out, logdet)`` with ``logdet = log |det d out / d z|`` of the map applied
        (see the module docstring for the sign convention). ``divergence`` overrides the flow's
        default; ``generator`` draws the Hutchinson noise.

        Shapes:
            z [B, D], c [B, C] -> out [B, D], logdet [B]
        """
        div = self._check_inputs(z, c, divergence, generator, "noise" if reverse else "z")
        return self._transform(z, c, reverse, div, generator)  # type: ignore[return-value]

    def _transform(self, z: torch.Tensor, c: torch.Tensor, reverse: bool, divergence: str | None,
                   generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        if z.shape[0] == 0:
            self.nfe = 0
            return z.clone(), (z.new_zeros(0) if divergence is not None else None)
        first, last = (self.bn_out, self.bn_in) if reverse else (self.bn_in, self.bn_out)
        logdet = z.new_zeros(z.shape[0])  # [B]
        if first is not None:
            z, ld = first.transform(z, reverse)
            logdet = logdet + ld
        t0, t1 = (self.T, 0.0) if reverse else (0.0, self.T)
        z, ld_cnf = self._solve(z, c, t0, t1, divergence, generator)
        if ld_cnf is not None:
            logdet = logdet + ld_cnf
        if last is not None:
            z, ld = last.transform(z, reverse)
            logdet = logdet + ld
        return z, (logdet if divergence is not None else None)

    def log_prob(self, z: torch.Tensor, c: torch.Tensor, *, divergence: str | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """``log p(z | c)``: ``log N(noise) + logdet`` of the data -> noise map.

        Exact with ``divergence="exact"`` (up to the solver tolerance); an unbiased estimate
        with ``"hutchinson"`` (noise from ``generator``, fixed for the whole solve).

        Shapes:
            z [B, D], c [B, C] -> [B]
        """
        div = self._check_inputs(z, c, divergence, generator)
        e, logdet = self._transform(z, c, False, div, generator)
        return standard_normal_log_prob(e) + logdet

    def forward(self, z: torch.Tensor, c: torch.Tensor, *, divergence: str | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """Same as :meth:`log_prob`."""
        return self.log_prob(z, c, divergence=divergence, generator=generator)

    def sample(self, c: torch.Tensor, *, noise: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Latents for the conditions ``c``: ``noise`` (default: standard normal drawn from
        ``generator``) integrated from ``t = T`` back to ``t = 0``; no divergence is computed.
        Pass either ``noise`` or ``generator``, not both.

        Shapes:
            c [B, C], noise [B, D] -> z [B, D]
        """
        p = self._param
        if not isinstance(c, torch.Tensor):
            raise ValueError(f"c must be a torch.Tensor [B, cond_dim] {p.dtype}, got {type(c).__name__}")
        if c.dim() != 2:
            raise ValueError(f"c must have shape [B, cond_dim] = [B, {self.cond_dim}], got {list(c.shape)}")
        if noise is not None and generator is not None:
            raise ValueError("pass either noise or generator to sample(), not both (the generator only draws noise)")
        if noise is None:
            gen = _check_generator(generator, p.device)
            noise = torch.randn((c.shape[0], self.latent), generator=gen, dtype=p.dtype, device=p.device)
        self._check_inputs(noise, c, None, None, "noise", batch=c.shape[0])
        return self._transform(noise, c, True, None, None)[0]


class FlowSolveError(ValueError):
    """The flow's ODE solve could not finish: its dynamics are not finite (damaged weights) or
    the condition lies so far outside the training data that the step size underflows."""


def _solve_error(e: BaseException) -> BaseException:
    """A solver's failure as :class:`FlowSolveError` when the dynamics broke it (step size underflow,
    non-finite state, too many steps), else ``e`` unchanged."""
    text = str(e)
    if not any(k in text for k in ("underflow", "non-finite", "steps (the dynamics")):
        return e
    return FlowSolveError(f"the flow's ODE solve failed ({text.strip()}): its dynamics are not finite (damaged "
                          f"weights) or the condition lies far outside the values the model was trained on")


def set_mode(flow: ConditionalCNF, training: bool) -> None:
    """``flow.train(training)``, except that with ``moving_batchnorm`` its batch-norm layers stay in
    eval mode: there they are a fixed standardisation + a learned affine (module doc)."""
    flow.train(training)
    # latent_norm="data": the batch-norm layers are a fixed standardisation + learned affine (module doc)
    for bn in (flow.bn_in, flow.bn_out):
        if bn is not None:
            bn.eval()
