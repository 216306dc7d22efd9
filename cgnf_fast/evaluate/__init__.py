"""Evaluation: the paper's experiments as functions (and ``cgnf evaluate`` commands)."""

from __future__ import annotations

from .predictor import evaluate_latent, evaluate_predictor

__all__ = ["evaluate_latent", "evaluate_predictor"]
