"""Cells <-> fixed-size tensors for the G-VAE, for any design space.

A cell is pruned, put in its *canonical vertex order* (the order its exact canonical code
encodes, so the tensor is a function of the cell's isomorphism class, never of how the user
happened to number its vertices) and laid out on ``N = space.max_nodes`` slots:

    slot 0            the input
    slots 1 .. k      the k op vertices, in canonical order
    slots k+1 .. N-2  absent (op index 0, no edges)
    slot N-1          the output

so the output always sits in the last slot and the adjacency stays strictly upper triangular.
Op indices: 0 = absent, 1 .. K = ``space.ops`` in order, K+1 = input, K+2 = output (the last
two only ever appear in slots 0 and N-1). The zero cell is the empty layout (no op, no edge).

Shapes:
    adj [B, N, N] float32 (0/1, strictly upper triangular), ops [B, N] int64.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..reference.dag import LABEL_BITS, N_BITS
from ..space import Cell, DesignSpace
from ..space import vocabulary


def _code_width(n: int) -> int:
    """Bits below the vertex-count field in a structural code of an ``n``-vertex graph."""
    return sum(LABEL_BITS + p for p in range(1, n - 1)) + (n - 1)


def code_to_graph(code: int) -> tuple[list[list[int]], list[int]]:
    """The adjacency and labels that a structural canonical code (``weight_bits=1``) encodes.

    Inverse of ``reference.dag.pack_code`` at the canonical order: vertex ``p`` of the result
    is the vertex at canonical position ``p``.
    """
    if not isinstance(code, int) or code < 0:
        raise ValueError(f"a canonical code is a non-negative int, got {code!r}")
    for n in range(2, 1 << N_BITS):
        if code >> _code_width(n) == n:
            break
    else:
        raise ValueError(f"{code} is not a structural canonical code")
    adj = [[0] * n for _ in range(n)]
    labels = [0] * n
    shift = _code_width(n)
    for p in range(1, n):
        w = LABEL_BITS + p if p < n - 1 else p
        shift -= w
        chunk = (code >> shift) & ((1 << w) - 1)
        for q in range(p):
            adj[q][p] = (chunk >> q) & 1
        if p < n - 1:
            labels[p] = chunk >> p
    return adj, labels


def canonical_cell(cell: Cell) -> Cell:
    """The pruned cell (the zero cell if it has no path) with its vertices in canonical order."""
    p = cell.pruned(allow_zero=True)
    if p.is_zero:
        return p
    adj, labels = code_to_graph(p.canonical_code())
    ops = [vocabulary.INPUT] + [vocabulary.op_name(lab) for lab in labels[1:-1]] + [vocabulary.OUTPUT]
    return Cell._trusted(adj, ops)


class CellCodec:
    """Encodes cells of one design space as tensors and decodes tensors back to cells."""

    def __init__(self, space: DesignSpace) -> None:
        self.space = space
        self.ops: tuple[str, ...] = tuple(space.ops)
        self.num_nodes: int = space.max_nodes
        #: classes per slot: absent, the space's ops, input, output
        self.num_op_classes: int = len(self.ops) + 3
        self._index = {o: i + 1 for i, o in enumerate(self.ops)}
        self.input_index = len(self.ops) + 1
        self.output_index = len(self.ops) + 2

    def layout(self, cell: Cell) -> tuple[np.ndarray, np.ndarray]:
        """``(adj [N, N] uint8, ops [N] int64)`` of one cell (pruned, canonical order, slots)."""
        c = canonical_cell(cell)
        N = self.num_nodes
        adj = np.zeros((N, N), dtype=np.uint8)
        ops = np.zeros(N, dtype=np.int64)
        ops[0], ops[N - 1] = self.input_index, self.output_index
        if c.is_zero:
            return adj, ops
        k = c.num_nodes - 2
        if c.num_nodes > N:
            raise ValueError(f"the cell has {c.num_nodes} vertices after pruning; space {self.space.name!r} allows {N}")
        slot = list(range(k + 1)) + [N - 1]  # cell vertex -> slot
        m = c.matrix
        for i, j in zip(*np.nonzero(m)):
            adj[slot[i], slot[j]] = 1
        for v, o in enumerate(c.ops[1:-1], start=1):
            if o not in self._index:
                raise ValueError(f"op {o!r} is not in space {self.space.name!r} (ops: {', '.join(self.ops)})")
            ops[v] = self._index[o]
        return adj, ops

    def encode(self, cells: Sequence[Cell]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(adj [B, N, N] float32, ops [B, N] int64)`` for a list of cells: :meth:`layout` of
        each, computed in one batch (canonical codes by the native kernel, then unpacked with
        array ops; equal to the per-cell :meth:`layout`, tested)."""
        from ..space import cell_canonical_codes

        B, N = len(cells), self.num_nodes
        adj = np.zeros((B, N, N), dtype=np.float32)
        ops = np.zeros((B, N), dtype=np.int64)
        ops[:, 0], ops[:, N - 1] = self.input_index, self.output_index
        pruned = []
        for b, c in enumerate(cells):
            if not isinstance(c, Cell):
                raise ValueError(f"cells[{b}] is a {type(c).__name__}, expected a Cell")
            p = c.pruned(allow_zero=True)
            if p.num_nodes > N:
                raise ValueError(f"the cell has {p.num_nodes} vertices after pruning; space {self.space.name!r} "
                                 f"allows {N}")
            for o in p.ops[1:-1]:
                if o not in self._index:
                    raise ValueError(f"op {o!r} is not in space {self.space.name!r} (ops: {', '.join(self.ops)})")
            pruned.append(p)
        rows = [b for b, p in enumerate(pruned) if not p.is_zero]
        codes = np.asarray(cell_canonical_codes([pruned[b] for b in rows]), dtype=np.uint64)
        rows_a = np.asarray(rows, dtype=np.int64)
        n_of = np.asarray([pruned[b].num_nodes for b in rows], dtype=np.int64)
        label_to_index = self._label_index()
        for n in np.unique(n_of):
            n = int(n)
            sel = n_of == n
            code, rb = codes[sel], rows_a[sel]
            slot = list(range(n - 1)) + [N - 1]  # cell vertex (canonical position) -> slot
            shift = _code_width(n)
            for p in range(1, n):  # chunk p: label (op positions) above in-edges from positions < p
                w = LABEL_BITS + p if p < n - 1 else p
                shift -= w
                chunk = (code >> np.uint64(shift)) & np.uint64((1 << w) - 1)
                for q in range(p):
                    adj[rb, slot[q], slot[p]] = ((chunk >> np.uint64(q)) & np.uint64(1)).astype(np.float32)
                if p < n - 1:  # (every op was checked to be in the space above)
                    ops[rb, p] = label_to_index[(chunk >> np.uint64(p)).astype(np.int64)]
        return torch.from_numpy(adj), torch.from_numpy(ops)

    def _label_index(self) -> np.ndarray:
        """Op label (``vocabulary.op_label``, 0..31) -> this codec's op index, -1 outside the space."""
        table = np.full(1 << LABEL_BITS, -1, dtype=np.int64)
        for o, i in self._index.items():
            table[vocabulary.op_label(o)] = i
        return table

    def decode_one(self, adj: np.ndarray, ops: np.ndarray) -> Cell:
        """The cell of one slot layout: absent slots dropped, then pruned (zero cell if no path).

        ``adj`` [N, N] (nonzero = edge, only the strict upper triangle is read), ``ops`` [N]
        op indices (slots 0 and N-1 are the input and output whatever they hold; an op slot
        holding 0, input or output counts as absent).
        """
        N = self.num_nodes
        keep = [0] + [v for v in range(1, N - 1) if 1 <= int(ops[v]) <= len(self.ops)] + [N - 1]
        sub = (np.asarray(adj)[np.ix_(keep, keep)] != 0).astype(np.uint8)
        sub = np.triu(sub, 1)
        names = [vocabulary.INPUT] + [self.ops[int(ops[v]) - 1] for v in keep[1:-1]] + [vocabulary.OUTPUT]
        return Cell._trusted(sub.tolist(), names).pruned(allow_zero=True)

    def decode(self, adj: torch.Tensor, ops: torch.Tensor) -> list[Cell]:
        """Cells of a batch of layouts: ``adj [B, N, N]`` (nonzero = edge), ``ops [B, N]`` int."""
        a = adj.detach().cpu().numpy()
        o = ops.detach().cpu().numpy()
        return [self.decode_one(a[b], o[b]) for b in range(a.shape[0])]
