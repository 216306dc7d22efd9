"""NAS-Bench-201: arch strings, node form, official indices and NATS-Bench's unique string.

An NB201 cell has 4 nodes and 6 edges ``i -> j`` (``i < j``), each carrying one of
``none, skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3``; node ``j`` is the sum of
``op(node i)`` over its incoming edges. The string lists the edges into node 1, 2, 3:
``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``.

**Node form** (what :class:`~cgnf_fast.space.cell.Cell` holds): every non-``none`` edge becomes
an op vertex whose inputs are the edge vertices entering its source node (the input vertex for
node 0); the output vertex sums the edge vertices entering node 3; then the cell is pruned.
The 341 NB201 cells with no input -> output path become the zero cell.

**Official index**: the row order of NB201's API (``meta_archs``), shipped in
``cgnf_fast/data/nb201_order.npy`` (one base-5 digit code per index; made from the NB201
table by ``scripts/make_nb201_tables.py``, checked against it in the tests).
"""

from __future__ import annotations

import functools
import re
from importlib import resources

import numpy as np

from . import vocabulary
from .cell import Cell

#: Edges in string order: (source, target).
EDGES: tuple[tuple[int, int], ...] = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))
NUM_ARCHS = 5 ** len(EDGES)

_OPS_ALT = "|".join(re.escape(o) for o in vocabulary.NB201_EDGE_OPS)
_TOKEN = re.compile(rf"^({_OPS_ALT})~(\d+)$")


def parse(arch: str) -> tuple[int, ...]:
    """The six edge ops of an NB201 string as indices into ``NB201_EDGE_OPS`` (string order).

    Raises ``ValueError`` naming the offending part of a malformed string.
    """
    if not isinstance(arch, str):
        raise ValueError(f"an NB201 arch string must be a str, got {type(arch).__name__}")
    s = arch.strip()
    nodes = s.split("+")
    if len(nodes) != 3:
        raise ValueError(f"NB201 string must have 3 nodes separated by '+', got {len(nodes)} in {arch!r}")
    digits: list[int] = []
    for j, node in enumerate(nodes, start=1):
        if len(node) < 2 or not node.startswith("|") or not node.endswith("|"):
            raise ValueError(f"NB201 node {j} must look like |op~0|...|, got {node!r} in {arch!r}")
        tokens = node[1:-1].split("|")
        if len(tokens) != j:
            raise ValueError(f"NB201 node {j} must have {j} incoming edges, got {len(tokens)} ({node!r})")
        for i, tok in enumerate(tokens):
            m = _TOKEN.match(tok)
            if not m:
                op = tok.split("~")[0]
                if op not in vocabulary.NB201_EDGE_OPS:
                    raise ValueError(
                        f"unknown NB201 op {op!r} in edge {tok!r} of node {j}; ops: {', '.join(vocabulary.NB201_EDGE_OPS)}"
                    )
                raise ValueError(f"malformed NB201 edge {tok!r} in node {j}; expected op~{i}")
            if int(m.group(2)) != i:
                raise ValueError(f"edge {tok!r} of node {j} must come from node {i}, not {m.group(2)}")
            digits.append(vocabulary.NB201_EDGE_OPS.index(m.group(1)))
    return tuple(digits)


def format_arch(digits: tuple[int, ...] | list[int]) -> str:
    """The NB201 string of six edge-op indices (string order)."""
    o = [vocabulary.NB201_EDGE_OPS[d] for d in digits]
    return f"|{o[0]}~0|+|{o[1]}~0|{o[2]}~1|+|{o[3]}~0|{o[4]}~1|{o[5]}~2|"


def digits_to_cell(digits: tuple[int, ...]) -> Cell:
    """Node form of six edge-op indices (see the module doc)."""
    ops = [vocabulary.INPUT]
    entering: dict[int, list[int]] = {0: [0], 1: [], 2: [], 3: []}  # node -> vertices summed into it
    preds: list[list[int]] = [[]]
    for (src, dst), d in zip(EDGES, digits):
        if d == 0:  # none
            continue
        v = len(ops)
        ops.append(vocabulary.NB201_EDGE_OPS[d])
        preds.append(list(entering[src]))
        entering[dst].append(v)
    ops.append(vocabulary.OUTPUT)
    preds.append(list(entering[3]))
    n = len(ops)
    m = [[0] * n for _ in range(n)]
    for v, ps in enumerate(preds):
        for u in ps:
            m[u][v] = 1
    return Cell._trusted(m, ops).pruned(allow_zero=True)


def to_cell(arch: str) -> Cell:
    """Node form of an NB201 string."""
    return digits_to_cell(parse(arch))


def unique_str(arch: str) -> str:
    """NATS-Bench's ``Structure.to_unique_str(consider_zero=True)``, reimplemented.

    Each node is the ``+``-join of its sorted terms; a term is ``#`` for a ``none`` edge or an
    edge from a node whose string is exactly ``#``, the source string for ``skip_connect``,
    and ``(source)@op`` otherwise. Only a node whose *whole* string is ``#`` counts as zero
    downstream (``#+#`` does not): this is NATS-Bench's behaviour, and what makes the
    well-known 6,466 classes.
    """
    if isinstance(arch, Cell):
        raise ValueError("unique_str takes an NB201 string, not a Cell: NATS-Bench's convention counts 'none' "
                         "edges, which vanish in a cell's node form, so several strings (and unique strings) map to "
                         "one cell; pass the string, or compare cells with network_code() / canonical_code()")
    digits = parse(arch)
    nodes = {0: "0"}
    k = 0
    for j in (1, 2, 3):
        terms = []
        for i in range(j):
            op = vocabulary.NB201_EDGE_OPS[digits[k]]
            k += 1
            if op == "none" or nodes[i] == "#":
                terms.append("#")
            elif op == "skip_connect":
                terms.append(nodes[i])
            else:
                terms.append(f"({nodes[i]})@{op}")
        nodes[j] = "+".join(sorted(terms))
    return nodes[3]


@functools.cache
def _order() -> np.ndarray:
    """``[15625] uint16``: digit code (base 5, first edge most significant) of each official index."""
    with resources.files("cgnf_fast.data").joinpath("nb201_order.npy").open("rb") as f:
        order = np.load(f)
    if order.shape != (NUM_ARCHS,) or sorted(order.tolist()) != list(range(NUM_ARCHS)):
        raise RuntimeError("cgnf_fast/data/nb201_order.npy is corrupt: reinstall cgnf_fast")
    return order


def _digit_code(digits: tuple[int, ...]) -> int:
    c = 0
    for d in digits:
        c = c * 5 + d
    return c


def _code_digits(code: int) -> tuple[int, ...]:
    out = []
    for _ in EDGES:
        out.append(code % 5)
        code //= 5
    return tuple(reversed(out))


@functools.cache
def _index_of_digit_code() -> np.ndarray:
    inv = np.empty(NUM_ARCHS, dtype=np.int64)
    inv[_order()] = np.arange(NUM_ARCHS)
    return inv


def digits_table() -> np.ndarray:
    """``[15625, 6] int64``: the edge-op indices (``NB201_EDGE_OPS``, string order) of every
    official index."""
    codes = _order().astype(np.int64)
    return np.stack([(codes // 5 ** (len(EDGES) - 1 - e)) % 5 for e in range(len(EDGES))], 1)


def index_of_digits(digits: tuple[int, ...] | list[int] | np.ndarray) -> int:
    """The official index of six edge-op indices (string order)."""
    return int(_index_of_digit_code()[_digit_code(tuple(int(d) for d in digits))])


def arch_at(index: int) -> str:
    """The NB201 string at an official index (0 .. 15624)."""
    if not isinstance(index, (int, np.integer)) or not 0 <= int(index) < NUM_ARCHS:
        raise ValueError(f"NB201 index must be an int in [0, {NUM_ARCHS}), got {index!r}")
    return format_arch(_code_digits(int(_order()[int(index)])))


def index_of(arch: str) -> int:
    """The official NB201 index of a string."""
    return int(_index_of_digit_code()[_digit_code(parse(arch))])


def all_archs() -> list[str]:
    """All 15,625 NB201 strings in official index order."""
    return [format_arch(_code_digits(int(c))) for c in _order()]


@functools.cache
def all_cells() -> tuple[Cell, ...]:
    """Node form of every NB201 string, in official index order (computed once per process)."""
    return tuple(digits_to_cell(_code_digits(int(c))) for c in _order())


def _node_form_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(adj [15625, 8, 8] uint8, labels [15625, 8] int8, n [15625] int8)``: the node form of
    every official index before pruning, as :func:`digits_to_cell` builds it (one vertex per
    non-``none`` edge, in edge order), with ``Cell.labels()`` labels; built per pattern of
    ``none`` edges (64 patterns) with array ops."""
    digits = np.stack([(_order().astype(np.int64) // 5 ** (len(EDGES) - 1 - e)) % 5 for e in range(len(EDGES))], 1)
    edge_label = np.asarray([0] + [vocabulary.op_label(o) for o in vocabulary.NB201_EDGE_OPS[1:]], dtype=np.int8)
    adj = np.zeros((NUM_ARCHS, 8, 8), dtype=np.uint8)
    labels = np.zeros((NUM_ARCHS, 8), dtype=np.int8)
    n = np.zeros(NUM_ARCHS, dtype=np.int8)
    present = digits != 0
    pattern = (present * (1 << np.arange(len(EDGES)))).sum(1)
    for pat in np.unique(pattern):
        rows = np.flatnonzero(pattern == pat)
        live = [e for e in range(len(EDGES)) if pat >> e & 1]
        entering: dict[int, list[int]] = {0: [0], 1: [], 2: [], 3: []}
        k = len(live) + 2
        for v, e in enumerate(live, start=1):
            src, dst = EDGES[e]
            for u in entering[src]:
                adj[rows, u, v] = 1
            entering[dst].append(v)
            labels[rows, v] = edge_label[digits[rows, e]]
        for u in entering[3]:
            adj[rows, u, k - 1] = 1
        n[rows] = k
    return adj, labels, n


@functools.cache
def _class_table() -> tuple[np.ndarray, dict[int, int]]:
    """Canonical code of the node form of every official index, and code -> lowest index."""
    import torch

    from ..ops.dag import dag_canonical_code, dag_prune

    # node forms, pruned (no path: the zero cell) and coded natively in one batch
    pa, pl, pn = dag_prune(*(torch.from_numpy(x) for x in _node_form_arrays()))
    rows = torch.nonzero(pn >= 2).flatten()
    codes = np.full(NUM_ARCHS, Cell.zero().canonical_code(), dtype=np.uint64)
    if len(rows):  # (the kernel reads the op vertices' labels only, not the padding)
        codes[rows.numpy()] = dag_canonical_code(pa[rows], pl[rows], pn[rows]).numpy().astype(np.uint64)
    first: dict[int, int] = {}
    for idx, code in enumerate(codes.tolist()):
        first.setdefault(code, idx)
    return codes, first


def class_counts() -> dict[str, int]:
    """Classes of the 15,625 cells under the three meanings of "unique", and the zero cells.

    ``structural`` (canonical codes) and ``network`` (network codes) count the zero cell as one
    class; ``nb201_unique_str`` is NATS-Bench's convention on the strings.
    """
    cells = all_cells()
    return {
        "structural": len(_class_table()[1]),
        "network": len({c.network_code() for c in cells}),
        "nb201_unique_str": len({unique_str(a) for a in all_archs()}),
        "zero_cells": sum(c.is_zero for c in cells),
    }


def indices_of_cell(cell: Cell) -> list[int]:
    """Every official index whose node form is isomorphic to the pruned ``cell``."""
    code = cell.pruned(allow_zero=True).canonical_code()
    codes, first = _class_table()
    if code not in first:
        return []
    return np.flatnonzero(codes == np.uint64(code)).tolist()


def index_of_cell(cell: Cell) -> int | None:
    """The lowest official index whose node form is isomorphic to the pruned ``cell``."""
    code = cell.pruned(allow_zero=True).canonical_code()
    return _class_table()[1].get(code)


def from_cell(cell: Cell) -> str | None:
    """An NB201 string for ``cell`` (lowest index of its class), or None outside NB201."""
    idx = index_of_cell(cell)
    return None if idx is None else arch_at(idx)
