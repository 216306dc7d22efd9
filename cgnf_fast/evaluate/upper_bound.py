"""Pushing the upper bound of a seed space (the paper's Sec. 4.3), with baselines, and the
transfer experiment (its Table 1): ``cgnf evaluate upper-bound`` and ``cgnf evaluate transfer``.

A reference cell (default: the best NB201 cell for ``nb201-like``, the best shared NB101 cell
for ``nb101-like``) and five sets of ``n`` distinct networks each, all trained with the same
task, protocol and seeds (:mod:`cgnf_fast.evaluate.protocol`):

* ``generated``: :func:`cgnf_fast.sample` from the reference (its own predicted attributes as
  the condition), what the library proposes;
* ``random-extended``: uniform draws of the extended space (its labelled-graph distribution);
* ``random-params``: the same draws, kept when their exact parameter count is within 10 % of the
  reference's (capacity matched: parameters alone rank NB201 cells at Spearman 0.75);
* ``random-seed``: uniform draws of the seed space (NB201 indices; NB101 labelled graphs);
* ``neighbours``: the seed-space cells closest to the reference: for NB201, the strings at
  Hamming distance 1, then 2, ... from the reference's string (ties in seeded random order);
  for NB101, cells one edit away from the pruned reference (one edge toggled or one op
  changed), then two, ... kept when in NB101.

Every set excludes the reference's own network and the zero cell. Cells inside NB201 also get
their published CIFAR-10 test accuracy (200 epochs, mean over NB201's seeds and over the NB201
strings that build the same network) from the shared NB201 table
when ``$CGNF_DATA_DIR`` is set (NB101 cells: the mean final test accuracy of the 30 shared
complete NB101 records, when the cell is one of them). Trained accuracies on the shared JPEG
CIFAR-10 with a shortened protocol are only comparable with each other.

Per set: the paper's columns (reference, mean, std, best; best = max or min by the task's
objective), how many cells beat the reference, and per-cell rows. Tests
(:func:`upper_bound_tests`): per set, the cells' differences from the reference (each cell paired
with the reference through the shared training seeds) with a 95 % bootstrap interval and a
one-sided Wilcoxon signed-rank test; the generated set against each baseline, the difference of
the set means with a bootstrap interval, a one-sided permutation test over cells, and the
difference per training seed (the seeds are shared, so it is paired).
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._stats import bootstrap_ci, bootstrap_diff_ci, permutation_greater, spearman, wilcoxon_greater
from ..space import Cell
from .protocol import Protocol, get_protocol, train_cells
from .tasks import Task

__all__ = ["SETS", "benchmark_accuracy", "cell_sets", "neighbours", "run_upper_bound", "summary_markdown",
           "nb201_table", "plot_upper_bound", "significance_markdown", "upper_bound_tests"]

SETS = ("generated", "random-extended", "random-params", "random-seed", "neighbours")


def _data_dir(data_dir: str | os.PathLike | None) -> Path | None:
    d = data_dir or os.environ.get("CGNF_DATA_DIR")
    return Path(d) if d else None


def nb201_table(data_dir: str | os.PathLike | None = None) -> Path | None:
    """The shared NB201 table (``nb201/naswot_arch_score_acc.csv`` under ``data_dir`` or
    ``$CGNF_DATA_DIR``; None when neither is set; the file may still be missing)."""
    d = _data_dir(data_dir)
    return d / "nb201" / "naswot_arch_score_acc.csv" if d is not None else None


def _take_distinct(cells, out: list[Cell], seen: set[int], n: int, keep=None) -> bool:
    """Appends to ``out`` the pruned non-zero ``cells`` (those ``keep`` accepts) whose network
    code is not in ``seen`` (updated), until ``out`` holds ``n``; True once it does."""
    for c in cells:
        if len(out) >= n:
            break
        if c.is_zero or (keep is not None and not keep(c)):
            continue
        p = c.pruned()
        k = p.network_code()
        if k not in seen:
            seen.add(k)
            out.append(p)
    return len(out) >= n


def neighbours(reference: Cell, seed_space, n: int, seed: int = 0, max_distance: int = 3) -> list[Cell]:
    """The ``n`` seed-space networks closest to ``reference`` (module doc), nearest first."""
    from ..space import NB201_EDGE_OPS
    from ..space import nb201 as nb201_mod

    rng = np.random.default_rng(seed)
    ref_code = reference.pruned(allow_zero=True).network_code()
    seen = {ref_code}
    out: list[Cell] = []

    def take(cells: list[Cell]) -> bool:
        return _take_distinct(cells, out, seen, n, seed_space.contains)

    if seed_space.name == "nb201":
        arch = reference.to_nb201()
        if arch is None:
            raise ValueError("the reference is not an NB201 cell, so it has no NB201 neighbours")
        digits = tuple(nb201_mod.parse(arch))
        n_ops = len(NB201_EDGE_OPS)
        frontier = [digits]
        visited = {digits}
        for _ in range(len(digits)):
            nxt = []
            for e in frontier:
                for i in range(len(e)):
                    for o in range(n_ops):
                        if o != e[i]:
                            f = e[:i] + (o,) + e[i + 1:]
                            if f not in visited:
                                visited.add(f)
                                nxt.append(f)
            nxt = [nxt[i] for i in rng.permutation(len(nxt))]
            if take([nb201_mod.digits_to_cell(f) for f in nxt]):
                return out
            frontier = nxt
        return out
    p = reference.pruned()
    frontier = [p]
    visited = {p.canonical_code()}
    for _ in range(max_distance):
        nxt = []
        for c in frontier:
            m = [list(r) for r in c.adjacency]
            k = len(m)
            for i in range(k):
                for j in range(i + 1, k):
                    mm = [list(r) for r in m]
                    mm[i][j] ^= 1
                    nxt.append(Cell(mm, c.ops))
            for v in range(1, k - 1):
                for o in seed_space.ops:
                    if o != c.ops[v]:
                        nxt.append(Cell(m, c.ops[:v] + (o,) + c.ops[v + 1:]))
        fresh = []
        for c in nxt:
            if not c.has_path():
                continue
            key = c.pruned().canonical_code()
            if key not in visited:
                visited.add(key)
                fresh.append(c.pruned())
        fresh = [fresh[i] for i in rng.permutation(len(fresh))]
        if take(fresh):
            return out
        frontier = fresh
    return out


def _params_matched(sp: Any, ref: Cell, n: int, seed: int, distinct: Any, tolerance: float = 0.1,
                    draws: int = 200) -> list[Cell]:
    """``n`` distinct random cells of ``sp`` whose exact parameter count is within ``tolerance``
    of the reference's, from up to ``draws * n`` uniform draws (fewer when that many do not hold
    ``n``: the caller refuses a short set)."""
    from ..nets import ExactCounts

    counts = ExactCounts(sp.skeleton)
    target = counts.get(ref.pruned(), ref.pruned().network_code())[0]
    keep: list[Cell] = []
    for round_ in range(8):
        batch = sp.sample(draws * n // 8, seed=seed + 7919 * (round_ + 1), unique=True)
        keep += [c for c in batch if abs(counts.get(c, c.network_code())[0] - target) <= tolerance * target]
        got = distinct(keep)
        if len(got) >= n:
            return got
    return distinct(keep)


def cell_sets(space: str = "nb201-like", reference: Any = "best", n: int = 20, seed: int = 0, model: Any = None,
              sets: Sequence[str] = SETS, device: str = "cpu") -> tuple[Cell, dict[str, list[Cell]]]:
    """The reference and the requested cell sets (module doc)."""
    from ..sampling import resolve_model, resolve_reference, sample
    from ..space.spaces import get as get_space
    from ..space.spaces import names as space_names

    unknown = [s for s in sets if s not in SETS]
    if unknown:
        raise ValueError(f"unknown cell sets {unknown}; choose from {', '.join(SETS)}")
    sp = get_space(space)
    if sp.seed_space is None:
        families = [s for s in space_names() if get_space(s).seed_space is not None]
        raise ValueError(f"space {sp.name!r} has no seed space; upper-bound runs on {', '.join(families)}")
    seed_sp = get_space(sp.seed_space)
    ref = resolve_reference(reference, sp)
    ref_code = ref.pruned(allow_zero=True).network_code()

    def distinct(cells: list[Cell]) -> list[Cell]:
        keep: list[Cell] = []
        _take_distinct(cells, keep, {ref_code}, n)
        return keep

    out: dict[str, list[Cell]] = {}
    if "generated" in sets:
        model = resolve_model(model, sp, device)  # loaded once for the draws below
    for name in sets:
        if name == "generated":  # one more draw each time the reference (or the zero cell) is among them
            k = n
            while True:
                got = distinct([s.cell for s in sample(ref, None, n=k, space=sp, seed=seed, model=model,
                                                       device=device)])
                if len(got) >= n or k >= n + 10:
                    break
                k += 1
            out[name] = got
        elif name == "random-extended":
            out[name] = distinct(sp.sample(3 * n + 2, seed=seed, unique=True))
        elif name == "random-params":
            out[name] = _params_matched(sp, ref, n, seed, distinct)
        elif name == "random-seed":
            out[name] = distinct(seed_sp.sample(3 * n + 2, seed=seed, unique=True))
        else:
            out[name] = neighbours(ref, seed_sp, n, seed=seed)
        if len(out[name]) < n:
            raise ValueError(f"could only find {len(out[name])} of {n} cells for set {name!r}")
    return ref, out


def benchmark_accuracy(cells: Sequence[Cell], family: str, data_dir: str | os.PathLike | None = None
                       ) -> list[float | None]:
    """Published CIFAR-10 test accuracy of each cell where the shared tables have it (module
    doc); None elsewhere or without ``$CGNF_DATA_DIR``."""
    d = _data_dir(data_dir)
    if d is None:
        return [None] * len(cells)
    if family == "nb201":
        path = nb201_table(d)
        if not path.is_file():
            return [None] * len(cells)
        from ..space.spaces import get as get_space

        with open(path, newline="") as f:
            acc = [float(r["cifar10_test_200ep"]) for r in csv.DictReader(f)]
        sp = get_space("nb201")
        res: list[float | None] = []
        for c in cells:
            idx = sp.indices(c) if sp.contains(c) else []
            vals = [acc[i] for i in idx if math.isfinite(acc[i])]
            res.append(float(np.mean(vals)) if vals else None)
        return res
    path = d / "nb101" / "naslib_nb101_dummy_30.json"
    if not path.is_file():
        return [None] * len(cells)
    recs = json.loads(path.read_text())
    table = {h: 100.0 * float(np.mean([r["final_test_accuracy"] for r in rec["108"]])) for h, rec in recs.items()}
    out: list[float | None] = []
    for c in cells:
        try:
            out.append(table.get(c.pruned().nb101_hash()))
        except ValueError:
            out.append(None)
    return out


def _stats(values: list[float], objective: str) -> dict[str, float | None]:
    v = np.array([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if v.size == 0:
        return {"mean": None, "std": None, "best": None, "worst": None}
    best = v.max() if objective == "max" else v.min()
    worst = v.min() if objective == "max" else v.max()
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0, "best": float(best),
            "worst": float(worst)}


def run_upper_bound(space: str = "nb201-like", reference: Any = "best", *, n: int = 20, seed: int = 0,
                    model: Any = None, task: Task | None = None, protocol: str | Protocol | None = None,
                    seeds: Sequence[int] = (0,), sets: Sequence[str] = SETS, store: str | None = None,
                    work_dir: str | None = None, device: str = "cpu", png: str | None = None,
                    data_dir: str | None = None, benchmark: bool | None = None, progress: bool = True) -> dict[str, Any]:
    """Train the reference and every set (module doc); returns a JSON-able result. ``protocol``
    None: the seed benchmark's own recipe (``nb201`` or ``nb101``: GPU budgets). ``benchmark``:
    look up the published CIFAR-10 accuracies of seed-space cells (default: only when the task
    is the shared CIFAR-10)."""
    from ..nets import ExactCounts
    from ..space.spaces import get as get_space
    from .tasks import load_task

    sp = get_space(space)
    skeleton = sp.skeleton
    proto = get_protocol(protocol, space=sp.name)
    if task is None:
        task = load_task("cifar10", proto, data_dir=data_dir)
    if progress:
        print(f"[upper-bound] {task.describe()}\n[upper-bound] {proto.describe()}\n[upper-bound] drawing the cell "
              f"sets ({', '.join(sets)}; n={n}, seed={seed})", file=sys.stderr, flush=True)
    if benchmark is None:
        benchmark = task.name == "cifar10-jpeg"
    ref, groups = cell_sets(sp.name, reference, n=n, seed=seed, model=model, sets=sets, device=device)
    order = [ref] + [c for name in sets for c in groups[name]]
    trained = train_cells(order, skeleton, task, proto, seeds=seeds, store=store, device=device, work_dir=work_dir,
                          progress=progress, desc=f"train {len(order)} cells x {len(seeds)} seeds")
    bench = benchmark_accuracy(order, skeleton, data_dir) if benchmark else [None] * len(order)
    seed_sp = get_space(sp.seed_space)
    counts = ExactCounts(skeleton)

    def row(i: int, c: Cell) -> dict[str, Any]:
        runs = trained[i]
        vals = [r.metric for r in runs]
        params, flops = counts.get(c, c.pruned(allow_zero=True).network_code())
        return {"cell": c.to_json(), "nb201": c.to_nb201(), "in_seed_space": seed_sp.contains(c),
                "params": params, "flops": flops, "trained": vals, "trained_mean": float(np.mean(vals)),
                "seconds": float(np.nansum([r.seconds for r in runs])), "benchmark_acc": bench[i]}

    ref_row = row(0, ref)
    out: dict[str, Any] = {
        "space": sp.name, "skeleton": skeleton, "n": n, "seed": seed, "seeds": list(seeds),
        "task": task.describe(), "task_source": task.source, "objective": task.objective, "metric": task.metric,
        "protocol": proto.to_json(), "protocol_text": proto.describe(), "device": device,
        "reference": ref_row, "sets": {},
    }
    k = 1
    for name in sets:
        rows = [row(k + j, c) for j, c in enumerate(groups[name])]
        k += len(groups[name])
        vals = [r["trained_mean"] for r in rows]
        s = _stats(vals, task.objective)
        better = sum(1 for v in vals if (v > ref_row["trained_mean"] if task.objective == "max"
                                         else v < ref_row["trained_mean"]))
        b = [r["benchmark_acc"] for r in rows]
        out["sets"][name] = {**s, "reference": ref_row["trained_mean"], "beat_reference": better, "n": len(rows),
                             "in_seed_space": sum(1 for r in rows if r["in_seed_space"]),
                             "benchmark": _stats(b, "max"), "benchmark_known": sum(1 for x in b if x is not None),
                             "rows": rows}
    out["tests"] = upper_bound_tests(out)
    if png:
        plot_upper_bound(out, png)
    return out


def upper_bound_tests(result: dict[str, Any]) -> dict[str, Any]:
    """The tests of the module doc from a result (also one written by an older version); signs
    follow the objective, so a positive difference is always "better"."""
    sign = 1.0 if result["objective"] == "max" else -1.0
    ref = np.asarray(result["reference"]["trained"], dtype=np.float64)

    def per_cell(name: str) -> np.ndarray:
        v = np.asarray([r["trained_mean"] for r in result["sets"][name]["rows"]], dtype=np.float64)
        return v[np.isfinite(v)]

    def per_seed(name: str) -> np.ndarray:  # [seeds] set means
        t = np.asarray([r["trained"] for r in result["sets"][name]["rows"]], dtype=np.float64)
        return np.nanmean(t, axis=0) if t.size else np.full(len(ref), np.nan)

    out: dict[str, Any] = {"vs_reference": {}, "generated_vs": {}}
    ref_mean = float(np.nanmean(ref))
    for name in result["sets"]:
        d = sign * (per_cell(name) - ref_mean)
        lo, hi = bootstrap_ci(d)
        known = [(r["trained_mean"], r["benchmark_acc"]) for r in result["sets"][name]["rows"]
                 if r.get("benchmark_acc") is not None and math.isfinite(r["trained_mean"])]
        rho = spearman(*map(np.asarray, zip(*known))) if len(known) >= 3 else math.nan
        out["vs_reference"][name] = {"mean_difference": float(d.mean()) if d.size else math.nan, "ci95": [lo, hi],
                                     "wilcoxon_p_greater": wilcoxon_greater(d), "cells": int(d.size),
                                     "spearman_vs_benchmark": None if math.isnan(rho) else float(rho),
                                     "benchmark_known": len(known)}
    if "generated" in result["sets"]:
        g, gs = sign * per_cell("generated"), sign * per_seed("generated")
        for name in result["sets"]:
            if name == "generated":
                continue
            b = sign * per_cell(name)
            lo, hi = bootstrap_diff_ci(g, b)
            by_seed = gs - sign * per_seed(name)
            out["generated_vs"][name] = {
                "mean_difference": float(g.mean() - b.mean()) if g.size and b.size else math.nan, "ci95": [lo, hi],
                "permutation_p_greater": permutation_greater(g, b),
                "difference_by_seed": [float(x) for x in by_seed],
                "seeds_better": int(np.count_nonzero(by_seed > 0)),
            }
    return out


def significance_markdown(result: dict[str, Any]) -> str:
    """The tests of :func:`upper_bound_tests` as two markdown tables."""
    t = result.get("tests") or upper_bound_tests(result)

    def f(x: float, d: int = 2) -> str:
        return "n/a" if x is None or not math.isfinite(x) else f"{x:+.{d}f}"

    def p(x: float) -> str:
        return f"{x:.2g}" if x >= 1e-3 else f"{x:.1e}"

    lines = ["| set | cells | mean difference from the reference (95 % CI) | Wilcoxon p (better) | "
             "Spearman with benchmark acc. (cells) |", "|---|---:|---|---:|---|"]
    for name, v in t["vs_reference"].items():
        rho = v.get("spearman_vs_benchmark")
        lines.append(f"| {name} | {v['cells']} | {f(v['mean_difference'])} ({f(v['ci95'][0])} to {f(v['ci95'][1])}) | "
                     f"{p(v['wilcoxon_p_greater'])} | "
                     f"{'n/a' if rho is None else f'{rho:.2f}'} ({v.get('benchmark_known', 0)}) |")
    if t["generated_vs"]:
        seeds = ", ".join(map(str, result["seeds"]))
        lines += ["", f"| generated vs | difference of means (95 % CI) | permutation p (generated better) | "
                  f"by training seed ({seeds}) |", "|---|---|---:|---|"]
        for name, v in t["generated_vs"].items():
            lines.append(f"| {name} | {f(v['mean_difference'])} ({f(v['ci95'][0])} to {f(v['ci95'][1])}) | "
                         f"{p(v['permutation_p_greater'])} | {', '.join(f(x) for x in v['difference_by_seed'])} |")
    return "\n".join(lines)


def summary_markdown(result: dict[str, Any], *, per_cell: bool = True) -> str:
    """The paper's table (reference, mean, std, best per set) plus per-cell rows, as markdown."""
    obj = result["objective"]
    unit = " (%)" if result["metric"] == "accuracy" else ""
    lines = [f"| set | cells | reference | mean | std | best ({obj}) | beat reference | in seed space | "
             f"benchmark acc. mean / best (known) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]

    def f(x: float | None, d: int = 2) -> str:
        return "n/a" if x is None else f"{x:.{d}f}"

    for name, s in result["sets"].items():
        bm = s["benchmark"]
        lines.append(f"| {name} | {s['n']} | {f(s['reference'])} | {f(s['mean'])} | {f(s['std'])} | {f(s['best'])} | "
                     f"{s['beat_reference']} | {s['in_seed_space']} | "
                     f"{f(bm['mean'])} / {f(bm['best'])} ({s['benchmark_known']}) |")
    out = "\n".join(lines) + "\n\n" + significance_markdown(result)
    if per_cell:
        ref = result["reference"]
        rows = [f"| set | # | cell (vertex:op<inputs) | NB201 string | params (M, published skeleton) | "
                f"trained {result['metric']}{unit} (seeds {', '.join(map(str, result['seeds']))}) | benchmark acc. |",
                "|---|---:|---|---|---:|---:|---:|"]

        def text(r: dict[str, Any]) -> str:
            from ..sampling import cell_text

            return "`" + cell_text(Cell.from_json(r["cell"])) + "`"

        def nb(r: dict[str, Any]) -> str:
            return "`" + r["nb201"].replace("|", "\\|") + "`" if r["nb201"] else ""

        rows.append(f"| reference | 0 | {text(ref)} | {nb(ref)} | {ref['params'] / 1e6:.3f} | "
                    f"{', '.join(f'{v:.2f}' for v in ref['trained'])} | {f(ref['benchmark_acc'])} |")
        for name, s in result["sets"].items():
            for i, r in enumerate(s["rows"], 1):
                rows.append(f"| {name} | {i} | {text(r)} | {nb(r)} | {r['params'] / 1e6:.3f} | "
                            f"{', '.join(f'{v:.2f}' for v in r['trained'])} | {f(r['benchmark_acc'])} |")
        out += "\n\n<details><summary>Per-cell rows</summary>\n\n" + "\n".join(rows) + "\n\n</details>"
    return out


def plot_upper_bound(result: dict[str, Any], path: str) -> None:
    """Trained metric of every cell per set (dots), the reference as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["sets"])
    fig, ax = plt.subplots(figsize=(1.6 + 1.7 * len(names), 4.2))
    rng = np.random.default_rng(0)
    for i, name in enumerate(names):
        rows = result["sets"][name]["rows"]
        v = np.array([r["trained_mean"] for r in rows])
        inside = np.array([r["in_seed_space"] for r in rows])
        x = i + rng.uniform(-0.18, 0.18, v.size)
        ax.scatter(x[~inside], v[~inside], s=18, color="C0", label="outside seed space" if i == 0 else None)
        ax.scatter(x[inside], v[inside], s=18, color="C2", label="inside seed space" if i == 0 else None)
        ax.plot([i - 0.3, i + 0.3], [v.mean()] * 2, color="k", lw=1.5)
    ref = result["reference"]["trained_mean"]
    ax.axhline(ref, color="C3", ls="--", label=f"reference {ref:.2f}")
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel(f"trained {result['metric']}" + (" (%)" if result["metric"] == "accuracy" else ""))
    ax.set_title(f"{result['space']}: {result['n']} cells per set, protocol {result['protocol']['name']!r}",
                 fontsize=10)
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles, labels, fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def transfer_markdown(result: dict[str, Any]) -> str:
    """The paper's Table 1 row: reference, mean, std, best of the generated set, objective."""
    s = result["sets"]["generated"]

    def f(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.4g}"

    return ("| task | reference | mean | std | best | obj. | beat reference |\n|---|---:|---:|---:|---:|---|---:|\n"
            f"| {result['task'].split(':')[0]} | {f(s['reference'])} | {f(s['mean'])} | {f(s['std'])} | "
            f"{f(s['best'])} | {result['objective']} | {s['beat_reference']} / {s['n']} |")
