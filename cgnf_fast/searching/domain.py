"""What a search moves over: the items of a space, their networks, random draws and edits.

Every domain offers the same few things to the runner and the methods: ``network(item)`` (the
key a query is counted by), ``network_code(item)``, ``cell(item)``, ``describe(item)`` (what the
JSON shows), ``random``, ``neighbours`` (one edit away), ``mutate`` (one random edit) and
``random_new`` (a network not yet taken).

:class:`NB201Domain` is NAS-Bench-201: the 15,625 strings by official index, each with its
network class (strings whose pruned cells build the same network share one class; 5,425
classes). A search counts a query once per class, so no method gains by finding another string
of a network already measured. Edits are NB201's: one edge's op changed (24 neighbours each).

:class:`CellDomain` is any other design space (nb201-like, nb101-like): items are pruned member
cells, their key the network code; random draws are the space's, and an edit flips one edge,
changes one op vertex's op or adds an op vertex between an existing vertex and the output (every
result pruned and kept only when it is a member with an input -> output path).
"""

from __future__ import annotations

import functools

import numpy as np

from ..space import Cell, cell_network_codes, nb201

__all__ = ["CellDomain", "NB201Domain", "nb201_domain"]


class NB201Domain:
    """NAS-Bench-201 as a search domain (items are official indices, ``0 .. 15624``)."""

    name = "nb201"

    def __init__(self) -> None:
        self.size = nb201.NUM_ARCHS
        self.digits = nb201.digits_table()  # [15625, 6]
        cells = nb201.all_cells()
        nets = cell_network_codes(list(cells))
        classes: dict[int, int] = {}
        self.class_of = np.asarray([classes.setdefault(k, len(classes)) for k in nets], dtype=np.int64)  # [15625]
        self.network_codes = list(classes)  # class id -> network code
        self.num_classes = len(classes)
        self.representative = np.full(self.num_classes, -1, dtype=np.int64)  # lowest index of each class
        for i in range(self.size - 1, -1, -1):
            self.representative[self.class_of[i]] = i
        #: the class of the 341 strings with no input -> output path
        self.zero_class = int(self.class_of[_first_zero(cells)])

    def arch(self, item: int) -> str:
        return nb201.arch_at(int(item))

    def cell(self, item: int) -> Cell:
        return nb201.to_cell(self.arch(item))

    def network(self, item: int) -> int:
        """The item's network class id (``0 .. num_classes - 1``)."""
        return int(self.class_of[item])

    def network_code(self, item: int) -> int:
        return self.network_codes[self.network(item)]

    def describe(self, item: int) -> dict:
        return {"index": int(item), "arch": self.arch(item)}

    def random_new(self, rng: np.random.Generator, taken: set[int]) -> int:
        """A string of a network not in ``taken`` (class ids), or a ValueError when none is left."""
        for k in rng.permutation(self.num_classes).tolist():
            if k not in taken:
                return int(self.representative[k])
        raise ValueError("every network of nb201 was queried")

    def random(self, rng: np.random.Generator, k: int) -> list[int]:
        """``k`` strings drawn uniformly (with replacement) from the 15,625."""
        return [int(i) for i in rng.integers(0, self.size, size=k)]

    def neighbours(self, item: int) -> list[int]:
        """The 24 strings one edge's op away, in edge order then op order."""
        d = self.digits[item]
        out = []
        for e in range(6):
            for op in range(5):
                if op != d[e]:
                    nd = d.copy()
                    nd[e] = op
                    out.append(nb201.index_of_digits(nd))
        return out

    def mutate(self, item: int, rng: np.random.Generator) -> int:
        """One random edit: a uniformly chosen edge gets a uniformly chosen different op."""
        d = self.digits[item].copy()
        e = int(rng.integers(6))
        d[e] = (d[e] + 1 + int(rng.integers(4))) % 5
        return nb201.index_of_digits(d)


class CellDomain:
    """A design space's member cells as a search domain (module doc); ``num_classes`` is None
    (too many networks to list)."""

    num_classes = None

    def __init__(self, space: str) -> None:
        from ..space import get as get_space

        self.space = get_space(space)
        self.name = self.space.name
        self._draws = 0

    def network(self, item: Cell) -> int:
        return item.network_code()

    network_code = network

    def cell(self, item: Cell) -> Cell:
        return item

    def describe(self, item: Cell) -> dict:
        from ..sampling.drawing import cell_text

        return {"cell": {"matrix": [list(r) for r in item.adjacency], "ops": list(item.ops)}, "text": cell_text(item)}

    def random(self, rng: np.random.Generator, k: int) -> list[Cell]:
        return self.space.sample(k, seed=int(rng.integers(2**31)))

    def neighbours(self, item: Cell) -> list[Cell]:
        """Every member one edit away, one per network, in a fixed order."""
        m = [list(r) for r in item.adjacency]
        n = len(m)
        out: list[Cell] = []
        seen = {item.network_code()}

        def keep(adj: list[list[int]], ops: tuple[str, ...] | list[str]) -> None:
            c = Cell(adj, list(ops))
            if not c.has_path() or not self.space.contains(c):
                return
            c = c.pruned()
            if c.network_code() not in seen:
                seen.add(c.network_code())
                out.append(c)

        for i in range(n):
            for j in range(i + 1, n):
                mm = [list(r) for r in m]
                mm[i][j] ^= 1
                keep(mm, item.ops)
        for v in range(1, n - 1):
            for o in self.space.ops:
                if o != item.ops[v]:
                    keep(m, (*item.ops[:v], o, *item.ops[v + 1:]))
        if n < self.space.max_nodes:  # a new op vertex just before the output: u -> new -> output
            for u in range(n - 1):
                for o in self.space.ops:
                    mm = [r[:n - 1] + [0] + r[n - 1:] for r in m[:n - 1]] + [[0] * (n + 1)] + \
                         [r[:n - 1] + [0] + r[n - 1:] for r in m[n - 1:]]
                    mm[u][n - 1] = 1
                    mm[n - 1][n] = 1
                    keep(mm, (*item.ops[:n - 1], o, item.ops[n - 1]))
        return out

    def mutate(self, item: Cell, rng: np.random.Generator) -> Cell:
        nbrs = self.neighbours(item)
        return nbrs[int(rng.integers(len(nbrs)))] if nbrs else self.random(rng, 1)[0]

    def random_new(self, rng: np.random.Generator, taken: set[int]) -> Cell:
        for _ in range(1000):
            c = self.random(rng, 1)[0]
            if c.network_code() not in taken:
                return c
        raise ValueError(f"no new network of {self.name} in 1,000 random draws")


def _first_zero(cells: tuple[Cell, ...]) -> int:
    return next(i for i, c in enumerate(cells) if c.pruned(allow_zero=True).is_zero)


@functools.lru_cache(maxsize=1)
def nb201_domain() -> NB201Domain:
    """The NB201 domain (built once per process, ~0.5 s)."""
    return NB201Domain()
