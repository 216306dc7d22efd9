"""``cgnf search``: find better cells against a table (or a training protocol), with baselines."""

from __future__ import annotations

import argparse
import json
import sys

from ._common import DEVICE_HELP, JSON_HELP, NO_PROGRESS_HELP, CLIError, check_outputs, check_png

HELP = "find better cells with the generator in the loop, against equal-budget baselines"
#: Most seeds one command runs (each is a whole search per method).
MAX_SEEDS = 10_000


def _seeds(text: str) -> list[int]:
    """``0-9``, ``0,3,5`` or a mix (``0-4,10``)."""
    out: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if not part:
                continue
            if "-" in part:
                a, b = part.split("-", 1)
                lo, hi = int(a), int(b)
                if hi < lo:
                    raise ValueError
                if hi - lo + 1 + len(out) > MAX_SEEDS:
                    raise CLIError(f"--seeds: at most {MAX_SEEDS:,} seeds, got {text!r}")
                out += range(lo, hi + 1)
            else:
                out.append(int(part))
    except ValueError:
        raise CLIError(f"--seeds: expected seeds like 0-9 or 0,3,5, got {text!r}") from None
    if not out or len(set(out)) != len(out) or min(out) < 0:
        raise CLIError(f"--seeds: expected distinct seeds >= 0 like 0-9 or 0,3,5, got {text!r}")
    return out


def _count(flag: str, text: str, what: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise CLIError(f"{flag}: expected an integer >= 1, got {text!r}") from None
    if v < 1:
        raise CLIError(f"{flag}: {what}, >= 1; got {v}")
    return v


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..searching import METHODS

    sp = sub.add_parser(
        "search", help=HELP,
        description="Searches a space for the best cell by an objective, with the generator in the loop ('cgnf') "
        "and the standard baselines at the same budget of distinct networks queried (repeating a network is free "
        "and uncounted). With --table, a cell's value is the mean of the table's rows over its network class. "
        "Prints, per method, the mean best value after the budget over the seeds, and the paired comparison of "
        "cgnf with each baseline.")
    sp.add_argument("--space", default="nb201", help="the space searched: nb201 (tables and protocols), or "
                    "nb201-like / nb101-like with --objective (default nb201)")
    sp.add_argument("--table", metavar="FILE",
                    help="the objective: a CSV with a key column ('arch': NB201 strings, or 'index': official NB201 "
                    "indices) and the value column")
    sp.add_argument("--column", help="the table's value column")
    sp.add_argument("--direction", metavar="max|min",
                    help="maximise or minimise the table's column (default max; a protocol's comes from its task)")
    sp.add_argument("--objective", metavar="protocol:NAME",
                    help="instead of a table: train each queried cell with one of cgnf evaluate's protocols (e.g. "
                    "protocol:cpu-small) on --task; results are kept in --store")
    sp.add_argument("--task", default="cifar10", help="with --objective: cifar10 (shared JPEGs), a folder with "
                    "train/ and test/ class folders, or an .npz/.safetensors file (default cifar10)")
    sp.add_argument("--store", help="with --objective: the SQLite store that keeps every result as it arrives "
                    "(required; rerun to resume)")
    sp.add_argument("--ray", metavar="local|auto|ADDRESS",
                    help="with --objective: measure each batch of --batch-queries on Ray ('local' starts a local "
                    "instance with --workers CPUs; needs the distributed extra)")
    sp.add_argument("--workers", default="2", help="with --ray local: CPUs of the local instance (default 2)")
    sp.add_argument("--device", default="cpu", help=DEVICE_HELP + "; with --objective, where cells train")
    sp.add_argument("--budget", default="50", help="distinct networks queried per search (default 50)")
    sp.add_argument("--seeds", default="0-9", help="seeds, e.g. 0-9 or 0,3,5 (default 0-9)")
    sp.add_argument("--methods", default=",".join(METHODS),
                    help=f"comma-separated, from {', '.join(METHODS)} (default all)")
    sp.add_argument("--batch-queries", default="1", metavar="Q",
                    help="queries proposed at a time before their results are known (default 1)")
    sp.add_argument("--json", metavar="FILE", help="write the results here (finished searches are kept in "
                    "FILE.runs.jsonl, so an interrupted run resumes)")
    sp.add_argument("--png", metavar="FILE", help="plot mean best-so-far against queries, one line per method")
    sp.add_argument("--print-json", action="store_true", help=JSON_HELP + " (the summary) instead of the table")
    sp.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)
    sp.set_defaults(func=_search)


def _search(args: argparse.Namespace) -> int:
    from ..io import write_text_atomic
    from ..searching import DIRECTIONS, METHODS
    from ..searching.compare import clean_json, compare, plot_curves

    budget = _count("--budget", args.budget, "the budget is the number of distinct networks queried")
    if args.direction is not None and args.direction not in DIRECTIONS:
        raise CLIError(f"--direction: expected max or min, got {args.direction!r}")
    batch_queries = _count("--batch-queries", args.batch_queries, "queries proposed at a time")
    seeds = _seeds(args.seeds)
    check_png(args.png)
    check_outputs(("--json", args.json), ("--png", args.png))
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if not methods or bad or len(set(methods)) != len(methods):
        raise CLIError(f"--methods: expected distinct names from {', '.join(METHODS)}, got {args.methods!r}")
    from ..searching import make_domain

    domain = make_domain(args.space)
    if args.table is not None and args.space != "nb201":
        raise CLIError(f"--table covers nb201 only; search {args.space} with --objective protocol:NAME")
    if domain.num_classes is not None and budget > domain.num_classes:
        raise CLIError(f"--budget {budget} is more than the {domain.num_classes:,} networks of {domain.name}")
    objective, store, pool = _objective(args)
    print(f"objective  {objective.describe()}", file=sys.stderr)
    try:
        summary = compare(objective, methods, seeds, budget, batch_queries=batch_queries,
                          runs_path=args.json + ".runs.jsonl" if args.json else None, store=store, ray=pool,
                          progress=not args.no_progress, domain=domain)
    finally:
        if store is not None:
            store.close()
        if pool is not None:
            pool.close()
    if args.json:
        write_text_atomic(args.json, json.dumps(clean_json(summary)) + "\n")
    if args.png:
        plot_curves(summary, args.png)
    if args.print_json:
        print(json.dumps(clean_json({k: v for k, v in summary.items() if k != "methods"}
                         | {"methods": {m: {k: r[k] for k in ("final_mean", "wall_s")}
                                        for m, r in summary["methods"].items()}})))
    else:
        _print_summary(summary)
    for flag, path in (("--json", args.json), ("--png", args.png)):
        if path:
            print(f"wrote {path}", file=sys.stderr)
    return 0


def _objective(args: argparse.Namespace):
    """(objective, store or None, Ray pool or None) from the flags, refusing mixed or missing ones."""
    from ..searching import CallableObjective, TableObjective
    from ..searching.objectives import ProtocolObjective

    if (args.table is None) == (args.objective is None):
        raise CLIError("give the objective: --table FILE --column COL, or --objective protocol:NAME")
    if args.table is not None:
        if args.column is None:
            raise CLIError("--table needs --column COL (the value column)")
        for flag, v in (("--store", args.store), ("--ray", args.ray)):
            if v is not None:
                raise CLIError(f"{flag} is for --objective: a table's values are looked up, not measured")
        return TableObjective(args.table, args.column, args.direction or "max"), None, None
    if args.direction is not None:
        raise CLIError("--direction is for --table: a protocol's direction comes from its task's metric")
    if not args.objective.startswith("protocol:") or not args.objective[len("protocol:"):]:
        raise CLIError(f"--objective: expected protocol:NAME (e.g. protocol:cpu-small), got {args.objective!r}")
    if args.store is None:
        raise CLIError("--objective needs --store FILE (every trained cell's result is kept there)")
    check_outputs(("--store", args.store))
    from ..zc.store import ScoreStore
    from ..searching.runner import RayPool

    proto = ProtocolObjective(args.objective[len("protocol:"):], args.task, device=args.device,
                              skeleton="nb101" if args.space.startswith("nb101") else "nb201")
    objective = CallableObjective(proto, proto.direction, name=proto.name)
    store = ScoreStore(args.store)
    try:
        workers = _count("--workers", args.workers, "CPUs of the local Ray instance")
        pool = RayPool(args.ray, workers, gpus_per_task=1.0 if args.device.startswith("cuda") else 0.0) \
            if args.ray else None
    except BaseException:
        store.close()
        raise
    return objective, store, pool


def _print_summary(s: dict) -> None:
    b = s["budget"]
    marks = [k for k in (10, 20, 50, 100, 200) if k < b] + [b]
    known = f"optimum {s['optimum']:.4f}; " if s.get("optimum") is not None else ""
    print(f"{known}mean best over {len(s['seeds'])} seeds after k distinct networks:")
    print(f"{'method':>8}  " + "  ".join(f"{'k=' + str(k):>8}" for k in marks) + f"  {'95% CI at k=' + str(b):>20}"
          f"  {'s/seed':>7}")
    for m, r in s["methods"].items():
        mean = r["mean_best_by_query"]
        ci = f"[{r['ci95_low'][-1]:.3f}, {r['ci95_high'][-1]:.3f}]"
        wall = sum(r["wall_s"]) / len(r["wall_s"])
        print(f"{m:>8}  " + "  ".join(f"{mean[k - 1]:>8.3f}" for k in marks) + f"  {ci:>20}  {wall:>7.3f}")
    for k in sorted({min(50, b), b}):
        for m, p in s.get("paired_at", {}).get(str(k), {}).items():
            print(f"k={k:<4} cgnf - {m}: {p['mean_difference']:+.3f} (95% CI {p['ci95'][0]:+.3f} .. "
                  f"{p['ci95'][1]:+.3f}), cgnf better/equal/worse on {p['wins']}/{p['ties']}/{p['losses']} "
                  f"seeds, one-sided Wilcoxon p = {p['wilcoxon_p_greater']:.3g}"
                  + (f" ({p['dropped']} seeds without a result left out)" if p["dropped"] else ""))
