"""CNF dynamics: the fused native kernel vs the pure-PyTorch reference, side by side in one run.

    python benches/bench_cnf.py [--device cpu|cuda] [--batch 20,256,1000,4096]
                                [--hidden 128x128,256x256] [--reps 5] [--threads 2] [--skip-exact-over 1000]
                                [--only eval,eval_exact,vjp_exact,sample] [--apart] [--no-compile]
                                [--malloc default|fixed]

Flows of ``ConditionalCNF(latent=32, cond_dim=4, hidden)`` with PyTorch's default (random)
initialisation, float32, eval mode, ``torch.no_grad``. For each hidden size and batch B:

* ``eval``: one evaluation of ``dz/dt`` (no divergence);
* ``eval_exact``: one evaluation of ``dz/dt`` and the exact divergence ``tr(df/dz)``;
* ``vjp_exact``: one evaluation of the adjoint's dynamics with the exact divergence (what the
  backward solve of a training step evaluates at every stage: ``dz/dt``, the divergence and the
  vector-Jacobian products for ``z``, ``c``, ``t`` and every weight), ``cnf_dynamics_vjp`` native
  vs ``backend="torch"`` (autograd over the reference); no compiled column (the ``--train-step``
  rows compare the whole step with the compiled reference);
* ``sample``: a full sampling solve, ``flow.sample(c, noise=e)`` (dopri5, rtol = atol = 1e-5,
  from t = 1 to 0), ``backend="native"`` vs ``backend="torch"`` on the same weights. On the CPU
  the native flow runs the whole solve natively (``CnfPlan.solve``); the row also times
  torchdiffeq driving the native kernel (``odeint_native_dynamics_s``, the native path before
  the native solver; on CUDA that is the native path) and gives, for that solve and the torch
  one, ``outside_dynamics_s_*``: the time spent outside the dynamics evaluations
  (torchdiffeq's own tensor work), which bounds what a faster kernel alone could gain.

``--train-step`` (instead of the rows above): one training step, ``loss = -flow.log_prob(z,
c).mean(); loss.backward()``, of the shipped nb201-like flow (its weights: latent 32, 4
conditions, hidden 128x128, exact divergence, moving batch-norm, train mode) at the pipeline's
training tolerances (rtol = atol = 1e-3), for B in ``--train-batch`` (256,1024): z drawn around
the flow's input statistics (running mean and variance of its first batch-norm), c standard
normal. ``native``: ``backend="native"`` (both solves of the adjoint native, the backward's stages
on the fused vector-Jacobian kernel), run as ``cgnf train flow --backend native`` runs its steps:
inside ``_native.kernels_own_the_cores()`` (the step's small torch ops on one thread);
``torch``: ``backend="torch"``, torchdiffeq's ``odeint_adjoint`` with the reference dynamics;
``compiled``: the same with the reference dynamics under ``torch.compile`` (compiled before
timing). Rows give each column's median (``native_s``, ``torch_s``, ``compiled_s``),
``ratio = torch_s / native_s`` and ``ratio_compiled = compiled_s / native_s``, the evaluations
of each solve and the largest relative difference of the gradients (native vs torch).

Every row also has a ``compiled`` column unless ``--no-compile``: the reference under
``torch.compile`` (default mode, compiled and warmed up before timing).

"native" is what a solve runs per step: ``cgnf_fast.ops.cnf.CnfPlan`` (weights and condition
validated once); "torch" is ``cgnf_fast.reference.cnf.cnf_dynamics``, the stock-PyTorch ops of
``ODEDynamics`` (``F.linear``, ``sigmoid``, ``tanh``, ``bmm``-style matmuls for the tangents).
After a warm-up of each (and a check that they agree), every rep runs both back to back,
alternating which goes first; rows report medians (and all times) and
``ratio = torch_s / native_s``. ``--skip-exact-over B`` skips ``eval_exact`` above that batch
for the widest hidden size (the reference needs ~0.4 s an evaluation at B = 4096 on 2 cores).
``--malloc fixed`` fixes glibc's mmap threshold first (``_timing.fix_glibc_malloc``): by default
whether the reference's temporaries of a few MB are reused or faulted in afresh at every call
depends on the process's history, which moves the torch column by up to a half between runs;
fixed, it measures torch at its best (every row records ``"malloc"``).
Timings depend on the machine (and its load); they are not tests.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import time

import torch

from cgnf_fast._native import kernels_own_the_cores
from cgnf_fast.models import flow as flow_module
from cgnf_fast.models.flow import ConditionalCNF
from cgnf_fast.ops.cnf import CnfPlan, cnf_dynamics_vjp
from cgnf_fast.reference import cnf as reference

from _timing import fix_glibc_malloc, timed

LATENT, COND = 32, 4


#: ``--apart``: time each backend's reps in one block instead of alternating them.
APART = False


def side_by_side(native, torch_fn, device: str, reps: int, compiled=None) -> dict:
    """Medians over ``reps`` of each callable (``compiled`` optional), run back to back in
    rotating order (``--apart``: all of one callable's reps, then the next's)."""
    fns = {"native": native, "torch": torch_fn}
    if compiled is not None:
        fns["compiled"] = compiled
    for fn in fns.values():  # warm-up (caches, allocator, thread pools; compile's first call compiles)
        fn()
        fn()
    names = list(fns)
    times: dict[str, list[float]] = {k: [] for k in names}
    if APART:
        for name in names:
            for _ in range(reps):
                times[name].append(timed(fns[name], device))
    for r in range(0 if APART else reps):
        for name in names[r % len(names):] + names[:r % len(names)]:
            times[name].append(timed(fns[name], device))
    med = {k: statistics.median(v) for k, v in times.items()}
    row = {f"{k}_s": float(f"{med[k]:.4g}") for k in names}
    row["ratio"] = round(med["torch"] / med["native"], 3)
    if compiled is not None:
        row["ratio_compiled"] = round(med["compiled"] / med["native"], 3)
    row.update({f"{k}_s_all": [float(f"{t:.4g}") for t in times[k]] for k in names})
    return row


def shipped_training_flow() -> ConditionalCNF:
    """The shipped nb201-like flow at its training tolerances, in train mode."""
    from cgnf_fast.sampling.model import default_model_dir, load_flow

    flow, info = load_flow(default_model_dir("nb201-like") / "flow")
    flow.rtol, flow.atol = info["train_tolerances"]["rtol"], info["train_tolerances"]["atol"]
    flow_module.set_mode(flow, True)
    return flow


def training_batch(flow: ConditionalCNF, B: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(z, c)`` of B rows: z around the flow's input statistics (its first batch-norm's running
    mean and variance), c standard normal; seeded by B."""
    g = torch.Generator().manual_seed(B)
    bn = flow.bn_in
    z = bn.running_mean + bn.running_var.sqrt() * torch.randn(B, flow.latent, generator=g)
    return z, torch.randn(B, flow.cond_dim, generator=g)


def train_step_rows(batches: list[int], reps: int, compile_ref: bool, meta: dict) -> None:
    """One training step of the shipped nb201-like flow at the training tolerances (module doc)."""
    import types

    flow = shipped_training_flow()
    if compile_ref:  # torchdiffeq's adjoint takes its products with retain_graph=True, which donated buffers refuse
        import torch._functorch.config as functorch_config

        functorch_config.donated_buffer = False
    compiled_ref = torch.compile(reference.cnf_dynamics) if compile_ref else None
    for B in batches:
        z, c = training_batch(flow, B)
        nfe: dict[str, int] = {}

        def step(backend: str, ref=None):
            flow.dynamics.backend = backend
            flow.zero_grad(set_to_none=True)
            saved = flow_module.cnf_reference
            if ref is not None:
                flow_module.cnf_reference = types.SimpleNamespace(cnf_dynamics=ref)
            try:
                loss = -flow.log_prob(z, c).mean()
                fwd = flow.nfe
                loss.backward()
            finally:
                flow_module.cnf_reference = saved
            nfe[backend + ("_compiled" if ref is not None else "")] = fwd
            return [p.grad.clone() for p in flow.parameters()]

        g_native, g_torch = step("native"), step("torch")
        err = max(rel_err(a, b) for a, b in zip(g_native, g_torch))

        def native_step():
            with kernels_own_the_cores():  # as cgnf train flow --backend native runs a step
                return step("native")

        row = side_by_side(native_step, lambda: step("torch"), "cpu", reps,
                           (lambda: step("torch", compiled_ref)) if compile_ref else None)
        print(json.dumps({"bench": "train_step", "batch": B, **row, "nfe_forward": nfe,
                          "rel_err_grads": float(f"{err:.3g}"), "rtol": flow.rtol, "atol": flow.atol,
                          "hidden": list(flow.dynamics.hidden), **meta}), flush=True)


def split_solve(flow: ConditionalCNF, c: torch.Tensor, e: torch.Tensor, device: str) -> tuple[float, float]:
    """One extra sampling solve with every dynamics evaluation timed: ``(total_s, inside_s)``.
    ``total - inside`` is what torchdiffeq spends on its own tensor work (the Runge-Kutta
    combinations, error norms, interpolation), the same for both backends: the floor of a solve."""
    orig = flow_module._ODEFunc.forward
    inside = [0.0]

    def forward(self, t, state):
        t0 = time.perf_counter()
        out = orig(self, t, state)
        if device == "cuda":
            torch.cuda.synchronize()
        inside[0] += time.perf_counter() - t0
        return out

    flow_module._ODEFunc.forward = forward
    try:
        total = timed(lambda: flow.sample(c, noise=e), device)
    finally:
        flow_module._ODEFunc.forward = orig
    return total, inside[0]


@contextlib.contextmanager
def odeint_only():
    """Solves go through torchdiffeq (with the native kernel per evaluation) inside."""
    orig = flow_module._ODEFunc.native_solve_applies
    flow_module._ODEFunc.native_solve_applies = lambda self, z: False
    try:
        yield
    finally:
        flow_module._ODEFunc.native_solve_applies = orig


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def vjp_row(t, z, c, weights, activation, args, base, meta) -> None:
    """One evaluation of the adjoint's dynamics (exact divergence), native vs autograd."""
    g = torch.Generator().manual_seed(len(z))
    g_dz = torch.randn(z.shape, generator=g).to(z.device)
    g_div = torch.randn(len(z), generator=g).to(z.device)

    def run(backend):
        return cnf_dynamics_vjp(t, z, c, weights, g_dz, g_div, activation, "exact", backend=backend)

    got, want = run("native"), run("torch")
    err = max(rel_err(a, b) for a, b in zip([*got[:5], *(x for w in got[5] for x in w)],
                                             [*want[:5], *(x for w in want[5] for x in w)]))
    if err > 1e-3:
        raise RuntimeError(f"native and torch disagree on vjp_exact (max relative error {err:.2e})")
    row = side_by_side(lambda: run("native"), lambda: run("torch"), args.device, max(3, args.reps // 2))
    print(json.dumps({"bench": "vjp_exact", **base, **row, "rel_err": float(f"{err:.3g}"), **meta}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", default="20,256,1000,4096", help="comma-separated batch sizes B")
    ap.add_argument("--hidden", default="128x128,256x256", help="comma-separated hidden sizes, widths joined by x")
    ap.add_argument("--reps", type=int, default=5, help="timed reps per backend (median reported)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--threads", type=int, default=2, help="torch (and native) CPU threads")
    ap.add_argument("--skip-exact-over", type=int, default=1000,
                    help="skip eval_exact above this batch for the widest hidden size (0: never skip)")
    ap.add_argument("--only", default="eval,eval_exact,vjp_exact,sample", help="comma-separated measurements to run")
    ap.add_argument("--train-step", action="store_true", help="time training steps instead (module doc)")
    ap.add_argument("--train-batch", default="256,1024", help="batch sizes of --train-step")
    ap.add_argument("--no-compile", action="store_true", help="leave out the torch.compile column")
    ap.add_argument("--apart", action="store_true",
                    help="time each backend's reps in one block (default: alternate them; torch's OpenMP threads "
                    "spin for a while after its ops and slow a native call that follows)")
    ap.add_argument("--malloc", choices=("default", "fixed"), default="default",
                    help="fixed: glibc's mmap threshold fixed and no trimming, so torch's temporaries are "
                    "reused rather than faulted in again (torch at its best; _timing.fix_glibc_malloc)")
    args = ap.parse_args()
    malloc = fix_glibc_malloc() if args.malloc == "fixed" else "default"
    global APART
    APART = args.apart
    torch.set_num_threads(args.threads)
    only = set(args.only.split(","))
    hiddens = [tuple(int(w) for w in h.split("x")) for h in args.hidden.split(",")]
    widest = max(sum(h) for h in hiddens)
    meta = {"device": args.device, "latent": LATENT, "cond_dim": COND, "dtype": "float32",
            "threads": torch.get_num_threads(), "reps": args.reps, "machine": platform.machine(),
            "torch": torch.__version__, "malloc": malloc}
    if args.device == "cuda":
        meta["gpu"] = torch.cuda.get_device_name()
    compile_ref = args.device == "cpu" and not args.no_compile
    if args.train_step:
        train_step_rows([int(b) for b in args.train_batch.split(",")], args.reps, compile_ref, meta)
        return
    ref_compiled = torch.compile(reference.cnf_dynamics) if compile_ref else None
    for hidden in hiddens:
        torch.manual_seed(0)
        native_flow = ConditionalCNF(LATENT, COND, hidden=hidden, backend="native").to(args.device).eval()
        torch_flow = ConditionalCNF(LATENT, COND, hidden=hidden, backend="torch").to(args.device).eval()
        torch_flow.load_state_dict(native_flow.state_dict())
        dyn = native_flow.dynamics
        weights = dyn.weights()
        for B in (int(b) for b in args.batch.split(",")):
            g = torch.Generator().manual_seed(B)
            z = torch.randn(B, LATENT, generator=g).to(args.device)
            c = torch.randn(B, COND, generator=g).to(args.device)
            t = torch.tensor(0.5, device=args.device)
            base = {"hidden": list(hidden), "batch": B}
            with torch.no_grad():
                for name, div in (("eval", None), ("eval_exact", "exact")):
                    if name not in only or (div and args.skip_exact_over and sum(hidden) == widest
                                            and B > args.skip_exact_over):
                        continue
                    plan = CnfPlan(weights, c, dyn.activation, div)
                    got, want = plan(t, z), reference.cnf_dynamics(t, z, c, weights, dyn.activation, div)
                    errs = {"rel_err_dz": rel_err(got[0], want[0])}
                    if div:
                        errs["rel_err_div"] = rel_err(got[1], want[1])
                    if max(errs.values()) > 1e-4:
                        raise RuntimeError(f"native and torch disagree on {name}: {errs}")
                    reps = args.reps if not div else max(3, args.reps // 2)
                    row = side_by_side(lambda: plan(t, z),
                                       lambda: reference.cnf_dynamics(t, z, c, weights, dyn.activation, div),
                                       args.device, reps,
                                       (lambda: ref_compiled(t, z, c, weights, dyn.activation, div))
                                       if ref_compiled is not None else None)
                    print(json.dumps({"bench": name, **base, **row, **errs, **meta}), flush=True)
            if "vjp_exact" in only and not (args.skip_exact_over and sum(hidden) == widest
                                            and B > args.skip_exact_over):
                vjp_row(t, z, c, weights, dyn.activation, args, base, meta)
            with torch.no_grad():
                if "sample" in only:
                    e = torch.randn(B, LATENT, generator=g).to(args.device)
                    s_native, s_torch = native_flow.sample(c, noise=e), torch_flow.sample(c, noise=e)
                    err = rel_err(s_native, s_torch)
                    if err > 1e-3:  # two adaptive solves of float32 dynamics that agree to ~1e-7 per step
                        raise RuntimeError(f"native and torch samples differ (max relative error {err:.2e})")
                    row = side_by_side(lambda: native_flow.sample(c, noise=e), lambda: torch_flow.sample(c, noise=e),
                                       args.device, max(3, args.reps // 2))
                    nfe = {"nfe_native": native_flow.nfe, "nfe_torch": torch_flow.nfe, "rel_err_sample": err}
                    with odeint_only():
                        times = [timed(lambda: native_flow.sample(c, noise=e), args.device)
                                 for _ in range(max(3, args.reps // 2))]
                        nfe["odeint_native_dynamics_s"] = float(f"{statistics.median(times):.4g}")
                        total, inside = split_solve(native_flow, c, e, args.device)
                        nfe["outside_dynamics_s_odeint_native_dynamics"] = float(f"{total - inside:.4g}")
                    total, inside = split_solve(torch_flow, c, e, args.device)
                    nfe["outside_dynamics_s_torch"] = float(f"{total - inside:.4g}")
                    print(json.dumps({"bench": "sample", **base, **row, **nfe, **meta}), flush=True)


if __name__ == "__main__":
    main()
