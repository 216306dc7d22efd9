"""Native DAG ops vs the pure-Python reference, timed side by side in one run.

    python benches/bench_dag.py [--batch 20000] [--json]

Prints one JSON row per op with seconds per graph for each path and the ratio. Single-thread
and all-thread native timings are both reported. Not a test: timings depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch

from cgnf_fast.ops import dag_prune
from cgnf_fast.reference import dag as ref


def timeit(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def bench_prune(batch: int) -> dict:
    rng = np.random.default_rng(0)
    N = 8
    adj = np.triu(rng.integers(0, 2, size=(batch, N, N), dtype=np.uint8), 1)
    labels = rng.integers(0, 8, size=(batch, N)).astype(np.int8)
    n = np.full(batch, N, dtype=np.int8)
    ta, tl, tn = torch.from_numpy(adj), torch.from_numpy(labels), torch.from_numpy(n)
    sub = min(batch, 5000)
    lists = [(adj[b].tolist(), labels[b].tolist()) for b in range(sub)]

    def python_ref():
        for m, lab in lists:
            ref.prune(m, lab)

    t_ref = timeit(python_ref, 1) / sub
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    t_one = timeit(lambda: dag_prune(ta, tl, tn)) / batch
    torch.set_num_threads(threads)
    t_all = timeit(lambda: dag_prune(ta, tl, tn)) / batch
    return {
        "op": "dag_prune",
        "N": N,
        "batch": batch,
        "reference_s_per_graph": t_ref,
        "native_1thread_s_per_graph": t_one,
        "native_s_per_graph": t_all,
        "threads": threads,
        "ratio_1thread": t_ref / t_one,
        "ratio": t_ref / t_all,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=200_000)
    args = ap.parse_args()
    rows = [bench_prune(args.batch)]
    for r in rows:
        r["machine"] = f"{platform.machine()} {platform.processor() or ''}".strip()
        r["torch"] = torch.__version__
        print(json.dumps(r))


if __name__ == "__main__":
    main()
