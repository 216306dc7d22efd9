"""Scoring many cells into a :class:`ScoreStore`: resumable, shareable between processes."""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import sys
import time
import traceback
from typing import Any

import torch
from tqdm import tqdm

from ..space import Cell
from ..space import get as get_space
from .score import check_proxies, score
from .store import ScoreStore

#: Bumped whenever a proxy's definition changes: stored scores of other versions are not reused.
PROXY_VERSION = "1"


def code_version() -> str:
    from .. import __version__

    return f"{__version__}+zc{PROXY_VERSION}"


def data_fingerprint(x: torch.Tensor, y: torch.Tensor) -> str:
    h = hashlib.sha256()
    h.update(str(tuple(x.shape)).encode())
    h.update(x.detach().cpu().contiguous().numpy().tobytes())
    h.update(y.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _score_loop(store_path: str, jobs: list[tuple[int, str]], space: str, proxies: list[str], batch, seed: int,
                device: str, worker: int, progress: bool, parent: int | None = None) -> dict[str, int]:
    """Scores ``jobs`` into the store (skipping cells claimed or done elsewhere). A pool worker
    gets its ``parent``'s pid and stops when that process is gone (killed with SIGTERM or
    SIGKILL, which leaves a pool's workers running), so no orphan keeps scoring."""
    fp = data_fingerprint(*batch)
    ver = code_version()
    computed = skipped = 0
    with ScoreStore(store_path) as store:
        order = jobs[worker:] + jobs[:worker]  # workers start at different places
        bar = tqdm(order, desc=f"zc score {space}", unit="cell", disable=not progress or worker != 0,
                   file=sys.stderr, leave=False)
        for code, cell_json in bar:
            if parent is not None and os.getppid() != parent:
                os._exit(0)  # nobody to report to (and no claim held: it is checked before claiming)
            if not store.claim(space, code, fp, seed, ver):
                skipped += 1
                continue
            if code in store.done(space, fp, seed, ver, proxies):  # finished by another scorer
                store.put(space, code, cell_json, fp, seed, ver, {})
                skipped += 1
                continue
            values, seconds, errors = _score_one(cell_json, space, proxies, batch, seed, device)
            store.put(space, code, cell_json, fp, seed, ver, values, seconds, errors)
            computed += 1
    return {"computed": computed, "skipped": skipped}


def _worker_main(args) -> dict[str, int]:
    torch.set_num_threads(1)
    return _score_loop(*args)


def _score_one(cell_json: str, space: str, proxies: list[str], batch, seed: int, device: str):
    """Scores one cell: ``(values, seconds, errors)`` (errors are kept, never raised)."""
    cell = Cell.from_json(cell_json)
    values: dict[str, float] = {}
    seconds: dict[str, float] = {}
    errors: dict[str, str] = {}
    skeleton = get_space(space).skeleton
    for p in proxies:
        t0 = time.perf_counter()
        try:
            values[p] = score(cell, [p], skeleton=skeleton, batch=batch, seed=seed, device=device)[p]
        except Exception as e:  # kept in the store with status 'error', never dropped
            errors[p] = f"{type(e).__name__}: {e}"
            traceback.print_exc(file=sys.stderr)
        seconds[p] = time.perf_counter() - t0
    return values, seconds, errors


def _score_ray(store: str, todo: list[tuple[int, str]], space: str, proxies: list[str], batch, seed: int,
               device: str, address: str, workers: int, progress: bool) -> dict[str, int]:
    """Scores on a Ray cluster: tasks compute, this process (the driver) owns the store.

    Only the driver touches the SQLite file, so workers on other machines need no shared
    filesystem; results are committed as they arrive, so an interrupted run resumes.
    """
    try:
        import ray
    except ImportError:
        raise ValueError("--ray needs the distributed extra: pip install 'cgnf_fast[distributed]'") from None
    started = not ray.is_initialized()
    if started:
        if address == "local":
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
    try:
        remote = ray.remote(num_cpus=1)(_score_one_threads1)
        fp = data_fingerprint(*batch)
        ver = code_version()
        batch_ref = ray.put(batch)
        pending = {}
        computed = skipped = 0
        with ScoreStore(store) as st:
            queue = list(todo)
            bar = tqdm(total=len(queue), desc=f"zc score {space} (ray)", unit="cell", disable=not progress,
                       file=sys.stderr, leave=False)
            while queue or pending:
                while queue and len(pending) < 4 * max(1, workers):
                    code, cell_json = queue.pop(0)
                    if not st.claim(space, code, fp, seed, ver):
                        skipped += 1
                        bar.update(1)
                        continue
                    pending[remote.remote(cell_json, space, proxies, batch_ref, seed, device)] = (code, cell_json)
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    code, cell_json = pending.pop(ref)
                    values, seconds, errors = ray.get(ref)
                    st.put(space, code, cell_json, fp, seed, ver, values, seconds, errors)
                    computed += 1
                    bar.update(1)
            bar.close()
        return {"computed": computed, "skipped": skipped}
    finally:
        if started:
            ray.shutdown()


def _score_one_threads1(*args):
    torch.set_num_threads(1)
    return _score_one(*args)


def score_cells(cells: list[Cell], *, space: str, proxies: list[str] | str, store: str, batch, seed: int = 0,
                device: str = "cpu", workers: int = 1, progress: bool = True, ray: str | None = None) -> dict[str, Any]:
    """Score every cell not yet in the store; returns counts of computed/skipped/total cells.

    ``ray``: None scores here (``workers`` processes); ``"local"`` starts a local Ray instance
    with ``workers`` CPUs; ``"auto"`` or ``"HOST:PORT"`` joins a running Ray cluster.
    """
    proxies = check_proxies(proxies)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    fp = data_fingerprint(*batch)
    ver = code_version()
    jobs: list[tuple[int, str]] = []
    seen: set[int] = set()
    for c in cells:
        p = c.pruned(allow_zero=True)
        code = p.canonical_code()
        if code not in seen:
            seen.add(code)
            jobs.append((code, p.dumps()))
    with ScoreStore(store) as st:
        done = st.done(space, fp, seed, ver, proxies)
    todo = [j for j in jobs if j[0] not in done]
    if ray is not None:
        counts = _score_ray(store, todo, space, proxies, batch, seed, device, ray, workers, progress)
    elif workers == 1 or len(todo) <= 1:
        counts = _score_loop(store, todo, space, proxies, batch, seed, device, 0, progress)
    else:
        ctx = mp.get_context("spawn")
        with ctx.Pool(workers) as pool:
            parts = pool.map(_worker_main, [(store, todo, space, proxies, batch, seed, device, w, progress,
                                             os.getpid()) for w in range(workers)])
        counts = {"computed": sum(p["computed"] for p in parts), "skipped": sum(p["skipped"] for p in parts)}
    return {"cells": len(jobs), "already_done": len(jobs) - len(todo), **counts}


def read_cells_jsonl(path: str) -> list[Cell]:
    cells = []
    with open(path) as f:
        for lineno, line in enumerate(f, start=1):
            if line.strip():
                try:
                    cells.append(Cell.from_json(line))
                except ValueError as e:
                    raise ValueError(f"{path}, line {lineno}: {e}") from None
    if not cells:
        raise ValueError(f"{path} has no cells")
    return cells


def export_csv(store: str, out: str) -> int:
    """Write every stored score as CSV (``PATH.partial`` renamed at the end); returns rows written."""
    import csv
    import os

    tmp = out + ".partial"
    n = 0
    with ScoreStore(store) as st, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["space", "code", "proxy", "value", "status", "message", "data_fp", "seed", "code_version",
                    "seconds", "cell"])
        for r in st.rows():
            w.writerow([r["space"], r["code"], r["proxy"], repr(r["value"]) if r["value"] is not None else "",
                        r["status"], r["message"] or "", r["data_fp"], r["seed"], r["code_version"],
                        r["seconds"], json.dumps(r["cell"], separators=(",", ":"))])
            n += 1
    os.replace(tmp, out)
    return n
