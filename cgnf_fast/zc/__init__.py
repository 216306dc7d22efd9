"""Zero-cost proxies and the image batches they are computed on."""

from __future__ import annotations

from .images import calibration_batch, cifar10_folder, load_folder
from .score import ALL_PROXIES, score
from .store import ScoreStore, StoreError, check_store

__all__ = ["ALL_PROXIES", "ScoreStore", "StoreError", "calibration_batch", "check_store", "cifar10_folder", "load_folder", "score"]
