"""``cgnf zc score|export|check``: zero-cost proxy scores in a resumable SQLite store."""

from __future__ import annotations

import argparse
import json
import sys
import time

from ._common import (CLIError, DEVICE_HELP, IMAGE_BATCH_HELP, NO_PROGRESS_HELP, add_alias, add_space_arg,
                      check_outputs, nonneg_int, pos_int)

HELP = "zero-cost proxies"


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..zc.score import DEFAULT_BATCH

    zp = sub.add_parser("zc", help=HELP)
    zps = zp.add_subparsers(dest="zc_command", metavar="SUBCOMMAND", required=True)
    zs = zps.add_parser("score", help="score cells into a resumable SQLite store")
    add_space_arg(zs)
    zs.add_argument("--n", type=nonneg_int, help="score N distinct cells sampled from the space (seed 0)")
    zs.add_argument("--stratified", action="store_true",
                    help="with --n: spread the cells evenly over vertex counts (small cells are rare otherwise)")
    zs.add_argument("--cells", help="score the cells of a JSONL file ({'matrix', 'ops'} per line)")
    zs.add_argument("--proxies", required=True, help="comma-separated proxy names")
    zs.add_argument("--store", required=True, help="the SQLite store (created when missing)")
    zs.add_argument("--workers", type=int, default=1, help="scoring processes (default %(default)s)")
    zs.add_argument("--device", default="cpu", help=DEVICE_HELP)
    zs.add_argument("--seed", type=int, default=0,
                    help="seed of the network's initialisation before each proxy (default %(default)s)")
    zs.add_argument("--image-batch", dest="batch_size", metavar="N", type=pos_int, default=DEFAULT_BATCH, help=IMAGE_BATCH_HELP)
    add_alias(zs, "--batch-size", "batch_size", type=pos_int)
    zs.add_argument("--images", help="a folder of class sub-folders instead of the embedded CIFAR-10 batch")
    zs.add_argument("--ray", metavar="local|auto|ADDRESS", default=None,
                    help="score on Ray: 'local' starts a local instance, 'auto' or HOST:PORT joins a cluster "
                    "(needs the distributed extra); the store stays with this process")
    zs.add_argument("--wait", type=float, default=300.0, metavar="SECONDS",
                    help="how long to wait, after this process's own work, for cells that other live scorers "
                    "hold (default %(default)g); cells still held then make the command exit 3")
    zs.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)
    zs.set_defaults(func=_score)

    ze = zps.add_parser("export", help="write a store's scores as CSV")
    ze.add_argument("--store", required=True, help="the SQLite store to read")
    ze.add_argument("--out", required=True, help="output file (.csv, one row per stored score)")
    ze.set_defaults(func=_export)

    zk = zps.add_parser("check", help="check a store's integrity: SQLite's quick_check, every row's checksum, "
                        "the claims (exit 1 when damaged)")
    zk.add_argument("store", help="the SQLite store to check (read only; never changed)")
    zk.add_argument("--json", action="store_true", help="print the whole report as JSON")
    zk.set_defaults(func=_check)


def _score(args: argparse.Namespace) -> int:
    from ..space import spaces
    from ..zc import calibration_batch, run
    from ..zc.images import folder_batch

    if (args.n is None) == (args.cells is None):
        raise CLIError("give exactly one of --n N (cells sampled from the space) or --cells FILE.jsonl")
    sp = spaces.get(args.space)
    if args.n is not None:
        cells = sp.sample_stratified(args.n, seed=0) if args.stratified else sp.sample(args.n, seed=0, unique=True)
    else:
        cells = run.read_cells_jsonl(args.cells)
    if args.images:
        batch = folder_batch(args.images, args.batch_size)
    else:
        batch = calibration_batch(args.batch_size)
    t0 = time.perf_counter()
    summary = run.score_cells(cells, space=sp.name, proxies=args.proxies, store=args.store, batch=batch,
                              seed=args.seed, device=args.device, workers=args.workers,
                              progress=not args.no_progress, ray=args.ray, wait=args.wait)
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    print(json.dumps(summary))
    removed = summary.get("damaged_rows_removed") or []
    if removed:
        shown = ", ".join(f"{r['code']}/{r['proxy']}" for r in removed[:5]) + (" ..." if len(removed) > 5 else "")
        print(f"cgnf: note: {len(removed)} damaged row(s) were deleted and their cells scored again ({shown})",
              file=sys.stderr)
    if not summary.get("complete", True):
        for holder, codes in summary.get("holders", {}).items():
            print(f"cgnf: error: {len(codes)} of {summary['cells']} cells not scored: held by {holder} "
                  f"(code {codes[0]}{' ...' if len(codes) > 1 else ''}); rerun when it finishes or pass --wait "
                  f"SECONDS", file=sys.stderr)
        return 3
    return 0


def _export(args: argparse.Namespace) -> int:
    from ..zc import run

    check_outputs(("--out", args.out))
    n = run.export_csv(args.store, args.out)
    print(f"wrote {n:,} scores to {args.out}", file=sys.stderr)
    return 0


def _check(args: argparse.Namespace) -> int:
    from ..zc import check_store

    report = check_store(args.store)
    if args.json:
        print(json.dumps(report, default=str))
        return 0 if report["ok"] else 1
    qc = report["quick_check"]
    print(f"{args.store}: store version {report['version']}, {report['rows']:,} rows"
          f"{' (read-only)' if report['read_only'] else ''}; SQLite quick_check: "
          f"{'ok' if qc == 'ok' else '; '.join(map(str, qc))}")
    for r in report["damaged"][:20]:
        print(f"  damaged row: space {r['space']}, cell code {r['code']}, proxy {r['proxy']}: {r['problem']}")
    if len(report["damaged"]) > 20:
        print(f"  ... {len(report['damaged']) - 20} more damaged rows (--json lists them all)")
    for kind in ("live", "stale"):
        for c in report["claims"][kind]:
            print(f"  {kind} claim: cell code {c['code']} held by {c['holder']} for {c['age_s']:.0f} s")
    print("ok" if report["ok"] else "damaged: rerun `cgnf zc score` with the same arguments to delete the damaged "
          "rows and score their cells again")
    return 0 if report["ok"] else 1

