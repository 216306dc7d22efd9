"""Training loops and checkpoints (safetensors + JSON, no pickle).

``TrainGVAEConfig``/``train_gvae`` and ``TrainFlowConfig``/``train_flow``/``load_flow`` are
imported on first use (the models import the checkpoint helpers from here, and the training
loops import the models).
"""

from __future__ import annotations

from typing import Any

from .checkpoint import CheckpointError

__all__ = ["CheckpointError", "TrainFlowConfig", "TrainGVAEConfig", "load_flow", "train_flow", "train_gvae"]


def __getattr__(name: str) -> Any:
    if name in ("TrainGVAEConfig", "train_gvae"):
        from . import gvae

        return getattr(gvae, name)
    if name in ("TrainFlowConfig", "train_flow", "load_flow"):
        from . import flow

        return getattr(flow, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
