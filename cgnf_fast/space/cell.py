"""``Cell``: an immutable labelled DAG (input, op vertices, output) and its exact identities."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..ops.dag import dag_canonical_code, dag_network_code
from ..reference import dag as _ref
from . import vocabulary
from .batch import batch_from_cells

if TYPE_CHECKING:
    import networkx as nx

#: Largest number of vertices (input and output included) a cell may have.
MAX_NODES = _ref.MAX_NODES

_NB101_LABEL = {name: i for i, name in enumerate(vocabulary.NB101_OPS)}


class Cell:
    """A cell: an upper-triangular 0/1 adjacency matrix and one op name per vertex.

    Vertex 0 is ``"input"``, vertex ``N-1`` is ``"output"``, the others carry op names from
    the op vocabulary (``cgnf_fast.space.known_ops()``). ``matrix[i][j] == 1`` means an edge
    ``i -> j``; the matrix must be strictly upper triangular (vertices in topological order).

    Equality and hashing are *exact* (same matrix, same ops, same order). For identity up to
    isomorphism compare :meth:`canonical_code` (structural) or :meth:`network_code` (the
    network the cell builds), usually on :meth:`pruned` cells.

    Shapes:
        matrix: ``[N, N]`` with ``2 <= N <= 8``; ops: ``N`` names.
    """

    # _keep, _canon, _net: memoised results of prune_keep (False: not yet), canonical_code and
    # network_code (None: not yet); a cell is immutable, so they never go stale.
    __slots__ = ("_adj", "_ops", "_hash", "_keep", "_canon", "_net")

    def __init__(self, matrix: Any, ops: Sequence[str]) -> None:
        adj = _check_matrix(matrix)
        self._adj: tuple[tuple[int, ...], ...] = adj
        self._ops: tuple[str, ...] = _check_ops(ops, len(adj))
        self._hash = hash((self._adj, self._ops))
        self._keep: Sequence[int] | None | bool = False
        self._canon: int | None = None
        self._net: int | None = None

    # -- construction -------------------------------------------------------------------
    @classmethod
    def _trusted(cls, adj: Sequence[Sequence[int]], ops: Sequence[str]) -> Cell:
        """Build from already-validated parts (internal: skips checks)."""
        return cls._of(tuple(tuple(map(int, row)) for row in adj), ops)

    @classmethod
    def _from_int_rows(cls, rows: list[list[int]], ops: Sequence[str]) -> Cell:
        """:meth:`_trusted` for rows that already hold Python ints (``ndarray.tolist()``)."""
        return cls._of(tuple(map(tuple, rows)), ops)

    @classmethod
    def _pruned_from_rows(cls, rows: list[list[int]], ops: Sequence[str], canonical_code: int,
                          network_code: int) -> Cell:
        """A cell already pruned (every vertex on an input -> output path), from rows of Python
        ints, with its canonical and network codes computed elsewhere (a native batch: the
        sampler's decoder). Internal: nothing is checked."""
        self = cls._from_int_rows(rows, ops)
        self._keep, self._canon, self._net = tuple(range(len(rows))), int(canonical_code), int(network_code)
        return self

    @classmethod
    def _of(cls, adj: tuple[tuple[int, ...], ...], ops: Sequence[str]) -> Cell:
        self = object.__new__(cls)
        self._adj = adj
        self._ops = tuple(ops)
        self._hash = hash((self._adj, self._ops))
        self._keep = False
        self._canon = None
        self._net = None
        return self

    def _prune_keep(self) -> Sequence[int] | None:
        if self._keep is False:
            self._keep = _ref.prune_keep(self._adj)
        return self._keep  # type: ignore[return-value]

    @classmethod
    def zero(cls) -> Cell:
        """The zero cell: input and output with no edge (its network always outputs zeros)."""
        return cls._trusted(((0, 0), (0, 0)), (vocabulary.INPUT, vocabulary.OUTPUT))

    @classmethod
    def from_json(cls, obj: str | Mapping[str, Any]) -> Cell:
        """From ``{"matrix": [[...]], "ops": [...]}`` (a mapping or its JSON text)."""
        if isinstance(obj, (str, bytes)):
            try:
                obj = json.loads(obj)
            except json.JSONDecodeError as e:
                raise ValueError(f"cell JSON is not valid JSON: {e}") from None
        if not isinstance(obj, Mapping) or "matrix" not in obj or "ops" not in obj:
            raise ValueError('a cell in JSON must be an object with keys "matrix" and "ops"')
        return cls(obj["matrix"], obj["ops"])

    @classmethod
    def from_nb101(cls, matrix: Any, ops: Sequence[str | int]) -> Cell:
        """From an NB101 spec: op names, or NB101 integer labels (-1 input, 0..2, -2 output).

        Padding vertices (label -3, as in some NB101 dumps) are dropped.
        """
        ops = list(ops)
        if ops and all(isinstance(o, (int, np.integer)) for o in ops):
            labels = [int(o) for o in ops]
            keep = [i for i, lab in enumerate(labels) if lab != -3]
            m = np.asarray(matrix)
            if m.ndim == 2 and m.shape[0] == m.shape[1] == len(labels):
                matrix = m[np.ix_(keep, keep)]
            names = {-1: vocabulary.INPUT, -2: vocabulary.OUTPUT, 0: vocabulary.NB101_OPS[0], 1: vocabulary.NB101_OPS[1], 2: vocabulary.NB101_OPS[2]}
            try:
                ops = [names[labels[i]] for i in keep]
            except KeyError as e:
                raise ValueError(f"unknown NB101 op label {e.args[0]} (expected -1, 0, 1, 2, -2 or -3)") from None
        return cls(matrix, ops)

    @classmethod
    def from_nb201(cls, arch: str) -> Cell:
        """The pruned node form of an NB201 string (see ``cgnf_fast.space.nb201``)."""
        from . import nb201

        return nb201.to_cell(arch)

    @classmethod
    def from_networkx(cls, graph: nx.DiGraph, *, op_attr: str = "op") -> Cell:
        """From a ``networkx.DiGraph`` whose nodes carry an ``op`` attribute.

        Exactly one node must be ``"input"`` and one ``"output"``; the graph must be acyclic.
        Vertices are ordered topologically (input first, output last, ties by node order).
        """
        import networkx as nx

        if not isinstance(graph, nx.DiGraph) or graph.is_multigraph():
            raise ValueError(f"expected a networkx.DiGraph, got {type(graph).__name__}")
        nodes = list(graph.nodes)
        missing = [v for v in nodes if op_attr not in graph.nodes[v]]
        if missing:
            raise ValueError(f"nodes {missing[:5]} have no {op_attr!r} attribute")
        ops_of = {v: graph.nodes[v][op_attr] for v in nodes}
        for role in (vocabulary.INPUT, vocabulary.OUTPUT):
            holders = [v for v in nodes if ops_of[v] == role]
            if len(holders) != 1:
                raise ValueError(f"the graph must have exactly one {role!r} node, found {len(holders)}")
        if not nx.is_directed_acyclic_graph(graph):
            raise ValueError(f"the graph is cyclic: {nx.find_cycle(graph)}")
        if any(u == v for u, v in graph.edges):
            raise ValueError("the graph has a self-loop")
        rank = {v: i for i, v in enumerate(nodes)}

        def key(v: Any) -> tuple[int, int]:
            role = 0 if ops_of[v] == vocabulary.INPUT else (2 if ops_of[v] == vocabulary.OUTPUT else 1)
            return (role, rank[v])

        order = list(nx.lexicographical_topological_sort(graph, key=key))
        if ops_of[order[0]] != vocabulary.INPUT:
            raise ValueError("the input node has incoming edges (it must come first in every topological order)")
        if ops_of[order[-1]] != vocabulary.OUTPUT:
            raise ValueError("the output node has outgoing edges (it must come last in every topological order)")
        pos = {v: i for i, v in enumerate(order)}
        n = len(order)
        m = [[0] * n for _ in range(n)]
        for u, v in graph.edges:
            m[pos[u]][pos[v]] = 1
        return cls(m, [ops_of[v] for v in order])

    # -- accessors ----------------------------------------------------------------------
    @property
    def num_nodes(self) -> int:
        return len(self._ops)

    @property
    def num_edges(self) -> int:
        return sum(map(sum, self._adj))

    @property
    def ops(self) -> tuple[str, ...]:
        return self._ops

    @property
    def matrix(self) -> np.ndarray:
        """A fresh ``[N, N] uint8`` copy of the adjacency matrix."""
        return np.array(self._adj, dtype=np.uint8).reshape(self.num_nodes, self.num_nodes)

    @property
    def adjacency(self) -> tuple[tuple[int, ...], ...]:
        """The adjacency matrix as nested tuples (no copy)."""
        return self._adj

    def labels(self) -> list[int]:
        """Integer op labels (0 for input and output, 1..31 for ops; see ``cgnf_fast.space.vocabulary``)."""
        return [0] + [vocabulary.op_label(o) for o in self._ops[1:-1]] + [0]

    @property
    def is_zero(self) -> bool:
        """True for the zero cell (input and output only, no edge)."""
        return self.num_nodes == 2 and not self._adj[0][1]

    def has_path(self) -> bool:
        """Whether some input -> output path exists."""
        return self._prune_keep() is not None

    # -- semantics ----------------------------------------------------------------------
    def pruned(self, *, allow_zero: bool = False) -> Cell:
        """NB101 pruning: keep only vertices on some input -> output path.

        Without such a path the cell computes nothing: raises ``ValueError`` unless
        ``allow_zero=True``, which returns :meth:`zero` (the NB201 reading: the cell outputs
        zeros).
        """
        keep = self._prune_keep()
        if keep is None:
            if allow_zero:
                return Cell.zero()
            raise ValueError("the cell has no input -> output path (pass allow_zero=True to get the zero cell)")
        if len(keep) == self.num_nodes:
            return self
        p = Cell._trusted(
            [[self._adj[u][v] for v in keep] for u in keep],
            [self._ops[v] for v in keep],
        )
        p._keep = tuple(range(len(keep)))
        return p

    def nb101_hash(self) -> str:
        """NB101's fingerprint (``hash_module`` of the pruned spec), as in NB101's dataset keys."""
        bad = [o for o in self._ops[1:-1] if o not in _NB101_LABEL]
        if bad:
            raise ValueError(f"nb101_hash needs NB101 ops {vocabulary.NB101_OPS}; the cell has {sorted(set(bad))}")
        p = self.pruned()
        labels = [-1] + [_NB101_LABEL[o] for o in p._ops[1:-1]] + [-2]
        return _ref.nb101_hash(p._adj, labels)

    def canonical_code(self) -> int:
        """Exact structural canonical form of this labelled DAG, as one integer < 2**62.

        Equal codes <=> isomorphic cells (same ops on corresponding vertices). The cell is
        coded as given: prune first to compare what cells compute.
        """
        if self._canon is None:
            self._canon = _ref.canonical_code(self._adj, self.labels(), 1)
        return self._canon

    def network_code(self) -> int:
        """Exact identity of the network this cell builds (the default for dedup and novelty).

        The cell is pruned (no path -> the zero cell), identity ops (``skip_connect``) are
        folded into edge multiplicities (see ``reference.dag.fold_identities``), and the
        weighted DAG is coded canonically (an integer < 2**230).
        """
        if self._net is None:
            p = self.pruned(allow_zero=True)
            identity = [False] + [vocabulary.op_info(o).identity for o in p._ops[1:-1]] + [False]
            adj, labels = _ref.fold_identities(p._adj, p.labels(), identity)
            self._net = _ref.canonical_code(adj, labels, _ref.NETWORK_WEIGHT_BITS)
        return self._net

    def to_nb201(self) -> str | None:
        """An NB201 string whose node form is isomorphic to this pruned cell, or None.

        The string returned is the one with the lowest official NB201 index in its class.
        """
        from . import nb201

        return nb201.from_cell(self)

    # -- interchange --------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {"matrix": [list(r) for r in self._adj], "ops": list(self._ops)}

    def dumps(self) -> str:
        return json.dumps(self.to_json(), separators=(",", ":"))

    def to_networkx(self) -> nx.DiGraph:
        import networkx as nx

        g = nx.DiGraph()
        for v, op in enumerate(self._ops):
            g.add_node(v, op=op)
        n = self.num_nodes
        g.add_edges_from((u, v) for u in range(n) for v in range(n) if self._adj[u][v])
        return g

    # -- dunder -------------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        return isinstance(other, Cell) and self._adj == other._adj and self._ops == other._ops

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        return f"Cell(matrix={[list(r) for r in self._adj]}, ops={list(self._ops)})"

    def __reduce__(self):  # pickling (multiprocessing) goes through the validated constructor
        return (Cell, ([list(r) for r in self._adj], list(self._ops)))


def _check_matrix(matrix: Any) -> tuple[tuple[int, ...], ...]:
    if isinstance(matrix, Cell):
        raise ValueError("pass cell.matrix and cell.ops, not a Cell, as the matrix")
    try:
        m = np.asarray(matrix)
    except (ValueError, TypeError) as e:  # ragged nested lists
        raise ValueError(f"matrix must be a square 2-D array of 0/1, could not read it as an array: {e}") from None
    if m.dtype == object or m.dtype.kind not in "biuf":
        raise ValueError(f"matrix must be a square 2-D array of 0/1, got an array of {m.dtype}")
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"matrix must be square [N, N], got shape {list(m.shape)}")
    n = m.shape[0]
    if n < 2:
        raise ValueError(f"a cell needs at least 2 vertices (input and output), got N={n}")
    if n > MAX_NODES:
        raise ValueError(f"a cell has at most {MAX_NODES} vertices, got N={n}")
    if not np.all((m == 0) | (m == 1)):
        bad = sorted({float(x) for x in m[(m != 0) & (m != 1)].ravel()})[:5]
        raise ValueError(f"matrix entries must be 0 or 1, found {bad}")
    m = m.astype(np.int64)
    if np.any(np.diag(m)):
        v = int(np.flatnonzero(np.diag(m))[0])
        raise ValueError(f"matrix has a self-loop at vertex {v} (the graph is cyclic)")
    lower = np.tril(m, -1)
    if lower.any():
        u, v = (int(x) for x in np.argwhere(lower)[0])
        if _has_cycle(m):
            raise ValueError(f"matrix is cyclic (e.g. edge {u}->{v} closes a cycle); a cell must be a DAG")
        raise ValueError(
            f"matrix must be strictly upper triangular (vertices in topological order), found edge {u}->{v} "
            "below the diagonal; reorder the vertices (Cell.from_networkx does this)"
        )
    return tuple(tuple(int(x) for x in row) for row in m)


def _has_cycle(m: np.ndarray) -> bool:
    n = m.shape[0]
    indeg = m.sum(axis=0).tolist()
    ready = [v for v in range(n) if indeg[v] == 0]
    seen = 0
    while ready:
        u = ready.pop()
        seen += 1
        for v in range(n):
            if m[u, v]:
                indeg[v] -= 1
                if indeg[v] == 0:
                    ready.append(v)
    return seen < n


def _check_ops(ops: Any, n: int) -> tuple[str, ...]:
    if isinstance(ops, (str, bytes)) or not isinstance(ops, Iterable):
        raise ValueError(f"ops must be a list of {n} op names, got {type(ops).__name__}")
    ops = list(ops)
    if len(ops) != n:
        raise ValueError(f"ops must have one name per vertex: matrix is {n}x{n} but {len(ops)} ops given")
    for i, o in enumerate(ops):
        if not isinstance(o, str):
            raise ValueError(f"ops[{i}] must be an op name (str), got {o!r}")
    if ops[0] != vocabulary.INPUT:
        raise ValueError(f"ops[0] must be 'input', got {ops[0]!r}")
    if ops[-1] != vocabulary.OUTPUT:
        raise ValueError(f"ops[-1] must be 'output', got {ops[-1]!r}")
    for i, o in enumerate(ops[1:-1], start=1):
        if o in (vocabulary.INPUT, vocabulary.OUTPUT):
            raise ValueError(f"ops[{i}] is {o!r}: only the first vertex is the input and the last the output")
        vocabulary.op_info(o)  # raises on unknown ops
    return tuple(ops)


# -- batches: codes of many cells by the native kernels, remembered by each cell --------------
def _remembered(cells: Iterable[Cell], slot: str, compute: Callable[[list[Cell]], Iterable[int]]) -> list[int]:
    """The value each cell remembers in ``slot``, computed in one batch for those that have none."""
    cells = list(cells)
    todo = [c for c in cells if getattr(c, slot) is None]
    if todo:
        for c, value in zip(todo, compute(todo)):
            setattr(c, slot, int(value))
    return [getattr(c, slot) for c in cells]


def cell_network_codes(cells: Iterable[Cell]) -> list[int]:
    """``[c.network_code() for c in cells]`` by the native kernel in one batch (the cells are
    pruned first, as ``network_code`` does), remembered by each cell."""
    return _remembered(cells, "_net", lambda todo: dag_network_code(
        *batch_from_cells([c.pruned(allow_zero=True) for c in todo], MAX_NODES), vocabulary.identity_labels()))


def cell_canonical_codes(cells: Iterable[Cell]) -> list[int]:
    """``[c.canonical_code() for c in cells]`` computed by the native kernel in one batch (cells
    coded as given), and remembered by each cell, so later ``canonical_code()`` calls are free."""
    return _remembered(cells, "_canon", lambda todo: dag_canonical_code(*batch_from_cells(todo, MAX_NODES)).tolist())
