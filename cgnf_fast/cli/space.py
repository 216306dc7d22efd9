"""``cgnf space info|count|enumerate``: design spaces."""

from __future__ import annotations

import argparse
import json
import sys
import time

from ._common import JSON_HELP, NO_PROGRESS_HELP, add_space_arg, check_outputs, nonneg_int

HELP = "design spaces"


def add_parser(sub: argparse._SubParsersAction) -> None:
    sp = sub.add_parser("space", help=HELP)
    sps = sp.add_subparsers(dest="space_command", metavar="SUBCOMMAND", required=True)
    info = sps.add_parser("info", help="describe a design space (vocabulary, limits, sizes)")
    add_space_arg(info)
    info.add_argument("--json", action="store_true", help=JSON_HELP)
    info.set_defaults(func=_info)

    cnt = sps.add_parser("count", help="exact numbers of labelled, valid and unique cells and networks")
    add_space_arg(cnt)
    cnt.add_argument("--max-edges", type=nonneg_int, default=None, help="override the space's edge limit")
    cnt.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                     help="count on the CPU or on a CUDA device (default cpu)")
    cnt.add_argument("--json", action="store_true", help=JSON_HELP)
    cnt.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)
    cnt.set_defaults(func=_count)

    en = sps.add_parser("enumerate", help="write every unique cell of a space as JSON lines")
    add_space_arg(en)
    en.add_argument("--max-edges", type=nonneg_int, default=None, help="override the space's edge limit")
    en.add_argument("--out", required=True, help="output file (.jsonl)")
    en.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)
    en.set_defaults(func=_enumerate)


def _info(args: argparse.Namespace) -> int:
    from ..space import nb201, spaces

    sp = spaces.get(args.space)
    info = sp.info()
    if isinstance(sp, spaces.NB201Space):
        t0 = time.perf_counter()
        info["classes"] = nb201.class_counts()
        info["seconds"] = round(time.perf_counter() - t0, 3)
    if args.json:
        print(json.dumps(info))
        return 0
    if info.get("max_edges") is None:  # the table says what None means (JSON keeps null)
        info["max_edges"] = "no limit"
    if info.get("labeled_graphs") is None:
        info.pop("labeled_graphs", None)  # NB201 is its strings, not labelled graphs (nb201_strings)
    if info.get("seed_space") is None:
        info["seed_space"] = "none"
    width = max(len(k) for k in info)
    for k, v in info.items():
        if isinstance(v, dict):
            print(f"{k:<{width}}  " + ", ".join(f"{kk}={vv:,}" for kk, vv in v.items()))
        elif isinstance(v, list):
            print(f"{k:<{width}}  {', '.join(map(str, v))}")
        elif isinstance(v, int) and not isinstance(v, bool):
            print(f"{k:<{width}}  {v:,}")
        else:
            print(f"{k:<{width}}  {v}")
    return 0


def _count(args: argparse.Namespace) -> int:
    from ..space import counting

    r = counting.count(args.space, max_edges=args.max_edges, device=args.device, progress=not args.no_progress)
    if args.json:
        print(json.dumps({k: r[k] for k in ("space", "labeled", "valid", "unique", "unique_networks", "seconds")}
                         | {k: r[k] for k in ("zero_cell", "device", "peak_rss_mb")}))
        return 0
    print(f"space            {r['space']}")
    for key in ("labeled", "valid", "unique", "unique_networks"):
        print(f"{key:<16} {r[key]:,}" if r[key] is not None else f"{key:<16} -")
    print(f"zero_cell        {'allowed (one more class)' if r['zero_cell'] else 'not allowed'}")
    print(f"seconds          {r['seconds']}  (peak RSS {r['peak_rss_mb']:.0f} MB, {r['device']})")
    return 0


def _enumerate(args: argparse.Namespace) -> int:
    from ..space import counting

    check_outputs(("--out", args.out))
    t0 = time.perf_counter()
    n = counting.write_jsonl(args.space, args.out, max_edges=args.max_edges, progress=not args.no_progress)
    print(f"wrote {n:,} cells to {args.out} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0
