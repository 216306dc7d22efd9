"""Search: find better cells with the generator in the loop, and the standard baselines.

- :mod:`.domain` -- what a search moves over (NAS-Bench-201's strings and their networks).
- :mod:`.objectives` -- what it maximises: a table of measured values, or a function of yours.
- :mod:`.baselines` -- random search, regularised evolution, local search, zero-cost greedy.
- :mod:`.generator` -- ``cgnf``: the G-VAE and the conditional flow propose, a GP ranks.
- :mod:`.surrogate` -- the Gaussian process and expected improvement.
- :mod:`.runner` -- one search: the budget in distinct networks, batches, durable results.
- :mod:`.compare` -- several methods and seeds, the summary, the picture.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from tqdm import tqdm

from .objectives import DIRECTIONS, CallableObjective, ObjectiveError, TableObjective
from .runner import METHODS, SearchResult, run_search

__all__ = ["DIRECTIONS", "METHODS", "CallableObjective", "ObjectiveError", "SearchResult", "TableObjective",
           "make_domain", "search"]



def make_domain(space: str) -> Any:
    """The search domain of a space: NB201's strings, or the member cells of another space."""
    from ..space import names as space_names
    from .domain import CellDomain, nb201_domain

    if space == "nb201":
        return nb201_domain()
    if space not in space_names():
        raise ValueError(f"unknown space {space!r}; choose from {', '.join(space_names())}")
    return CellDomain(space)


def search(objective: TableObjective | Callable[[Any], float], space: str = "nb201", budget: int = 50, seed: int = 0,
           *, method: str = "cgnf", direction: str | None = None, name: str | None = None,
           store: str | os.PathLike | None = None,
           batch_queries: int = 1, ray: str | None = None, workers: int = 2,
           progress: bool | None = None) -> SearchResult:
    """Searches ``space`` for the cell that maximises (``direction="min"``: minimises)
    ``objective`` with at most ``budget`` distinct networks queried.

    Args:
        objective: a :class:`TableObjective` (``TableObjective("t.csv", "acc")``) or ``f(cell)
            -> float``, your own training or measurement (a :class:`~cgnf_fast.Cell` in, a
            number out; an exception or NaN is recorded as a failed query and stepped past).
        space: ``"nb201"`` (tables and callables), or another space with a shipped model
            (``"nb201-like"``, ``"nb101-like"``; callables only).
        budget: distinct networks queried (repeating a network is free and uncounted).
        seed: the search's seed.
        method: ``"cgnf"`` (the generator in the loop) or a baseline: ``"rea"``, ``"rs"``,
            ``"ls"``, ``"zc"`` (:mod:`cgnf_fast.searching.baselines`).
        direction: with a callable, ``"max"`` (the default) or ``"min"``; an objective object
            carries its own (a different one given here is an error).
        name: with a callable and a ``store``, the name its results are kept under (required
            for a lambda or a local function; change it when the objective changes).
        store: with a callable, a score store (SQLite) that keeps every result the moment it
            arrives: rerunning after an interruption measures only what is missing.
        batch_queries: queries proposed at a time before any of their results is known.
        ray: with a callable, measure each batch on Ray: ``"local"`` (a local instance with
            ``workers`` CPUs), ``"auto"`` or ``"HOST:PORT"`` (a cluster); the results are
            committed here, to ``store``, as they arrive.
        progress: a bar over the queries on stderr (None: only when stderr is a terminal).

    Returns:
        a :class:`SearchResult`: ``best`` (``index``, ``arch``, ``value``), ``best_by_query``,
        every counted query in ``queries``, ``wall_s``.
    """
    domain = make_domain(space)
    if isinstance(objective, TableObjective) and space != "nb201":
        raise ValueError(f"a table objective covers nb201 only; space {space!r} needs a callable objective")
    if isinstance(objective, (TableObjective, CallableObjective)):
        if direction is not None and direction != objective.direction:
            raise ValueError(f"direction={direction!r}, but the objective is to {objective.direction}imise")
        obj = objective
    else:
        qual = name or getattr(objective, "name", None) or getattr(objective, "__qualname__", "")
        if store is not None and (not qual or "<lambda>" in qual or "<locals>" in qual):
            raise ValueError("with a store, name the objective (search(..., name='my-training-v1')): its results "
                             "are kept under that name, and a lambda or a local function has none that lasts")
        obj = CallableObjective(objective, direction or "max", name=name)
    db = pool = None
    try:
        if store is not None:
            from ..zc.store import ScoreStore

            db = ScoreStore(store)
        if ray is not None:
            from .runner import RayPool

            pool = RayPool(ray, workers, gpus_per_task=0.0)
        with tqdm(total=budget, desc=f"search {method}", unit="query", file=sys.stderr, leave=False,
                  disable=None if progress is None else not progress) as bar:
            return run_search(method, obj, budget, seed, domain=domain, batch_queries=batch_queries, store=db,
                              ray=pool, on_query=lambda: bar.update(1))
    finally:
        if db is not None:
            db.close()
        if pool is not None:
            pool.close()
