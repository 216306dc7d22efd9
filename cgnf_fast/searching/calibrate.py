"""``cgnf evaluate calibrate``: can a training protocol rank NB201's top cells?

The upper-bound experiment (``cgnf evaluate upper-bound``) compares cells that are all good, so
the protocol that trains them must rank good cells. This measures it on ground truth: ``cells``
NB201 networks drawn (``draw_seed``) from the top ``top`` share by a table column (class means,
as ``cgnf search`` reads tables; default NB201's 200-epoch CIFAR-10 test accuracy) are trained
with the protocol and every training seed on the shared CIFAR-10 JPEGs, and the trained accuracy
is correlated with the published one (Spearman): per seed, for the mean over the seeds (with a
95 % bootstrap interval over the cells), and between the seeds (how far training noise alone lets
two runs of one protocol agree). A protocol *passes* when the mean's Spearman is at least
``threshold`` (0.5). Trained results go into ``cgnf evaluate``'s score store, so a rerun, a rerun
with more seeds, or ``cgnf evaluate upper-bound`` with the same protocol reuses them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._stats import spearman
from .domain import nb201_domain
from .objectives import TableObjective

__all__ = ["calibration_cells", "calibration_markdown", "run_calibration"]


def calibration_cells(table: str | Path, column: str = "cifar10_test_200ep", *, cells: int = 40, top: float = 0.05,
                      draw_seed: int = 0) -> tuple[list[int], np.ndarray]:
    """NB201 indices (one representative per network) of ``cells`` networks drawn from the top
    ``top`` share of the table's networks, and their published values (table units)."""
    if not 0 < top <= 1:
        raise ValueError(f"top must be a share in (0, 1], got {top}")
    if cells < 3:
        raise ValueError(f"cells must be at least 3 for a rank correlation, got {cells}")
    dom = nb201_domain()
    tab = TableObjective(table, column, "max", dom)
    acc = np.where(np.isfinite(tab.class_means), tab.class_means, -np.inf)
    order = np.argsort(-acc, kind="stable")
    pool = order[:max(1, int(round(top * dom.num_classes)))]
    if cells > len(pool):
        raise ValueError(f"the top {top:g} holds {len(pool)} networks, fewer than the {cells} asked for")
    chosen = np.sort(np.random.default_rng(draw_seed).choice(pool, size=cells, replace=False))
    return [int(dom.representative[k]) for k in chosen], tab.class_means[chosen].astype(np.float64)


def _num(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def _spearman_ci(a: np.ndarray, b: np.ndarray, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), size=(resamples, len(a)))
    vals = np.array([spearman(a[i], b[i]) for i in idx])
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.percentile(vals, [2.5, 97.5])
    return float(lo), float(hi)


def run_calibration(protocol: Any, *, table: str | Path, column: str = "cifar10_test_200ep", cells: int = 40,
                    top: float = 0.05, seeds: Sequence[int] = (0,), draw_seed: int = 0, store: str | None = None,
                    device: str = "cpu", work_dir: str | None = None, data_dir: str | None = None,
                    threshold: float = 0.5, progress: bool = True) -> dict[str, Any]:
    """Train the drawn networks with ``protocol`` (any ``cgnf evaluate`` protocol spec) for every
    seed and return a JSON-able result (module doc)."""
    from ..evaluate.protocol import get_protocol, train_cells
    from ..evaluate.tasks import load_task

    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("give at least one training seed")
    proto = get_protocol(protocol, space="nb201")  # (a bad spec is refused before the table is read)
    indices, published = calibration_cells(table, column, cells=cells, top=top, draw_seed=draw_seed)
    dom = nb201_domain()
    cell_list = [dom.cell(i) for i in indices]
    task = load_task("cifar10", proto, data_dir=data_dir)
    t0 = time.perf_counter()
    res = train_cells(cell_list, "nb201", task, proto, seeds=seeds, store=store, device=device, work_dir=work_dir,
                      progress=progress, desc=f"calibrate {cells} cells x {len(seeds)} seeds")
    wall = time.perf_counter() - t0
    trained = np.asarray([[r.metric for r in row] for row in res], dtype=np.float64)  # [cells, seeds]
    ok = np.isfinite(trained).all(1)
    mean = trained[ok].mean(1)
    pub = published[ok]
    rho = spearman(mean, pub)
    lo, hi = _spearman_ci(mean, pub)
    per_seed = [spearman(trained[ok, j], pub) for j in range(len(seeds))]
    between = [spearman(trained[ok, i], trained[ok, j]) for i in range(len(seeds)) for j in range(i + 1, len(seeds))]
    secs = [float(r.seconds) for row in res for r in row if r.seconds]
    return {
        "protocol": proto.name, "protocol_text": proto.describe(), "protocol_fields": proto.to_json(),
        "task": task.describe(), "table": str(table), "column": column, "cells": len(cell_list),
        "diverged": int((~ok).sum()), "top_share": top, "draw_seed": draw_seed, "seeds": seeds,
        "published_range": [float(published.min()), float(published.max())],
        "spearman_mean_vs_published": _num(rho), "spearman_ci95": [_num(lo), _num(hi)],
        "spearman_per_seed": [_num(x) for x in per_seed], "spearman_between_seeds": [_num(x) for x in between],
        "threshold": threshold, "passes": bool(np.isfinite(rho) and rho >= threshold),
        "seconds_per_cell_and_seed": float(np.median(secs)) if secs else None,
        "trained_this_run": sum(not r.cached for row in res for r in row), "wall_seconds_this_run": wall,
        "rows": [{"nb201_index": i, "nb201": dom.arch(i), "published": float(p), "trained": [_num(x) for x in t]}
                 for i, p, t in zip(indices, published, trained)],
    }


def calibration_markdown(r: dict[str, Any]) -> str:
    """A short markdown summary of :func:`run_calibration`'s result."""
    def f(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.2f}"

    seeds = ", ".join(map(str, r["seeds"]))
    lo, hi = r["spearman_ci95"]
    verdict = "passes" if r["passes"] else "does not pass"
    lines = [
        f"{r['cells']} NB201 networks drawn (seed {r['draw_seed']}) from the top {r['top_share'] * 100:g} % by "
        f"`{r['column']}` ({r['published_range'][0]:.2f}-{r['published_range'][1]:.2f}), trained with "
        f"{r['protocol_text']} (seeds {seeds}).", "",
        "| Spearman with the published accuracy | value |", "| --- | ---: |",
        f"| mean of the seeds (95 % bootstrap interval over cells) | **{f(r['spearman_mean_vs_published'])}** "
        f"({f(lo)} to {f(hi)}) |",
    ]
    lines += [f"| seed {s} alone | {f(x)} |" for s, x in zip(r["seeds"], r["spearman_per_seed"])]
    k = 0
    for i in range(len(r["seeds"])):
        for j in range(i + 1, len(r["seeds"])):
            lines.append(f"| seed {r['seeds'][i]} vs seed {r['seeds'][j]} (training noise) | "
                         f"{f(r['spearman_between_seeds'][k])} |")
            k += 1
    cost = r["seconds_per_cell_and_seed"]
    lines += ["", f"The protocol {verdict} the bar of {r['threshold']:g} for the mean of {len(r['seeds'])} seed(s); "
              f"training cost {'n/a' if cost is None else f'{cost:.3g} s'} per cell and seed here (median)"
              + (f"; {r['diverged']} diverged cell(s) left out" if r["diverged"] else "") + "."]
    return "\n".join(lines)
