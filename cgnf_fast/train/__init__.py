"""Training loops and checkpoints (safetensors + JSON, no pickle).

``TrainGVAEConfig`` and ``train_gvae`` are imported on first use (the models import the
checkpoint helpers from here, and the training loop imports the models).
"""

from __future__ import annotations

from typing import Any

from .checkpoint import CheckpointError

__all__ = ["CheckpointError", "TrainGVAEConfig", "train_gvae"]


def __getattr__(name: str) -> Any:
    if name in ("TrainGVAEConfig", "train_gvae"):
        from . import gvae

        return getattr(gvae, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
