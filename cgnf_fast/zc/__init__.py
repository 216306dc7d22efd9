"""Zero-cost proxies and the image batches they are computed on."""

from __future__ import annotations

from .images import calibration_batch, cifar10_folder, load_folder
from .score import ALL_PROXIES, score

__all__ = ["ALL_PROXIES", "calibration_batch", "cifar10_folder", "load_folder", "score"]
