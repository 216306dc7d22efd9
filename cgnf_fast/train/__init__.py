"""Training loops for the generative models: the G-VAE + attribute predictor and the
conditional flow, with resumable checkpoints (safetensors + JSON, no pickle). Nothing below this
package imports it (inference loads models through :mod:`cgnf_fast.sampling`)."""

from __future__ import annotations

from .flow import TrainFlowConfig, train_flow
from .gvae import TrainGVAEConfig, train_gvae

__all__ = ["TrainFlowConfig", "TrainGVAEConfig", "train_flow", "train_gvae"]
