"""Does it matter that the ZC labels were scored on test images? (issue 24, part 4)

    CGNF_DATA_DIR=../shared/data python scripts/zc_batch_check.py [--cells 100] [--seed 0] [--json OUT]

The shipped models' synflow and nwot labels (and ``pretrained/nb201/``'s scores) were computed
on the embedded calibration batch: the first 16 of 25 CIFAR-10 *test* images per class, classes
interleaved, which the evaluation protocols also test on. This scores ``--cells`` NB201 networks
(a seeded draw of their representative strings) twice, on that batch and on the first 16 images of
the *training* split chosen the same way (``zc.images.folder_batch``), and prints one JSON line:
how far the two agree (Spearman over the networks, the largest relative difference per network).

What to expect, from the proxies' definitions (``cgnf_fast/zc/proxies.py``): synflow feeds an
all-ones input of the batch's shape, so it reads no image at all and must agree exactly; nwot
reads the images but no label and trains nothing, so test images give it no information about
test labels; the check measures how much the images' choice moves its ranking.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", type=int, default=100, help="NB201 networks to score (default 100)")
    ap.add_argument("--seed", type=int, default=0, help="which networks (default 0)")
    ap.add_argument("--json", help="also write the result here")
    args = ap.parse_args()

    from cgnf_fast._stats import spearman
    from cgnf_fast.searching.domain import nb201_domain
    from cgnf_fast.zc import score
    from cgnf_fast.zc.images import calibration_batch, cifar10_folder, folder_batch
    from cgnf_fast.zc.score import DEFAULT_BATCH

    dom = nb201_domain()
    rng = np.random.default_rng(args.seed)
    classes = [k for k in rng.permutation(dom.num_classes).tolist() if k != dom.zero_class][:args.cells]
    batches = {"test": calibration_batch(DEFAULT_BATCH), "train": folder_batch(cifar10_folder("train"), DEFAULT_BATCH)}
    t0 = time.perf_counter()
    vals = {b: {p: [] for p in ("synflow", "nwot")} for b in batches}
    for k in classes:
        cell = dom.cell(int(dom.representative[k]))
        for b, batch in batches.items():
            s = score(cell, ["synflow", "nwot"], batch=batch, progress=False)
            for p in s:
                vals[b][p].append(s[p])
    out = {"cells": len(classes), "seed": args.seed, "batch_images": DEFAULT_BATCH,
           "seconds": round(time.perf_counter() - t0, 1)}
    for p in ("synflow", "nwot"):
        a, b = np.asarray(vals["test"][p], dtype=float), np.asarray(vals["train"][p], dtype=float)
        ok = np.isfinite(a) & np.isfinite(b)
        rel = np.abs(a[ok] - b[ok]) / np.maximum(np.abs(b[ok]), 1e-300)
        out[p] = {"spearman_test_vs_train": round(float(spearman(a[ok], b[ok])), 4), "finite": int(ok.sum()),
                  "max_relative_difference": float(rel.max()) if rel.size else math.nan,
                  "median_relative_difference": float(np.median(rel)) if rel.size else math.nan}
    line = json.dumps(out)
    print(line)
    if args.json:
        with open(args.json, "w") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
