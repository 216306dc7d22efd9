"""Models: the graph VAE with its attribute predictor, and the conditional CNF over its latents."""

from __future__ import annotations

from .api import GraphVAE
from .codec import CellCodec
from .flow import ConditionalCNF
from .gvae import GVAE, GVAEConfig

__all__ = ["GVAE", "CellCodec", "ConditionalCNF", "GVAEConfig", "GraphVAE"]
