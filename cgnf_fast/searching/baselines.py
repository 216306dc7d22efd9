"""The standard baselines, as ask/tell searchers over a domain (items and their networks).

Every searcher proposes items one at a time (``ask``) and is told each value (``tell``); the
runner (:mod:`.runner`) counts a query only when its network is new, and answers a repeated
network from what was measured, uncounted. Values are maximised.

- ``rs``: random search, strings drawn uniformly.
- ``rea``: regularised evolution (Real et al. 2019) with NAS-Bench-201's settings (population
  10, tournament sample 3, as in the NAS-Bench-201 authors' REA scripts): the population starts
  with random strings; then each step mutates the best of 3 members drawn from the population
  with replacement (one edge's op changed), adds the child and removes the oldest member.
- ``ls``: local search, Algorithm 1 of White et al. 2021: from a random string, measure its
  neighbours (every single-edge change) in random order and move to the best once all are
  measured; when none is better, restart from a new random string. Results of items that are not
  the centre's neighbours are ignored; with batched queries, a batch that runs past the
  neighbourhood before its results are in is filled with random strings.
- ``zc``: zero-cost greedy: rank 1,000 random strings by measured synflow and nwot (the mean of
  their two ranks) and query them in that order (the strings after the first 1,000: in random
  order).
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from .domain import NB201Domain

__all__ = ["BASELINES", "LocalSearch", "RandomSearch", "RegularizedEvolution", "Searcher", "ZeroCostGreedy",
           "rank_mean"]


class Searcher:
    """Ask/tell protocol: ``ask()`` the next item, ``tell(item, value)`` its value (None: failed)."""

    def __init__(self, domain: NB201Domain, seed: int) -> None:
        self.domain = domain
        self.rng = np.random.default_rng(seed)

    def ask(self) -> int:
        raise NotImplementedError

    def tell(self, item: int, value: float | None) -> None:
        pass


class RandomSearch(Searcher):
    def ask(self) -> int:
        return self.domain.random(self.rng, 1)[0]


class RegularizedEvolution(Searcher):
    def __init__(self, domain: NB201Domain, seed: int, population: int = 10, sample: int = 3) -> None:
        super().__init__(domain, seed)
        self.size, self.sample = population, sample
        self.population: collections.deque[tuple[int, float]] = collections.deque()

    def ask(self) -> int:
        if len(self.population) < self.size:
            return self.domain.random(self.rng, 1)[0]
        picks = self.rng.integers(len(self.population), size=self.sample)  # (with replacement, as NB201's code)
        parent = max((self.population[i] for i in picks), key=lambda p: p[1])[0]
        return self.domain.mutate(parent, self.rng)

    def tell(self, item: int, value: float | None) -> None:
        if value is None:
            return
        self.population.append((item, value))
        if len(self.population) > self.size:
            self.population.popleft()


class LocalSearch(Searcher):
    def __init__(self, domain: NB201Domain, seed: int) -> None:
        super().__init__(domain, seed)
        self.center: tuple[int, float] | None = None
        self.start: int | None = None  # the random string asked to become the next centre
        self.queue: list[int] = []  # neighbours of the centre not asked yet
        self.pending: set[int] = set()  # neighbours asked, result not told yet
        self.measured: list[tuple[int, float]] = []

    def ask(self) -> int:
        if self.center is not None and not self.queue and not self.pending:
            self._step()
        if self.center is None:
            item = self.domain.random(self.rng, 1)[0]
            if self.start is None:
                self.start = item
            return item
        if self.queue:
            item = self.queue.pop()
            self.pending.add(item)
            return item
        return self.domain.random(self.rng, 1)[0]  # (results outstanding: nothing to decide yet)

    def _step(self) -> None:
        """Every neighbour measured: move to the best, or restart when none is better."""
        best = max(self.measured, key=lambda p: p[1], default=None)
        self.measured = []
        if best is not None and best[1] > self.center[1]:
            self._center(*best)
        else:
            self.center = None

    def _center(self, item: int, value: float) -> None:
        self.center = (item, value)
        self.start = None
        nbrs = self.domain.neighbours(item)
        self.queue = [nbrs[i] for i in self.rng.permutation(len(nbrs))][::-1]  # (popped from the end)
        self.pending = set()

    def tell(self, item: int, value: float | None) -> None:
        if self.center is None:
            if item == self.start:
                if value is None:
                    self.start = None  # a failed start: draw another
                else:
                    self._center(item, value)
            return
        if item in self.pending:
            self.pending.discard(item)
            if value is not None:
                self.measured.append((item, value))


def rank_mean(*scores: np.ndarray) -> np.ndarray:
    """The mean of each entry's ranks (0 = lowest) over several score arrays; NaN ranks lowest."""
    out = np.zeros(len(scores[0]))
    for s in scores:
        s = np.where(np.isfinite(s), s, -np.inf)
        out += np.argsort(np.argsort(s, kind="stable"), kind="stable")
    return out / len(scores)


class ZeroCostGreedy(Searcher):
    """``zc`` (module doc). ``scores(items) -> {"synflow": [n], "nwot": [n]}`` gives the measured
    proxies of a pool of items (a lookup in NB201's shipped table; measured with
    :func:`cgnf_fast.zc.score` in other spaces)."""

    def __init__(self, domain: Any, seed: int, scores: Callable[[list], dict[str, np.ndarray]],
                 pool: int = 1000) -> None:
        super().__init__(domain, seed)
        items = domain.random(self.rng, pool)
        zc = scores(items)
        score = rank_mean(*(np.asarray(zc[p], dtype=np.float64) for p in ("synflow", "nwot")))
        self._order: Iterator[Any] = iter([items[i] for i in np.argsort(-score, kind="stable")])

    def ask(self) -> Any:
        for item in self._order:
            return item
        return self.domain.random(self.rng, 1)[0]


BASELINES = {"rs": RandomSearch, "rea": RegularizedEvolution, "ls": LocalSearch, "zc": ZeroCostGreedy}
