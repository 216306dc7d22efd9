"""Pictures and text of cells: a compact one-line notation and a grid of drawn DAGs (PNG)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..space import Cell, nb201
from .conditions import COUNT_ATTRIBUTES
from .sampler import SampledCell

__all__ = ["FORMATS", "cell_text", "draw_cells", "figure_format", "layered_positions", "save_figure", "short_op",
           "vertex_label"]

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


def save_figure(fig: Any, path: str | os.PathLike, fmt: str | None = None) -> None:
    """A matplotlib figure to ``path`` in the format its suffix names, atomically (written to
    ``PATH.partial`` and renamed into place; no partial file is left on failure)."""
    fmt = fmt or figure_format(path)
    p = Path(path)
    tmp = p.with_name(p.name + ".partial")
    try:
        fig.savefig(tmp, format=fmt)
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()


def vertex_label(cell: Cell, v: int) -> str:
    """A vertex's label in pictures, as in :func:`cell_text`: ``0:in``, ``3:conv3``, ``out``."""
    if v == cell.num_nodes - 1:
        return "out"
    return f"{v}:{short_op(cell.ops[v])}"


def _arrival_fractions(cell: Cell, pos: list[tuple[float, float]]) -> dict[tuple[int, int], float]:
    """Where on ``v``'s box each edge ``(u, v)`` arrives, as a fraction of the box's height from
    its centre (-0.5 .. 0.5): the in-edges of a vertex with several inputs arrive spread over its
    left side, ordered by where they come from (so they do not cross there), so its in-degree
    can be counted."""
    adj = cell.adjacency
    out: dict[tuple[int, int], float] = {}
    for v in range(cell.num_nodes):
        preds = sorted((u for u in range(v) if adj[u][v]), key=lambda u: (-pos[u][1], pos[u][0]))  # top first
        k = len(preds)
        for j, u in enumerate(preds):
            out[(u, v)] = 0.0 if k == 1 else 0.38 - 0.76 * j / (k - 1)
    return out


def _set_limits(ax, cell: Cell) -> None:
    pos = layered_positions(cell)
    xs, ys = [p[0] for p in pos], [p[1] for p in pos]
    ax.set_xlim(min(xs) - 0.6, max(xs) + 0.6)
    ax.set_ylim(min(ys) - 1.0 - 0.25 * max(xs), max(ys) + 1.0 + 0.25 * max(xs))


def _draw_cell(ax, cell: Cell, highlight: bool = False) -> None:
    """Boxes first, then arrows from the right side of each source box to the left side of its
    target's (measured on the rendered boxes, so long labels do not swallow the arrowheads; the
    figure's layout must be final, see :func:`_set_limits`)."""
    pos = layered_positions(cell)
    adj = cell.adjacency
    n = cell.num_nodes
    in_degree = [sum(adj[u][v] for u in range(v)) for v in range(n)]
    boxes = []
    for v, (x, y) in enumerate(pos):
        op = cell.ops[v]
        pad = 0.35 + 0.12 * max(0, in_degree[v] - 2)  # taller boxes for many inputs
        boxes.append(ax.text(x, y, vertex_label(cell, v), ha="center", va="center", fontsize=7.5, zorder=3,
                             bbox=dict(boxstyle=f"round,pad={min(pad, 0.9):.2f}", fc=_COLOR.get(op, "#fee391"),
                                       ec="#b2182b" if highlight else "#333333", lw=1.4 if highlight else 0.8)))
    renderer = ax.figure.canvas.get_renderer()
    to_data = ax.transData.inverted()
    extent = []
    for t in boxes:
        t.update_bbox_position_size(renderer)  # (the box is sized when drawn; size it now)
        (x0, y0), (x1, y1) = to_data.transform(t.get_bbox_patch().get_window_extent(renderer).get_points())
        extent.append((x0, y0, x1, y1))
    arrive = _arrival_fractions(cell, pos)
    side = 1.0
    for u in range(n):
        for v in range(n):
            if not adj[u][v]:
                continue
            span = pos[v][0] - pos[u][0]
            if span <= 1:  # neighbouring layers: a straight arrow
                rad = 0.0
            else:  # skipping layers: an arc, alternately above and below the boxes it passes
                rad = side * min(0.12 + 0.06 * span, 0.45)
                side = -side
            ux0, uy0, ux1, uy1 = extent[u]
            vx0, vy0, vx1, vy1 = extent[v]
            start = (ux1, (uy0 + uy1) / 2)
            end = (vx0, (vy0 + vy1) / 2 + arrive[(u, v)] * (vy1 - vy0))
            ax.annotate("", xy=end, xytext=start, zorder=2,
                        arrowprops=dict(arrowstyle="-|>", color="#555555", lw=0.9, shrinkA=0, shrinkB=0,
                                        mutation_scale=9, connectionstyle=f"arc3,rad={rad}"))


def draw_cells(cells: Sequence[SampledCell | Cell], path: str | os.PathLike, *, titles: Sequence[str] | None = None,
               key_attribute: str | None = None, reference: Cell | SampledCell | str | None = None,
               reference_title: str | None = None, title: str | None = None, cols: int = 5, dpi: int = 110) -> None:
    """Draws cells as a grid of labelled DAGs to ``path`` (PNG, SVG or PDF by its suffix; written
    atomically).

    Vertices carry the numbers of the table's notation (``3:conv3``; the input is ``0:in``). The
    in-edges of a vertex arrive spread over its box, so in-degrees can be counted. ``reference``
    (when given) is drawn first, framed in red, titled ``reference_title`` (default
    "reference"); ``title`` heads the figure (for example what was asked). Each panel title:
    the cell's number, params and FLOPs, and the predicted ``key_attribute`` (default: the first
    predicted attribute that is not params/flops) unless ``titles`` is given. Needs matplotlib
    (``pip install 'cgnf_fast[plot]'``).
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
    panels: list[tuple[Cell, str, bool]] = []
    if reference is not None:
        ref = reference.cell if isinstance(reference, SampledCell) else reference
        ref = nb201.to_cell(ref) if isinstance(ref, str) else ref
        if not isinstance(ref, Cell):
            raise ValueError(f"reference must be a Cell, a SampledCell or an NB201 string, got "
                             f"{type(reference).__name__}")
        panels.append((ref, reference_title or "reference", True))
    for i, item in enumerate(cells):
        cell = item.cell if isinstance(item, SampledCell) else item
        if titles is not None:
            text = titles[i]
        elif isinstance(item, SampledCell):
            key = key_attribute or next((a for a in item.predicted if a not in COUNT_ATTRIBUTES),
                                        next(iter(item.predicted), None))
            extra = f"\n{key} {item.predicted[key]:.4g} (pred.)" if key in item.predicted else ""
            text = f"#{i + 1}  {item.params / 1e6:.3f}M params  {item.flops / 1e6:.1f}M FLOPs{extra}"
        else:
            text = f"#{i + 1}"
        panels.append((cell, text, False))
    cols = max(1, min(cols, len(panels)))
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(3.6 * cols, 2.6 * rows + (0.5 if title else 0.0)), dpi=dpi)
    FigureCanvasAgg(fig)
    axes = []
    for i, (cell, text, is_ref) in enumerate(panels):  # the layout first: the arrows are placed on it
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.set_axis_off()
        _set_limits(ax, cell)
        ax.set_title(text, fontsize=8, color="#b2182b" if is_ref else "black",
                     fontweight="bold" if is_ref else "normal")
        axes.append(ax)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    for ax, (cell, _, is_ref) in zip(axes, panels):
        _draw_cell(ax, cell, highlight=is_ref)
    save_figure(fig, path, fmt)
