"""Training data for the G-VAE: unlabelled cells from a space, labelled cells from a score store."""

from __future__ import annotations

import functools
import hashlib
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

from pathlib import Path

import numpy as np

from ..space import Cell, DesignSpace
from ..space import get as get_space
from ..space.spaces import grows_from
from ..zc.score import ALL_PROXIES
from ..zc.store import ScoreStore

#: How many cells of a seed space its predictor evaluation uses (None: every cell) and the draw's seed.
EVAL_SETS: dict[str, tuple[int | None, int]] = {"nb201": (None, 0), "nb101": (4000, 0)}
#: What ``load_labelled`` keeps out of the labels: every cell that builds a seed-space network
#: ("seed"), only the networks of the seed space's evaluation set ("eval"), or nothing (None).
HOLDOUTS = ("seed", "eval")


def eval_cells(space: str, n: int | None = None, seed: int = 0) -> list[Cell]:
    """The cells a seed space's predictor is evaluated on: every NB201 cell (or ``n`` of them,
    drawn without replacement with ``seed``); ``n`` (default 4000) distinct NB101 networks (with
    seed 0 and ``n <= 4000``, the first ``n`` of the default 4,000)."""
    if space == "nb201":
        from ..space import nb201

        cells = list(nb201.all_cells())
        if n is None or n >= len(cells):
            return cells
        idx = np.sort(np.random.default_rng(seed).choice(len(cells), n, replace=False))
        return [cells[i] for i in idx]
    if space == "nb101":
        default_n, default_seed = EVAL_SETS["nb101"]
        if seed == default_seed and (n is None or n <= default_n):  # a prefix of the default set
            return list(_default_nb101_cells()[: n or default_n])
        return get_space("nb101").sample(n or default_n, seed=seed, unique=True)
    raise ValueError(f"predictor evaluation is defined on the seed spaces 'nb201' and 'nb101', got {space!r}")


@functools.lru_cache(maxsize=1)
def _default_nb101_cells() -> tuple[Cell, ...]:
    """The default NB101 evaluation draw (a few seconds; drawn once per process)."""
    n, seed = EVAL_SETS["nb101"]
    return tuple(get_space("nb101").sample(n, seed=seed, unique=True))


@functools.lru_cache(maxsize=4)
def eval_networks(seed_space: str) -> frozenset[int]:
    """Network codes of a seed space's (default) evaluation set."""
    n, seed = EVAL_SETS[seed_space]
    return frozenset(c.network_code() for c in eval_cells(seed_space, n, seed))


@functools.lru_cache(maxsize=4)
def eval_set_sha256(seed_space: str) -> str:
    """sha256 of a seed space's evaluation networks (sorted network codes, one decimal per line):
    recorded in a G-VAE that held them out, so that an evaluation can tell whether this install
    draws the same set."""
    text = "\n".join(str(c) for c in sorted(eval_networks(seed_space)))
    return hashlib.sha256(text.encode()).hexdigest()


def no_seed_labels(space: str) -> str | None:
    """Why ``space`` cannot take seed-space labels (:func:`seed_label_cells`), or None when it can."""
    seed_name = grows_from(space)
    if seed_name is None:
        return "it has no seed space"
    if EVAL_SETS[seed_name][0] is None:
        return f"every {seed_name} cell is in the predictor evaluation set"
    return None


def seed_label_cells(space: str, n: int, seed: int) -> list[Cell]:
    """``n`` distinct networks of ``space``'s seed space that are not in its evaluation set, drawn
    uniformly (with ``seed + 2``; ``seed + 1`` draws the seed-space structures of
    :func:`unlabelled_cells`): labels the G-VAE may learn from under the "eval" holdout."""
    if n == 0:
        return []
    why = no_seed_labels(space)
    if why:
        raise ValueError(f"{space} cannot take seed-space labels: {why} (use 0)")
    seed_name = grows_from(space)
    held = eval_networks(seed_name)
    # the draw is uniform over labelled graphs, so common networks dominate it and about half of
    # a draw lands in the evaluation set: draw enough to keep n after filtering
    draw = get_space(seed_name).sample(3 * n + 4000, seed=seed + 2, unique=True)
    out = [c for c in draw if c.network_code() not in held][:n]
    if len(out) < n:
        raise ValueError(f"{seed_name} has only {len(out)} networks outside its evaluation set in a draw of "
                         f"{len(draw)}; ask for fewer seed-space labels")
    return out


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
    holdout: str | None = "seed"
    #: labelled cells that build a seed-space network (learnt from under the "eval" holdout)
    seed_space_labels: int = 0
    #: :func:`eval_set_sha256` of the networks held out under the "eval" rule (None otherwise)
    held_out_sha256: str | None = None

    def info(self) -> dict[str, Any]:
        out = {"cells": len(self.cells), "attributes": self.attributes, "data_fp": self.data_fp,
               "seed": self.seed, "code_version": self.code_version, "holdout": self.holdout,
               "seed_space_labels": self.seed_space_labels,
               "skipped_nonfinite": self.skipped_nonfinite, "skipped_seed_space": self.skipped_seed,
               "skipped_incomplete": self.skipped_incomplete}
        if self.held_out_sha256 is not None:
            out["held_out_sha256"] = self.held_out_sha256
        return out


class SeedMembership:
    """Whether a cell builds a network of the seed space (strict: by network code for NB201)."""

    def __init__(self, seed_space: str | None) -> None:
        self.name = seed_space
        self._codes: frozenset[int] | None = None
        self._space: DesignSpace | None = None
        if seed_space == "nb201":
            self._codes = eval_networks("nb201")  # (NB201's evaluation set is every cell; cached)
        elif seed_space is not None:
            self._space = get_space(seed_space)

    def __call__(self, cell: Cell) -> bool:
        if self._codes is not None:
            return cell.network_code() in self._codes
        if self._space is not None:
            return self._space.contains(cell)
        return False


def load_labelled(store: str, space: str, attributes: list[str] | None = None,
                  holdout: str | None = "seed") -> Labelled:
    """Cells of ``space`` in ``store`` with every attribute finite, as ``[M, A]`` values.

    The store may hold scores from several data batches, seeds or code versions; the group
    with the most cells is used (and named in the result). So that the predictor can be
    evaluated on the seed space honestly, ``holdout`` "seed" skips every cell that builds a
    seed-space network and "eval" only the networks of the seed space's evaluation set
    (:func:`eval_cells`: all of NB201, so the same there; the 4,000 NB101 evaluation networks);
    cells with a non-finite or missing attribute are skipped too (all counted).
    """
    if holdout is not None and holdout not in HOLDOUTS:
        raise ValueError(f"holdout must be one of {HOLDOUTS} or None, got {holdout!r}")
    if not Path(store).is_file():  # (opening would create an empty store at a mistyped path)
        raise ValueError(f"store {store}: no such file (score cells into it first: cgnf zc score)")
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
    seed_name = grows_from(space)
    member = SeedMembership(seed_name)
    held = eval_networks(seed_name) if holdout == "eval" and seed_name else frozenset()
    cells, rows = [], []
    nonfinite = seed_skipped = incomplete = seed_kept = 0
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
        seed_member = member(cell)
        if (seed_member and holdout == "seed") or (held and cell.network_code() in held):
            seed_skipped += 1
            continue
        seed_kept += seed_member
        cells.append(cell)
        rows.append(vals)
    if len(cells) < 3:
        raise ValueError(f"store {store} has only {len(cells)} usable labelled cells of space {space!r} (need >= 3)")
    return Labelled(cells, np.asarray(rows, dtype=np.float64), list(attributes), key[0], key[1], key[2],
                    nonfinite, seed_skipped, incomplete, holdout, seed_kept,
                    eval_set_sha256(seed_name) if held else None)


def unlabelled_cells(space: str | DesignSpace, n: int, seed: int, include_seed_space: int = 0) -> list[Cell]:
    """``n`` distinct networks sampled from ``space`` plus up to ``include_seed_space`` distinct
    networks of its seed space (its structures only, never its labels)."""
    sp = get_space(space)
    cells = sp.sample(n, seed=seed, unique=True)
    seed_name = sp.grows_from
    if include_seed_space and seed_name:
        seed_sp = get_space(seed_name)
        if seed_name == "nb201":
            from ..space import nb201

            extra = list(nb201.all_cells())
        else:
            extra = seed_sp.sample(include_seed_space, seed=seed + 1, unique=True)
        cells.extend(extra[:include_seed_space])
    return cells
