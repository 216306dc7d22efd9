"""The flow's adjoint training solve with both passes native (CPU).

:class:`NativeAdjoint` stands in for ``torchdiffeq.odeint_adjoint`` in
``cgnf_fast.models.flow.ConditionalCNF`` when the solver is dopri5 and the dynamics run on the
CPU kernels: its forward is :meth:`cgnf_fast.ops.cnf.CnfPlan.solve` and its backward
:meth:`cgnf_fast.ops.cnf.CnfPlan.adjoint_solve` (csrc/cnf/cnf_solve_cpu.cpp around
csrc/cnf/cnf_adjoint_cpu.cpp), so a training step runs no Python per evaluation. Reference:
torchdiffeq's ``odeint_adjoint`` with ``cgnf_fast.reference.cnf`` (python_tests/test_cnf_adjoint.py:
same evaluations, gradients equal to 1e-10 in float64).
"""

from __future__ import annotations

import torch


class NativeAdjoint(torch.autograd.Function):
    """``torchdiffeq.odeint_adjoint(func, (z, 0), [t0, t1], method="dopri5", adjoint_params=...)``
    with both solves native: the forward by :meth:`CnfPlan.solve`, the backward by
    :meth:`CnfPlan.adjoint_solve` (torchdiffeq's augmented dynamics and default adjoint norm,
    dopri5 step for step, each stage one fused kernel). ``func``: the flow's ODE function
    (``cgnf_fast.models.flow._ODEFunc``: its CPU ``_plan``, ``dynamics``, ``divergence``, ``nfe``);
    ``times``: ``(t0, t1, rtol, atol)``. The adjoint parameters ``params`` are the dynamics'
    parameters that require grad, and ``c`` gets a gradient when it requires grad, as
    ``ConditionalCNF._solve`` passes them to torchdiffeq. Returns ``(z(t1) [B, D], logdet(t1)
    [B] or an empty tensor)``; ``func.nfe`` counts the forward solve's evaluations,
    ``func.nfe_adjoint`` the backward's."""

    @staticmethod
    def forward(ctx, func, times: tuple, z: torch.Tensor, c: torch.Tensor, *params: torch.Tensor):
        t0, t1, rtol, atol = times
        plan = func._plan
        z1, ld1, nfe = plan.solve(z.detach(), t0, t1, rtol=rtol, atol=atol)
        func.nfe += nfe
        ctx.func, ctx.times = func, times
        flat = [w for lw in func.dynamics.weights() for w in lw]
        ctx.index = [next(i for i, w in enumerate(flat) if w is p) for p in params]
        ctx.c_grad = c.requires_grad
        ld1 = ld1 if ld1 is not None else z1.new_zeros(0)
        ctx.save_for_backward(z1, ld1)
        return z1, ld1

    @staticmethod
    def backward(ctx, g_z1: torch.Tensor, g_ld1: torch.Tensor):
        z1, ld1 = ctx.saved_tensors
        func, (t0, t1, rtol, atol) = ctx.func, ctx.times
        div = func.divergence is not None
        g_z1 = torch.zeros_like(z1) if g_z1 is None else g_z1
        g_ld1 = (torch.zeros_like(ld1) if g_ld1 is None else g_ld1) if div else None
        index = ctx.index + ([-1] if ctx.c_grad else [])
        g_z0, grads, nfe = func._plan.adjoint_solve(z1, ld1 if div else None, g_z1, g_ld1, t0, t1, index,
                                                    rtol=rtol, atol=atol)
        func.nfe_adjoint = nfe
        g_c = grads.pop() if ctx.c_grad else None
        return (None, None, g_z0, g_c, *grads)
