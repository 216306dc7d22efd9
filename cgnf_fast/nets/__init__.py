"""Runnable networks from cells: the NB201 and NB101 macro skeletons."""

from __future__ import annotations

from torch import nn

from ..space import Cell
from . import nb101, nb201
from .flops import count_flops as _count_module_flops

SKELETONS = ("nb201", "nb101")


def build(cell: Cell | str, skeleton: str = "nb201", num_classes: int = 10, **hparams) -> nn.Module:
    """A ``torch.nn.Module`` for a cell in a macro skeleton.

    Args:
        cell: a :class:`Cell`; for ``skeleton="nb201"`` also an NB201 string, built edge by edge
            exactly as NAS-Bench-201 builds it (dead edges included, so parameter counts match
            NB201's). A Cell is built in node form: each op vertex applies its op to the sum of
            its inputs, the output sums its inputs (the zero cell contributes zeros).
        skeleton: ``"nb201"`` or ``"nb101"``.
        num_classes: classifier outputs.
        hparams: skeleton hyper-parameters (nb201: ``channels``, ``cells_per_stage``; nb101:
            ``stem_channels``, ``num_stacks``, ``cells_per_stack``; both: ``in_channels``, default 3).
    """
    if skeleton == "nb201":
        return nb201.NB201Network(cell, num_classes=num_classes, **hparams)
    if skeleton == "nb101":
        if isinstance(cell, str):
            raise ValueError("the nb101 skeleton takes a Cell (NB101 ops), not a string")
        return nb101.NB101Network(cell, num_classes=num_classes, **hparams)
    raise ValueError(f"unknown skeleton {skeleton!r}; choose one of: {', '.join(SKELETONS)}")


def count_params(module_or_cell: nn.Module | Cell | str, skeleton: str = "nb201", num_classes: int = 10, **hparams) -> int:
    """Trainable parameters of a module, or of ``build(cell, skeleton, ...)``."""
    m = module_or_cell if isinstance(module_or_cell, nn.Module) else build(module_or_cell, skeleton, num_classes, **hparams)
    return sum(p.numel() for p in m.parameters() if p.requires_grad)


def count_flops(module_or_cell: nn.Module | Cell | str, skeleton: str = "nb201", num_classes: int = 10,
                input_size: tuple[int, int, int] = (3, 32, 32), convention: str = "nb201", **hparams) -> int:
    """FLOPs of one image: multiply-accumulates in NB201's convention (the default, what the
    ``flops`` proxy stores) or NASLib's zero-cost ``flops`` (``convention="naslib"``: also batch
    norm, ReLU and the global pool, no linear bias); see ``cgnf_fast.nets.flops``."""
    m = module_or_cell if isinstance(module_or_cell, nn.Module) else build(module_or_cell, skeleton, num_classes, **hparams)
    return _count_module_flops(m, input_size, convention)


__all__ = ["SKELETONS", "build", "count_flops", "count_params"]
