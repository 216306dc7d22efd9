"""Cells packed into the padded tensor batches the native DAG ops take (``cgnf_fast.ops.dag``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np
import torch

from . import vocabulary

if TYPE_CHECKING:
    from .cell import Cell

__all__ = ["batch_from_cells"]


def batch_from_cells(cells: Iterable[Cell], N: int | None = None, *,
                     nb101_labels: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pack cells into ``(adj [B, N, N] uint8, labels [B, N] int8, n [B] int8)`` CPU tensors.

    ``nb101_labels=True`` writes NB101's labels (for :func:`dag_nb101_hash`), else
    ``Cell.labels()``.
    """
    cells = list(cells)
    N = N or max((c.num_nodes for c in cells), default=2)
    B = len(cells)
    adj = np.zeros((B, N, N), dtype=np.uint8)
    labels = np.zeros((B, N), dtype=np.int8)
    n = np.zeros(B, dtype=np.int8)
    for b, c in enumerate(cells):
        k = c.num_nodes
        if k > N:
            raise ValueError(f"cell {b} has {k} vertices, more than N={N}")
        adj[b, :k, :k] = c.adjacency
        if nb101_labels:
            bad = sorted({o for o in c.ops[1:-1] if o not in vocabulary.NB101_OPS})
            if bad:
                raise ValueError(f"cell {b} has ops {bad}, not NB101 ops {vocabulary.NB101_OPS}")
            labels[b, :k] = [-1] + [vocabulary.NB101_OPS.index(o) for o in c.ops[1:-1]] + [-2]
        else:
            labels[b, :k] = c.labels()
        n[b] = k
    return torch.from_numpy(adj), torch.from_numpy(labels), torch.from_numpy(n)
