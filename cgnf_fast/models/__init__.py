"""Models: the graph VAE with its attribute predictor (and, later, the conditional flow)."""

from __future__ import annotations

from .api import GraphVAE
from .codec import CellCodec
from .gvae import GVAE, GVAEConfig

__all__ = ["GVAE", "CellCodec", "GVAEConfig", "GraphVAE"]
