"""Several methods over several seeds at one budget: the comparison ``cgnf search`` prints.

Each (method, seed) search is appended to ``RESULTS.runs.jsonl`` as it finishes, tagged with
the comparison's settings, so a killed comparison reruns only the searches it had not finished.
The summary holds, per method, the mean best-so-far with a 95 % bootstrap band at every budget,
and at the final budget a paired comparison of ``cgnf`` with each baseline over the seeds
(Wilcoxon signed-rank test, one-sided, and a bootstrap interval of the mean difference).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._stats import bootstrap_ci
from .._stats import wilcoxon_greater as _wilcoxon_greater
from .objectives import CallableObjective, TableObjective
from .runner import METHODS, run_search

__all__ = ["compare", "summarise", "plot_curves"]


def _settings(objective: Any, methods: Sequence[str], budget: int, batch_queries: int, space: str = "nb201") -> str:
    d = {"objective": objective.fingerprint, "direction": objective.direction, "budget": budget,
         "batch_queries": batch_queries, "version": 1, **({"space": space} if space != "nb201" else {})}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _load_runs(path: Path | None, tag: str) -> dict[tuple[str, int], dict[str, Any]]:
    out: dict[tuple[str, int], dict[str, Any]] = {}
    if path is None or not path.exists():
        return out
    for line in path.read_text().splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill: that search runs again
        if r.get("settings") == tag:
            r["best_by_query"] = [math.nan if v is None else v for v in r["best_by_query"]]
            out[(r["method"], r["seed"])] = r
    return out


def compare(objective: TableObjective | CallableObjective, methods: Sequence[str], seeds: Sequence[int], budget: int,
            *, batch_queries: int = 1, runs_path: str | os.PathLike | None = None, store: Any = None,
            ray: Any = None, progress: bool | None = None, domain: Any = None) -> dict[str, Any]:
    """Every method on every seed (module doc); returns the JSON ``cgnf search --json`` writes."""
    from tqdm import tqdm

    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise ValueError(f"unknown method(s) {', '.join(bad)}; choose from {', '.join(METHODS)}")
    tag = _settings(objective, methods, budget, batch_queries, getattr(domain, "name", "nb201"))
    path = Path(runs_path) if runs_path is not None else None
    done = _load_runs(path, tag)
    todo = [(m, s) for m in methods for s in seeds if (m, s) not in done]
    bar = tqdm(total=len(todo) * budget, desc="search", unit="query", disable=None if progress is None else not progress,
               leave=False, smoothing=0)
    with bar:
        for m, s in todo:
            bar.set_postfix_str(f"{m} seed {s}", refresh=False)
            r = run_search(m, objective, budget, s, domain=domain, batch_queries=batch_queries, store=store, ray=ray,
                           on_query=lambda: bar.update(1)).to_json()
            r["settings"] = tag
            done[(m, s)] = r
            if path is not None:
                cut = path.exists() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")
                with open(path, "a") as f:  # (a line cut by a kill is ended first, so it cannot swallow this one)
                    f.write(("\n" if cut else "") + json.dumps(clean_json(r)) + "\n")
                    f.flush()
                    os.fsync(f.fileno())
    return summarise(objective, methods, seeds, budget, done)


def clean_json(x: Any) -> Any:
    """``x`` with every non-finite float as None (strict JSON has no NaN)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: clean_json(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [clean_json(v) for v in x]
    return x


def summarise(objective: Any, methods: Sequence[str], seeds: Sequence[int], budget: int,
              runs: dict[tuple[str, int], dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"objective": objective.describe(), "direction": objective.direction,
                           "optimum": objective.optimum, "budget": budget, "seeds": list(seeds), "methods": {}}
    sign = 1.0 if objective.direction == "max" else -1.0
    for m in methods:
        rs = [runs[(m, s)] for s in seeds]
        curves = np.asarray([r["best_by_query"] for r in rs], dtype=np.float64)  # [seeds, budget]
        # (a seed whose queries so far all failed has no best yet: the mean is over the seeds that have one)
        with np.errstate(all="ignore"):
            mean = np.asarray([np.nanmean(col) if np.isfinite(col).any() else math.nan for col in curves.T])
        band = [bootstrap_ci(curves[:, k][np.isfinite(curves[:, k])]) for k in range(budget)]
        out["methods"][m] = {
            "best_by_query": curves.tolist(), "wall_s": [r["wall_s"] for r in rs],
            "mean_best_by_query": mean.tolist(), "ci95_low": [b[0] for b in band], "ci95_high": [b[1] for b in band],
            "final_mean": float(mean[-1]), "best_cells": [r["best"] for r in rs],
            "failures": [r["failures"] for r in rs], "extra": [r["extra"] for r in rs],
        }
    if "cgnf" in methods:
        # cgnf against each baseline over the same seeds, at the final budget ("paired") and at
        # 10, 20 and 50 queries ("paired_at")
        out["paired"], out["paired_at"] = {}, {}
        for k in sorted({x for x in (10, 20, 50) if x < budget} | {budget}):
            at = {}
            mine = np.asarray([r[k - 1] for r in out["methods"]["cgnf"]["best_by_query"]])
            for m in methods:
                if m != "cgnf":
                    theirs = np.asarray([r[k - 1] for r in out["methods"][m]["best_by_query"]])
                    at[m] = _paired(mine, theirs, sign)
            out["paired_at"][str(k)] = at
        out["paired"] = out["paired_at"][str(budget)]
        curves = {m: np.asarray(out["methods"][m]["mean_best_by_query"]) * sign for m in methods}
        ahead = [k + 1 for k in range(9, budget) if all(curves["cgnf"][k] >= curves[m][k] - 1e-12 for m in methods)]
        # (None below 10 queries: nothing to compare)
        out["cgnf_at_or_above_every_baseline_from_10"] = len(ahead) == budget - 9 if budget >= 10 else None
    return out


def _paired(a: np.ndarray, b: np.ndarray, sign: float = 1.0) -> dict[str, Any]:
    """``a`` (cgnf) vs ``b`` over the same seeds, in the objective's units: ``mean_difference``
    is ``a - b`` with its bootstrap 95 % interval; ``improvement`` is the same signed so that
    positive means ``a`` is better (``sign`` -1 when minimising); wins/ties/losses by
    improvement, and a one-sided Wilcoxon signed-rank p-value for "a is better". Seeds where
    either has no value yet (every query failed) are left out and counted in ``dropped``."""
    ok = np.isfinite(a) & np.isfinite(b)
    d = (a - b)[ok]
    imp = sign * d
    lo, hi = bootstrap_ci(d)
    return {"mean_difference": float(d.mean()) if d.size else math.nan, "ci95": [lo, hi],
            "improvement": float(imp.mean()) if imp.size else math.nan, "wins": int((imp > 0).sum()),
            "ties": int((imp == 0).sum()), "losses": int((imp < 0).sum()), "dropped": int((~ok).sum()),
            "wilcoxon_p_greater": _wilcoxon_greater(imp)}


def plot_curves(summary: dict[str, Any], path: str | os.PathLike) -> None:
    """Mean best-so-far against distinct networks queried, a 95 % band per method, the optimum
    dashed (PNG, SVG or PDF by suffix; written atomically)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ..sampling.drawing import figure_format, save_figure

    fmt = figure_format(path)
    fig = Figure(figsize=(7.5, 4.6), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    k = np.arange(1, summary["budget"] + 1)
    for m, r in summary["methods"].items():
        line, = ax.plot(k, r["mean_best_by_query"], label=f"{m} ({r['final_mean']:.2f})", lw=2 if m == "cgnf" else 1.2)
        ax.fill_between(k, r["ci95_low"], r["ci95_high"], color=line.get_color(), alpha=0.15, lw=0)
    if summary.get("optimum") is not None:
        ax.axhline(summary["optimum"], color="k", ls="--", lw=0.8, label=f"optimum ({summary['optimum']:.2f})")
    ax.set_xlabel("distinct networks queried")
    ax.set_ylabel(("best " if summary["direction"] == "max" else "lowest ") + "value so far (mean over seeds)")
    ax.set_title(textwrap.fill(summary["objective"], 110), fontsize=7)
    lows = [v for r in summary["methods"].values() for v in r["ci95_low"][min(9, len(k) - 1):]
            if v is not None and math.isfinite(v)]
    if lows and summary["direction"] == "max" and summary.get("optimum") is not None:
        lows = [min(lows)]
        ax.set_ylim(min(lows) - 0.05 * abs(summary["optimum"] - min(lows)) - 1e-9,
                    summary["optimum"] + 0.15 * abs(summary["optimum"] - min(lows)) + 1e-9)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, fmt)
