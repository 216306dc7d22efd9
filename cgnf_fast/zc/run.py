"""Scoring many cells into a :class:`ScoreStore`: resumable, shareable between processes."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
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
from .store import ScoreStore, StoreError

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
                device: str, worker: int, progress: bool, parent: int | None = None) -> dict[str, list]:
    """Scores ``jobs`` into the store, skipping cells done or claimed elsewhere; returns the codes
    ``computed`` here, those ``finished`` by someone else, and ``held`` ``(code, cell_json,
    "host:pid")``: cells a live process held a claim on when this one came to them. A pool worker
    gets its ``parent``'s pid and stops when that process is gone (killed with SIGTERM or
    SIGKILL, which leaves a pool's workers running), so no orphan keeps scoring."""
    fp = data_fingerprint(*batch)
    ver = code_version()
    out: dict[str, list] = {"computed": [], "finished": [], "held": []}
    with ScoreStore(store_path) as store:
        order = jobs[worker:] + jobs[:worker]  # workers start at different places
        bar = tqdm(order, desc=f"zc score {space}", unit="cell", disable=not progress or worker != 0,
                   file=sys.stderr, leave=False)
        for code, cell_json in bar:
            if parent is not None and os.getppid() != parent:
                os._exit(0)  # nobody to report to (and no claim held: it is checked before claiming)
            holder = store.try_claim(space, code, fp, seed, ver)
            if holder is not None:
                out["held"].append((code, cell_json, holder))
                continue
            out[_score_claimed(store, code, cell_json, space, proxies, batch, seed, device, fp, ver)].append(code)
    return out


def _finished_elsewhere(store: ScoreStore, code: int, cell_json: str, space: str, proxies: list[str], fp: str,
                        seed: int, ver: str) -> bool:
    """Whether a cell this process has just claimed was committed by another scorer before the
    claim was taken (then the claim is released, with nothing to store)."""
    if code not in store.done(space, fp, seed, ver, proxies, codes=[code]):
        return False
    store.put(space, code, cell_json, fp, seed, ver, {})
    return True


def _score_claimed(store: ScoreStore, code: int, cell_json: str, space: str, proxies: list[str], batch, seed: int,
                   device: str, fp: str, ver: str) -> str:
    """Scores a cell this process has claimed (releasing the claim): "computed", or "finished"
    when its rows were committed by another scorer before the claim was taken."""
    if _finished_elsewhere(store, code, cell_json, space, proxies, fp, seed, ver):
        return "finished"
    values, seconds, errors = _score_one(cell_json, space, proxies, batch, seed, device)
    store.put(space, code, cell_json, fp, seed, ver, values, seconds, errors)
    return "computed"


def _settle_held(store_path: str, held: list[tuple[int, str, str]], space: str, proxies: list[str], batch,
                 seed: int, device: str, wait: float) -> dict[str, Any]:
    """The cells another process held when this one came to them, looked at again after this
    one's own work: finished by others meanwhile, or scored here when their holder has died or let
    go (its claim is stale: a SIGKILLed scorer), or still held by a live process. Held ones are
    polled (every 0.5 s) until none are left or ``wait`` seconds have passed; returns the codes
    ``computed`` and ``finished`` and ``held`` ``{code: "host:pid"}``."""
    fp = data_fingerprint(*batch)
    ver = code_version()
    pending = {code: cell_json for code, cell_json, _ in held}
    holders = {code: holder for code, _, holder in held}
    out: dict[str, Any] = {"computed": [], "finished": [], "held": {}}
    deadline = time.monotonic() + wait
    with ScoreStore(store_path) as store:
        while pending:
            finished = store.done(space, fp, seed, ver, proxies, codes=list(pending))
            for code in list(pending):
                if code in finished:
                    out["finished"].append(code)
                    del pending[code]
                    continue
                holder = store.holder(space, code, fp, seed, ver)  # a read: no write lock while it is held
                if holder is None:
                    holder = store.try_claim(space, code, fp, seed, ver)
                if holder is not None:
                    holders[code] = holder
                    continue
                out[_score_claimed(store, code, pending.pop(code), space, proxies, batch, seed, device, fp,
                                   ver)].append(code)
            if not pending or time.monotonic() >= deadline:
                break
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
    out["held"] = {code: holders[code] for code in pending}
    return out


def _worker_main(args) -> dict[str, list]:
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
               device: str, address: str, workers: int, progress: bool) -> dict[str, list]:
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
        out: dict[str, list] = {"computed": [], "finished": [], "held": []}
        with ScoreStore(store) as st:
            queue = list(todo)
            bar = tqdm(total=len(queue), desc=f"zc score {space} (ray)", unit="cell", disable=not progress,
                       file=sys.stderr, leave=False)
            while queue or pending:
                while queue and len(pending) < 4 * max(1, workers):
                    code, cell_json = queue.pop(0)
                    holder = st.try_claim(space, code, fp, seed, ver)
                    if holder is not None:
                        out["held"].append((code, cell_json, holder))
                        bar.update(1)
                        continue
                    if _finished_elsewhere(st, code, cell_json, space, proxies, fp, seed, ver):
                        out["finished"].append(code)
                        bar.update(1)
                        continue
                    pending[remote.remote(cell_json, space, proxies, batch_ref, seed, device)] = (code, cell_json)
                if not pending:
                    break
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    code, cell_json = pending.pop(ref)
                    values, seconds, errors = ray.get(ref)
                    st.put(space, code, cell_json, fp, seed, ver, values, seconds, errors)
                    out["computed"].append(code)
                    bar.update(1)
            bar.close()
        return out
    finally:
        if started:
            ray.shutdown()


def _score_one_threads1(*args):
    torch.set_num_threads(1)
    return _score_one(*args)


#: How long library callers that need every score (the pipeline, the evaluations) wait for cells
#: other live scorers hold.
WAIT_FOR_OTHERS = 300.0


def require_complete(summary: dict[str, Any], store: str) -> None:
    """ValueError naming the holders when :func:`score_cells` could not score every cell (others
    still hold some): for callers that go on to use every score."""
    if summary.get("complete", True):
        return
    held = "; ".join(f"{len(codes)} held by {h}" for h, codes in summary.get("holders", {}).items())
    raise ValueError(f"{summary.get('missing')} cells of {store} are not scored ({held or 'held by others'}); "
                     f"rerun when the other scorers finish")


def score_cells(cells: list[Cell], *, space: str, proxies: list[str] | str, store: str, batch, seed: int = 0,
                device: str = "cpu", workers: int = 1, progress: bool = True, ray: str | None = None,
                wait: float = 0.0) -> dict[str, Any]:
    """Score every cell not yet in the store (one row per proxy); returns what happened to them.

    ``ray``: None scores here (``workers`` processes); ``"local"`` starts a local Ray instance
    with ``workers`` CPUs; ``"auto"`` or ``"HOST:PORT"`` joins a running Ray cluster.

    First the store's damaged rows (:meth:`ScoreStore.remove_damaged`) are deleted, so that their
    cells are scored again; a read-only store with cells left to score is a :class:`StoreError`.
    A cell that another live process holds a claim on is not scored twice: after this call's own
    work, such cells are looked at again (and polled for up to ``wait`` seconds): those finished
    meanwhile count as ``finished_by_others``, those whose holder has died are scored here, and
    the rest are ``held_by_others``. The result:

    - ``cells`` (distinct cells asked for), ``already_done`` (in the store before), ``computed``
      (here), ``skipped`` (the rest: ``finished_by_others`` + ``held_by_others``);
    - ``holders``: ``{"host:pid": [codes]}`` of the cells still held by others;
    - ``damaged_rows_removed``: the damaged rows deleted (space, code, proxy, problem), and
      ``index_rebuilt``: whether the primary key's index disagreed with the table and was rebuilt;
    - ``complete``: every cell asked for has every proxy in the store now (False exactly when
      some are held by others, barring a store damaged meanwhile); ``missing``: how many do not.
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
        repaired = st.remove_damaged() if st.read_only is None else {"rows": [], "index_rebuilt": False}
        done = st.done(space, fp, seed, ver, proxies)
        todo = [j for j in jobs if j[0] not in done]
        if todo and st.read_only is not None:
            damaged = {int(r["code"]) for r in st.damaged()["rows"] if r["code"].isdigit()}
            some = sum(code in damaged for code, _ in todo)
            raise StoreError(f"{str(store)!r} is read-only ({st.read_only}): {len(todo)} of {len(jobs)} cells are not "
                             f"scored yet{f' ({some} of them with damaged rows)' if some else ''} and cannot be stored")
    if not todo:
        parts = []
    elif ray is not None:
        parts = [_score_ray(store, todo, space, proxies, batch, seed, device, ray, workers, progress)]
    elif workers == 1 or len(todo) <= 1:
        parts = [_score_loop(store, todo, space, proxies, batch, seed, device, 0, progress)]
    else:
        ctx = mp.get_context("spawn")
        with ctx.Pool(workers) as pool:
            parts = pool.map(_worker_main, [(store, todo, space, proxies, batch, seed, device, w, progress,
                                             os.getpid()) for w in range(workers)])
            pool.close()  # let the workers exit on their own (terminating them leaks their semaphores)
            pool.join()
    # A pool's workers each see every cell: one computes it, the others find it finished. Only
    # cells no worker computed were finished (or are held) by other scorers.
    computed = {c for p in parts for c in p["computed"]}
    finished = {c for p in parts for c in p["finished"]} - computed
    held = {code: (code, cell_json, holder) for p in parts for code, cell_json, holder in p["held"]
            if code not in computed and code not in finished}
    settled = _settle_held(store, list(held.values()), space, proxies, batch, seed, device, wait) if held else \
        {"computed": [], "finished": [], "held": {}}
    computed |= set(settled["computed"])
    finished |= set(settled["finished"])
    holders: dict[str, list[int]] = {}
    for code, holder in sorted(settled["held"].items()):
        holders.setdefault(holder, []).append(code)
    with ScoreStore(store) as st:
        done = st.done(space, fp, seed, ver, proxies)
    missing = sum(code not in done for code, _ in jobs)
    return {"cells": len(jobs), "already_done": len(jobs) - len(todo), "computed": len(computed),
            "skipped": len(todo) - len(computed), "finished_by_others": len(finished),
            "held_by_others": len(settled["held"]), "holders": holders,
            "damaged_rows_removed": [{k: r[k] for k in ("space", "code", "proxy", "problem")} for r in repaired["rows"]],
            "index_rebuilt": repaired["index_rebuilt"], "complete": missing == 0, "missing": missing}


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
    """Write every stored score as CSV (``PATH.partial`` renamed at the end); returns rows written.

    The store is only read (a read-only store exports). Every row is checked first
    (:meth:`ScoreStore.rows`): a damaged store is a :class:`StoreError` naming the rows, and no
    ``PATH.partial`` is left behind, nor is ``PATH`` touched.
    """
    import csv
    import os

    tmp = out + ".partial"
    n = 0
    with ScoreStore(store) as st:
        rows = st.rows()
        first = next(rows, None)  # every row is checked before the first comes back
        try:
            with open(tmp, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["space", "code", "proxy", "value", "status", "message", "data_fp", "seed",
                            "code_version", "seconds", "cell"])
                for r in itertools.chain([first] if first is not None else [], rows):
                    w.writerow([r["space"], r["code"], r["proxy"], repr(r["value"]) if r["value"] is not None else "",
                                r["status"], r["message"] or "", r["data_fp"], r["seed"], r["code_version"],
                                r["seconds"], json.dumps(r["cell"], separators=(",", ":"))])
                    n += 1
            os.replace(tmp, out)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
    return n
