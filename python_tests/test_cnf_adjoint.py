"""The native adjoint: the fused vector-Jacobian-product kernel (cgnf_fast::cnf_dynamics_vjp,
csrc/cnf/cnf_adjoint_cpu.cpp) against autograd over the reference, and the native adjoint solve
(CnfPlan.adjoint_solve, _NativeAdjoint) against torchdiffeq's odeint_adjoint, step for step."""

from __future__ import annotations

import contextlib

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchdiffeq import odeint_adjoint

from cgnf_fast.models import flow as flow_module
from cgnf_fast.models.flow import ConditionalCNF, set_mode
from cgnf_fast.ops import cnf as ops
from cgnf_fast.ops.cnf import CnfPlan, cnf_dynamics, cnf_dynamics_vjp
from helpers import use_simd


def weights_of(widths, C, dtype, gen, scale=0.5):
    ws = []
    for i in range(len(widths) - 1):
        o, n = widths[i + 1], widths[i]
        ws.append(tuple(torch.randn(*s, generator=gen, dtype=dtype) * scale
                        for s in [(o, n), (o,), (o, 1 + C), (o,), (o, 1 + C)]))
    return ws


def problem(B, D, hidden, C, divergence, dtype=torch.float64, seed=0, scale=0.5):
    g = torch.Generator().manual_seed(seed)
    ws = weights_of([D, *hidden, D], C, dtype, g, scale)
    z = torch.randn(B, D, generator=g, dtype=dtype)
    c = torch.randn(B, C, generator=g, dtype=dtype)
    noise = torch.randn(B, D, generator=g, dtype=dtype) if divergence == "hutchinson" else None
    g_dz = torch.randn(B, D, generator=g, dtype=dtype)
    g_div = torch.randn(B, generator=g, dtype=dtype) if divergence else None
    return ws, z, c, noise, g_dz, g_div


def rel(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300)) if b.numel() else 0.0


def check_vjp(B, D, hidden, C, divergence, activation, dtype=torch.float64, tol=1e-12, scale=0.5, t=0.3,
              zero_div_rows=None):
    ws, z, c, noise, g_dz, g_div = problem(B, D, hidden, C, divergence, dtype, scale=scale)
    if zero_div_rows is not None:
        g_div[zero_div_rows] = 0
    got = cnf_dynamics_vjp(t, z, c, ws, g_dz, g_div, activation, divergence, noise)
    want = cnf_dynamics_vjp(t, z, c, ws, g_dz, g_div, activation, divergence, noise, backend="torch")
    assert rel(got[0], want[0]) < tol
    if divergence:
        assert rel(got[1], want[1]) < tol
    else:
        assert got[1] is None and want[1] is None
    for name, a, b in (("t", got[2], want[2]), ("z", got[3], want[3]), ("c", got[4], want[4])):
        assert a.shape == b.shape and rel(a, b) < tol, name
    for la, lb in zip(got[5], want[5]):
        for a, b in zip(la, lb):
            assert a.shape == b.shape and rel(a, b) < tol


@pytest.mark.parametrize("divergence", [None, "exact", "hutchinson"])
@pytest.mark.parametrize("activation", ["tanh", "softplus"])
@pytest.mark.parametrize("B,D,hidden,C", [(37, 5, (7, 9), 3), (70, 32, (128, 128), 4), (5, 3, (), 2), (33, 4, (6,), 0),
                                           (40, 6, (5, 7, 8), 2), (1, 64, (24,), 1)])
def test_vjp_equals_autograd_float64(divergence, activation, B, D, hidden, C):
    """Every product (t, z, c, every weight) and both outputs to 1e-12 relative in float64,
    including the divergence's second-order terms, one to four layers, ragged tiles."""
    check_vjp(B, D, hidden, C, divergence, activation)


def test_vjp_softplus_threshold_and_float32():
    """Pre-activations past softplus's threshold (20) take torch's derivative there; float32
    agrees to float32 rounding."""
    check_vjp(50, 8, (32, 32), 2, "exact", "softplus", scale=4.0)
    check_vjp(256, 32, (128, 128), 4, "exact", "tanh", dtype=torch.float32, tol=2e-5, scale=0.15)


@pytest.mark.parametrize("hidden", [(16, 24), (12, 9, 20)])
def test_vjp_rows_without_a_divergence_cotangent(hidden):
    """Rows whose divergence cotangent is 0 skip the divergence's reverse pass; the rows around
    them still get every weight-sum term (the kernel batches the middle layers' weight sums over
    a few rows), whatever their pattern within a tile."""
    B = 70
    zero = torch.tensor([i for i in range(B) if i % 3 == 1 or i % 7 == 0 or 40 <= i < 47])
    check_vjp(B, 10, hidden, 2, "exact", "tanh", zero_div_rows=zero)
    check_vjp(B, 10, hidden, 2, "exact", "tanh", zero_div_rows=torch.arange(B))


@pytest.mark.parametrize("simd", ["default", "avx2", "generic"])
def test_vjp_every_cpu_simd_path(simd, monkeypatch):
    """Each instruction-set copy of the adjoint kernel this machine runs (CGNF_SIMD switches it
    per call): register blocks of 12 and 8 rows (AVX-512) or 6 (AVX2, baseline), D off and on
    the block height, widths off the vector length, one to three hidden layers, both dtypes."""
    use_simd(monkeypatch, simd, "cnf_simd")
    for B, D, hidden, C in [(300, 32, (128, 128), 4), (37, 13, (21, 30), 1), (70, 64, (40, 7, 19), 0), (9, 3, (5,), 2)]:
        for divergence in (None, "exact", "hutchinson"):
            check_vjp(B, D, hidden, C, divergence, "tanh")
            check_vjp(B, D, hidden, C, divergence, "softplus", dtype=torch.float32, tol=5e-5, scale=0.3)


@settings(max_examples=25, deadline=None)
@given(B=st.integers(1, 40), D=st.integers(1, 9), hidden=st.lists(st.integers(1, 20), max_size=3),
       C=st.integers(0, 3), divergence=st.sampled_from([None, "exact", "hutchinson"]),
       activation=st.sampled_from(["tanh", "softplus"]), t=st.floats(-2, 2))
def test_vjp_property(B, D, hidden, C, divergence, activation, t):
    check_vjp(B, D, tuple(hidden), C, divergence, activation, t=t)


def test_gradcheck_through_the_op():
    """Gradients of the op (whose first-order backward is the native kernel) pass gradcheck,
    and gradgradcheck goes through the reference."""
    ws, z, c, _, _, _ = problem(4, 3, (5,), 2, "exact", seed=1)
    flat = [w.requires_grad_() for lw in ws for w in lw]
    z.requires_grad_()
    c.requires_grad_()
    t = torch.tensor(0.4, dtype=torch.float64, requires_grad=True)

    def f(t, z, c, *fl):
        layers = [tuple(fl[5 * i:5 * i + 5]) for i in range(len(fl) // 5)]
        return cnf_dynamics(t, z, c, layers, "tanh", "exact")

    torch.autograd.gradcheck(f, (t, z, c, *flat))
    torch.autograd.gradgradcheck(lambda z: f(t, z, c, *flat), (z,))


def test_op_backward_runs_the_native_kernel(monkeypatch):
    calls = []
    orig = ops._C.cnf_adjoint_cpu

    def spy(*a):
        calls.append(1)
        return orig(*a)

    monkeypatch.setattr(ops._C, "cnf_adjoint_cpu", spy)
    ws, z, c, _, _, _ = problem(6, 4, (8,), 2, "exact")
    z.requires_grad_()
    dz, div = cnf_dynamics(0.1, z, c, ws, "tanh", "exact")
    (dz.sum() + div.sum()).backward()
    assert calls == [1] and z.grad is not None


def test_opcheck():
    ws, z, c, noise, g_dz, g_div = problem(5, 4, (6,), 2, "hutchinson")
    flat = [w for lw in ws for w in lw]
    t = torch.tensor([0.2], dtype=torch.float64)
    torch.library.opcheck(torch.ops.cgnf_fast.cnf_dynamics_vjp.default,
                          (t, z, c, flat, "tanh", "hutchinson", noise, g_dz, g_div))
    ws, z, c, _, g_dz, _ = problem(5, 4, (6,), 0, None, dtype=torch.float32)
    flat = [w for lw in ws for w in lw]
    torch.library.opcheck(torch.ops.cgnf_fast.cnf_dynamics_vjp.default,
                          (t.float(), z, c, flat, "softplus", "none", None, g_dz, z.new_zeros(0)))


def test_bad_input_is_a_clear_error():
    ws, z, c, _, g_dz, g_div = problem(5, 4, (6,), 2, "exact")
    with pytest.raises(ValueError, match="g_dz"):
        cnf_dynamics_vjp(0.0, z, c, ws, g_dz[:3], g_div, divergence="exact")
    with pytest.raises(ValueError, match="g_div"):
        cnf_dynamics_vjp(0.0, z, c, ws, g_dz, None, divergence="exact")
    with pytest.raises(ValueError, match="g_div"):
        cnf_dynamics_vjp(0.0, z, c, ws, g_dz, g_div.float(), divergence="exact")
    with pytest.raises(ValueError, match="g_div must be None"):
        cnf_dynamics_vjp(0.0, z, c, ws, g_dz, g_div, divergence=None)
    with pytest.raises(ValueError, match="layer 1 W"):
        cnf_dynamics_vjp(0.0, z, c, [ws[0], (ws[1][0][:, :2],) + ws[1][1:]], g_dz, g_div, divergence="exact")
    big, zb, cb, _, gb, gdb = problem(2, 65, (4,), 1, "exact")
    with pytest.raises(ValueError, match="D <= 64"):
        cnf_dynamics_vjp(0.0, zb, cb, big, gb, gdb, divergence="exact")
    # over the kernel's limits the reference serves (backend="torch")
    got = cnf_dynamics_vjp(0.0, zb, cb, big, gb, gdb, divergence="exact", backend="torch")
    assert got[3].shape == zb.shape


def test_empty_batch():
    ws, z, c, _, g_dz, g_div = problem(0, 4, (6,), 2, "exact")
    dz, div, g_t, g_z, g_c, g_w = cnf_dynamics_vjp(0.5, z, c, ws, g_dz, g_div, divergence="exact")
    assert dz.shape == (0, 4) and div.shape == (0,) and float(g_t) == 0.0
    assert all(float(g.abs().sum()) == 0.0 for lw in g_w for g in lw)


# -- the native adjoint solve ----------------------------------------------------------------
def flow_pair(divergence, activation, dtype=torch.float64, bn=False, seed=0, D=6, C=3, hidden=(16, 16), tol=1e-6):
    torch.manual_seed(seed)
    flow = ConditionalCNF(D, C, hidden=hidden, activation=activation, divergence=divergence, rtol=tol, atol=tol,
                          moving_batchnorm=bn).to(dtype)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    set_mode(flow, True)
    return flow


def train_grads(flow, backend, z, c0, c_grad):
    flow.dynamics.backend = backend
    flow.zero_grad()
    c = c0.clone().requires_grad_(c_grad)
    zz = z.clone().requires_grad_()
    evals = [0]
    orig = flow_module._ODEFunc.forward

    def counting(self, t, s):
        evals[0] += 1
        return orig(self, t, s)

    flow_module._ODEFunc.forward = counting
    try:
        lp = flow.log_prob(zz, c, generator=torch.Generator().manual_seed(1))
        (-(lp * torch.linspace(0.5, 1.5, z.shape[0], dtype=z.dtype)).sum()).backward()
    finally:
        flow_module._ODEFunc.forward = orig
    return lp.detach(), zz.grad, c.grad, [p.grad.clone() for p in flow.parameters()], evals[0]


@pytest.mark.parametrize("divergence,activation,bn,c_grad", [("exact", "tanh", True, True),
                                                             ("hutchinson", "softplus", False, False),
                                                             ("exact", "softplus", False, True)])
def test_training_gradients_equal_odeint_adjoint(divergence, activation, bn, c_grad, monkeypatch):
    """A training step's gradients (every weight, the condition, the initial state) from the
    native adjoint solve equal torchdiffeq's odeint_adjoint with the reference dynamics to
    1e-10 in float64, with the same number of evaluations in both solves (same steps)."""
    flow = flow_pair(divergence, activation, bn=bn)
    z = torch.randn(40, 6, dtype=torch.float64)
    c0 = torch.randn(40, 3, dtype=torch.float64)
    adj = []
    orig = CnfPlan.adjoint_solve

    def spy(self, *a, **k):
        out = orig(self, *a, **k)
        adj.append(out[2])
        return out

    monkeypatch.setattr(CnfPlan, "adjoint_solve", spy)
    nat = train_grads(flow, "native", z, c0, c_grad)
    ref = train_grads(flow, "torch", z, c0, c_grad)
    assert len(adj) == 1 and nat[4] == 0  # both solves ran natively, no Python evaluation
    assert flow.nfe + adj[0] == ref[4]  # forward + backward evaluations, torchdiffeq's count
    for a, b in zip(nat[:3], ref[:3]):
        if b is None:
            assert a is None
        else:
            assert rel(a, b) < 1e-10
    assert max(rel(a, b) for a, b in zip(nat[3], ref[3])) < 1e-10


def test_adjoint_solve_matches_odeint_adjoint_directly():
    """CnfPlan.adjoint_solve against odeint_adjoint on the plan's own dynamics (float64), a
    reversed solve (t0 > t1), weights that do not all require grad."""
    flow = flow_pair("exact", "tanh", tol=1e-8)
    dyn = flow.dynamics
    z = torch.randn(12, 6, dtype=torch.float64)
    c = torch.randn(12, 3, dtype=torch.float64)
    dyn.layers[0].hyper_bias.weight.requires_grad_(False)
    params = [p for p in dyn.parameters() if p.requires_grad]
    func = flow_module._ODEFunc(dyn, c, "exact", None)
    dyn.backend = "torch"
    zz = z.clone().requires_grad_()
    t = torch.tensor([1.0, 0.2], dtype=torch.float64)
    out = odeint_adjoint(func, (zz, z.new_zeros(12)), t, rtol=1e-8, atol=1e-8, method="dopri5",
                         adjoint_params=tuple(params))
    g1, gl1 = torch.randn(12, 6, dtype=torch.float64), torch.randn(12, dtype=torch.float64)
    want = torch.autograd.grad((out[0][-1], out[1][-1]), [zz, *params], (g1, gl1))
    flat = [w for lw in dyn.weights() for w in lw]
    idx = [next(i for i, w in enumerate(flat) if w is p) for p in params]
    plan = CnfPlan(dyn.weights(), c, "tanh", "exact")
    with torch.no_grad():
        z1, ld1, _ = plan.solve(z, 1.0, 0.2, rtol=1e-8, atol=1e-8)
    g_z0, grads, nfe = plan.adjoint_solve(z1, ld1, g1, gl1, 1.0, 0.2, idx, rtol=1e-8, atol=1e-8)
    assert rel(g_z0, want[0]) < 1e-10 and nfe > 20
    for a, b in zip(grads, want[1:]):
        assert rel(a, b) < 1e-10


def test_adjoint_solve_bad_arguments():
    flow = flow_pair("exact", "tanh")
    c = torch.randn(4, 3, dtype=torch.float64)
    plan = CnfPlan(flow.dynamics.weights(), c, "tanh", "exact")
    z = torch.randn(4, 6, dtype=torch.float64)
    ld = torch.zeros(4, dtype=torch.float64)
    with pytest.raises(ValueError, match="params must be distinct"):
        plan.adjoint_solve(z, ld, z, ld, 0.0, 1.0, [0, 0], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="params must be distinct"):
        plan.adjoint_solve(z, ld, z, ld, 0.0, 1.0, [99], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="logdet1"):
        plan.adjoint_solve(z, None, z, ld, 0.0, 1.0, [0], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="z must be"):
        plan.adjoint_solve(z[:2], ld, z, ld, 0.0, 1.0, [0], rtol=1e-5, atol=1e-5)
    bad = z.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(RuntimeError, match="non-finite"):
        plan.adjoint_solve(bad, ld, z, ld, 0.0, 1.0, [0], rtol=1e-5, atol=1e-5)


def test_torchdiffeq_solves_use_the_op_and_its_native_backward():
    """A solver other than dopri5 goes through torchdiffeq's odeint_adjoint; its recorded
    evaluations call the op, whose backward is the native kernel: same gradients as the
    reference backend (float64)."""
    flow = ConditionalCNF(5, 2, hidden=(12,), divergence="exact", solver="bosh3", rtol=1e-7, atol=1e-7).double()
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    z = torch.randn(9, 5, dtype=torch.float64)
    c = torch.randn(9, 2, dtype=torch.float64)
    grads = []
    for backend in ("native", "torch"):
        flow.dynamics.backend = backend
        flow.zero_grad()
        flow.log_prob(z, c).sum().backward()
        grads.append([p.grad.clone() for p in flow.parameters()])
    assert max(rel(a, b) for a, b in zip(*grads)) < 1e-9


def test_kernels_own_the_cores():
    """Inside, torch runs on one thread while the kernels keep torch's count (nested too); the
    settings come back on exit and on an error; a training step inside equals one outside."""
    from cgnf_fast import _native

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with _native.kernels_own_the_cores():
            assert torch.get_num_threads() == 1 and _native.num_threads() == 2
            with _native.kernels_own_the_cores():
                assert torch.get_num_threads() == 1 and _native.num_threads() == 2
            assert torch.get_num_threads() == 1 and _native.num_threads() == 2
        assert torch.get_num_threads() == 2 and _native.num_threads() == 2
        with pytest.raises(KeyError), _native.kernels_own_the_cores():
            raise KeyError("x")
        assert torch.get_num_threads() == 2 and _native.num_threads() == 2
        native = flow_pair("exact", "tanh", dtype=torch.float32, D=8, hidden=(32, 32), tol=1e-3)
        g = torch.Generator().manual_seed(0)
        z, c = torch.randn(300, 8, generator=g), torch.randn(300, 3, generator=g)
        grads = []
        for ctx in (contextlib.nullcontext(), _native.kernels_own_the_cores()):
            native.zero_grad(set_to_none=True)
            with ctx:
                (-native.log_prob(z, c).mean()).backward()
            grads.append([p.grad.clone() for p in native.parameters() if p.grad is not None])
        for a, b in zip(*grads):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    finally:
        torch.set_num_threads(before)
