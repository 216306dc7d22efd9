"""Zero-cost proxies and the image batches they are computed on."""

from __future__ import annotations

from .images import calibration_batch, cifar10_folder, load_folder

__all__ = ["calibration_batch", "cifar10_folder", "load_folder"]
