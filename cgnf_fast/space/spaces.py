"""Design spaces: which cells belong, how to sample them, and the built-in registry.

A cell is a *member* of a space when its pruned form is: ops from the space's vocabulary, at
most ``max_nodes`` vertices and ``max_edges`` edges, and an input -> output path (or it is
the zero cell and the space allows it). :meth:`DesignSpace.validate` says why not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import nb201, vocabulary
from .cell import MAX_NODES, Cell


#: The macro skeletons cells are built in (:mod:`cgnf_fast.nets`).
SKELETONS = ("nb201", "nb101")


@dataclass(frozen=True)
class DesignSpace:
    """A space of cells over an op vocabulary, with vertex and edge limits.

    Args:
        ops: op names allowed on intermediate vertices (registered in the vocabulary).
        max_nodes: most vertices, input and output included (2 .. 8).
        max_edges: most edges after pruning, or None for no limit.
        allow_zero: whether the zero cell (no input -> output path) is a member.
        name: a label for messages and files.
        seed_space: the name of the seed space of the space's family (the benchmark whose cells
            are not "novel": ``nb201`` for ``nb201`` and ``nb201-like``), or None.
        skeleton: the macro skeleton its cells are built in as networks (``"nb201"`` or
            ``"nb101"``; :mod:`cgnf_fast.nets`); None: ``"nb101"`` when every op is an NB101
            op, else ``"nb201"``.

    Sampling (:meth:`sample`): draw a labelled graph on ``max_nodes`` vertices with every
    upper-triangular edge present independently with probability 1/2 and every intermediate op
    uniform over ``ops``; prune it; keep it if the pruned cell is a member, else draw again.
    So cells come with the frequency of their labelled graphs among all ``2**(n(n-1)/2) *
    len(ops)**(n-2)`` of them (the way the paper counts its extended spaces); draws are i.i.d.
    and may repeat unless ``unique=True``.
    """

    ops: tuple[str, ...]
    max_nodes: int
    max_edges: int | None = None
    allow_zero: bool = False
    name: str = "custom"
    seed_space: str | None = None
    skeleton: str | None = None
    _labels: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ops = self.ops
        if isinstance(ops, str) or not isinstance(ops, Sequence) or not ops:
            raise ValueError(f"ops must be a non-empty list of op names, got {ops!r}")
        ops = tuple(ops)
        for o in ops:
            if o in (vocabulary.INPUT, vocabulary.OUTPUT):
                raise ValueError("ops are the intermediate vertices' ops: do not list 'input' or 'output'")
            vocabulary.op_info(o)
        if len(set(ops)) != len(ops):
            raise ValueError(f"ops has duplicates: {list(ops)}")
        object.__setattr__(self, "ops", ops)
        if not isinstance(self.max_nodes, int) or not 2 <= self.max_nodes <= MAX_NODES:
            raise ValueError(f"max_nodes must be an int in [2, {MAX_NODES}], got {self.max_nodes!r}")
        if self.max_edges is not None and (not isinstance(self.max_edges, int) or self.max_edges < 0):
            raise ValueError(f"max_edges must be None or a non-negative int, got {self.max_edges!r}")
        object.__setattr__(self, "_labels", frozenset(ops))
        if self.seed_space is not None and not isinstance(self.seed_space, str):
            raise ValueError(f"seed_space must be a space name or None, got {self.seed_space!r}")
        if self.skeleton is None:
            object.__setattr__(self, "skeleton", "nb101" if set(ops) <= set(vocabulary.NB101_OPS) else "nb201")
        elif self.skeleton not in SKELETONS:
            raise ValueError(f"skeleton must be one of {', '.join(SKELETONS)}, got {self.skeleton!r}")

    @property
    def grows_from(self) -> str | None:
        """The seed space this space extends (``nb201`` for ``nb201-like``), None for a seed space
        itself and for spaces without one."""
        return self.seed_space if self.seed_space != self.name else None

    # -- membership ---------------------------------------------------------------------
    def validate(self, cell: Cell) -> Cell:
        """The pruned member cell, or ``ValueError`` saying why ``cell`` is not a member."""
        if not isinstance(cell, Cell):
            raise ValueError(f"expected a Cell, got {type(cell).__name__}")
        if not cell.has_path():
            if self.allow_zero:
                return Cell.zero()
            raise ValueError(f"the cell has no input -> output path; space {self.name!r} has no zero cell")
        p = cell.pruned()
        bad = sorted({o for o in p.ops[1:-1] if o not in self._labels})
        if bad:
            raise ValueError(f"ops {bad} are not in space {self.name!r} (ops: {', '.join(self.ops)})")
        if p.num_nodes > self.max_nodes:
            raise ValueError(f"{p.num_nodes} vertices after pruning; space {self.name!r} allows {self.max_nodes}")
        if self.max_edges is not None and p.num_edges > self.max_edges:
            raise ValueError(f"{p.num_edges} edges after pruning; space {self.name!r} allows {self.max_edges}")
        return p

    def contains(self, cell: Cell) -> bool:
        """Whether the pruned ``cell`` is a member (see the module doc)."""
        try:
            self.validate(cell)
        except ValueError:
            return False
        return True

    # -- sampling -----------------------------------------------------------------------
    def sample(self, n: int, seed: int = 0, *, unique: bool = False) -> list[Cell]:
        """``n`` pruned member cells (distribution in the class doc); deterministic for a seed.

        ``unique=True`` skips cells whose network code was already drawn (may then take
        longer; raises if the space has fewer than ``n`` distinct networks reachable).
        """
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be a non-negative int, got {n!r}")
        rng = np.random.default_rng(seed)
        out: list[Cell] = []
        seen: set[int] = set()
        k = self.max_nodes
        iu = np.triu_indices(k, 1)
        names = [vocabulary.INPUT, *self.ops, vocabulary.OUTPUT]
        attempts = 0
        while len(out) < n:
            batch = max(64, 2 * (n - len(out)))
            attempts += batch
            if attempts > 1000 * max(n, 64):
                raise RuntimeError(f"could not draw {n} cells from space {self.name!r} (too few members?)")
            bits = rng.integers(0, 2, size=(batch, len(iu[0])), dtype=np.uint8)
            labels = rng.integers(1, len(self.ops) + 1, size=(batch, max(k - 2, 0)))
            for b in range(batch):
                m = np.zeros((k, k), dtype=np.uint8)
                m[iu] = bits[b]
                ops = [names[0], *(names[i] for i in labels[b]), names[-1]]
                cell = Cell._trusted(m.tolist(), ops)
                try:
                    cell = self.validate(cell)
                except ValueError:
                    continue
                if unique:
                    key = cell.network_code()
                    if key in seen:
                        continue
                    seen.add(key)
                out.append(cell)
                if len(out) == n:
                    break
        return out

    def sample_stratified(self, n: int, seed: int = 0) -> list[Cell]:
        """Up to ``n`` distinct networks spread evenly over pruned vertex counts ``3 .. max_nodes``.

        :meth:`sample` draws with the frequency of labelled graphs, so small cells (few op
        vertices) are rare in it; labelled training data wants them too. Each vertex count gets
        an equal share (a count with fewer distinct networks gives all it has and its unused share
        goes to the larger counts). Cells of ``k`` vertices are drawn with :meth:`sample`'s
        distribution on a ``k``-vertex copy of this space, keeping those that stay at ``k``
        vertices after pruning. Deterministic for a seed.
        """
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be a non-negative int, got {n!r}")
        counts = list(range(3, self.max_nodes + 1))
        out: list[Cell] = []
        seen: set[int] = set()
        for i, k in enumerate(counts):
            want = (n - len(out)) // (len(counts) - i)
            sub = DesignSpace(self.ops, k, self.max_edges, self.allow_zero, name=f"{self.name}[{k}]",
                              skeleton=self.skeleton)
            got = 0
            for round_ in range(20):
                if got >= want:
                    break
                for c in sub.sample(max(64, 4 * (want - got)), seed=seed * 1000 + k * 50 + round_):
                    if c.num_nodes != k or not self.contains(c):
                        continue
                    key = c.network_code()
                    if key in seen:
                        continue
                    seen.add(key)
                    out.append(c)
                    got += 1
                    if got >= want:
                        break
        return out

    # -- description --------------------------------------------------------------------
    def num_labeled_graphs(self) -> int:
        """Labelled graphs on ``max_nodes`` vertices before pruning (what :meth:`sample` draws from)."""
        k = self.max_nodes
        return 2 ** (k * (k - 1) // 2) * len(self.ops) ** max(k - 2, 0)

    def info(self) -> dict[str, Any]:
        return {
            "space": self.name,
            "ops": list(self.ops),
            "max_nodes": self.max_nodes,
            "max_edges": self.max_edges,
            "allow_zero": self.allow_zero,
            "seed_space": self.seed_space,
            "skeleton": self.skeleton,
            "labeled_graphs": self.num_labeled_graphs(),
            "sampling": "edges i.i.d. Bernoulli(1/2) on max_nodes vertices, ops uniform; pruned; "
            "rejected unless a member",
        }


@dataclass(frozen=True)
class NB201Space(DesignSpace):
    """NAS-Bench-201's 15,625 cells in node form (see :mod:`cgnf_fast.space.nb201`).

    Members are the cells isomorphic to the node form of some NB201 string. :meth:`sample`
    draws official indices uniformly (i.i.d.), so a class comes with the number of strings
    that map to it.
    """

    def validate(self, cell: Cell) -> Cell:
        p = super().validate(cell)
        if nb201.index_of_cell(p) is None:
            raise ValueError("the cell is not the node form of any NB201 string")
        return p

    def index(self, cell: Cell) -> int | None:
        """Lowest official index of the cell's class, or None when not in NB201."""
        return nb201.index_of_cell(cell)

    def indices(self, cell: Cell) -> list[int]:
        """All official indices whose node form is isomorphic to the pruned cell."""
        return nb201.indices_of_cell(cell)

    def cell(self, index: int) -> Cell:
        """The node form of the NB201 string at an official index."""
        return nb201.to_cell(nb201.arch_at(index))

    def sample(self, n: int, seed: int = 0, *, unique: bool = False) -> list[Cell]:
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be a non-negative int, got {n!r}")
        rng = np.random.default_rng(seed)
        if not unique:
            return [self.cell(int(i)) for i in rng.integers(0, nb201.NUM_ARCHS, size=n)]
        out: list[Cell] = []
        seen: set[int] = set()
        for i in rng.permutation(nb201.NUM_ARCHS):
            c = self.cell(int(i))
            key = c.network_code()
            if key not in seen:
                seen.add(key)
                out.append(c)
                if len(out) == n:
                    return out
        raise ValueError(f"NB201 has only {len(out)} distinct networks, asked for {n}")

    def info(self) -> dict[str, Any]:
        d = super().info()
        d["labeled_graphs"] = None
        d["nb201_strings"] = nb201.NUM_ARCHS
        d["sampling"] = "official NB201 indices drawn uniformly, converted to node form"
        return d


_REGISTRY: dict[str, DesignSpace] = {
    "nb101": DesignSpace(vocabulary.NB101_OPS, max_nodes=7, max_edges=9, name="nb101", seed_space="nb101",
                         skeleton="nb101"),
    "nb101-like": DesignSpace(vocabulary.NB101_OPS, max_nodes=7, max_edges=None, name="nb101-like", seed_space="nb101",
                              skeleton="nb101"),
    "nb201": NB201Space(vocabulary.NB201_NODE_OPS, max_nodes=8, max_edges=None, allow_zero=True, name="nb201",
                        seed_space="nb201", skeleton="nb201"),
    "nb201-like": DesignSpace(vocabulary.NB201_NODE_OPS, max_nodes=8, max_edges=None, allow_zero=True, name="nb201-like",
                              seed_space="nb201", skeleton="nb201"),
}


def names() -> list[str]:
    return list(_REGISTRY)


def grows_from(name: str) -> str | None:
    """The seed space the built-in space ``name`` extends (:attr:`DesignSpace.grows_from`), None
    for a seed space, a space without one, or a name that is not built in."""
    sp = _REGISTRY.get(name)
    return sp.grows_from if sp is not None else None


def extensions(seed_space: str) -> list[str]:
    """The built-in spaces that extend ``seed_space`` (``nb201`` -> ``["nb201-like"]``)."""
    return [n for n, sp in _REGISTRY.items() if sp.grows_from == seed_space]


def get(name: str | DesignSpace) -> DesignSpace:
    """A built-in space by name (``nb101``, ``nb101-like``, ``nb201``, ``nb201-like``)."""
    if isinstance(name, DesignSpace):
        return name
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown space {name!r}; choose one of: {', '.join(_REGISTRY)}") from None


def from_spec(name: str, spec: dict[str, Any] | None = None) -> DesignSpace:
    """The built-in space ``name`` (``spec`` None), or the user space that ``spec`` describes,
    named ``name``: ``{"ops": [...], "max_nodes": n, "max_edges": e or None, "allow_zero": bool}``
    (the last two optional). What model configs store to rebuild their space."""
    if spec is None:
        return get(name)
    spec = dict(spec)
    unknown = sorted(set(spec) - {"ops", "max_nodes", "max_edges", "allow_zero"})
    if unknown or "ops" not in spec or "max_nodes" not in spec:
        raise ValueError(f"a space spec needs ops and max_nodes (optional max_edges, allow_zero); got keys "
                         f"{sorted(spec)}")
    return DesignSpace(tuple(spec["ops"]), spec["max_nodes"], spec.get("max_edges"), spec.get("allow_zero", False),
                       name=name)
