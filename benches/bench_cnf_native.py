"""The native CNF kernels alone: per-row cost on one and two threads, and a training step split
into its two solves. For before/after comparisons of kernel changes (build each state, run this
on the same machine in one session); the native-vs-PyTorch ratios are in ``bench_cnf.py``.

    python benches/bench_cnf_native.py [--batch 256,1024] [--reps 200] [--steps 3]

Prints one JSON object per line:

* ``eval_exact`` / ``vjp_exact``: one call of ``cnf_dynamics`` (``dz/dt`` and the exact
  divergence) / ``cnf_dynamics_vjp`` (the adjoint's dynamics with the exact divergence) with the
  native backend, float32, latent 32, 4 conditions, hidden 128x128, random weights; medians
  over ``--reps`` calls on 1 and on 2 threads, and the per-row time (seconds x threads / B);
* ``eval_mlp`` / ``vjp_mlp``: the same calls without the divergence (the ConcatSquash MLP and
  its reverse pass alone), so that ``*_exact`` minus ``*_mlp`` is what the exact divergence
  adds: its ``[h x h] x [h x D]`` products (``D x h^2`` multiply-adds a row in the forward,
  ``3 x D x h^2`` in the adjoint) and the passes around them, to set against the FMA peak
  (``benches/fma_peak.cpp``);
* ``train_step``: the shipped nb201-like flow's training step at B = 256 (its training
  tolerances, train mode, as ``bench_cnf.py --train-step``), the forward solve
  (``-log_prob(z, c).mean()``) and the backward (``loss.backward()``, the native adjoint solve)
  timed apart; medians of ``--steps`` runs of 8 steps (the first 2 of each dropped).

Timings depend on the machine; they are not tests.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from cgnf_fast.ops.cnf import cnf_dynamics, cnf_dynamics_vjp

from bench_cnf import shipped_training_flow, training_batch

LATENT, COND, HIDDEN = 32, 4, 128


def weights(seed: int = 0) -> list[list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    widths = [LATENT, HIDDEN, HIDDEN, LATENT]
    out = []
    for i in range(3):
        n, o = widths[i], widths[i + 1]
        out.append([torch.randn(o, n, generator=g) / n ** 0.5, torch.randn(o, generator=g) * 0.1,
                    torch.randn(o, 1 + COND, generator=g) * 0.1, torch.randn(o, generator=g) * 0.1,
                    torch.randn(o, 1 + COND, generator=g) * 0.1])
    return out


def kernel_rows(batches: list[int], reps: int) -> None:
    ws = weights()
    t = torch.tensor(0.3)
    before = torch.get_num_threads()
    for B in batches:
        g = torch.Generator().manual_seed(B)
        z, c = torch.randn(B, LATENT, generator=g), torch.randn(B, COND, generator=g)
        g_dz, g_div = torch.randn(B, LATENT, generator=g), torch.randn(B, generator=g)
        calls = {"eval_exact": lambda: cnf_dynamics(t, z, c, ws, "tanh", "exact"),
                 "vjp_exact": lambda: cnf_dynamics_vjp(t, z, c, ws, g_dz, g_div, "tanh", "exact"),
                 "eval_mlp": lambda: cnf_dynamics(t, z, c, ws, "tanh", None),
                 "vjp_mlp": lambda: cnf_dynamics_vjp(t, z, c, ws, g_dz, None, "tanh", None)}
        for name, fn in calls.items():
            row: dict = {"bench": name, "batch": B}
            for threads in (1, 2):
                torch.set_num_threads(threads)
                with torch.no_grad():
                    for _ in range(5):
                        fn()
                    times = []
                    for _ in range(reps):
                        t0 = time.perf_counter()
                        fn()
                        times.append(time.perf_counter() - t0)
                med = statistics.median(times)
                row[f"threads{threads}_s"] = float(f"{med:.4g}")
                row[f"threads{threads}_per_row_us"] = round(1e6 * med * threads / B, 2)
            print(json.dumps(row), flush=True)
    torch.set_num_threads(before)


def train_step_row(runs: int) -> None:
    flow = shipped_training_flow()
    flow.dynamics.backend = "native"
    B = 256
    z, c = training_batch(flow, B)
    fwd, bwd = [], []
    for _ in range(runs):
        f, b = [], []
        for i in range(8):
            flow.zero_grad(set_to_none=True)
            t0 = time.perf_counter()
            loss = -flow.log_prob(z, c).mean()
            t1 = time.perf_counter()
            loss.backward()
            t2 = time.perf_counter()
            if i >= 2:
                f.append(t1 - t0)
                b.append(t2 - t1)
        fwd.append(statistics.median(f))
        bwd.append(statistics.median(b))
    print(json.dumps({"bench": "train_step", "batch": B, "forward_s": [float(f"{x:.4g}") for x in fwd],
                      "backward_s": [float(f"{x:.4g}") for x in bwd], "nfe_forward": flow.nfe,
                      "threads": torch.get_num_threads()}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", default="256,1024", help="batch sizes of the kernel rows")
    ap.add_argument("--reps", type=int, default=200, help="calls timed per kernel row and thread count")
    ap.add_argument("--steps", type=int, default=3, help="runs of 8 training steps")
    args = ap.parse_args()
    kernel_rows([int(b) for b in args.batch.split(",")], args.reps)
    train_step_row(args.steps)


if __name__ == "__main__":
    main()
