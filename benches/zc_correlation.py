"""Spearman rank correlation of our zero-cost scores with NB201 accuracy and with NASLib's scores.

    CGNF_DATA_DIR=../shared/data python benches/zc_correlation.py --target naslib --n 725 \\
        --proxies synflow,nwot,jacob_cov,snip,grad_norm --batch 64 --workers 2

``--target naslib``: the 725 NB201 cells of NASLib's file, against NASLib's CIFAR-10 scores.
``--target throughput --space nb101``: ``--n`` cells sampled from a space (seed 0), timing only.
``--target accuracy``: a fixed random subset (seed 0) of ``--n`` NB201 cells, against NB201's
CIFAR-10 test accuracy (200 epochs). Prints one JSON object per proxy and writes all raw scores
with ``--out``. Scoring runs in ``--workers`` processes with one thread each.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

NASLIB_OPS = ["skip_connect", "none", "nor_conv_3x3", "nor_conv_1x1", "avg_pool_3x3"]


def naslib_arch(key: str) -> str:
    o = [NASLIB_OPS[int(i)] for i in key.strip("()").split(",")]
    return f"|{o[0]}~0|+|{o[1]}~0|{o[3]}~1|+|{o[2]}~0|{o[4]}~1|{o[5]}~2|"


def ranks(v: np.ndarray) -> np.ndarray:
    order = np.argsort(v, kind="stable")
    r = np.empty(len(v))
    r[order] = np.arange(len(v))
    for val in np.unique(v):  # average ranks for ties
        idx = np.flatnonzero(v == val)
        if len(idx) > 1:
            r[idx] = r[idx].mean()
    return r


def spearman(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    ok = np.isfinite(a) & np.isfinite(b)
    ra, rb = ranks(a[ok]), ranks(b[ok])
    return float(np.corrcoef(ra, rb)[0, 1])


def _work(args):
    arch, proxies, batch, skeleton = args
    import torch

    torch.set_num_threads(1)
    from cgnf_fast import Cell
    from cgnf_fast.zc import calibration_batch, score

    cell = Cell.from_json(arch) if arch.startswith("{") else arch
    return score(cell, proxies, skeleton=skeleton, batch=calibration_batch(batch))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", choices=("naslib", "accuracy", "throughput"), default="naslib")
    ap.add_argument("--space", default="nb201", help="with --target throughput")
    ap.add_argument("--n", type=int, default=725)
    ap.add_argument("--proxies", default="synflow,nwot,jacob_cov,snip,grad_norm")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    data = Path(os.environ.get("CGNF_DATA_DIR", "../shared/data"))
    proxies = args.proxies.split(",")
    if args.target == "naslib":
        d = json.loads((data / "nb201" / "naslib_zc_nasbench201_725.json").read_text())["cifar10"]
        items = list(d.items())[: args.n]
        archs = [naslib_arch(k) for k, _ in items]
        refs = {p: [v.get("jacov" if p == "jacob_cov" else p, {}).get("score", float("nan")) for _, v in items] for p in proxies}
    elif args.target == "throughput":
        from cgnf_fast.space import get

        archs = [c.dumps() for c in get(args.space).sample(args.n, seed=0, unique=True)]
        refs = None
    else:
        with open(data / "nb201" / "naswot_arch_score_acc.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        rows = random.Random(0).sample(rows, args.n)
        archs = [r["cellstr"] for r in rows]
        acc = [float(r["cifar10_test_200ep"]) for r in rows]
        refs = {p: acc for p in proxies}
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as ex:
        skeleton = "nb101" if args.target == "throughput" and args.space.startswith("nb101") else "nb201"
        scores = list(ex.map(_work, [(a, proxies, args.batch, skeleton) for a in archs], chunksize=4))
    seconds = time.perf_counter() - t0
    if refs is None:
        print(json.dumps({"target": "throughput", "space": args.space, "n": len(archs), "batch": args.batch,
                          "proxies": proxies, "cells_per_s": round(len(archs) / seconds, 3)}))
        return
    for p in proxies:
        print(json.dumps({"target": args.target, "proxy": p, "n": len(archs), "batch": args.batch,
                          "spearman": round(spearman([s[p] for s in scores], refs[p]), 4),
                          "cells_per_s": round(len(archs) / seconds, 3)}))
    if args.out:
        Path(args.out).write_text(json.dumps({"archs": archs, "scores": scores}))


if __name__ == "__main__":
    main()
