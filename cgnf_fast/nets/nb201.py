"""The NAS-Bench-201 macro skeleton (Dong & Yang 2020), as its ``TinyNetwork`` builds it.

Stem: 3x3 conv (16 channels, no bias) + BN; three stages of 5 cells with 16, 32, 64 channels;
between stages a residual reduction block (ReLU-Conv3x3/2-BN, ReLU-Conv3x3-BN, shortcut
AvgPool2x2 + 1x1 conv); then BN-ReLU, global average pooling and a linear classifier. Ops:
``nor_conv_kxk`` = ReLU-Conv-BN (no conv bias, affine BN), ``avg_pool_3x3`` (stride 1, padding
1, padding not counted), ``skip_connect`` = identity, ``none`` = zeros.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from ..space import NB201_EDGE_OPS, Cell
from ..space import nb201 as nb201_space

CHANNELS = 16
CELLS_PER_STAGE = 5


class ReLUConvBN(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(c_out),
        )


class Zero(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


def make_op(name: str, channels: int) -> nn.Module:
    if name == "nor_conv_3x3":
        return ReLUConvBN(channels, channels, 3)
    if name == "nor_conv_1x1":
        return ReLUConvBN(channels, channels, 1)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    if name == "skip_connect":
        return nn.Identity()
    if name == "none":
        return Zero()
    raise ValueError(
        f"op {name!r} has no NB201 implementation (NB201 ops: {', '.join(NB201_EDGE_OPS)})"
    )


class EdgeCell(nn.Module):
    """An NB201 cell from its string, edge by edge (NB201's ``InferCell``)."""

    def __init__(self, arch: str, channels: int) -> None:
        super().__init__()
        digits = nb201_space.parse(arch)
        self.edges = list(nb201_space.EDGES)
        self.ops = nn.ModuleList(make_op(NB201_EDGE_OPS[d], channels) for d in digits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for j in (1, 2, 3):
            terms = [op(nodes[i]) for (i, jj), op in zip(self.edges, self.ops) if jj == j]
            h = terms[0]
            for t in terms[1:]:
                h = h + t
            nodes.append(h)
        return nodes[3]


class NodeCell(nn.Module):
    """A cell in node form: op vertices apply their op to the sum of their inputs."""

    def __init__(self, cell: Cell, channels: int) -> None:
        super().__init__()
        self.cell = cell.pruned(allow_zero=True)
        m = self.cell.adjacency
        self.n = n = self.cell.num_nodes
        self.preds = [[u for u in range(n) if m[u][v]] for v in range(n)]
        self.ops = nn.ModuleList(make_op(o, channels) for o in self.cell.ops[1:-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.cell.is_zero:
            return x.mul(0.0)
        values = [x]
        for v in range(1, self.n):
            h = values[self.preds[v][0]]
            for u in self.preds[v][1:]:
                h = h + values[u]
            values.append(self.ops[v - 1](h) if v < self.n - 1 else h)
        return values[-1]


class ResNetBasicBlock(nn.Module):
    """NB201's reduction block between stages (stride 2, channels doubled)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, stride=2)
        self.conv_b = ReLUConvBN(c_out, c_out, 3)
        self.downsample = nn.Sequential(nn.AvgPool2d(2, stride=2), nn.Conv2d(c_in, c_out, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(x) + self.conv_b(self.conv_a(x))


class NB201Network(nn.Module):
    """The full NB201 network. Shapes: ``[B, in_channels, H, W] -> [B, num_classes]``."""

    def __init__(self, cell: Cell | str, num_classes: int = 10, channels: int = CHANNELS,
                 cells_per_stage: int = CELLS_PER_STAGE, in_channels: int = 3) -> None:
        super().__init__()
        if isinstance(cell, str):
            nb201_space.parse(cell)  # clear error on a malformed string
            make_cell = lambda c: EdgeCell(cell, c)  # noqa: E731
        elif isinstance(cell, Cell):
            make_cell = lambda c: NodeCell(cell, c)  # noqa: E731
        else:
            raise ValueError(f"expected a Cell or an NB201 string, got {type(cell).__name__}")
        self.stem = nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(channels))
        layers: list[nn.Module] = []
        c = channels
        for stage in range(3):
            if stage > 0:
                layers.append(ResNetBasicBlock(c, 2 * c))
                c *= 2
            layers.extend(make_cell(c) for _ in range(cells_per_stage))
        self.cells = nn.Sequential(*layers)
        self.lastact = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(c, num_classes)
        #: the sub-module whose output is globally average-pooled (FLOP counting, nets.flops)
        self.global_pool_source = "lastact"

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Feature maps before global pooling: ``[B, 3, H, W] -> [B, 4 * channels, H / 4, W / 4]``."""
        return self.lastact(self.cells(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean(dim=(2, 3)))


def _cell_ops(cell: Cell | str) -> list[str]:
    """The ops the network builds modules for: every edge op of an NB201 string (dead edges
    included, as NB201 builds them), the op vertices of a pruned cell."""
    if isinstance(cell, str):
        return [NB201_EDGE_OPS[d] for d in nb201_space.parse(cell)]
    if isinstance(cell, Cell):
        return list(cell.pruned(allow_zero=True).ops[1:-1])
    raise ValueError(f"expected a Cell or an NB201 string, got {type(cell).__name__}")


def _check_op(name: str) -> None:
    if name not in NB201_EDGE_OPS:
        raise ValueError(f"op {name!r} has no NB201 implementation (NB201 ops: {', '.join(NB201_EDGE_OPS)})")


def _op_params(name: str, c: int) -> int:
    _check_op(name)
    return {"nor_conv_3x3": 9 * c * c + 2 * c, "nor_conv_1x1": c * c + 2 * c}.get(name, 0)


def param_count(cell: Cell | str, num_classes: int = 10, channels: int = CHANNELS,
                cells_per_stage: int = CELLS_PER_STAGE) -> int:
    """Trainable parameters of ``NB201Network(cell, ...)``, computed without building it.

    Convention: every learnable tensor (conv weights, BN scale and shift, linear weight and
    bias), as ``sum(p.numel() for p in module.parameters())``.
    """
    ops = _cell_ops(cell)
    return _skeleton_params(num_classes, channels, cells_per_stage) + sum(
        _stage_op_params(o, channels, cells_per_stage) for o in ops)


@functools.lru_cache(maxsize=None)
def _skeleton_params(num_classes: int, channels: int, cells_per_stage: int) -> int:
    """Parameters of the network without its op vertices (stem, reductions, classifier)."""
    c = channels
    total = 27 * c + 2 * c  # stem conv + BN
    for stage in range(1, 3):  # reduction: conv_a (3x3/2), conv_b (3x3), shortcut 1x1
        total += 9 * c * 2 * c + 2 * 2 * c + 9 * 4 * c * c + 2 * 2 * c + c * 2 * c
        c *= 2
    return total + 2 * c + c * num_classes + num_classes  # lastact BN, classifier


@functools.lru_cache(maxsize=None)
def _stage_op_params(name: str, channels: int, cells_per_stage: int) -> int:
    """Parameters one op vertex adds: one module per cell, in every stage."""
    return cells_per_stage * sum(_op_params(name, channels * 2 ** stage) for stage in range(3))


def _op_flops(name: str, c: int, r: int) -> int:
    """One op vertex at ``c`` channels of ``r x r`` (NB201's convention, ``nets.flops``)."""
    _check_op(name)
    return {"nor_conv_3x3": 9 * c * c * r * r, "nor_conv_1x1": c * c * r * r,
            "avg_pool_3x3": 9 * c * r * r}.get(name, 0)


def flop_count(cell: Cell | str, num_classes: int = 10, channels: int = CHANNELS,
               cells_per_stage: int = CELLS_PER_STAGE, image_size: int = 32) -> int:
    """FLOPs of one ``image_size``-square image through ``NB201Network(cell, ...)`` in NB201's
    convention (``count_flops(..., convention="nb201")``), computed without building it.

    Every op vertex (node form) or edge op (string form) runs at its stage's shape, so the count
    is the skeleton's plus a per-op cost per stage: conv3x3 ``9 C^2 R^2``, conv1x1 ``C^2 R^2``,
    3x3 average pool ``9 C R^2``, skip/none 0.
    """
    ops = _cell_ops(cell)
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 4 or image_size % 4:
        raise ValueError(f"image_size must be a multiple of 4 (two stride-2 reductions), got {image_size!r}")
    return _skeleton_flops(num_classes, channels, image_size) + sum(
        _stage_op_flops(o, channels, cells_per_stage, image_size) for o in ops)


@functools.lru_cache(maxsize=None)
def _skeleton_flops(num_classes: int, channels: int, image_size: int) -> int:
    """FLOPs of the network without its op vertices (stem, reductions, classifier)."""
    c, r = channels, image_size
    total = 27 * c * r * r  # stem conv 3x3, 3 -> c
    for stage in range(1, 3):  # reduction: conv_a (3x3/2), conv_b (3x3), shortcut avg pool 2x2/2 + 1x1 conv
        r //= 2
        total += 9 * c * 2 * c * r * r + 9 * 4 * c * c * r * r + c * r * r * 4 + c * 2 * c * r * r
        c *= 2
    return total + c * num_classes + num_classes  # classifier (global pooling counts zero)


@functools.lru_cache(maxsize=None)
def _stage_op_flops(name: str, channels: int, cells_per_stage: int, image_size: int) -> int:
    """FLOPs one op vertex adds: one module per cell, in every stage at its shape."""
    return cells_per_stage * sum(_op_flops(name, channels * 2 ** stage, image_size // 2 ** stage) for stage in range(3))