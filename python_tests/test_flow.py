"""The conditional CNF: closed-form flows, divergence estimators, invertibility, adjoint
gradients, normalisation of the density, conditioning, moving batch-norm and bad input.

All models are tiny (hidden widths <= 16) so the file runs in seconds on a loaded 2-core CPU.
Tolerances: float64 checks use solver tolerances of 1e-7..1e-10 and compare at 1e-6 or
tighter (measured: round trips ~2e-8, adjoint vs direct gradients ~6e-9 absolute, densities
integrate to 1 within ~5e-9). float32 round trips use the flow's defaults (rtol = atol = 1e-5)
and compare at 1e-3: the measured error is ~2e-4 on latents of size ~6 (loaded 2-core CPU),
the solver's tolerance compounded over the forward and the reverse solve.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from cgnf_fast.models.flow import (
    DIVERGENCES,
    FIXED_STEP_SOLVERS,
    SOLVERS,
    ConcatSquashLinear,
    ConditionalCNF,
    MovingBatchNorm1d,
    ODEDynamics,
    standard_normal_log_prob,
)

F64 = torch.float64


def _flow(latent: int = 3, cond_dim: int = 2, dtype: torch.dtype = F64, seed: int = 0, tol: float = 1e-9,
          **kw) -> ConditionalCNF:
    torch.manual_seed(seed)
    kw.setdefault("hidden", (16, 16))
    kw.setdefault("adjoint", False)
    if kw.get("solver", "dopri5") not in FIXED_STEP_SOLVERS:
        kw.setdefault("rtol", tol)
        kw.setdefault("atol", tol)
    return ConditionalCNF(latent, cond_dim, **kw).to(dtype)


def _randn(*shape: int, dtype: torch.dtype = F64, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _jacobian_trace(dyn: ODEDynamics, t: float, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """tr(df/dz) per row from torch.autograd.functional.jacobian (one row at a time)."""
    out = []
    for b in range(z.shape[0]):
        J = torch.autograd.functional.jacobian(lambda x: dyn(t, x[None], c[b:b + 1])[0], z[b])  # [D, D]
        out.append(torch.diagonal(J).sum())
    return torch.stack(out)


# -- layers and divergence ------------------------------------------------------------------
def test_concat_squash_is_gated_linear_plus_context_bias() -> None:
    torch.manual_seed(0)
    lay = ConcatSquashLinear(4, 3, 1 + 2).to(F64)
    x, ctx = _randn(5, 4), _randn(5, 3, seed=2)
    gate = torch.sigmoid(ctx @ lay.hyper_gate.weight.T + lay.hyper_gate.bias)
    want = (x @ lay.layer.weight.T + lay.layer.bias) * gate + ctx @ lay.hyper_bias.weight.T
    torch.testing.assert_close(lay(x, ctx), want, rtol=0, atol=1e-14)
    assert lay.hyper_bias.bias is None
    # the dynamics feed ctx = [t, c]: time first
    dyn = ODEDynamics(4, 2, hidden=(), activation="tanh").to(F64)
    c = _randn(5, 2, seed=3)
    ctx = torch.cat([torch.full((5, 1), 0.3, dtype=F64), c], 1)
    torch.testing.assert_close(dyn(0.3, x, c), dyn.layers[0](x, ctx), rtol=0, atol=1e-14)


@pytest.mark.parametrize("activation", ["tanh", "softplus"])
@pytest.mark.parametrize("hidden", [(), (7,), (7, 5)])
def test_exact_divergence_is_the_jacobian_trace(activation: str, hidden: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    dyn = ODEDynamics(4, 3, hidden=hidden, activation=activation).to(F64)
    z, c = _randn(6, 4), _randn(6, 3, seed=2)
    dz, div = dyn.forward_with_divergence(0.7, z, c, "exact")
    torch.testing.assert_close(dz, dyn(0.7, z, c), rtol=0, atol=0)
    torch.testing.assert_close(div, _jacobian_trace(dyn, 0.7, z, c), rtol=1e-12, atol=1e-12)
    with torch.no_grad():  # forward-mode: no autograd needed
        torch.testing.assert_close(dyn.forward_with_divergence(0.7, z, c)[1], div.detach(), rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["rademacher", "gaussian"])
def test_hutchinson_is_e_J_e_and_unbiased(kind: str) -> None:
    torch.manual_seed(0)
    dyn = ODEDynamics(5, 2, hidden=(8, 8), activation="softplus").to(F64)
    z, c = _randn(1, 5), _randn(1, 2, seed=2)
    J = torch.autograd.functional.jacobian(lambda x: dyn(0.4, x[None], c)[0], z[0])  # [5, 5]
    exact = torch.diagonal(J).sum()
    flow = ConditionalCNF(5, 2, hidden=(8,), hutchinson_noise=kind).to(F64)
    n = 20000
    e = flow._hutchinson_noise((n, 5), z, torch.Generator().manual_seed(3))
    if kind == "rademacher":
        assert set(e.unique().tolist()) == {-1.0, 1.0}
    _, est = dyn.forward_with_divergence(0.4, z.expand(n, 5), c.expand(n, 2), "hutchinson", noise=e)
    torch.testing.assert_close(est[:8], torch.einsum("bi,ij,bj->b", e[:8], J, e[:8]), rtol=1e-12, atol=1e-12)
    # unbiased: the mean of n draws is within 5 standard errors of the trace
    se = est.std() / math.sqrt(n)
    assert abs(est.mean() - exact) < 5 * se, (est.mean().item(), exact.item(), se.item())


# -- closed forms -----------------------------------------------------------------------------
@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_zero_dynamics_is_the_identity(divergence: str) -> None:
    flow = _flow(latent=4, cond_dim=3, zero_init=True, divergence=divergence, dtype=torch.float32)
    z, c = _randn(7, 4, dtype=torch.float32), _randn(7, 3, seed=2, dtype=torch.float32)
    # identity up to float32 rounding: torchdiffeq reads the end point off dopri5's dense-output
    # interpolant, which adds a few ulps even when every stage is exactly zero
    torch.testing.assert_close(flow.sample(c, noise=z), z, rtol=1e-6, atol=1e-6)
    want = -0.5 * (z ** 2).sum(1) - 2.0 * math.log(2 * math.pi)  # log N(z; 0, I_4)
    torch.testing.assert_close(flow.log_prob(z, c), want, rtol=0, atol=1e-6)
    assert flow.nfe > 0


def _linear_flow(A: torch.Tensor, w: float, u: torch.Tensor, b0: float, T: float, **kw) -> ConditionalCNF:
    """A one-layer flow with dz/dt = sigmoid(w t + u.c + b0) A z (the same gate for every unit)."""
    D, C = A.shape[0], u.shape[0]
    flow = ConditionalCNF(D, C, hidden=(), T=T, rtol=1e-10, atol=1e-10, **kw).to(F64)
    lay = flow.dynamics.layers[0]
    with torch.no_grad():
        lay.layer.weight.copy_(A)
        lay.layer.bias.zero_()
        lay.hyper_bias.weight.zero_()
        lay.hyper_gate.weight.copy_(torch.cat([torch.tensor([w], dtype=F64), u]).expand(D, 1 + C))
        lay.hyper_gate.bias.fill_(b0)
    return flow


@pytest.mark.parametrize("adjoint", [False, True])
def test_linear_dynamics_match_the_analytic_change_of_variables(adjoint: bool) -> None:
    # z(T) = expm(S A) z(0) with S = int_0^T sigmoid(w t + a) dt = (softplus(w T + a) - softplus(a)) / w,
    # a = u.c + b0; log|det| = S tr(A). Checks the [t, c] layout, the time dependence and the sign.
    A = torch.tensor([[0.3, -0.8, 0.1], [0.5, -0.2, 0.0], [0.2, 0.4, 0.6]], dtype=F64)
    w, u, b0, T = 1.5, torch.tensor([0.7, -1.1], dtype=F64), 0.2, 1.3
    flow = _linear_flow(A, w, u, b0, T, adjoint=adjoint)
    z, c = _randn(5, 3), _randn(5, 2, seed=2)
    a = c @ u + b0
    S = (F.softplus(w * T + a) - F.softplus(a)) / w  # [B]
    M = torch.linalg.matrix_exp(S[:, None, None] * A)  # [B, 3, 3]
    noise = torch.einsum("bij,bj->bi", M, z)
    want = standard_normal_log_prob(noise) + S * torch.trace(A)
    torch.testing.assert_close(flow.log_prob(z, c), want, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(flow.log_prob(z, c, divergence="exact"), want, rtol=1e-8, atol=1e-8)
    out, logdet = flow.transform(z, c)
    torch.testing.assert_close(out, noise, rtol=1e-8, atol=1e-8)
    back = torch.einsum("bij,bj->bi", torch.linalg.inv(M), z)
    torch.testing.assert_close(flow.sample(c, noise=z), back, rtol=1e-8, atol=1e-8)
    _, logdet_rev = flow.transform(z, c, reverse=True)
    torch.testing.assert_close(logdet_rev, -S * torch.trace(A), rtol=1e-8, atol=1e-8)


# -- invertibility, adjoint, normalisation ----------------------------------------------------
@pytest.mark.parametrize("dtype,tol,cmp", [(F64, 1e-9, 1e-6), (torch.float32, 1e-5, 1e-3)])
def test_log_prob_map_and_sample_are_inverses(dtype: torch.dtype, tol: float, cmp: float) -> None:
    flow = _flow(latent=4, cond_dim=3, dtype=dtype, tol=tol, activation="softplus")
    z, c = 2 * _randn(16, 4, dtype=dtype), _randn(16, 3, seed=2, dtype=dtype)
    noise, ld_fwd = flow.transform(z, c)
    assert (noise - z).abs().max() > 0.05  # the flow does move points
    torch.testing.assert_close(flow.sample(c, noise=noise), z, rtol=cmp, atol=cmp)
    back, ld_rev = flow.transform(noise, c, reverse=True)
    torch.testing.assert_close(back, z, rtol=cmp, atol=cmp)
    torch.testing.assert_close(ld_fwd + ld_rev, torch.zeros_like(ld_fwd), rtol=0, atol=cmp)
    # log p(sample) = log N(noise) - logdet of the noise -> data map
    torch.testing.assert_close(flow.log_prob(back, c), standard_normal_log_prob(noise) - ld_rev, rtol=cmp, atol=cmp)


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_adjoint_gradients_equal_direct_gradients(divergence: str) -> None:
    z0, c0 = _randn(6, 3), _randn(6, 2, seed=2)
    grads = []
    for adjoint in (False, True):
        flow = _flow(seed=4, adjoint=adjoint, divergence=divergence, tol=1e-10, hidden=(8, 8))
        z, c = z0.clone().requires_grad_(True), c0.clone().requires_grad_(True)
        lp = flow.log_prob(z, c, generator=torch.Generator().manual_seed(5))  # same Hutchinson noise
        x = flow.sample(c, noise=z)
        loss = -lp.mean() + (x ** 2).sum() * 0.1
        loss.backward()
        grads.append([z.grad, c.grad] + [p.grad for p in flow.parameters()])
    for g_direct, g_adjoint in zip(*grads):
        torch.testing.assert_close(g_adjoint, g_direct, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("moving_batchnorm", [False, True])
def test_density_integrates_to_one_in_1d(moving_batchnorm: bool) -> None:
    flow = _flow(latent=1, cond_dim=2, seed=3, moving_batchnorm=moving_batchnorm, tol=1e-8).eval()
    if moving_batchnorm:  # non-trivial statistics and affine parts
        with torch.no_grad():
            for bn, m, v in ((flow.bn_in, 0.4, 2.5), (flow.bn_out, -0.3, 0.6)):
                bn.running_mean.fill_(m), bn.running_var.fill_(v), bn.weight.fill_(0.2), bn.bias.fill_(-0.1)
    x = torch.linspace(-14, 14, 4001, dtype=F64)[:, None]
    for c in ([0.5, -1.0], [-2.0, 1.5]):
        with torch.no_grad():
            lp = flow.log_prob(x, torch.tensor([c], dtype=F64).expand(len(x), 2))
        assert (lp - standard_normal_log_prob(x)).abs().max() > 0.1  # not the base density
        mass = torch.trapezoid(lp.exp(), x[:, 0])  # the tails beyond +-14 are < 1e-38
        assert abs(mass.item() - 1) < 1e-6, mass.item()  # measured: ~1e-9


def test_density_integrates_to_one_in_2d_for_each_condition() -> None:
    flow = _flow(latent=2, cond_dim=1, seed=6, tol=1e-7, hidden=(16,))
    n = 121
    g = torch.linspace(-9, 9, n, dtype=F64)
    X, Y = torch.meshgrid(g, g, indexing="ij")
    pts = torch.stack([X.reshape(-1), Y.reshape(-1)], 1)  # [n * n, 2]
    masses, dens = [], []
    for c in (-1.5, 1.5):
        with torch.no_grad():
            p = flow.log_prob(pts, torch.full((len(pts), 1), c, dtype=F64)).exp().view(n, n)
        masses.append(torch.trapezoid(torch.trapezoid(p, g, dim=1), g).item())
        dens.append(p)
    # the trapezoid rule is spectrally accurate for smooth, fast-decaying densities: the
    # measured error on this 0.15 grid is ~4e-9, so the bound below is the solver's
    assert all(abs(m - 1) < 1e-6 for m in masses), masses
    assert (dens[0] - dens[1]).abs().max() > 1e-2  # the condition changes the density


# -- conditioning, determinism, batch-norm ----------------------------------------------------
def test_conditioning_changes_samples_and_generator_makes_them_deterministic() -> None:
    flow = _flow(latent=4, cond_dim=3, dtype=torch.float32, tol=1e-5)
    c = torch.tensor([[0.0, 0.0, 0.0], [2.0, -1.0, 0.5]]).repeat_interleave(5, 0)  # [10, 3]
    noise = _randn(5, 4, dtype=torch.float32).repeat(2, 1)  # the same noise under both conditions
    x = flow.sample(c, noise=noise)
    assert (x[:5] - x[5:]).norm(dim=1).min() > 1e-2
    s1 = flow.sample(c, generator=torch.Generator().manual_seed(7))
    s2 = flow.sample(c, generator=torch.Generator().manual_seed(7))
    s3 = flow.sample(c, generator=torch.Generator().manual_seed(8))
    assert torch.equal(s1, s2) and not torch.equal(s1, s3)
    h = ConditionalCNF(4, 3, hidden=(8,), divergence="hutchinson")
    lp = [h.log_prob(x, c, generator=torch.Generator().manual_seed(s)) for s in (1, 1, 2)]
    assert torch.equal(lp[0], lp[1]) and not torch.equal(lp[0], lp[2])


def test_moving_batchnorm_statistics_logdet_and_inverse() -> None:
    bn = MovingBatchNorm1d(3, decay=0.25).to(F64)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([0.1, -0.2, 0.3])), bn.bias.copy_(torch.tensor([0.5, 0.0, -1.0]))
    x = 3 * _randn(64, 3) + torch.tensor([1.0, -2.0, 0.5], dtype=F64)
    y, ld = bn.transform(x)  # training mode: batch statistics
    m, v = x.mean(0), x.var(0, unbiased=False)
    torch.testing.assert_close(bn.running_mean, 0.25 * m, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(bn.running_var, 0.75 + 0.25 * v, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(((y - bn.bias) * torch.exp(-bn.weight)).mean(0), torch.zeros(3, dtype=F64),
                               rtol=0, atol=1e-12)
    torch.testing.assert_close(ld, (bn.weight - 0.5 * torch.log(v + bn.eps)).sum().expand(64))
    bn.eval()  # running statistics: an affine per-row map, logdet = log|det| of its Jacobian
    y, ld = bn.transform(x)
    J = torch.autograd.functional.jacobian(lambda r: bn.transform(r[None])[0][0], x[0])
    torch.testing.assert_close(ld[0], torch.linalg.slogdet(J)[1], rtol=1e-12, atol=1e-12)
    back, ld_rev = bn.transform(y, reverse=True)
    torch.testing.assert_close(back, x, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ld_rev, -ld, rtol=0, atol=0)
    assert {"running_mean", "running_var"} <= set(bn.state_dict())


def test_flow_with_moving_batchnorm_trains_and_inverts_in_eval() -> None:
    flow = _flow(latent=2, cond_dim=1, moving_batchnorm=True, tol=1e-8, hidden=(8,))
    z = 2 * _randn(32, 2) + 3
    c = _randn(32, 1, seed=2)
    flow.train()
    flow.log_prob(z, c).mean().backward()  # batch statistics, running ones updated
    assert flow.bn_in.weight.grad is not None and flow.bn_in.running_mean.abs().sum() > 0
    flow.eval()
    noise, _ = flow.transform(z, c)
    torch.testing.assert_close(flow.sample(c, noise=noise), z, rtol=1e-6, atol=1e-6)


def test_a_few_adjoint_training_steps_lower_the_nll() -> None:
    torch.manual_seed(0)
    flow = ConditionalCNF(2, 1, hidden=(16, 16), rtol=1e-4, atol=1e-4, zero_init=True)  # float32, adjoint
    c = torch.randint(0, 2, (128, 1)).float()
    z = torch.randn(128, 2) * 0.3 + 2 * c - 1  # two clusters picked by the condition
    opt = torch.optim.Adam(flow.parameters(), lr=3e-2)
    losses = []
    for _ in range(6):
        opt.zero_grad()
        loss = -flow.log_prob(z, c).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.2, losses


# -- configuration, solvers, edge cases, bad input --------------------------------------------
def test_config_round_trip_fixed_step_solver_and_empty_batch() -> None:
    flow = _flow(latent=3, cond_dim=0, solver="rk4", step_size=0.05, dtype=F64)
    flow2 = ConditionalCNF(**flow.config()).to(F64)
    flow2.load_state_dict(flow.state_dict())
    z, c = _randn(4, 3), torch.zeros(4, 0, dtype=F64)  # unconditional: C = 0
    torch.testing.assert_close(flow2.log_prob(z, c), flow.log_prob(z, c), rtol=0, atol=0)
    assert flow.nfe == 4 * 20  # rk4: 4 evaluations per step, 20 steps of 0.05
    ref = _flow(latent=3, cond_dim=0, dtype=F64)  # same seed: same weights, adaptive dopri5
    torch.testing.assert_close(flow.log_prob(z, c), ref.log_prob(z, c), rtol=1e-6, atol=1e-6)
    assert flow.log_prob(z[:0], c[:0]).shape == (0,) and flow.sample(c[:0]).shape == (0, 3)
    assert {"adjoint", "solver", "divergence"} <= set(flow.config())
    assert set(FIXED_STEP_SOLVERS) <= set(SOLVERS)


def test_every_listed_solver_is_a_torchdiffeq_method() -> None:
    from torchdiffeq._impl.odeint import SOLVERS as TORCHDIFFEQ_SOLVERS

    assert set(SOLVERS) <= set(TORCHDIFFEQ_SOLVERS)


def test_bad_inputs_raise_value_errors_naming_the_argument() -> None:
    flow = _flow(latent=3, cond_dim=2, dtype=torch.float32, hidden=(4,))
    z, c = torch.zeros(5, 3), torch.zeros(5, 2)
    bad_calls = [
        (lambda: flow.log_prob(z[:, :2], c), r"z must have shape \[B, latent\] = \[B, 3\], got \[5, 2\]"),
        (lambda: flow.log_prob(z[0], c), r"z must have shape .*got \[3\]"),
        (lambda: flow.log_prob(z, c[:4]), r"c must have shape \[B, cond_dim\] = \[5, 2\], got \[4, 2\]"),
        (lambda: flow.log_prob(z.double(), c), r"z must have dtype torch.float32 .*got torch.float64"),
        (lambda: flow.log_prob(z, c.long()), r"c must have dtype torch.float32 .*got torch.int64"),
        (lambda: flow.log_prob(z.to("meta"), c), r"z is on meta but the flow's parameters are on cpu"),
        (lambda: flow.log_prob(z.tolist(), c), r"z must be a torch.Tensor"),
        (lambda: flow.log_prob(torch.full((5, 3), float("nan")), c), r"z must be finite, got 15 NaN/inf"),
        (lambda: flow.log_prob(z, c.index_fill(0, torch.tensor([1]), float("inf"))), r"c must be finite"),
        (lambda: flow.log_prob(z, c, divergence="approx"),
         r'divergence must be one of \{"exact", "hutchinson"\}, got \'approx\''),
        (lambda: flow.log_prob(z, c, generator=3), r"generator must be a torch.Generator"),
        (lambda: flow.sample(c, noise=torch.zeros(5, 4)), r"noise must have shape \[B, latent\] = \[5, 3\]"),
        (lambda: flow.sample(c, noise=z, generator=torch.Generator()), r"either noise or generator"),
        (lambda: flow.sample(c.tolist()), r"c must be a torch.Tensor"),
        (lambda: flow.sample(c[0]), r"c must have shape \[B, cond_dim\] = \[B, 2\], got \[2\]"),
        (lambda: flow.sample(torch.full((2, 2), float("nan"))), r"c must be finite"),
        (lambda: ConditionalCNF(3, 2, solver="rk45"), r'solver must be one of \{"dopri5", .*"implicit_adams"\}'),
        (lambda: ConditionalCNF(3, 2, divergence="trace"), r"divergence must be one of"),
        (lambda: ConditionalCNF(3, 2, hutchinson_noise="uniform"), r'hutchinson_noise must be one of \{"rademacher"'),
        (lambda: ConditionalCNF(3, 2, activation="relu"), r'activation must be one of \{"tanh", "softplus"\}'),
        (lambda: ConditionalCNF(3, 2, solver="rk4"), r"step_size is required for the fixed-grid solver 'rk4'"),
        (lambda: ConditionalCNF(3, 2, step_size=0.1), r"step_size must be None for the adaptive solver 'dopri5'"),
        (lambda: ConditionalCNF(3, 2, rtol=0.0), r"rtol must be a finite float > 0, got 0.0"),
        (lambda: ConditionalCNF(3, 2, T=float("inf")), r"T must be a finite float > 0"),
        (lambda: ConditionalCNF(0, 2), r"latent must be an int >= 1, got 0"),
        (lambda: ConditionalCNF(3, -1), r"cond_dim must be an int >= 0, got -1"),
        (lambda: ConditionalCNF(3, 2, hidden=(8, 0)), r"hidden must be a sequence of ints >= 1"),
        (lambda: ConditionalCNF(3, 2, adjoint="yes"), r"adjoint must be a bool"),
        (lambda: MovingBatchNorm1d(3, decay=1.5), r"decay must be in \(0, 1\]"),
        (lambda: flow.dynamics.forward_with_divergence(0.0, z, c, "hutchinson"), r"noise \[B, latent\] is required"),
        (lambda: flow.dynamics.forward_with_divergence(0.0, z, c, "exact", noise=z), r"noise must be None"),
        (lambda: flow.dynamics(0.0, z, c[:, :1]), r"c must have shape \[B, cond_dim\] = \[5, 2\], got \[5, 1\]"),
    ]
    for call, pattern in bad_calls:
        with pytest.raises(ValueError, match=pattern):
            call()
    assert isinstance(flow.dynamics, nn.Module) and len(list(flow.dynamics.parameters())) == 2 * 5
