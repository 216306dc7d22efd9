"""Training data for the G-VAE: unlabelled cells from a space, labelled cells from a score store."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..space import Cell, DesignSpace
from ..space import get as get_space
from ..zc.score import ALL_PROXIES
from ..zc.store import ScoreStore

#: The seed space each built-in extended space grows from.
SEED_SPACES = {"nb201-like": "nb201", "nb101-like": "nb101"}


@dataclass
class Labelled:
    cells: list[Cell]
    values: np.ndarray  # [M, A] float64
    attributes: list[str]
    data_fp: str
    seed: int
    code_version: str
    skipped_nonfinite: int
    skipped_seed: int
    skipped_incomplete: int

    def info(self) -> dict[str, Any]:
        return {"cells": len(self.cells), "attributes": self.attributes, "data_fp": self.data_fp,
                "seed": self.seed, "code_version": self.code_version,
                "skipped_nonfinite": self.skipped_nonfinite, "skipped_seed_space": self.skipped_seed,
                "skipped_incomplete": self.skipped_incomplete}


class SeedMembership:
    """Whether a cell builds a network of the seed space (strict: by network code for NB201)."""

    def __init__(self, seed_space: str | None) -> None:
        self.name = seed_space
        self._codes: set[int] | None = None
        self._space: DesignSpace | None = None
        if seed_space == "nb201":
            from ..space import nb201

            self._codes = {c.network_code() for c in nb201.all_cells()}
        elif seed_space is not None:
            self._space = get_space(seed_space)

    def __call__(self, cell: Cell) -> bool:
        if self._codes is not None:
            return cell.network_code() in self._codes
        if self._space is not None:
            return self._space.contains(cell)
        return False


def load_labelled(store: str, space: str, attributes: list[str] | None = None,
                  exclude_seed: bool = True) -> Labelled:
    """Cells of ``space`` in ``store`` with every attribute finite, as ``[M, A]`` values.

    The store may hold scores from several data batches, seeds or code versions; the group
    with the most cells is used (and named in the result). Cells that build a network of the
    seed space are skipped when ``exclude_seed`` (so the predictor can be evaluated on the
    seed space honestly), as are cells with a non-finite or missing attribute (counted).
    """
    by_group: dict[tuple[str, int, str], dict[int, dict[str, Any]]] = {}
    with ScoreStore(store) as st:
        for r in st.rows(space=space):
            g = by_group.setdefault((r["data_fp"], r["seed"], r["code_version"]), {})
            d = g.setdefault(r["code"], {"cell": r["cell"], "values": {}, "bad": set()})
            if r["status"] == "ok":
                d["values"][r["proxy"]] = r["value"]
            else:
                d["bad"].add(r["proxy"])
    if not by_group:
        raise ValueError(f"store {store} has no scores for space {space!r}")
    key = max(by_group, key=lambda k: len(by_group[k]))
    group = by_group[key]
    if attributes is None:
        counts = Counter(p for d in group.values() for p in set(d["values"]) | d["bad"])
        attributes = [p for p in ALL_PROXIES if counts.get(p, 0) >= 0.5 * len(group)]
    missing = [a for a in attributes if not any(a in d["values"] or a in d["bad"] for d in group.values())]
    if missing:
        raise ValueError(f"store {store} has no {missing} scores for space {space!r}")
    member = SeedMembership(SEED_SPACES.get(space)) if exclude_seed else SeedMembership(None)
    cells, rows = [], []
    nonfinite = seed_skipped = incomplete = 0
    for code in sorted(group):
        d = group[code]
        if any(a in d["bad"] for a in attributes):
            nonfinite += 1
            continue
        if any(a not in d["values"] for a in attributes):
            incomplete += 1
            continue
        vals = [d["values"][a] for a in attributes]
        if not all(math.isfinite(v) for v in vals):
            nonfinite += 1
            continue
        cell = Cell.from_json(d["cell"])
        if member(cell):
            seed_skipped += 1
            continue
        cells.append(cell)
        rows.append(vals)
    if len(cells) < 3:
        raise ValueError(f"store {store} has only {len(cells)} usable labelled cells of space {space!r} (need >= 3)")
    return Labelled(cells, np.asarray(rows, dtype=np.float64), list(attributes), key[0], key[1], key[2],
                    nonfinite, seed_skipped, incomplete)


def unlabelled_cells(space: str | DesignSpace, n: int, seed: int, include_seed_space: int = 0) -> list[Cell]:
    """``n`` distinct networks sampled from ``space`` plus up to ``include_seed_space`` distinct
    networks of its seed space (its structures only, never its labels)."""
    sp = get_space(space)
    cells = sp.sample(n, seed=seed, unique=True)
    seed_name = SEED_SPACES.get(sp.name)
    if include_seed_space and seed_name:
        seed_sp = get_space(seed_name)
        if seed_name == "nb201":
            from ..space import nb201

            extra = list(nb201.all_cells())
        else:
            extra = seed_sp.sample(include_seed_space, seed=seed + 1, unique=True)
        cells.extend(extra[:include_seed_space])
    return cells
