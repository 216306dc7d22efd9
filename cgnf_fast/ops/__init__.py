"""torch.library custom ops around the native core (validation, fake and autograd rules)."""

from __future__ import annotations

from .dag import dag_prune

__all__ = ["dag_prune"]
