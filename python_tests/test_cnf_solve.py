"""The native dopri5 solve (CnfPlan.solve, csrc/cnf/cnf_solve_cpu.cpp) against torchdiffeq's."""

from __future__ import annotations

import pytest
import torch
from torchdiffeq import odeint

from cgnf_fast.models import flow as flow_module
from cgnf_fast.models.flow import ConditionalCNF
from cgnf_fast.ops.cnf import CnfPlan


def make(dtype, divergence, hidden=(32, 32), C=3, D=8, B=17, activation="tanh", seed=0):
    g = torch.Generator().manual_seed(seed)
    flow = ConditionalCNF(D, C, hidden=hidden, activation=activation).to(dtype)
    with torch.no_grad():  # weights large enough for a few steps of real work
        for p in flow.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=dtype) * 0.5)
    c = torch.randn(B, C, generator=g, dtype=dtype)
    z = torch.randn(B, D, generator=g, dtype=dtype)
    noise = torch.randn(B, D, generator=g, dtype=dtype) if divergence == "hutchinson" else None
    plan = CnfPlan(flow.dynamics.weights(), c, activation, divergence, noise)
    return flow, plan, z, c


def torchdiffeq_solve(plan, z, divergence, t0, t1, rtol, atol, rejected=None):
    calls = [0]

    def f(t, y):
        calls[0] += 1
        if divergence is None:
            return plan(t, y)[0]
        return plan(t, y[0])

    if rejected is not None:
        f.callback_reject_step = lambda t0, y0, dt: rejected.append(float(dt))

    y0 = z if divergence is None else (z, z.new_zeros(z.shape[0]))
    out = odeint(f, y0, torch.tensor([t0, t1], dtype=z.dtype), rtol=rtol, atol=atol, method="dopri5")
    if divergence is None:
        return out[-1], None, calls[0]
    return out[0][-1], out[1][-1], calls[0]


@pytest.mark.parametrize("divergence", [None, "exact", "hutchinson"])
@pytest.mark.parametrize("t0,t1", [(1.0, 0.0), (0.0, 1.0), (0.3, 1.7)])
@pytest.mark.parametrize("activation,hidden,C", [("tanh", (32, 32), 3), ("softplus", (16,), 0), ("tanh", (8, 24, 16), 2)])
def test_float64_equals_torchdiffeq(divergence, t0, t1, activation, hidden, C):
    """Step for step the same algorithm: same evaluations, results equal to float64 rounding."""
    _, plan, z, _ = make(torch.float64, divergence, hidden=hidden, C=C, activation=activation)
    with torch.no_grad():
        got_z, got_ld, nfe = plan.solve(z, t0, t1, rtol=1e-7, atol=1e-7)
        want_z, want_ld, calls = torchdiffeq_solve(plan, z, divergence, t0, t1, 1e-7, 1e-7)
    assert nfe == calls and nfe > 20  # several steps, some maybe rejected
    torch.testing.assert_close(got_z, want_z, rtol=1e-12, atol=1e-12)
    if divergence is None:
        assert got_ld is None
    else:
        torch.testing.assert_close(got_ld, want_ld, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("divergence", [None, "exact"])
def test_float32_agrees_with_torchdiffeq(divergence):
    _, plan, z, _ = make(torch.float32, divergence, B=64)
    with torch.no_grad():
        got_z, got_ld, nfe = plan.solve(z, 1.0, 0.0, rtol=1e-5, atol=1e-5)
        want_z, want_ld, calls = torchdiffeq_solve(plan, z, divergence, 1.0, 0.0, 1e-5, 1e-5)
    assert nfe == calls
    torch.testing.assert_close(got_z, want_z, rtol=1e-4, atol=1e-4)
    if divergence:
        torch.testing.assert_close(got_ld, want_ld, rtol=1e-4, atol=1e-4)


def test_rejected_steps_match():
    """Loose first steps on stiff-ish dynamics get rejected; the count of evaluations still
    matches torchdiffeq's, so rejections and step sizes follow the same rule."""
    _, plan, z, _ = make(torch.float64, None, hidden=(64,), seed=3)
    with torch.no_grad():
        for w in plan._flat:
            w.mul_(6.0)  # in place: the plan reads these buffers
        got, _, nfe = plan.solve(z, 0.0, 2.0, rtol=1e-9, atol=1e-9)
        rejected = []
        want, _, calls = torchdiffeq_solve(plan, z, None, 0.0, 2.0, 1e-9, 1e-9, rejected)
    assert rejected and nfe == calls
    torch.testing.assert_close(got, want, rtol=1e-11, atol=1e-11)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_flow_uses_the_native_solve_without_autograd(dtype, monkeypatch):
    """sample() and log_prob() under no_grad solve natively; with autograd recording (training
    with the adjoint) the forward solve is native too (_NativeAdjoint), and all agree."""
    flow, _, z, c = make(dtype, None, B=9)
    calls = []
    orig = CnfPlan.solve

    def spy(self, *a, **k):
        calls.append(1)
        return orig(self, *a, **k)

    monkeypatch.setattr(CnfPlan, "solve", spy)
    with torch.no_grad():
        s_native = flow.sample(c, noise=z)
        lp_native = flow.log_prob(z, c)
    assert len(calls) == 2
    with monkeypatch.context() as m:
        m.setattr(flow_module._ODEFunc, "native_solve_applies", lambda self, z: False)
        with torch.no_grad():
            s_odeint = flow.sample(c, noise=z)
            lp_odeint = flow.log_prob(z, c)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-11, atol=1e-11)
    torch.testing.assert_close(s_native, s_odeint, **tol)
    torch.testing.assert_close(lp_native, lp_odeint, **tol)
    lp_grad = flow.log_prob(z, c)  # autograd records: the native adjoint's forward solve
    assert len(calls) == 3 and lp_grad.requires_grad
    lp_grad.sum().backward()
    assert flow.dynamics.layers[0].layer.weight.grad is not None
    torch.testing.assert_close(lp_grad.detach(), lp_native, **tol)


def test_bad_arguments_are_clear_errors():
    _, plan, z, _ = make(torch.float32, None)
    with pytest.raises(ValueError, match="t0 and t1 must differ"):
        plan.solve(z, 1.0, 1.0, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="rtol must be a positive"):
        plan.solve(z, 1.0, 0.0, rtol=0.0, atol=1e-5)
    with pytest.raises(ValueError, match="t1 must be a finite number"):
        plan.solve(z, 1.0, float("nan"), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="max_steps"):
        plan.solve(z, 1.0, 0.0, rtol=1e-5, atol=1e-5, max_steps=0)
    with pytest.raises(ValueError, match="z must be a torch.float32 tensor of shape"):
        plan.solve(z[:3], 1.0, 0.0, rtol=1e-5, atol=1e-5)
    with pytest.raises(RuntimeError, match="more than 2 steps"):
        plan.solve(z, 0.0, 50.0, rtol=1e-9, atol=1e-9, max_steps=2)
    bad = z.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(RuntimeError, match="non-finite values in the state at t0"):
        plan.solve(bad, 1.0, 0.0, rtol=1e-5, atol=1e-5)
    z_in = z.clone()
    plan.solve(z, 1.0, 0.0, rtol=1e-5, atol=1e-5)
    assert torch.equal(z, z_in)  # the input is not modified


def test_non_finite_dynamics_stop_the_solve():
    _, plan, z, _ = make(torch.float64, None)
    with torch.no_grad():
        plan._flat[1][0] = float("nan")  # a bias of the first layer: every dz/dt is NaN
    with pytest.raises(RuntimeError, match="step size underflowed|non-finite values in the state"):
        plan.solve(z, 0.0, 1.0, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("needs_grad", ["c", "z"])
def test_frozen_weights_gradient_reaches_the_input(needs_grad):
    """Frozen weights but a condition or latent that requires grad: the native adjoint solves
    (no adjoint parameter but c when it requires grad), and the gradient that reaches that
    input equals torchdiffeq's odeint_adjoint with the reference dynamics."""
    flow, _, z, c = make(torch.float64, None, B=5)
    for p in flow.parameters():
        p.requires_grad_(False)
    grads = []
    for backend in ("native", "torch"):
        flow.dynamics.backend = backend
        zz = z.clone().requires_grad_(needs_grad == "z")
        cc = c.clone().requires_grad_(needs_grad == "c")
        flow.log_prob(zz, cc).sum().backward()
        grads.append((zz if needs_grad == "z" else cc).grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-10, atol=1e-12)
