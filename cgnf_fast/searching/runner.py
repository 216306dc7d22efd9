"""Running a search: the budget in distinct networks, batches of queries, durable results.

A search of budget ``B`` ends after ``B`` **distinct networks** were queried. An item whose
network this search already measured is answered from that measurement and not counted, so
proposing another string of a known network costs nothing and gains nothing. A query that
fails (the objective raised or gave NaN) is counted (its cost was paid), recorded with its
reason, and stepped past. Should a method keep proposing known networks (1,000 in a row), the
runner queries a random unmeasured network in its place (``forced`` in the result).

With a callable objective and a score store, every result is committed to the store the moment
it arrives (keyed by the objective's name and the network), so Ctrl-C or SIGKILL loses no query
result: rerun the same search and the measured networks are answered from the store (still
counted, as they were), the rest measured. With ``ray``, each batch of ``q`` queries runs on
Ray workers while this process owns the store.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .baselines import BASELINES, Searcher
from .domain import NB201Domain, nb201_domain
from .objectives import CallableObjective, TableObjective

__all__ = ["METHODS", "RayPool", "SearchResult", "make_searcher", "run_search"]

#: Method names, the generator first.
METHODS = ("cgnf", "rea", "rs", "ls", "zc")
#: Repeated networks proposed in a row before the runner queries a random new one instead.
MAX_REPEATS = 1000
#: Random cells the ``zc`` baseline measures and ranks outside NB201 (each costs a synflow and an
#: nwot evaluation, ~0.1-0.3 s on a CPU; NB201's are looked up in the shipped table).
ZC_POOL_CELLS = 200
_STORE_VERSION = "search-1"


@dataclass
class SearchResult:
    """One search: ``best_by_query[k]`` is the best value after ``k + 1`` distinct networks (in
    the objective's units; NaN before the first success), ``queries`` each counted query."""

    method: str
    seed: int
    budget: int
    best_by_query: list[float]
    queries: list[dict[str, Any]]
    best: dict[str, Any] | None
    wall_s: float
    failures: int = 0
    forced: int = 0
    free: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def make_searcher(method: str, domain: NB201Domain, seed: int) -> Searcher:
    if method == "cgnf":
        from .generator import CellGeneratorSearch, GeneratorSearch

        return GeneratorSearch(domain, seed) if isinstance(domain, NB201Domain) else CellGeneratorSearch(domain, seed)
    if method == "zc":
        if isinstance(domain, NB201Domain):
            from .generator import zc_table

            table = zc_table()
            return BASELINES["zc"](domain, seed, lambda items: {p: table[p][domain.class_of[items]] for p in table})
        return BASELINES["zc"](domain, seed, measured_zc, pool=ZC_POOL_CELLS)
    if method not in BASELINES:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    return BASELINES[method](domain, seed)


def measured_zc(cells: list[Any]) -> dict[str, np.ndarray]:
    """synflow and nwot of cells, measured (16 embedded CIFAR-10 images, seed 0), NaN on failure."""
    from ..zc import score

    out = {"synflow": np.full(len(cells), np.nan), "nwot": np.full(len(cells), np.nan)}
    for i, c in enumerate(cells):
        try:
            s = score(c, ["synflow", "nwot"], progress=False)
        except (ValueError, RuntimeError):
            continue
        out["synflow"][i], out["nwot"][i] = s["synflow"], s["nwot"]
    return out


class _Measurer:
    """Values of items: a table's at once; a callable's from the store or measured (and stored)."""

    def __init__(self, objective: TableObjective | CallableObjective, domain: NB201Domain, store: Any = None,
                 ray: Any = None) -> None:
        self.objective, self.domain, self.store, self.ray = objective, domain, store, ray
        self.space = f"search:{domain.name}"  # the score store's space column for this domain's results
        self.cache: dict[int, tuple[float | None, str | None]] = {}
        if isinstance(objective, CallableObjective) and store is not None:
            for r in store.rows(space=self.space, data_fp=objective.fingerprint):
                ok = r["status"] == "ok"
                self.cache[r["code"]] = (r["value"] if ok else None, None if ok else (r["message"] or "not finite"))

    def measure(self, items: list[int]) -> list[tuple[float | None, str | None]]:
        if isinstance(self.objective, TableObjective):
            values = [self.objective(i) for i in items]
            return [(v, None) if math.isfinite(v) else (None, "the table has no value for this network")
                    for v in values]
        nets = [self.domain.network_code(i) for i in items]
        todo = [(i, n) for i, n in zip(items, nets) if n not in self.cache]
        if self.ray is not None and todo:
            self.ray.measure(self, todo)
        else:
            for i, n in todo:
                self.commit(i, n, *self.objective.evaluate(self.domain.cell(i)))
        return [self.cache[n] for n in nets]

    def commit(self, item: int, net: int, value: float | None, why: str | None, *, durable: bool = True) -> None:
        """One result, into the store at once (when there is one) and the cache. ``durable=False``
        (a lost worker, not the objective's own failure): kept for this run only, so a rerun
        measures it again."""
        if self.store is not None and durable:
            cell_json = json.dumps(self.domain.describe(item))
            if value is not None:
                self.store.put(self.space, net, cell_json, self.objective.fingerprint, 0, _STORE_VERSION,
                               {"objective": value})
            else:
                self.store.put(self.space, net, cell_json, self.objective.fingerprint, 0, _STORE_VERSION, {},
                               errors={"objective": why or "failed"})
        self.cache[net] = (value, why)


def run_search(method: str | Searcher, objective: TableObjective | CallableObjective, budget: int, seed: int = 0,
               *, domain: NB201Domain | None = None, batch_queries: int = 1, store: Any = None, ray: Any = None,
               on_query: Callable[[], None] | None = None) -> SearchResult:
    """One search of ``budget`` distinct networks (module doc); ``on_query`` is called after
    each counted query (a progress bar's update)."""
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ValueError(f"budget must be an int >= 1, got {budget!r}")
    if isinstance(batch_queries, bool) or not isinstance(batch_queries, int) or batch_queries < 1:
        raise ValueError(f"batch_queries must be an int >= 1, got {batch_queries!r}")
    domain = domain or nb201_domain()
    if domain.num_classes is not None and budget > domain.num_classes:
        raise ValueError(f"budget {budget} is more than the {domain.num_classes:,} networks of {domain.name}")
    t0 = time.perf_counter()
    searcher = make_searcher(method, domain, seed) if isinstance(method, str) else method
    name = method if isinstance(method, str) else type(method).__name__
    rng = np.random.default_rng([seed, 7])
    measurer = _Measurer(objective, domain, store, ray)
    sign = objective.sign
    seen: dict[int, float | None] = {}  # network class -> signed value (None: failed), this search
    queries: list[dict[str, Any]] = []
    best_by_query: list[float] = []
    best: tuple[float, int] | None = None
    free = forced = failures = 0
    while len(queries) < budget:
        batch: list[int] = []
        repeats = 0
        while len(batch) < min(batch_queries, budget - len(queries)):
            item = searcher.ask()
            k = domain.network(item)
            if k in seen or any(domain.network(b) == k for b in batch):
                if k in seen:
                    searcher.tell(item, seen[k])
                    free += 1
                repeats += 1
                if repeats < MAX_REPEATS:
                    continue
                item = domain.random_new(rng, set(seen) | {domain.network(b) for b in batch})
                forced += 1
            repeats = 0
            batch.append(item)
        for item, (value, why) in zip(batch, measurer.measure(batch)):
            k = domain.network(item)
            signed = None if value is None else sign * value
            seen[k] = signed
            failures += value is None
            if signed is not None and (best is None or signed > best[0]):
                best = (signed, item)
            source = searcher.source_of(item) if hasattr(searcher, "source_of") else None
            queries.append({**domain.describe(item), "value": value,
                            **({"error": why} if value is None else {}), **({"source": source} if source else {})})
            best_by_query.append(math.nan if best is None else sign * best[0])
            searcher.tell(item, signed)
            if on_query is not None:
                on_query()
    extra = searcher.describe() if hasattr(searcher, "describe") else {}
    best_json = None if best is None else {**domain.describe(best[1]), "value": sign * best[0]}
    return SearchResult(name, seed, budget, best_by_query, queries, best_json, round(time.perf_counter() - t0, 3),
                        failures, forced, free, extra)


class RayPool:
    """Measures a batch of queries on Ray workers (one CPU each); the calling process commits
    each result to the store as it arrives. ``address``: ``"local"`` starts a local Ray instance
    with ``workers`` CPUs, ``"auto"`` or ``HOST:PORT`` joins a cluster."""

    def __init__(self, address: str, workers: int = 2, gpus_per_task: float = 0.0) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be an int >= 1, got {workers!r}")
        try:
            import ray
        except ImportError:
            raise ValueError("--ray needs the distributed extra: pip install 'cgnf_fast[distributed]'") from None
        self._ray = ray
        self.started = not ray.is_initialized()
        if self.started:
            if address == "local":
                ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
            else:
                ray.init(address=address, include_dashboard=False, log_to_driver=False)
        # (a task that asks for no GPU gets CUDA_VISIBLE_DEVICES='' from Ray: ask for one to train on it)
        self._remote = ray.remote(num_cpus=1, num_gpus=gpus_per_task)(_evaluate_remote)

    def measure(self, measurer: _Measurer, todo: list[tuple[int, int]]) -> None:
        ray = self._ray
        obj = ray.put(measurer.objective)
        pending = {self._remote.remote(obj, measurer.domain.cell(i)): (i, n) for i, n in todo}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                i, n = pending.pop(ref)
                try:
                    value, why = ray.get(ref)
                except Exception as e:  # noqa: BLE001 -- a worker lost: recorded as a failure, not fatal
                    measurer.commit(i, n, None, f"ray: {type(e).__name__}: {e}", durable=False)
                    continue
                measurer.commit(i, n, value, why)

    def close(self) -> None:
        if self.started and self._ray.is_initialized():
            self._ray.shutdown()


def _evaluate_remote(objective: CallableObjective, cell: Any) -> tuple[float | None, str | None]:
    import torch

    torch.set_num_threads(1)
    return objective.evaluate(cell)
