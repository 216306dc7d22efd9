"""Can a CPU training protocol rank NB201's top cells? (issue 24, part 3)

    CGNF_DATA_DIR=../shared/data python scripts/calibrate_protocol.py --protocol cpu-small \\
        [--cells 40] [--top 0.05] [--seeds 0] [--store calib.sqlite] [--json OUT]

Draws ``--cells`` NB201 networks (seeded) from the top ``--top`` share by the published 200-epoch
CIFAR-10 test accuracy (``naswot_arch_score_acc.csv``, class means), trains each with the given
protocol (any ``cgnf evaluate`` protocol spec, e.g. ``cpu-small:epochs=10,train_images=10000``)
and every seed on the shared CIFAR-10 JPEGs, and prints one JSON line: the Spearman correlation
of the mean trained accuracy with the published one, per seed and for the mean, the seeds'
own agreement, and the training time per cell. Trained results are kept in ``--store``
(``cgnf evaluate``'s store: a rerun reuses them and resumes an interrupted run).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--protocol", required=True, help="a protocol spec (see cgnf evaluate upper-bound --help)")
    ap.add_argument("--cells", type=int, default=40, help="networks to train (default 40)")
    ap.add_argument("--top", type=float, default=0.05, help="share of NB201 networks they come from (default 0.05)")
    ap.add_argument("--seeds", default="0", help="comma-separated training seeds (default 0)")
    ap.add_argument("--draw-seed", type=int, default=0, help="which networks (default 0)")
    ap.add_argument("--store", default="calibration.sqlite", help="results store (default calibration.sqlite)")
    ap.add_argument("--json", help="also write the result line here")
    args = ap.parse_args()

    from cgnf_fast._stats import spearman
    from cgnf_fast.evaluate.protocol import get_protocol, train_cells
    from cgnf_fast.evaluate.tasks import load_task
    from cgnf_fast.searching.domain import nb201_domain
    from cgnf_fast.searching.objectives import TableObjective

    data = os.environ.get("CGNF_DATA_DIR")
    if not data:
        raise SystemExit("set CGNF_DATA_DIR to the shared data folder")
    dom = nb201_domain()
    table = TableObjective(Path(data) / "nb201" / "naswot_arch_score_acc.csv", "cifar10_test_200ep", "max", dom)
    acc = np.where(np.isfinite(table.class_means), table.class_means, -np.inf)
    order = np.argsort(-acc, kind="stable")
    top = order[:int(round(args.top * dom.num_classes))]
    rng = np.random.default_rng(args.draw_seed)
    chosen = np.sort(rng.choice(top, size=min(args.cells, len(top)), replace=False))
    cells = [dom.cell(int(dom.representative[k])) for k in chosen]
    proto = get_protocol(args.protocol, space="nb201")
    task = load_task("cifar10", proto)
    seeds = [int(s) for s in args.seeds.split(",")]
    t0 = time.perf_counter()
    res = train_cells(cells, "nb201", task, proto, seeds=seeds, store=args.store, desc="calibrate")
    seconds = time.perf_counter() - t0
    trained = np.asarray([[r.metric for r in row] for row in res], dtype=np.float64)  # [cells, seeds]
    published = table.class_means[chosen]
    per_seed = [float(spearman(trained[:, j], published)) for j in range(len(seeds))]
    between = [float(spearman(trained[:, i], trained[:, j])) for i in range(len(seeds)) for j in range(i + 1, len(seeds))]
    train_s = [float(r.seconds) for row in res for r in row if getattr(r, "seconds", None)]
    out = {"protocol": args.protocol, "cells": len(cells), "top_share": args.top, "seeds": seeds,
           "published_range": [float(published.min()), float(published.max())],
           "spearman_mean_vs_published": round(float(spearman(trained.mean(1), published)), 4),
           "spearman_per_seed": [round(x, 4) for x in per_seed],
           "spearman_between_seeds": [round(x, 4) for x in between],
           "trained_mean": round(float(np.nanmean(trained)), 3), "trained_std_over_cells": round(float(
               np.nanstd(trained.mean(1))), 3),
           "seconds_per_cell_and_seed": round(float(np.median(train_s)), 1) if train_s else None,
           "wall_seconds_this_run": round(seconds, 1), "nb201_indices": [int(dom.representative[k]) for k in chosen]}
    line = json.dumps(out)
    print(line)
    if args.json:
        with open(args.json, "w") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
