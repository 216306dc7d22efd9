"""Fused GIN aggregation (native) vs the pure-PyTorch reference, side by side in one run.

    python benches/bench_gnn.py [--batch 1000,16384] [--reps 5] [--device cpu|cuda] [--threads 2]
                                [--matmul-precision highest|high] [--profile] [--malloc default|fixed]

Measures forward + backward of the encoder's layer stack, 3 x
``h = relu(Linear(2H -> H)(gin_aggregate(adj, h, eps=0)))`` with N = 8, H = 256, ``adj``
random 0/1 strictly upper-triangular floats (density ~0.35), input ``h [B, N, H]`` requiring
grad, loss = ``out.sum()``; and, for reference, forward + backward of one ``gin_aggregate`` alone.
The two backends share the data and the Linear weights; after a warm-up of each, every rep
runs both back to back (alternating which goes first) and the rows report medians (and all
times). Prints one JSON row per (measurement, batch) with ``ratio = torch_s / native_s``; on the
CPU also a ``compiled`` column: the reference under ``torch.compile`` (``compiled_s``,
``ratio_compiled = compiled_s / native_s``; ``--no-compile`` leaves it out). ``--malloc fixed``
fixes glibc's mmap threshold first (torch at its best: ``_timing.fix_glibc_malloc``).
Timings depend on the machine; they are not tests.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys

import torch

from cgnf_fast.ops.gnn import gin_aggregate

from _timing import fix_glibc_malloc, timed

N, H, LAYERS, DENSITY = 8, 256, 3, 0.35


def make_inputs(B: int, device: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    upper = torch.ones(N, N, dtype=torch.bool).triu(1)
    adj = ((torch.rand(B, N, N, generator=g) < DENSITY) & upper).float()  # [B, N, N] 0/1 DAGs
    h = torch.randn(B, N, H, generator=g)  # [B, N, H]
    return adj.to(device), h.to(device)


def stack_step(layers: torch.nn.ModuleList, adj: torch.Tensor, h0: torch.Tensor, backend: str) -> torch.Tensor:
    """Forward + backward of the layer stack; returns the input gradient."""
    h0 = h0.detach().requires_grad_(True)
    h = h0
    for lin in layers:
        h = torch.relu(lin(gin_aggregate(adj, h, 0.0, backend=backend)))
    h.sum().backward()
    return h0.grad


def op_step(layers: torch.nn.ModuleList, adj: torch.Tensor, h0: torch.Tensor, backend: str) -> torch.Tensor:
    """Forward + backward of one aggregation (loss = out.sum())."""
    h0 = h0.detach().requires_grad_(True)
    gin_aggregate(adj, h0, 0.0, backend=backend).sum().backward()
    return h0.grad


def compiled_steps(layers: torch.nn.ModuleList) -> dict:
    """The reference stack / aggregation under ``torch.compile`` (default mode): the forward
    compiled, its backward by AOTAutograd; each called like ``stack_step`` / ``op_step``."""

    def stack_fwd(adj, h):
        for lin in layers:
            h = torch.relu(lin(gin_aggregate(adj, h, 0.0, backend="torch")))
        return h

    def op_fwd(adj, h):
        return gin_aggregate(adj, h, 0.0, backend="torch")

    out = {}
    for step, fwd in ((stack_step, stack_fwd), (op_step, op_fwd)):
        cf = torch.compile(fwd)

        def run(layers_, adj, h0, backend, cf=cf):
            h0 = h0.detach().requires_grad_(True)
            cf(adj, h0).sum().backward()
            return h0.grad

        out[step] = run
    return out


def side_by_side(step, layers, adj, h, device: str, reps: int, compiled=None) -> dict:
    for lin in layers:
        lin.zero_grad(set_to_none=True)
    g_native = step(layers, adj, h, "native")  # warm-up of both, and a check that they agree
    g_torch = step(layers, adj, h, "torch")
    steps = {"native": step, "torch": step}
    if compiled is not None:  # compiled and warmed up here (twice: a first call may recompile)
        steps["compiled"] = compiled
        for _ in range(2):
            g_c = compiled(layers, adj, h, "torch")
        err_c = float((g_c - g_torch).norm() / g_torch.norm().clamp_min(1e-30))
        if err_c > 5e-3:
            raise RuntimeError(f"compiled and torch input gradients differ (relative L2 error {err_c:.2e})")
    # Relative L2 error. The aggregation itself agrees to ~3e-8, but the float32 stack gradient
    # is noisy: at B = 16384 *each* backend is ~5e-4 away from a float64 run (rounding in the
    # Linear sums and ReLUs sitting at ~0 that flip), and the two are ~1e-4 apart.
    err = float((g_native - g_torch).norm() / g_torch.norm().clamp_min(1e-30))
    if err > 5e-3:
        raise RuntimeError(f"native and torch input gradients differ (relative L2 error {err:.2e})")
    del g_native, g_torch
    names = list(steps)
    times: dict[str, list[float]] = {k: [] for k in names}
    for r in range(reps):
        for name in names[r % len(names):] + names[:r % len(names)]:  # rotating order
            for lin in layers:
                lin.zero_grad(set_to_none=True)
            backend = "native" if name == "native" else "torch"
            times[name].append(timed(lambda: steps[name](layers, adj, h, backend), device))
    med = {k: statistics.median(v) for k, v in times.items()}
    row = {f"{k}_s": round(med[k], 4) for k in names}
    row["ratio"] = round(med["torch"] / med["native"], 3)
    if compiled is not None:
        row["ratio_compiled"] = round(med["compiled"] / med["native"], 3)
    row.update({f"{k}_s_all": [round(t, 4) for t in times[k]] for k in names})
    row["rel_l2_grad_diff"] = err
    return row


def profile_step(layers: torch.nn.ModuleList, adj: torch.Tensor, h: torch.Tensor, backend: str, device: str) -> str:
    """torch.profiler's operator table (by self time) of one stack step (after the timed ones)."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    for lin in layers:
        lin.zero_grad(set_to_none=True)
    with profile(activities=acts) as prof:
        stack_step(layers, adj, h, backend)
        if device == "cuda":
            torch.cuda.synchronize()
    key = "self_cuda_time_total" if device == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=12)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", default="1000,16384", help="comma-separated batch sizes B")
    ap.add_argument("--reps", type=int, default=5, help="timed reps per backend (median reported)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--threads", type=int, default=2, help="torch (and native) CPU threads")
    ap.add_argument("--matmul-precision", default="highest", choices=("highest", "high"),
                    help="torch.set_float32_matmul_precision ('high' lets a GPU use TF32: for the Linear layers "
                         "of both backends, and for the reference's bmm aggregation; the native kernel stays "
                         "float32)")
    ap.add_argument("--no-compile", action="store_true",
                    help="leave out the 'compiled' column (the reference under torch.compile; CPU only by default)")
    ap.add_argument("--profile", action="store_true",
                    help="also print to stderr, per batch and backend, torch.profiler's table of one stack step "
                    "(operators by self time: where the GEMMs and the aggregation go)")
    ap.add_argument("--malloc", choices=("default", "fixed"), default="default",
                    help="fixed: glibc's mmap threshold fixed, torch's temporaries reused (module doc)")
    args = ap.parse_args()
    malloc = fix_glibc_malloc() if args.malloc == "fixed" else "default"
    torch.set_num_threads(args.threads)
    torch.set_float32_matmul_precision(args.matmul_precision)
    torch.manual_seed(0)
    layers = torch.nn.ModuleList(torch.nn.Linear(2 * H, H) for _ in range(LAYERS)).to(args.device)
    meta = {
        "device": args.device,
        "N": N,
        "H": H,
        "threads": torch.get_num_threads(),
        "reps": args.reps,
        "matmul_precision": args.matmul_precision,
        "machine": platform.machine(),
        "torch": torch.__version__,
        "malloc": malloc,
    }
    if args.device == "cuda":
        meta["gpu"] = torch.cuda.get_device_name()
    compiled = compiled_steps(layers) if args.device == "cpu" and not args.no_compile else {}
    for B in (int(b) for b in args.batch.split(",")):
        adj, h = make_inputs(B, args.device)
        for name, step in (("gin_stack_fwd_bwd", stack_step), ("gin_aggregate_fwd_bwd", op_step)):
            row = {"bench": name, "batch": B, "layers": LAYERS if step is stack_step else 1}
            cols = side_by_side(step, layers, adj, h, args.device, args.reps, compiled.get(step))
            print(json.dumps(row | cols | meta), flush=True)
        if args.profile:
            for backend in ("native", "torch"):
                print(f"# one stack step, B = {B}, {backend}\n{profile_step(layers, adj, h, backend, args.device)}",
                      file=sys.stderr, flush=True)
        del adj, h


if __name__ == "__main__":
    main()
