"""The NAS-Bench-101 macro skeleton (Ying et al. 2019), as google-research/nasbench builds it.

Stem: conv3x3-bn-relu with 128 channels; 3 stacks of 3 cells; 2x2 max-pool and doubled
channels between stacks (128, 256, 512); global average pooling and a linear classifier.
Inside a cell (``build_module`` in NB101's model_builder): vertex channels come from
``compute_vertex_channels``; the input reaches a vertex through a 1x1 conv-bn-relu projection,
other vertices through channel truncation; a vertex sums its inputs and applies its op; the
output concatenates the vertices that feed it and adds a projection of the input when the input
feeds the output directly. Convolutions have no bias; batch norm has a scale and a shift (what
NB101 counts in ``trainable_parameters``).
"""

from __future__ import annotations

import collections
import functools

import numpy as np

import torch
from torch import nn

from ..space import Cell

STEM_CHANNELS = 128
NUM_STACKS = 3
CELLS_PER_STACK = 3
#: PyTorch's batch-norm momentum for TensorFlow's decay 0.997 (NB101's). Short trainings need a
#: larger one (``bn_momentum``) or the running statistics are still far from the data's at the end.
BN_MOMENTUM = 0.003


def vertex_channels(in_channels: int, out_channels: int, matrix: list[list[int]]) -> list[int]:
    """NB101's ``compute_vertex_channels``: channels of every vertex of a pruned cell."""
    n = len(matrix)
    ch = [0] * n
    ch[0] = in_channels
    ch[n - 1] = out_channels
    if n == 2:
        return ch
    in_degree_out = sum(matrix[v][n - 1] for v in range(1, n))
    interior, correction = divmod(out_channels, in_degree_out)
    for v in range(1, n - 1):
        if matrix[v][n - 1]:
            ch[v] = interior
            if correction:
                ch[v] += 1
                correction -= 1
    for v in range(n - 3, 0, -1):
        if not matrix[v][n - 1]:
            for dst in range(v + 1, n - 1):
                if matrix[v][dst]:
                    ch[v] = max(ch[v], ch[dst])
    return ch


@functools.lru_cache(maxsize=4096)
def _channels(in_channels: int, out_channels: int, adjacency: tuple[tuple[int, ...], ...]) -> tuple[int, ...]:
    """:func:`vertex_channels` of a cell's adjacency tuples, remembered: ``param_count`` and
    ``flop_count`` of one cell ask for the same few (in, out) pairs."""
    return tuple(vertex_channels(in_channels, out_channels, adjacency))


class ConvBNReLU(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(c_out, eps=1e-5, momentum=BN_MOMENTUM),
            nn.ReLU(inplace=False),
        )


def _op(name: str, channels: int) -> nn.Module:
    if name == "conv3x3-bn-relu":
        return ConvBNReLU(channels, channels, 3)
    if name == "conv1x1-bn-relu":
        return ConvBNReLU(channels, channels, 1)
    if name == "maxpool3x3":
        return nn.MaxPool2d(3, stride=1, padding=1)
    raise ValueError(f"op {name!r} has no NB101 implementation (NB101 ops: conv3x3-bn-relu, conv1x1-bn-relu, maxpool3x3)")


class NB101Cell(nn.Module):
    """One NB101 module for a pruned cell. Shapes: ``[B, in_channels, H, W] -> [B, out_channels, H, W]``."""

    def __init__(self, cell: Cell, in_channels: int, out_channels: int) -> None:
        super().__init__()
        m = [list(r) for r in cell.adjacency]
        self.n = n = len(m)
        self.matrix = m
        self.channels = ch = vertex_channels(in_channels, out_channels, m)
        self.proj = nn.ModuleDict()
        self.ops = nn.ModuleDict()
        for t in range(1, n - 1):
            if m[0][t]:
                self.proj[str(t)] = ConvBNReLU(in_channels, ch[t], 1)
            self.ops[str(t)] = _op(cell.ops[t], ch[t])
        if m[0][n - 1]:
            self.proj[str(n - 1)] = ConvBNReLU(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m, n, ch = self.matrix, self.n, self.channels
        tensors = [x]
        concat = []
        for t in range(1, n - 1):
            add_in = [tensors[s][:, : ch[t]] for s in range(1, t) if m[s][t]]
            if m[0][t]:
                add_in.append(self.proj[str(t)](x))
            h = add_in[0]
            for a in add_in[1:]:
                h = h + a
            tensors.append(self.ops[str(t)](h))
            if m[t][n - 1]:
                concat.append(tensors[t])
        if not concat:
            return self.proj[str(n - 1)](x)
        out = concat[0] if len(concat) == 1 else torch.cat(concat, dim=1)
        if m[0][n - 1]:
            out = out + self.proj[str(n - 1)](x)
        return out


class NB101Network(nn.Module):
    """The full NB101 network of a cell. Shapes: ``[B, in_channels, H, W] -> [B, num_classes]``."""

    def __init__(self, cell: Cell, num_classes: int = 10, stem_channels: int = STEM_CHANNELS,
                 num_stacks: int = NUM_STACKS, cells_per_stack: int = CELLS_PER_STACK, in_channels: int = 3,
                 bn_momentum: float = BN_MOMENTUM) -> None:
        super().__init__()
        cell = cell.pruned()
        self.stem = ConvBNReLU(in_channels, stem_channels, 3)
        layers: list[nn.Module] = []
        c_in = c = stem_channels
        for stack in range(num_stacks):
            if stack > 0:
                layers.append(nn.MaxPool2d(2, stride=2))
                c *= 2
            for _ in range(cells_per_stack):
                layers.append(NB101Cell(cell, c_in, c))
                c_in = c
        self.cells = nn.Sequential(*layers)
        self.classifier = nn.Linear(c, num_classes)
        #: the sub-module whose output is globally average-pooled (FLOP counting, nets.flops)
        self.global_pool_source = "cells"
        if bn_momentum != BN_MOMENTUM:
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.momentum = bn_momentum

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Feature maps before global pooling."""
        return self.cells(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean(dim=(2, 3)))


#: Convolution kernel of each conv op (the other op, the 3x3 max pool, has no weights).
_KERNEL = {"conv3x3-bn-relu": 3, "conv1x1-bn-relu": 1}


def _cell_modules(stem_channels: int, num_stacks: int, cells_per_stack: int) -> collections.Counter:
    """``(stack, c_in, c_out) -> how many cell modules`` of the network, stack by stack."""
    shapes: collections.Counter = collections.Counter()
    c_in = c = stem_channels
    for stack in range(num_stacks):
        if stack > 0:
            c *= 2
        for _ in range(cells_per_stack):
            shapes[(stack, c_in, c)] += 1
            c_in = c
    return shapes


def _check_image_size(image_size: int, num_stacks: int) -> None:
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 2 ** max(num_stacks - 1, 0):
        raise ValueError(f"image_size must be an int >= {2 ** max(num_stacks - 1, 0)} for {num_stacks} stacks, "
                         f"got {image_size!r}")


def _skeleton_counts(num_classes: int, stem_channels: int, num_stacks: int, image_size: int) -> tuple[int, int]:
    """(params, FLOPs) of everything but the cells: the stem conv-bn-relu, the 2x2 max pools
    between stacks (4 FLOPs per output element) and the classifier."""
    c = stem_channels << max(num_stacks - 1, 0)  # the last stack's width
    params = 9 * 3 * stem_channels + 2 * stem_channels + c * num_classes + num_classes
    flops = 9 * 3 * stem_channels * image_size * image_size + c * num_classes + num_classes
    for stack in range(1, num_stacks):
        flops += 4 * (stem_channels << (stack - 1)) * (image_size >> stack) ** 2
    return params, flops


def param_count(cell: Cell, num_classes: int = 10, stem_channels: int = STEM_CHANNELS,
                num_stacks: int = NUM_STACKS, cells_per_stack: int = CELLS_PER_STACK) -> int:
    """Trainable parameters of ``NB101Network(cell, ...)``, computed without building it
    (NB101's ``trainable_parameters`` convention: conv kernels, BN scale and shift, dense layer)."""
    cell = cell.pruned()
    m, n = cell.adjacency, cell.num_nodes

    def cbr(c_in: int, c_out: int, k: int) -> int:
        return k * k * c_in * c_out + 2 * c_out

    def module(c_in: int, c_out: int) -> int:
        ch = _channels(c_in, c_out, m)
        total = 0
        for t in range(1, n - 1):
            if m[0][t]:
                total += cbr(c_in, ch[t], 1)
            k = _KERNEL.get(cell.ops[t])
            if k:
                total += cbr(ch[t], ch[t], k)
        if m[0][n - 1]:
            total += cbr(c_in, c_out, 1)
        return total

    shapes = _cell_modules(stem_channels, num_stacks, cells_per_stack)
    return _skeleton_counts(num_classes, stem_channels, num_stacks, 32)[0] + sum(
        k * module(c_in, c_out) for (_, c_in, c_out), k in shapes.items())


def count_batch(cells: list[Cell], num_classes: int = 10, stem_channels: int = STEM_CHANNELS,
                num_stacks: int = NUM_STACKS, cells_per_stack: int = CELLS_PER_STACK,
                image_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """``(params [B], flops [B])`` int64: :func:`param_count` and :func:`flop_count` of many
    cells at once, with array operations over the cells of each vertex count (the same closed
    forms; equal to them, tested). For the thousands of cells a large ``sample()`` returns."""
    _check_image_size(image_size, num_stacks)
    pruned = [c.pruned() for c in cells]
    params = np.zeros(len(pruned), dtype=np.int64)
    flops = np.zeros(len(pruned), dtype=np.int64)
    shapes = _cell_modules(stem_channels, num_stacks, cells_per_stack)
    base_p, base_f = _skeleton_counts(num_classes, stem_channels, num_stacks, image_size)
    by_n: dict[int, list[int]] = collections.defaultdict(list)
    for i, c in enumerate(pruned):
        by_n[c.num_nodes].append(i)
    for n, rows in by_n.items():
        m = np.array([pruned[i].adjacency for i in rows], dtype=np.int64)  # [b, n, n]
        kern = np.array([[_KERNEL.get(o, 0) for o in pruned[i].ops] for i in rows], dtype=np.int64)  # [b, n]
        from_in = m[:, 0, 1:n - 1]  # [b, n-2]: input -> vertex (a 1x1 projection)
        in_out = m[:, 0, n - 1]  # [b]: input -> output (a projection added to the output)
        feeds = m[:, 1:n - 1, n - 1]  # [b, n-2]: vertex -> output (concatenated)
        k2 = (kern * kern)[:, 1:n - 1]
        conv = (kern[:, 1:n - 1] > 0).astype(np.int64)
        pools = 1 - conv  # every op without a kernel counts as a 3x3 pool, as in flop_count
        p_tot = np.zeros(len(rows), dtype=np.int64)
        f_tot = np.zeros(len(rows), dtype=np.int64)
        for (stack, c_in, c_out), count in shapes.items():
            area = (image_size >> stack) ** 2
            if n > 2:
                # compute_vertex_channels: c_out split over the vertices feeding the output (the
                # first ones take the remainder), other vertices the widest of their successors
                deg = feeds.sum(1, keepdims=True)
                interior, corr = np.divmod(c_out, deg)
                rank = np.cumsum(feeds, 1) - feeds  # feeding vertices before this one
                ch = np.where(feeds == 1, interior + (rank < corr), 0)
                for v in range(n - 3, 0, -1):
                    succ = m[:, v, v + 1:n - 1] * ch[:, v:n - 2]
                    widest = succ.max(1) if succ.shape[1] else np.zeros(len(rows), dtype=np.int64)
                    ch[:, v - 1] = np.where(feeds[:, v - 1] == 1, ch[:, v - 1], np.maximum(ch[:, v - 1], widest))
            else:
                ch = np.zeros((len(rows), 0), dtype=np.int64)
            p = (from_in * (c_in * ch + 2 * ch)).sum(1) + (conv * (k2 * ch * ch + 2 * ch)).sum(1)
            p += in_out * (c_in * c_out + 2 * c_out)
            f = (from_in * c_in * ch).sum(1) + (conv * k2 * ch * ch + pools * 9 * ch).sum(1)
            f = (f + in_out * c_in * c_out) * area
            p_tot += count * p
            f_tot += count * f
        params[rows] = base_p + p_tot
        flops[rows] = base_f + f_tot
    return params, flops


def flop_count(cell: Cell, num_classes: int = 10, stem_channels: int = STEM_CHANNELS, num_stacks: int = NUM_STACKS,
               cells_per_stack: int = CELLS_PER_STACK, image_size: int = 32) -> int:
    """FLOPs of one ``image_size``-square image through ``NB101Network(cell, ...)`` in NB201's
    convention (``count_flops(..., convention="nb201")``), computed without building it:
    convolutions ``k^2 C_in C_out`` per output position (no biases), 3x3 max pools 9 and the 2x2
    pools between stacks 4 per output element, the classifier ``C * classes + classes``;
    projections by truncation, additions and concatenations count zero."""
    _check_image_size(image_size, num_stacks)
    cell = cell.pruned()
    m, n = cell.adjacency, cell.num_nodes

    def module(c_in: int, c_out: int, area: int) -> int:
        ch = _channels(c_in, c_out, m)
        total = 0
        for t in range(1, n - 1):
            if m[0][t]:
                total += c_in * ch[t] * area
            k = _KERNEL.get(cell.ops[t])
            total += k * k * ch[t] * ch[t] * area if k else 9 * ch[t] * area  # conv, or 3x3 max pool
        if m[0][n - 1]:
            total += c_in * c_out * area
        return total

    return _skeleton_counts(num_classes, stem_channels, num_stacks, image_size)[1] + sum(
        k * module(c_in, c_out, (image_size >> stack) ** 2) for (stack, c_in, c_out), k in
        _cell_modules(stem_channels, num_stacks, cells_per_stack).items())
