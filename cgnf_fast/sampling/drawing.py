"""Pictures and text of cells: a compact one-line notation and a grid of drawn DAGs (PNG)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from ..space import Cell
from .conditions import COUNT_ATTRIBUTES
from .sampler import SampledCell

__all__ = ["FORMATS", "cell_text", "draw_cells", "figure_format", "layered_positions", "short_op"]

#: Picture formats by file suffix (what matplotlib writes).
FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}


def figure_format(path: str | os.PathLike) -> str:
    """The picture format ``path``'s suffix names, or a ValueError listing the ones written."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"{os.fspath(path)}: a picture file must end in {', '.join(FORMATS)} (got "
                         f"{suffix or 'no suffix'})")
    return FORMATS[suffix]

_SHORT = {"input": "in", "output": "out", "nor_conv_3x3": "conv3", "nor_conv_1x1": "conv1", "avg_pool_3x3": "pool",
          "skip_connect": "skip", "conv3x3-bn-relu": "conv3", "conv1x1-bn-relu": "conv1", "maxpool3x3": "maxpool"}
_COLOR = {"input": "#d9d9d9", "output": "#d9d9d9", "nor_conv_3x3": "#fdae6b", "conv3x3-bn-relu": "#fdae6b",
          "nor_conv_1x1": "#9ecae1", "conv1x1-bn-relu": "#9ecae1", "avg_pool_3x3": "#a1d99b", "maxpool3x3": "#a1d99b",
          "skip_connect": "#ffffff"}


def short_op(name: str) -> str:
    """A short label for an op (``nor_conv_3x3`` -> ``conv3``)."""
    return _SHORT.get(name, name)


def cell_text(cell: Cell) -> str:
    """A compact one-line cell: ``vertex:op<inputs`` per op vertex, then the output's inputs."""
    adj = cell.adjacency
    n = cell.num_nodes
    parts = []
    for v in range(1, n):
        preds = ",".join(str(u) for u in range(v) if adj[u][v])
        name = "out" if v == n - 1 else f"{v}:{short_op(cell.ops[v])}"
        parts.append(f"{name}<{preds}")
    return " ".join(parts)


def layered_positions(cell: Cell) -> list[tuple[float, float]]:
    """``(x, y)`` per vertex: x = length of the longest path from the input (layers left to
    right), vertices of a layer spread evenly around y = 0."""
    n = cell.num_nodes
    adj = cell.adjacency
    depth = [0] * n
    for v in range(1, n):
        preds = [depth[u] + 1 for u in range(v) if adj[u][v]]
        depth[v] = max(preds) if preds else 0
    depth[n - 1] = max(depth[n - 1], max(depth[:-1]) + 1)
    layers: dict[int, list[int]] = {}
    for v in range(n):
        layers.setdefault(depth[v], []).append(v)
    pos = [(0.0, 0.0)] * n
    for d, vs in layers.items():
        for k, v in enumerate(vs):
            pos[v] = (float(d), (len(vs) - 1) / 2.0 - k)
    return pos


def draw_cells(cells: Sequence[SampledCell | Cell], path: str | os.PathLike, *, titles: Sequence[str] | None = None,
               key_attribute: str | None = None, cols: int = 5, dpi: int = 110) -> None:
    """Draws cells as a grid of labelled DAGs to ``path`` (PNG, SVG or PDF by its suffix; written
    atomically).

    Each panel title: the cell's number, params and FLOPs, and the predicted ``key_attribute``
    (default: the first predicted attribute that is not params/flops) unless ``titles`` is
    given. Needs matplotlib (``pip install 'cgnf_fast[plot]'``).
    """
    fmt = figure_format(path)
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ValueError("drawing cells needs matplotlib: pip install 'cgnf_fast[plot]'") from None
    if not cells:
        raise ValueError("no cells to draw")
    if titles is not None and len(titles) != len(cells):
        raise ValueError(f"titles has {len(titles)} entries for {len(cells)} cells")
    cols = max(1, min(cols, len(cells)))
    rows = math.ceil(len(cells) / cols)
    fig = Figure(figsize=(3.6 * cols, 2.6 * rows), dpi=dpi)
    FigureCanvasAgg(fig)
    for i, item in enumerate(cells):
        cell = item.cell if isinstance(item, SampledCell) else item
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.set_axis_off()
        pos = layered_positions(cell)
        adj = cell.adjacency
        side = 1.0
        for u in range(cell.num_nodes):
            for v in range(cell.num_nodes):
                if not adj[u][v]:
                    continue
                span = pos[v][0] - pos[u][0]
                if span <= 1:  # neighbouring layers: a straight arrow
                    rad = 0.0
                else:  # skipping layers: an arc, alternately above and below the boxes it passes
                    rad = side * min(0.12 + 0.06 * span, 0.45)
                    side = -side
                ax.annotate("", xy=pos[v], xytext=pos[u],
                            arrowprops=dict(arrowstyle="-|>", color="#555555", lw=0.9, shrinkA=11, shrinkB=11,
                                            connectionstyle=f"arc3,rad={rad}"))
        for v, (x, y) in enumerate(pos):
            op = cell.ops[v]
            ax.text(x, y, short_op(op), ha="center", va="center", fontsize=8,
                    bbox=dict(boxstyle="round,pad=0.35", fc=_COLOR.get(op, "#fee391"), ec="#333333", lw=0.8))
        xs, ys = [p[0] for p in pos], [p[1] for p in pos]
        ax.set_xlim(min(xs) - 0.6, max(xs) + 0.6)
        ax.set_ylim(min(ys) - 1.0 - 0.25 * max(xs), max(ys) + 1.0 + 0.25 * max(xs))
        if titles is not None:
            title = titles[i]
        elif isinstance(item, SampledCell):
            key = key_attribute or next((a for a in item.predicted if a not in COUNT_ATTRIBUTES),
                                        next(iter(item.predicted), None))
            extra = f"\n{key} {item.predicted[key]:.4g} (pred.)" if key in item.predicted else ""
            title = f"#{i + 1}  {item.params / 1e6:.3f}M params  {item.flops / 1e6:.1f}M FLOPs{extra}"
        else:
            title = f"#{i + 1}"
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    p = Path(path)
    tmp = p.with_name(p.name + ".partial")
    try:
        fig.savefig(tmp, format=fmt)
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()
