"""The ``cgnf`` command: ``space info|count|enumerate``, ``cell hash`` (more come with later work).

Bad input exits with status 2 and one line on stderr naming the problem.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any, TextIO


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


def _space_info(args: argparse.Namespace) -> int:
    from .space import nb201, spaces

    sp = spaces.get(args.space)
    info = sp.info()
    if isinstance(sp, spaces.NB201Space):
        t0 = time.perf_counter()
        info["classes"] = nb201.class_counts()
        info["seconds"] = round(time.perf_counter() - t0, 3)
    if args.json:
        print(json.dumps(info))
        return 0
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


def _space_count(args: argparse.Namespace) -> int:
    from .space import counting

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


def _space_enumerate(args: argparse.Namespace) -> int:
    from .space import counting

    t0 = time.perf_counter()
    n = counting.write_jsonl(args.space, args.out, max_edges=args.max_edges, progress=not args.no_progress)
    print(f"wrote {n:,} cells to {args.out} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0


def _nonneg_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {v}")
    return v


def _zc_score(args: argparse.Namespace) -> int:
    from .space import spaces
    from .zc import calibration_batch, load_folder, run
    from .zc.images import normalize

    if (args.n is None) == (args.cells is None):
        raise CLIError("give exactly one of --n N (cells sampled from the space) or --cells FILE.jsonl")
    sp = spaces.get(args.space)
    cells = sp.sample(args.n, seed=0, unique=True) if args.n is not None else run.read_cells_jsonl(args.cells)
    if args.images:
        x, y, _ = load_folder(args.images, per_class=max(1, args.batch_size // 10 + 1))
        batch = (normalize(x)[: args.batch_size], y[: args.batch_size])
    else:
        batch = calibration_batch(args.batch_size)
    t0 = time.perf_counter()
    summary = run.score_cells(cells, space=sp.name, proxies=args.proxies, store=args.store, batch=batch,
                              seed=args.seed, device=args.device, workers=args.workers,
                              progress=not args.no_progress, ray=args.ray)
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    print(json.dumps(summary))
    return 0


def _zc_export(args: argparse.Namespace) -> int:
    from .zc import run

    n = run.export_csv(args.store, args.out)
    print(f"wrote {n:,} scores to {args.out}", file=sys.stderr)
    return 0


def _train_gvae(args: argparse.Namespace) -> int:
    from .train.gvae import TrainGVAEConfig, train_gvae

    attrs = [a.strip() for a in args.attributes.split(",")] if args.attributes else None
    cfg = TrainGVAEConfig(space=args.space, store=args.store, attributes=attrs, n_unlabelled=args.unlabelled,
                          include_seed_space=args.seed_space_cells, heldout=args.heldout, latent=args.latent,
                          hidden=args.hidden, layers=args.layers, batch=args.batch, epochs=args.epochs, lr=args.lr,
                          beta=args.beta, margin=args.margin, triplet_weight=args.triplet_weight,
                          predictor_weight=args.predictor_weight, seed=args.seed)
    metrics = train_gvae(cfg, args.out, device=args.device, backend=args.backend, progress=not args.no_progress)
    print(json.dumps(metrics))
    return 0


def _evaluate_predictor(args: argparse.Namespace) -> int:
    from .evaluate.predictor import evaluate_predictor

    r = evaluate_predictor(args.gvae, args.truth, args.space, n=args.n, device=args.device, workers=args.workers,
                           progress=not args.no_progress)
    if args.json:
        print(json.dumps(r))
        return 0
    print(f"{r['space']}: {r['cells']:,} cells ({r['networks']:,} networks); error as % of the max training value")
    print(f"{'attribute':<12} {'n':>7} {'mean %':>8} {'max %':>8}")
    for a, d in r["per_attribute"].items():
        print(f"{a:<12} {d['n']:>7,} {d['mean_error_pct']:>8.3f} {d['max_error_pct']:>8.3f}")
    print(f"{'ZC pooled':<12} {r['n']:>7,} {r['mean_error_pct']:>8.3f} {r['max_error_pct']:>8.3f}")
    return 0


def _evaluate_latent(args: argparse.Namespace) -> int:
    from .evaluate.predictor import evaluate_latent

    r = evaluate_latent(args.gvae, args.truth, args.space, png=args.png, color=args.color, n=args.n,
                        device=args.device, workers=args.workers, progress=not args.no_progress)
    print(json.dumps(r))
    return 0


def _read_cells(stream: TextIO) -> Iterator[tuple[int, Any, str | None]]:
    """Yields ``(line number, Cell, NB201 string or None)`` for non-blank lines."""
    from .space import Cell, nb201

    for lineno, line in enumerate(stream, start=1):
        text = line.strip()
        if not text:
            continue
        try:
            if text.startswith("{"):
                yield lineno, Cell.from_json(text), None
            else:
                yield lineno, nb201.to_cell(text), text
        except ValueError as e:
            raise CLIError(f"line {lineno}: {e}") from None


def _cell_hash(args: argparse.Namespace) -> int:
    from .space import NB101_OPS, nb201

    stream = open(args.input) if args.input else sys.stdin
    try:
        for _, cell, arch in _read_cells(stream):
            pruned = cell.pruned(allow_zero=True)
            row: dict[str, Any] = {
                "code": pruned.canonical_code(),
                "network_code": pruned.network_code(),
                "nb101_hash": None,
                "nb201": pruned.to_nb201(),
            }
            if not pruned.is_zero and all(o in NB101_OPS for o in pruned.ops[1:-1]):
                row["nb101_hash"] = pruned.nb101_hash()
            if arch is not None:
                row["nb201_index"] = nb201.index_of(arch)
                row["nb201_unique_str"] = nb201.unique_str(arch)
            print(json.dumps(row), flush=False)
    finally:
        if args.input:
            stream.close()
    return 0


def _build_parser() -> argparse.ArgumentParser:
    from .space import spaces

    p = argparse.ArgumentParser(prog="cgnf", description="cgnf_fast: cells, design spaces and (soon) sampling.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    sp = sub.add_parser("space", help="design spaces")
    sps = sp.add_subparsers(dest="space_command", metavar="SUBCOMMAND", required=True)
    info = sps.add_parser("info", help="describe a design space (vocabulary, limits, sizes)")
    info.add_argument("space", help=f"one of: {', '.join(spaces.names())}")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.set_defaults(func=_space_info)

    cnt = sps.add_parser("count", help="exact numbers of labelled, valid and unique cells and networks")
    cnt.add_argument("space", help=f"one of: {', '.join(spaces.names())}")
    cnt.add_argument("--max-edges", type=_nonneg_int, default=None, help="override the space's edge limit")
    cnt.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    cnt.add_argument("--json", action="store_true", help="print one JSON object")
    cnt.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    cnt.set_defaults(func=_space_count)
    en = sps.add_parser("enumerate", help="write every unique cell of a space as JSON lines")
    en.add_argument("space", help=f"one of: {', '.join(spaces.names())}")
    en.add_argument("--max-edges", type=_nonneg_int, default=None, help="override the space's edge limit")
    en.add_argument("--out", required=True, help="output file (.jsonl)")
    en.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    en.set_defaults(func=_space_enumerate)

    zp = sub.add_parser("zc", help="zero-cost proxies")
    zps = zp.add_subparsers(dest="zc_command", metavar="SUBCOMMAND", required=True)
    zs = zps.add_parser("score", help="score cells into a resumable SQLite store")
    zs.add_argument("space", help=f"one of: {', '.join(spaces.names())}")
    zs.add_argument("--n", type=_nonneg_int, help="score N distinct cells sampled from the space (seed 0)")
    zs.add_argument("--cells", help="score the cells of a JSONL file ({'matrix', 'ops'} per line)")
    zs.add_argument("--proxies", required=True, help="comma-separated proxy names")
    zs.add_argument("--store", required=True, help="the SQLite store (created when missing)")
    zs.add_argument("--workers", type=int, default=1)
    zs.add_argument("--device", default="cpu")
    zs.add_argument("--seed", type=int, default=0)
    zs.add_argument("--batch-size", type=int, default=64)
    zs.add_argument("--images", help="a folder of class sub-folders instead of the embedded CIFAR-10 batch")
    zs.add_argument("--ray", metavar="local|auto|ADDRESS", default=None,
                    help="score on Ray: 'local' starts a local instance, 'auto' or HOST:PORT joins a cluster "
                    "(needs the distributed extra); the store stays with this process")
    zs.add_argument("--no-progress", action="store_true")
    zs.set_defaults(func=_zc_score)
    ze = zps.add_parser("export", help="write a store's scores as CSV")
    ze.add_argument("--store", required=True)
    ze.add_argument("--out", required=True)
    ze.set_defaults(func=_zc_export)

    tp = sub.add_parser("train", help="train models")
    tps = tp.add_subparsers(dest="train_command", metavar="SUBCOMMAND", required=True)
    tg = tps.add_parser("gvae", help="train the graph VAE + attribute predictor (resumable: rerun to continue)")
    tg.add_argument("--space", required=True, help=f"one of: {', '.join(spaces.names())}")
    tg.add_argument("--store", required=True, help="score store with ZC labels for cells of the space")
    tg.add_argument("--out", required=True, help="run directory (checkpoints, final model, metrics)")
    tg.add_argument("--attributes", help="comma-separated proxies to learn (default: those in the store)")
    tg.add_argument("--unlabelled", type=_nonneg_int, default=100_000, help="distinct unlabelled cells sampled")
    tg.add_argument("--seed-space-cells", type=_nonneg_int, default=20_000,
                    help="also learn (without labels) up to this many seed-space structures")
    tg.add_argument("--heldout", type=_nonneg_int, default=2000, help="cells kept out to measure reconstruction")
    tg.add_argument("--latent", type=int, default=32)
    tg.add_argument("--hidden", type=int, default=128)
    tg.add_argument("--layers", type=int, default=4)
    tg.add_argument("--batch", type=int, default=512)
    tg.add_argument("--epochs", type=int, default=40)
    tg.add_argument("--lr", type=float, default=1e-3)
    tg.add_argument("--beta", type=float, default=1e-3, help="weight of the KL term")
    tg.add_argument("--margin", type=float, default=0.5, help="triplet margin m")
    tg.add_argument("--triplet-weight", type=float, default=1.0, help="0 disables the triplet loss (ablation)")
    tg.add_argument("--predictor-weight", type=float, default=10.0)
    tg.add_argument("--seed", type=int, default=0)
    tg.add_argument("--device", default="cpu")
    tg.add_argument("--backend", choices=("native", "torch"), default="native", help="message-passing kernel")
    tg.add_argument("--no-progress", action="store_true")
    tg.set_defaults(func=_train_gvae)

    ev = sub.add_parser("evaluate", help="measure trained models")
    evs = ev.add_subparsers(dest="evaluate_command", metavar="SUBCOMMAND", required=True)
    ep = evs.add_parser("predictor", help="attribute-predictor error on a whole seed space (paper, Sec. 4.2)")
    el = evs.add_parser("latent", help="how the latent space clusters by ZC score (numbers + PNG), e.g. "
                        "with vs without the triplet loss")
    for e in (ep, el):
        e.add_argument("--space", default="nb201", choices=("nb201", "nb101"))
        e.add_argument("--truth", required=True,
                       help="score store with (or to receive) the seed space's true scores")
        e.add_argument("--n", type=_nonneg_int, default=None, help="NB101: cells sampled (default 4000)")
        e.add_argument("--device", default="cpu")
        e.add_argument("--workers", type=int, default=1, help="processes scoring missing cells")
        e.add_argument("--no-progress", action="store_true")
    ep.add_argument("--gvae", required=True, help="a G-VAE run directory")
    ep.add_argument("--json", action="store_true", help="print one JSON object")
    ep.set_defaults(func=_evaluate_predictor)
    el.add_argument("--gvae", required=True, action="append", help="a G-VAE run directory (repeat to compare)")
    el.add_argument("--png", help="write the 2-D projections coloured by a ZC score here")
    el.add_argument("--color", help="attribute that colours the points (default: the first ZC proxy)")
    el.set_defaults(func=_evaluate_latent)

    cp = sub.add_parser("cell", help="single cells")
    cps = cp.add_subparsers(dest="cell_command", metavar="SUBCOMMAND", required=True)
    h = cps.add_parser(
        "hash",
        help="codes and hashes of cells read one per line (JSON {'matrix','ops'} or NB201 strings)",
        description="Reads cells one per line (a JSON object with 'matrix' and 'ops', or an NB201 "
        "string) and writes one JSON object per cell: canonical code and network code of the pruned "
        "cell, NB101 hash (NB101 ops only), and the NB201 string of its class (or null).",
    )
    h.add_argument("--input", "-i", help="read from this file instead of stdin")
    h.set_defaults(func=_cell_hash)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # e.g. `cgnf cell hash | head`
        return 0
    except (CLIError, ValueError, OSError) as e:
        print(f"cgnf: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cgnf: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
