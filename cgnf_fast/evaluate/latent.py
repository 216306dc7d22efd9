"""How well a G-VAE's latent space clusters cells by their zero-cost scores (the paper's
Figure 2 and its triplet-loss ablation), as numbers and as a picture.

Numbers, on cells with known scores (none used in training):

* ``distance_spearman``: Spearman rank correlation between latent distances and distances of
  standardised ZC vectors over random pairs of cells;
* ``knn_error``: mean absolute difference between a cell's standardised ZC vector and the mean of
  its ``k`` nearest latent neighbours' (lower = neighbours in latent space score alike).

Picture: the latents projected to 2-D (PCA, exact and deterministic; the paper used t-SNE)
coloured by one ZC score, one panel per G-VAE.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .._stats import spearman


def latent_metrics(z: torch.Tensor | np.ndarray, values: np.ndarray, k: int = 10, pairs: int = 200_000,
                   seed: int = 0) -> dict[str, Any]:
    """``z [M, D]`` latents, ``values [M, A]`` ZC scores (finite) -> the numbers in the module doc."""
    z = torch.as_tensor(np.asarray(z), dtype=torch.float64)
    v = np.asarray(values, dtype=np.float64)
    if z.shape[0] != v.shape[0] or z.shape[0] < k + 2:
        raise ValueError(f"need matching rows and more than {k + 1} cells, got z {list(z.shape)} values {list(v.shape)}")
    vs = (v - v.mean(0)) / np.maximum(v.std(0), 1e-12)
    rng = np.random.default_rng(seed)
    i = rng.integers(0, len(vs), pairs)
    j = rng.integers(0, len(vs), pairs)
    keep = i != j
    i, j = i[keep], j[keep]
    zn = z.numpy()
    dz = np.linalg.norm(zn[i] - zn[j], axis=1)
    dv = np.linalg.norm(vs[i] - vs[j], axis=1)
    # kNN in latent space (chunked exact search)
    V = torch.as_tensor(vs)
    errs = []
    for s in range(0, z.shape[0], 2048):
        d = torch.cdist(z[s:s + 2048], z)
        d[torch.arange(d.shape[0]), torch.arange(s, s + d.shape[0])] = float("inf")
        nn_idx = d.topk(k, largest=False).indices
        errs.append((V[nn_idx].mean(1) - V[s:s + 2048]).abs().mean(1))
    return {"cells": int(z.shape[0]), "distance_spearman": spearman(dz, dv), "knn": k,
            "knn_error": float(torch.cat(errs).mean())}


def pca2(z: torch.Tensor | np.ndarray) -> np.ndarray:
    """Projection on the two leading principal axes (signs fixed: largest loading positive)."""
    x = np.asarray(z, dtype=np.float64)
    x = x - x.mean(0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    axes = vt[:2]
    signs = np.sign(axes[np.arange(2), np.abs(axes).argmax(1)])
    return x @ (axes * signs[:, None]).T


def plot_latents(panels: list[tuple[str, np.ndarray, np.ndarray]], color_name: str, path: str) -> None:
    """One scatter panel per ``(title, z [M, D], color values [M])``; written to ``path`` (PNG)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("figures need matplotlib: pip install 'cgnf_fast[plot]'") from None
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.6), squeeze=False)
    allc = np.concatenate([c for _, _, c in panels])
    lo, hi = np.percentile(allc, [1, 99])
    for ax, (title, z, c) in zip(axes[0], panels):
        p = pca2(z)
        order = np.argsort(c)
        sc = ax.scatter(p[order, 0], p[order, 1], c=c[order], s=3, cmap="viridis", vmin=lo, vmax=hi, linewidths=0)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
    fig.colorbar(sc, ax=axes[0].tolist(), label=color_name, shrink=0.9)
    tmp = path + ".partial.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    import os

    os.replace(tmp, path)
