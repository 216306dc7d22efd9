"""Cells and design spaces."""

from __future__ import annotations

from . import counting, nb201
from .vocabulary import INPUT, NB101_OPS, NB201_EDGE_OPS, NB201_NODE_OPS, OUTPUT, known_ops, register_op
from .batch import batch_from_cells
from .cell import MAX_NODES, Cell, cell_canonical_codes, cell_network_codes
from .spaces import DesignSpace, NB201Space, get, names

__all__ = [
    "Cell",
    "DesignSpace",
    "INPUT",
    "MAX_NODES",
    "NB101_OPS",
    "NB201Space",
    "NB201_EDGE_OPS",
    "NB201_NODE_OPS",
    "OUTPUT",
    "batch_from_cells",
    "cell_canonical_codes",
    "cell_network_codes",
    "get",
    "known_ops",
    "names",
    "counting",
    "nb201",
    "register_op",
]
