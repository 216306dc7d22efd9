"""The fused CNF dynamics (cgnf_fast.ops.cnf) against its PyTorch reference, on every device:
outputs, gradients, the op's registrations, solves of small flows, limits and bad input.

Tolerances, atol scaled by the largest value compared. Measured on the 2-core dev CPU: float32
dz/dt within ~2e-7 relative of the reference, the exact divergence within ~6e-7 (sums of D x
width products in another order; tanh by a rational approximation, <= 6.5 ulp); float64 within
~1e-15.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cgnf_fast import _C
from cgnf_fast.models.flow import ConditionalCNF, ODEDynamics
from cgnf_fast.ops import cnf as cnf_ops
from cgnf_fast.ops.cnf import CnfPlan, cnf_dynamics
from cgnf_fast.reference import cnf as ref

from helpers import DEVICE_PARAMS, needs_cuda, use_simd

F64 = torch.float64
TOL = {torch.float32: dict(rtol=2e-5, atol=2e-5), torch.float64: dict(rtol=1e-12, atol=1e-12)}


def make_problem(B: int, D: int, hidden: tuple[int, ...], C: int, *, dtype: torch.dtype = torch.float32,
                 device: str = "cpu", seed: int = 0, scale: float = 1.0, hutchinson: bool = False):
    """``(t, z, c, weights, noise)``: random weights of PyTorch-default-like size (``scale``
    multiplies them, to push units into saturation), a random time in [0, 1)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int, s: float = 1.0) -> torch.Tensor:
        return (torch.randn(*shape, generator=g, dtype=F64) * s).to(dtype).to(device)

    dims = (D, *hidden, D)
    weights = []
    for i in range(len(dims) - 1):
        n_in, n_out = dims[i], dims[i + 1]
        weights.append((r(n_out, n_in, s=scale / math.sqrt(n_in)), r(n_out, s=0.5 * scale), r(n_out, 1 + C, s=scale),
                        r(n_out, s=scale), r(n_out, 1 + C, s=0.5 * scale)))
    t = torch.rand((), generator=g, dtype=F64).to(dtype).to(device)
    z, c = r(B, D, s=1.5), r(B, C)
    noise = r(B, D) if hutchinson else None
    return t, z, c, weights, noise


def assert_close(got: torch.Tensor, want: torch.Tensor, dtype: torch.dtype, loosen: float = 1.0) -> None:
    scale = max(1.0, float(want.abs().max())) if want.numel() else 1.0
    tol = TOL[dtype]
    torch.testing.assert_close(got.cpu(), want.cpu(), rtol=tol["rtol"] * loosen, atol=tol["atol"] * scale * loosen)


def outputs_and_grads(fn, t, z, c, weights, activation, divergence, noise, seed: int = 7):
    """Outputs of ``fn`` and the gradients of ``<gdz, dz> + <gdiv, div>`` with respect to every
    tensor argument (fixed random cotangents)."""
    leaves = [x.detach().clone().requires_grad_(True) for x in (t, z, c)]
    ws = [tuple(w.detach().clone().requires_grad_(True) for w in lw) for lw in weights]
    nz = None if noise is None else noise.detach().clone().requires_grad_(True)
    dz, div = fn(leaves[0], leaves[1], leaves[2], ws, activation, divergence, nz)
    g = torch.Generator().manual_seed(seed)
    loss = (dz * torch.randn(dz.shape, generator=g, dtype=dz.dtype).to(dz.device)).sum()
    if div is not None:
        loss = loss + (div * torch.randn(div.shape, generator=g, dtype=div.dtype).to(div.device)).sum()
    inputs = [*leaves, *[w for lw in ws for w in lw], *([nz] if nz is not None else [])]
    grads = torch.autograd.grad(loss, inputs, allow_unused=True) if loss.requires_grad else [None] * len(inputs)
    grads = [torch.zeros_like(x) if gr is None else gr for x, gr in zip(inputs, grads)]
    return dz.detach(), (None if div is None else div.detach()), grads


def native(t, z, c, weights, activation, divergence, noise):
    return cnf_dynamics(t, z, c, weights, activation, divergence, noise)


def assert_matches_reference(t, z, c, weights, activation, divergence, noise, grads: bool = True,
                             loosen: float = 1.0) -> None:
    dtype = z.dtype
    if not grads:
        with torch.no_grad():
            dz, div = native(t, z, c, weights, activation, divergence, noise)
            rdz, rdiv = ref.cnf_dynamics(t, z, c, weights, activation, divergence, noise)
        assert dz.shape == z.shape and dz.dtype == dtype and dz.device == z.device
        assert_close(dz, rdz, dtype, loosen)
        if divergence is None:
            assert div is None
        else:
            assert div.shape == (z.shape[0],)
            assert_close(div, rdiv, dtype, loosen)
        return
    dz, div, g = outputs_and_grads(native, t, z, c, weights, activation, divergence, noise)
    rdz, rdiv, rg = outputs_and_grads(ref.cnf_dynamics, t, z, c, weights, activation, divergence, noise)
    assert_close(dz, rdz, dtype, loosen)
    if divergence is not None:
        assert_close(div, rdiv, dtype, loosen)
    for a, b in zip(g, rg):  # the backward recomputes the reference: equal up to rounding
        assert a.shape == b.shape
        assert_close(a, b, dtype, loosen)


# --- native == reference ------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICE_PARAMS)
@settings(max_examples=40, deadline=None)
@given(
    B=st.integers(0, 40),
    # around the vector (16 floats / 8 doubles) and register-block (12 / 6 rows) sizes
    D=st.one_of(st.integers(1, 9), st.sampled_from([16, 17, 31, 32, 33, 64])),
    hidden=st.lists(st.one_of(st.integers(1, 14), st.sampled_from([24, 25, 48, 65, 128])), max_size=3),
    C=st.integers(0, 4),
    activation=st.sampled_from(["tanh", "softplus"]),
    divergence=st.sampled_from([None, "exact", "hutchinson"]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    seed=st.integers(0, 2**31 - 1),
)
def test_matches_reference(device, B, D, hidden, C, activation, divergence, dtype, seed):
    t, z, c, ws, noise = make_problem(B, D, tuple(hidden), C, dtype=dtype, device=device, seed=seed,
                                      hutchinson=divergence == "hutchinson")
    assert_matches_reference(t, z, c, ws, activation, divergence, noise)


@pytest.mark.parametrize("simd", ["default", "avx2", "generic"])
def test_every_cpu_simd_path(simd, monkeypatch):
    """Each instruction-set copy of the CPU kernel this machine can run (chosen per call, so
    CGNF_SIMD switches it in-process): ragged tiles, widths off the register block, several
    threads, every divergence."""
    use_simd(monkeypatch, simd, "cnf_simd")
    for dtype in (torch.float32, torch.float64):
        for i, (B, D, hidden, C) in enumerate([(300, 32, (128, 128), 4), (37, 5, (13,), 1), (70, 64, (40, 7, 19), 0)]):
            for divergence in (None, "exact", "hutchinson"):
                p = make_problem(B, D, hidden, C, dtype=dtype, seed=i, hutchinson=divergence == "hutchinson")
                for activation in ("tanh", "softplus"):
                    assert_matches_reference(*p[:4], activation, divergence, p[4], grads=False)


def test_saturated_units_and_softplus_threshold():
    """Weights scaled x30 push pre-activations to |x| ~ 100: tanh and the gates saturate,
    softplus takes its x > 20 branch and its log1p tail; everything stays finite and close."""
    for dtype in (torch.float32, torch.float64):
        for divergence in (None, "exact", "hutchinson"):
            t, z, c, ws, noise = make_problem(64, 6, (20, 20), 3, dtype=dtype, scale=30.0, seed=3,
                                              hutchinson=divergence == "hutchinson")
            for activation in ("tanh", "softplus"):
                with torch.no_grad():
                    dz, div = cnf_dynamics(t, z, c, ws, activation, divergence, noise)
                assert torch.isfinite(dz).all() and (div is None or torch.isfinite(div).all())
                # float32 tanh is a rational approximation (<= 6.5 ulp) and 1 - tanh^2 of a
                # saturated unit cancels: the divergence of these extreme weights agrees to ~1e-5
                assert_matches_reference(t, z, c, ws, activation, divergence, noise, grads=False,
                                         loosen=1.0 if dtype == F64 else 5.0)


def test_activation_math_over_a_grid():
    """One layer with identity-like weights exposes act(x) on a dense grid through the next
    layer: the vector exp/sigmoid/tanh/softplus of the kernel against torch's, per element."""
    x = torch.linspace(-60, 60, 4001, dtype=F64)
    for dtype in (torch.float32, torch.float64):
        xs = x.to(dtype)
        B = xs.numel()
        # layer 0: pre = x (W = 1, b = 0, gate pinned to 1 by a huge bias, no context bias);
        # layer 1: dz = act(pre) (W = 1, gate 1)
        big = torch.tensor([60.0], dtype=dtype)
        one, zero = torch.ones(1, 1, dtype=dtype), torch.zeros(1, dtype=dtype)
        ws = [(one, zero, torch.zeros(1, 1, dtype=dtype), big, torch.zeros(1, 1, dtype=dtype))] * 2
        for activation in ("tanh", "softplus"):
            got, _ = cnf_dynamics(0.0, xs[:, None], torch.zeros(B, 0, dtype=dtype), ws, activation)
            want = torch.tanh(xs) if activation == "tanh" else torch.nn.functional.softplus(xs)
            ulp = (got[:, 0] - want).abs() / torch.finfo(dtype).eps / want.abs().clamp_min(torch.finfo(dtype).tiny)
            # measured: float32 2.0 (tanh) and 1.6 (softplus), float64 0.9 and 1.9
            assert float(ulp.max()) <= (8 if dtype == torch.float32 else 4), (activation, dtype, float(ulp.max()))


def test_gradcheck_float64():
    t, z, c, ws, noise = make_problem(3, 3, (4,), 2, dtype=F64, seed=5, hutchinson=True)
    flat = [w for lw in ws for w in lw]
    inputs = [x.requires_grad_(True) for x in (t, z, c, *flat, noise)]

    def fn(*xs):
        ws_ = [tuple(xs[3 + 5 * i:8 + 5 * i]) for i in range(len(ws))]
        outs = []
        for div in (None, "exact", "hutchinson"):
            dz, dv = cnf_dynamics(xs[0], xs[1], xs[2], ws_, "softplus", div, xs[-1] if div == "hutchinson" else None)
            outs += [dz] + ([dv] if dv is not None else [])
        return tuple(outs)

    assert torch.autograd.gradcheck(fn, tuple(inputs))
    # the backward recomputes the reference under autograd, so second order works too
    assert torch.autograd.gradgradcheck(lambda zz: cnf_dynamics(t, zz, c, ws, "tanh", "exact")[1], (z,))


@pytest.mark.slow
def test_opcheck():
    for dtype in (torch.float32, torch.float64):
        for divergence in ("none", "exact", "hutchinson"):
            t, z, c, ws, noise = make_problem(6, 4, (5, 3), 2, dtype=dtype, hutchinson=divergence == "hutchinson")
            flat = [w for lw in ws for w in lw]
            op = torch.ops.cgnf_fast.cnf_dynamics.default
            torch.library.opcheck(op, (t.reshape(1), z, c, flat, "tanh", divergence, noise))
            grad_args = (t.reshape(1).requires_grad_(True), z.requires_grad_(True), c.requires_grad_(True),
                         [w.requires_grad_(True) for w in flat], "softplus", divergence,
                         None if noise is None else noise.requires_grad_(True))
            torch.library.opcheck(op, grad_args)


def test_the_three_native_paths_agree():
    """The custom op (autograd recording), its direct call (nothing to record) and a CnfPlan
    run the same kernel: bitwise equal."""
    t, z, c, ws, noise = make_problem(50, 8, (30, 30), 3, hutchinson=True)
    for divergence, nz in ((None, None), ("exact", None), ("hutchinson", noise)):
        with torch.no_grad():
            direct = cnf_dynamics(t, z, c, ws, "tanh", divergence, nz)
            plan = CnfPlan(ws, c, "tanh", divergence, nz)(t, z)
        op = cnf_dynamics(t, z.clone().requires_grad_(True), c, ws, "tanh", divergence, nz)
        for a, b, o in zip(direct, plan, op):
            if a is None:
                assert b is None and o is None
            else:
                assert torch.equal(a, b) and torch.equal(a, o.detach())
    plan = CnfPlan(ws, c, "tanh")
    assert torch.equal(plan(0.25, z)[0], plan(torch.tensor([0.25], dtype=F64), z)[0])  # t: float or tensor
    with pytest.raises(ValueError, match=r"z must be a torch.float32 tensor of shape \[50, 8\] on cpu"):
        plan(t, z[:10])
    with pytest.raises(ValueError, match=r"z must be a torch.float32 tensor .*got torch.float64"):
        plan(t, z.double())


def test_t_gradient_and_float_time():
    """d/dt flows through the op; a Python float time equals the tensor one."""
    t, z, c, ws, _ = make_problem(9, 4, (6,), 2, dtype=F64)
    tt = t.clone().requires_grad_(True)
    g_native = torch.autograd.grad(cnf_dynamics(tt, z, c, ws, "tanh", "exact")[1].sum(), tt)[0]
    tt2 = t.clone().requires_grad_(True)
    g_ref = torch.autograd.grad(ref.cnf_dynamics(tt2, z, c, ws, "tanh", "exact")[1].sum(), tt2)[0]
    assert g_native.shape == tt.shape
    torch.testing.assert_close(g_native, g_ref, rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        torch.testing.assert_close(cnf_dynamics(float(t), z, c, ws)[0], cnf_dynamics(t, z, c, ws)[0], rtol=0, atol=0)


@pytest.mark.parametrize("device", DEVICE_PARAMS)
def test_empty_batch_and_non_contiguous_inputs(device):
    for divergence in (None, "exact", "hutchinson"):
        t, z, c, ws, noise = make_problem(0, 4, (6,), 2, device=device, hutchinson=divergence == "hutchinson")
        dz, div = cnf_dynamics(t, z, c, ws, "tanh", divergence, noise)
        assert dz.shape == (0, 4) and (div is None or div.shape == (0,))
    t, z, c, ws, noise = make_problem(20, 5, (7,), 3, device=device, hutchinson=True)
    zt = z.t().contiguous().t()  # same values, strided
    ct = c.t().contiguous().t()
    wt = [(lw[0].t().contiguous().t(), *lw[1:]) for lw in ws]
    assert not zt.is_contiguous() and not wt[0][0].is_contiguous()
    assert_matches_reference(t, zt, ct, wt, "tanh", "hutchinson", noise)
    assert_matches_reference(t, z[5:15], c[5:15], ws, "softplus", "exact", None)  # offset storage


def test_meta_tensors_give_shapes():
    t, z, c, ws, _ = make_problem(7, 4, (6,), 2)
    meta = lambda x: x.to("meta")  # noqa: E731
    dz, div = cnf_dynamics(meta(t), meta(z), meta(c), [tuple(map(meta, lw)) for lw in ws], "tanh", "exact")
    assert dz.shape == (7, 4) and div.shape == (7,) and dz.device.type == "meta"


# --- solves: odeint with native dynamics == odeint with reference dynamics --------------------


def _flows(backend_a: str = "native", backend_b: str = "torch", **kw) -> tuple[ConditionalCNF, ConditionalCNF]:
    torch.manual_seed(0)
    kw = dict(hidden=(16, 16), rtol=1e-9, atol=1e-9, adjoint=False) | kw
    a = ConditionalCNF(4, 3, backend=backend_a, **kw).to(F64)
    b = ConditionalCNF(4, 3, backend=backend_b, **kw).to(F64)
    b.load_state_dict(a.state_dict())
    return a, b


@pytest.mark.parametrize("divergence", ["exact", "hutchinson"])
def test_flow_sample_and_log_prob_native_equal_torch(divergence):
    native_flow, torch_flow = _flows(divergence=divergence, activation="softplus")
    g = torch.Generator().manual_seed(1)
    c = torch.randn(12, 3, generator=g, dtype=F64)
    e = torch.randn(12, 4, generator=g, dtype=F64)
    with torch.no_grad():
        s_native, s_torch = native_flow.sample(c, noise=e), torch_flow.sample(c, noise=e)
        torch.testing.assert_close(s_native, s_torch, rtol=1e-10, atol=1e-10)
        lp_native = native_flow.log_prob(s_native, c, generator=torch.Generator().manual_seed(2))
        lp_torch = torch_flow.log_prob(s_native, c, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(lp_native, lp_torch, rtol=1e-10, atol=1e-10)
    assert native_flow.nfe == torch_flow.nfe > 0


def test_odeint_with_the_op_equals_odeint_with_the_reference_including_gradients():
    """torchdiffeq.odeint through the custom op (native forward, reference backward) and
    through the reference: the same solution, log-determinant and gradients for every weight,
    the condition and the initial state."""
    from torchdiffeq import odeint

    t, z, c, ws, _ = make_problem(6, 3, (8, 8), 2, dtype=F64, seed=11)

    def solve(fn):
        z0 = z.clone().requires_grad_(True)
        cc = c.clone().requires_grad_(True)
        wl = [tuple(w.clone().requires_grad_(True) for w in lw) for lw in ws]

        def f(tt, state):
            dz, div = fn(tt, state[0], cc, wl, "tanh", "exact", None)
            return dz, div

        ts = torch.tensor([0.0, 0.8], dtype=F64)
        zt, ld = odeint(f, (z0, torch.zeros(6, dtype=F64)), ts, rtol=1e-10, atol=1e-10)
        loss = (zt[-1] ** 2).sum() + ld[-1].sum()
        grads = torch.autograd.grad(loss, [z0, cc, *[w for lw in wl for w in lw]])
        return zt[-1].detach(), ld[-1].detach(), grads

    a, b = solve(native), solve(ref.cnf_dynamics)
    torch.testing.assert_close(a[0], b[0], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(a[1], b[1], rtol=1e-10, atol=1e-10)
    for ga, gb in zip(a[2], b[2]):
        torch.testing.assert_close(ga, gb, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("divergence", ["exact", "hutchinson"])
def test_adjoint_training_gradients_native_equal_torch(divergence):
    """Training with odeint_adjoint: the forward solve runs natively (no_grad inside the
    adjoint), the backward solve the reference; gradients equal the all-torch flow's."""
    native_flow, torch_flow = _flows(divergence=divergence, adjoint=True, rtol=1e-8, atol=1e-8)
    g = torch.Generator().manual_seed(4)
    z = torch.randn(10, 4, generator=g, dtype=F64)
    c = torch.randn(10, 3, generator=g, dtype=F64)
    grads = []
    for flow in (native_flow, torch_flow):
        cc = c.clone().requires_grad_(True)
        loss = -flow.log_prob(z, cc, generator=torch.Generator().manual_seed(5)).mean()
        grads.append(torch.autograd.grad(loss, [cc, *flow.parameters()]))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_backend_choice_fallbacks_and_config():
    flow = ConditionalCNF(3, 2, hidden=(5,))
    assert flow.dynamics.backend == "native" and flow.config()["backend"] == "native"
    cfg = flow.config()
    del cfg["backend"]  # a config saved before the argument existed
    assert ConditionalCNF(**cfg).dynamics.backend == "native"
    assert ConditionalCNF(**{**cfg, "backend": "torch"}).config()["backend"] == "torch"
    with pytest.raises(ValueError, match=r'backend must be one of \{"native", "torch"\}, got \'cuda\''):
        ConditionalCNF(3, 2, backend="cuda")
    with pytest.raises(ValueError, match=r'backend must be one of'):
        ODEDynamics(3, 2, backend=None)
    cpu = torch.device("cpu")
    # sizes the kernel does not take fall back to the reference (same results)
    wide = ODEDynamics(4, 1, hidden=(cnf_ops.CNF_MAX_WIDTH + 1,)).to(F64)
    assert not wide.native_applies(None, cpu) and ODEDynamics(4, 1).native_applies("exact", cpu)
    big = ODEDynamics(cnf_ops.CNF_MAX_EXACT_LATENT + 1, 1, hidden=(8,)).to(F64)
    assert big.native_applies(None, cpu) and big.native_applies("hutchinson", cpu)
    assert not big.native_applies("exact", cpu)
    z = torch.randn(3, big.latent, dtype=F64)
    c = torch.randn(3, 1, dtype=F64)
    with torch.no_grad():
        dz, div = big.forward_with_divergence(0.3, z, c, "exact")
        rdz, rdiv = ref.cnf_dynamics(0.3, z, c, big.weights(), "tanh", "exact")
    torch.testing.assert_close(dz, rdz, rtol=0, atol=0)
    torch.testing.assert_close(div, rdiv, rtol=0, atol=0)
    assert "backend='native'" in repr(big)


# --- limits and bad input ------------------------------------------------------------------


def test_bad_inputs_are_clear_errors():
    t, z, c, ws, noise = make_problem(4, 3, (5,), 2, hutchinson=True)
    D_big = cnf_ops.CNF_MAX_EXACT_LATENT + 1
    tb, zb, cb, wsb, _ = make_problem(2, D_big, (4,), 1)
    _, zw, cw, wsw, _ = make_problem(2, 3, (cnf_ops.CNF_MAX_WIDTH + 1,), 2)
    w_bad_shape = [(ws[0][0][:, :2], *ws[0][1:]), ws[1]]
    w_bad_dtype = [(ws[0][0].double(), *ws[0][1:]), ws[1]]
    w_bad_last = [ws[0], (ws[1][0][:2], *ws[1][1:])]
    cases = [
        (lambda: cnf_dynamics(t, z.numpy(), c, ws), r"z must be a torch.Tensor \[B, D\] float32 or float64, got ndarray"),
        (lambda: cnf_dynamics(t, z.half(), c, ws), r"z must have dtype torch.float32 or torch.float64 .*got torch.float16"),
        (lambda: cnf_dynamics(t, z[0], c, ws), r"z must have shape \[B, D\] with D >= 1, got \[3\]"),
        (lambda: cnf_dynamics(t, z, c.double(), ws), r"c must have the dtype of z \(torch.float32\), got torch.float64"),
        (lambda: cnf_dynamics(t, z, c[:3], ws), r"c must have shape \[B, C\] = \[4, 2\], got \[3, 2\]"),
        (lambda: cnf_dynamics(t, z, c[0], ws), r"c must be a torch.Tensor \[B, C\] \(C may be 0\), got \[2\]"),
        (lambda: cnf_dynamics(t, z, c.to("meta"), ws), r"c is on meta but z is on cpu"),
        (lambda: cnf_dynamics(torch.zeros(2), z, c, ws), r"t must be a 0-d or one-element tensor \[1\]"),
        (lambda: cnf_dynamics("0.5", z, c, ws), r"t must be a float or a one-element tensor, got str"),
        (lambda: cnf_dynamics(t.double(), z, c, ws), r"t must have the dtype of z"),
        (lambda: cnf_dynamics(t, z, c, ws, "relu"), r"activation must be one of \('tanh', 'softplus'\), got 'relu'"),
        (lambda: cnf_dynamics(t, z, c, ws, divergence="trace"), r"divergence must be None, 'exact' or 'hutchinson'"),
        (lambda: cnf_dynamics(t, z, c, ws, divergence="hutchinson"), r"noise \[B, D\] is required"),
        (lambda: cnf_dynamics(t, z, c, ws, divergence="exact", noise=noise), r"noise must be None unless"),
        (lambda: cnf_dynamics(t, z, c, ws, divergence="hutchinson", noise=noise[:2]),
         r"noise must have shape \[B, D\] = \[4, 3\], got \[2, 3\]"),
        (lambda: cnf_dynamics(t, z, c, [ws[0][:4]]), r"weights must be a sequence of per-layer tuples"),
        (lambda: cnf_dynamics(t, z, c, ws[0][0]), r"weights must be a sequence of per-layer tuples"),
        (lambda: cnf_dynamics(t, z, c, w_bad_shape), r"layer 0 W must have shape \[out, in\] = \[5, 3\], got \[5, 2\]"),
        (lambda: cnf_dynamics(t, z, c, w_bad_dtype), r"layer 0 W must have the dtype of z"),
        (lambda: cnf_dynamics(t, z, c, w_bad_last), r"layer 1 W must have shape \[out, in\] = \[3, 5\], got \[2, 5\]"),
        (lambda: cnf_dynamics(tb, zb, cb, wsb, divergence="exact"),
         r"the native exact divergence supports latent sizes D <= 64, got z of shape \[2, 65\]"),
        (lambda: cnf_dynamics(t, zw, cw, wsw), r"cnf_dynamics supports layer widths <= 512 natively, got widths"),
        (lambda: cnf_dynamics(t, z, c, ws, backend="cuda"), r"unknown backend 'cuda'; choose one of 'native', 'torch'"),
        (lambda: CnfPlan(ws, c, "tanh", "exact", noise), r"noise must be None unless"),
        (lambda: CnfPlan(wsb, cb, "tanh", "exact"), r"the native exact divergence supports latent sizes D <= 64"),
    ]
    for call, msg in cases:
        with pytest.raises(ValueError, match=msg):
            call()
    # the reference backend validates alike but has no size limits
    with pytest.raises(ValueError, match=r"c must have the dtype of z"):
        cnf_dynamics(t, z, c.double(), ws, backend="torch")
    assert cnf_dynamics(tb, zb, cb, wsb, divergence="exact", backend="torch")[1].shape == (2,)
    # the custom op validates when called directly
    flat = [w for lw in ws for w in lw]
    with pytest.raises(ValueError, match=r"weights must hold 5 tensors \(W, b, G, g, H\) per layer, got 9"):
        torch.ops.cgnf_fast.cnf_dynamics(t.reshape(1), z, c, flat[:9], "tanh", "none", None)


def test_native_entry_rejects_bad_arguments():
    cfg = _C.build_config()
    assert cfg["cnf_max_width"] == cnf_ops.CNF_MAX_WIDTH == 512
    assert cfg["cnf_max_exact_latent"] == cnf_ops.CNF_MAX_EXACT_LATENT == 64
    assert cfg["cnf_max_layers"] == cnf_ops.CNF_MAX_LAYERS == 32
    t, z, c, ws, _ = make_problem(4, 3, (5,), 2)
    ptrs = [w.data_ptr() for lw in ws for w in lw]
    dz = torch.empty_like(z)
    ok = dict(t=t.data_ptr(), z=z.data_ptr(), c=c.data_ptr(), noise=0, weights=ptrs, widths=[3, 5, 3],
              dz=dz.data_ptr(), div=0, B=4, C=2, activation=0, divergence=0, float64=False, num_threads=1)
    _C.cnf_dynamics_fwd_cpu(**ok)
    torch.testing.assert_close(dz, ref.cnf_dynamics(t, z, c, ws)[0], rtol=2e-6, atol=2e-6)
    bad = [
        (dict(z=0), "z is a null pointer"),
        (dict(t=0), "t is a null pointer"),
        (dict(widths=[3, 5]), r"weights must hold 5 pointers"),
        (dict(widths=[3, 5, 4]), "the last width must equal the latent size D"),
        (dict(widths=[3, 600, 3]), r"every width must be in \[1, 512\]"),
        (dict(divergence=1), "div is a null pointer"),
        (dict(divergence=2, div=dz.data_ptr()), "noise is a null pointer"),
        (dict(divergence=3), r"divergence must be 0 \(none\), 1 \(exact\) or 2 \(hutchinson\)"),
        (dict(activation=2), r"activation must be 0 \(tanh\) or 1 \(softplus\)"),
        (dict(B=-1), "batch size must be >= 0"),
        (dict(weights=[0] * 10), "a weight is a null pointer"),
    ]
    for change, msg in bad:
        with pytest.raises(ValueError, match=msg):
            _C.cnf_dynamics_fwd_cpu(**(ok | change))
    assert _C.cnf_cuda_workspace(10, [3, 5, 3], 1) == 10 * 8 and _C.cnf_cuda_workspace(10, [3, 5, 3], 0) == 0


# --- CUDA (skipped without a GPU; run by benches/gpu_check.sh) -------------------------------


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cnf_cuda_matches_cpu_and_reference(dtype):
    """CUDA == CPU == reference over shapes that hit ragged row groups, one and several layers,
    widths up to the limit (shared-memory row groups of a few rows) and a grid-stride batch."""
    cases = [(1, 1, (), 0), (37, 5, (13,), 1), (300, 32, (128, 128), 4), (70, 64, (40, 7, 19), 0),
             (9, 16, (512,), 2)]
    if dtype == torch.float32:
        cases.append((70_000 * 16 + 5, 2, (3,), 1))  # more row groups than the 65,535 blocks
    for i, (B, D, hidden, C) in enumerate(cases):
        for divergence in (None, "exact", "hutchinson"):
            if B > 100_000 and divergence == "exact":
                continue
            p = make_problem(B, D, hidden, C, dtype=dtype, seed=i, hutchinson=divergence == "hutchinson")
            gpu = [x.cuda() if isinstance(x, torch.Tensor) else x for x in p]
            gpu[3] = [tuple(w.cuda() for w in lw) for lw in p[3]]
            for activation in ("tanh", "softplus"):
                with torch.no_grad():
                    cpu_out = cnf_dynamics(*p[:4], activation, divergence, p[4])
                    cuda_out = cnf_dynamics(*gpu[:4], activation, divergence, gpu[4])
                for a, b in zip(cuda_out, cpu_out):
                    if a is not None:
                        assert_close(a, b, dtype)
                if B <= 1000:
                    assert_matches_reference(*gpu[:4], activation, divergence, gpu[4], grads=False)


@needs_cuda
def test_cnf_cuda_side_stream_plan_opcheck_and_flow():
    t, z, c, ws, noise = make_problem(40, 6, (20, 20), 3, device="cuda", hutchinson=True)
    want = ref.cnf_dynamics(t, z, c, ws, "tanh", "exact")
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s), torch.no_grad():
        got = cnf_dynamics(t, z, c, ws, "tanh", "exact")
        plan_out = CnfPlan(ws, c, "tanh", "exact")(t, z)
    torch.cuda.current_stream().wait_stream(s)
    for a, p, w in zip(got, plan_out, want):
        assert_close(a, w, torch.float32)
        assert torch.equal(a, p)
    assert_matches_reference(t, z, c, ws, "softplus", "hutchinson", noise)  # gradients on the GPU
    flat = [w for lw in ws for w in lw]
    torch.library.opcheck(torch.ops.cgnf_fast.cnf_dynamics.default,
                          (t.reshape(1), z.requires_grad_(True), c, flat, "tanh", "exact", None))
    native_flow, torch_flow = _flows()
    native_flow, torch_flow = native_flow.cuda(), torch_flow.cuda()
    cc = torch.randn(8, 3, dtype=F64, device="cuda")
    e = torch.randn(8, 4, dtype=F64, device="cuda")
    with torch.no_grad():
        torch.testing.assert_close(native_flow.sample(cc, noise=e), torch_flow.sample(cc, noise=e),
                                   rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(native_flow.log_prob(e, cc), torch_flow.log_prob(e, cc), rtol=1e-10, atol=1e-10)


def test_native_backend_falls_back_for_other_dtypes() -> None:
    from cgnf_fast.models.flow import ConditionalCNF
    from cgnf_fast.ops.cnf import native_supports

    assert native_supports(8, [16], None, torch.device("cpu"), torch.float32)
    assert not native_supports(8, [16], None, torch.device("cpu"), torch.bfloat16)
    flow = ConditionalCNF(8, 2, hidden=(16,)).to(torch.bfloat16)
    z = flow.sample(torch.zeros(3, 2, dtype=torch.bfloat16), generator=torch.Generator().manual_seed(0))
    assert z.dtype == torch.bfloat16 and z.shape == (3, 8)
