"""Native DAG ops and space counts vs the pure-Python reference, side by side in one run.

    python benches/bench_dag.py [--batch 200000] [--counts nb101,nb101-like,nb201-like] [--device cpu] [--no-ops]

Prints one JSON row per measurement. Op rows give seconds per graph for the Python reference
and for the native op on one thread and on all threads, and their ratios: each of ``--rounds``
rounds times the reference and then the native op, and the row reports medians over rounds
(the per-round single-thread ratios are listed too). Count rows run
`cgnf space count SPACE --json` in a fresh process each, so each reports its own peak RSS.
Timings depend on the machine; they are not tests.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

from cgnf_fast.ops import dag_canonical_code, dag_nb101_digest, dag_prune
from cgnf_fast.space import batch_from_cells
from cgnf_fast.reference import dag as ref
from cgnf_fast.space import NB101_OPS, get


def best_of(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def native_times(fn, batch: int) -> tuple[float, float, int]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = best_of(fn) / batch
    finally:
        torch.set_num_threads(threads)
    return one, best_of(fn) / batch, threads


def row(op: str, batch: int, ref_fn, n_ref: int, fn, device: str, rounds: int) -> dict:
    """Times the reference (``ref_fn`` over ``n_ref`` graphs) and the native op (``fn`` over
    ``batch`` graphs) back to back in each of ``rounds`` rounds; ratios are per round, and the
    row gives their median (the machine's speed drifts between rounds, both sides with it)."""
    per_round = []
    for _ in range(rounds):
        t_ref = best_of(ref_fn, repeat=1) / n_ref
        if device == "cuda":
            def timed():
                fn()
                torch.cuda.synchronize()
            timed()
            t = best_of(timed) / batch
            per_round.append((t_ref, t, t))
        else:
            one, allt, threads = native_times(fn, batch)
            per_round.append((t_ref, one, allt))
    t_ref = statistics.median(r[0] for r in per_round)
    out = {"op": op, "device": device, "batch": batch, "rounds": rounds, "reference_s_per_graph": t_ref}
    ratio = statistics.median(r[0] / r[2] for r in per_round)
    if device == "cuda":
        return out | {"native_s_per_graph": statistics.median(r[2] for r in per_round), "ratio": ratio,
                      "ratio_per_round": [round(r[0] / r[2], 1) for r in per_round]}
    return out | {
        "native_1thread_s_per_graph": statistics.median(r[1] for r in per_round),
        "native_s_per_graph": statistics.median(r[2] for r in per_round),
        "threads": threads,
        "ratio_1thread": statistics.median(r[0] / r[1] for r in per_round),
        "ratio": ratio,
        "ratio_1thread_per_round": [round(r[0] / r[1], 1) for r in per_round],
    }


def bench_ops(batch: int, device: str, rounds: int) -> list[dict]:
    rows = []
    # prune: random 8-vertex graphs
    rng = np.random.default_rng(0)
    adj = np.triu(rng.integers(0, 2, size=(batch, 8, 8), dtype=np.uint8), 1)
    labels = rng.integers(0, 8, size=(batch, 8)).astype(np.int8)
    n = np.full(batch, 8, dtype=np.int8)
    sub = min(batch, 5000)
    lists = [(adj[b].tolist(), labels[b].tolist()) for b in range(sub)]
    ta, tl, tn = (torch.from_numpy(x).to(device) for x in (adj, labels, n))
    rows.append(row("dag_prune", batch, lambda: [ref.prune(m, lab) for m, lab in lists], sub,
                    lambda: dag_prune(ta, tl, tn), device, rounds))

    # canonical code: pruned cells of nb201-like (8 vertices, 4 ops)
    cells = get("nb201-like").sample(min(batch, 20000), seed=0)
    reps = max(1, batch // len(cells))
    a, l, k = batch_from_cells(cells * reps, 8)
    sub_cells = cells[:2000]
    sub_in = [(c.adjacency, c.labels()) for c in sub_cells]
    a, l, k = (x.to(device) for x in (a, l, k))
    rows.append(row("dag_canonical_code", len(cells) * reps, lambda: [ref.canonical_code(m, lab, 1) for m, lab in sub_in],
                    len(sub_cells), lambda: dag_canonical_code(a, l, k), device, rounds))

    # NB101 hash: nb101 cells
    cells = get("nb101").sample(min(batch, 20000), seed=0)
    reps = max(1, batch // len(cells) // 4)
    a, l, k = batch_from_cells(cells * reps, 7, nb101_labels=True)
    sub_cells = cells[:1000]
    hl = [[-1] + [NB101_OPS.index(o) for o in c.ops[1:-1]] + [-2] for c in sub_cells]
    a, l, k = (x.to(device) for x in (a, l, k))
    rows.append(row("dag_nb101_hash", len(cells) * reps, lambda: [ref.nb101_hash(c.adjacency, h) for c, h in zip(sub_cells, hl)],
                    len(sub_cells), lambda: dag_nb101_digest(a, l, k), device, rounds))
    return rows


def bench_count(space: str, device: str) -> dict:
    """``cgnf space count`` in a fresh process (run from / so a source checkout cannot shadow the
    installed package); a failed count is a row with its ``error`` (the command's last stderr line)."""
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "cgnf_fast", "space", "count", space, "--json", "--no-progress",
                          "--device", device], capture_output=True, text=True, cwd="/")
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["(no stderr)"])[-1]
        return {"op": "space_count", "space": space, "device": device, "error": last, "returncode": out.returncode}
    r = json.loads(out.stdout)
    r["op"] = "space_count"
    r["process_seconds"] = round(time.perf_counter() - t0, 3)
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=200_000)
    ap.add_argument("--counts", default="nb101,nb101-like", help="comma-separated spaces to count ('' for none)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--rounds", type=int, default=5, help="reference/native rounds per op (ratios: their median)")
    ap.add_argument("--no-ops", action="store_true", help="skip the op rows (counts only)")
    args = ap.parse_args()
    meta = {"machine": platform.machine(), "torch": torch.__version__}
    for r in [] if args.no_ops else bench_ops(args.batch, args.device, args.rounds):
        print(json.dumps(r | meta), flush=True)
    for space in filter(None, args.counts.split(",")):
        print(json.dumps(bench_count(space, args.device) | meta), flush=True)


if __name__ == "__main__":
    main()
