"""Runnable networks from cells: the NB201 and NB101 macro skeletons."""

from __future__ import annotations

from typing import Any

from torch import nn

from ..space import NB101_OPS, Cell
from ..space.spaces import SKELETONS
from . import nb101, nb201
from .flops import count_flops as _count_module_flops


def as_cell(cell: Any) -> Cell | str:
    """``cell`` itself, or the :class:`Cell` an object carries as ``.cell`` (what ``sample()``
    returns: a ``SampledCell``)."""
    inner = getattr(cell, "cell", None)
    return inner if isinstance(inner, Cell) else cell


def default_skeleton(cell: Cell | str) -> str:
    """The skeleton a cell's ops belong to: ``"nb101"`` when its op vertices all carry NB101 ops,
    else ``"nb201"`` (NB201 strings too)."""
    if isinstance(cell, Cell):
        ops = set(cell.ops[1:-1])
        if ops and ops <= set(NB101_OPS):
            return "nb101"
    return "nb201"


def build(cell: Cell | str, skeleton: str | None = None, num_classes: int = 10, **hparams) -> nn.Module:
    """A ``torch.nn.Module`` for a cell in a macro skeleton.

    Args:
        cell: a :class:`Cell` (or what ``sample()`` returns); for ``skeleton="nb201"`` also an
            NB201 string, built edge by edge exactly as NAS-Bench-201 builds it (dead edges
            included, so parameter counts match NB201's). A Cell is built in node form: each op
            vertex applies its op to the sum of its inputs, the output sums its inputs (the zero
            cell contributes zeros).
        skeleton: ``"nb201"`` or ``"nb101"``; None: the one the cell's ops belong to
            (:func:`default_skeleton`).
        num_classes: classifier outputs.
        hparams: skeleton hyper-parameters (nb201: ``channels``, ``cells_per_stage``; nb101:
            ``stem_channels``, ``num_stacks``, ``cells_per_stack``; both: ``in_channels``, default 3).
    """
    cell = as_cell(cell)
    skeleton = default_skeleton(cell) if skeleton is None else skeleton
    if skeleton == "nb201":
        return nb201.NB201Network(cell, num_classes=num_classes, **hparams)
    if skeleton == "nb101":
        if isinstance(cell, str):
            raise ValueError("the nb101 skeleton takes a Cell (NB101 ops), not a string")
        return nb101.NB101Network(cell, num_classes=num_classes, **hparams)
    raise ValueError(f"unknown skeleton {skeleton!r}; choose one of: {', '.join(SKELETONS)}")


def count_params(module_or_cell: nn.Module | Cell | str, skeleton: str | None = None, num_classes: int = 10,
                 **hparams) -> int:
    """Trainable parameters of a module, or of ``build(cell, skeleton, ...)``."""
    m = module_or_cell if isinstance(module_or_cell, nn.Module) else build(module_or_cell, skeleton, num_classes, **hparams)
    return sum(p.numel() for p in m.parameters() if p.requires_grad)


def count_flops(module_or_cell: nn.Module | Cell | str, skeleton: str | None = None, num_classes: int = 10,
                input_size: tuple[int, int, int] = (3, 32, 32), convention: str = "nb201", **hparams) -> int:
    """FLOPs of one image: multiply-accumulates in NB201's convention (the default, what the
    ``flops`` proxy stores) or NASLib's zero-cost ``flops`` (``convention="naslib"``: also batch
    norm, ReLU and the global pool, no linear bias); see ``cgnf_fast.nets.flops``."""
    m = module_or_cell if isinstance(module_or_cell, nn.Module) else build(module_or_cell, skeleton, num_classes, **hparams)
    return _count_module_flops(m, input_size, convention)


class ExactCounts:
    """Exact ``(params, FLOPs)`` of the networks cells build in a skeleton (default
    hyper-parameters), from the closed forms ``nb201``/``nb101`` ``param_count`` /
    ``flop_count`` (equal to the built module's counts, tested; building NB101's 128-channel
    network per cell takes seconds), remembered per key (a network code: cells that build the
    same network have the same counts)."""

    def __init__(self, skeleton: str) -> None:
        if skeleton not in SKELETONS:
            raise ValueError(f"unknown skeleton {skeleton!r}; choose one of: {', '.join(SKELETONS)}")
        self.skeleton = skeleton
        self._mod = nb201 if skeleton == "nb201" else nb101
        self._known: dict[int, tuple[int, int]] = {}

    def get(self, cell: Cell, key: int) -> tuple[int, int]:
        """``(params, FLOPs)`` of ``cell``, whose network code (or another unique key) is ``key``."""
        if key not in self._known:
            self._known[key] = (self._mod.param_count(cell), self._mod.flop_count(cell))
        return self._known[key]

    def fill(self, cells: dict[int, Cell]) -> None:
        """:meth:`get` of many cells (key -> cell) at once: NB101's closed forms in one array pass
        (``nb101.count_batch``), NB201's per cell."""
        todo = {k: c for k, c in cells.items() if k not in self._known}
        if self.skeleton == "nb101" and todo:
            ps, fs = nb101.count_batch(list(todo.values()))
            self._known.update(zip(todo, zip(ps.tolist(), fs.tolist())))
        for k, c in todo.items():
            self.get(c, k)


__all__ = ["SKELETONS", "ExactCounts", "as_cell", "build", "count_flops", "count_params", "default_skeleton"]
