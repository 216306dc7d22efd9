"""The ``cgnf`` command: ``space info|count|enumerate``, ``zc score|export``, ``train gvae|flow``,
``pipeline``, ``evaluate predictor|latent|sampler``, ``sample``, ``cell hash``.

Bad input exits with status 2 and one line on stderr naming the problem.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import shlex
import sys
import time
from pathlib import Path
from collections.abc import Iterator, Sequence
from typing import Any, TextIO

import torch

from ._native import BUILT_WITH_CUDA, CudaUnavailable, check_device


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

    _check_outputs(("--out", args.out))
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


def _pos_int(text: str) -> int:
    v = _nonneg_int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {v}")
    return v


def _zc_score(args: argparse.Namespace) -> int:
    from .space import spaces
    from .zc import calibration_batch, run
    from .zc.images import folder_batch

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
                              progress=not args.no_progress, ray=args.ray)
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    print(json.dumps(summary))
    return 0


def _zc_export(args: argparse.Namespace) -> int:
    from .zc import run

    _check_outputs(("--out", args.out))
    n = run.export_csv(args.store, args.out)
    print(f"wrote {n:,} scores to {args.out}", file=sys.stderr)
    return 0


HOLDOUT_HELP = ("labels kept out so the predictor can be evaluated on the seed space: 'eval' (default) only the "
                "networks of its evaluation set (all of NB201; 4,000 NB101 networks), 'seed' every seed-space cell")


def _train_gvae(args: argparse.Namespace) -> int:
    from .train.gvae import TrainGVAEConfig, train_gvae

    attrs = [a.strip() for a in args.attributes.split(",")] if args.attributes else None
    cfg = TrainGVAEConfig(space=args.space, store=args.store, attributes=attrs, n_unlabelled=args.unlabelled,
                          include_seed_space=args.seed_space_cells, heldout=args.heldout, latent=args.latent,
                          hidden=args.hidden, layers=args.layers, batch=args.batch, epochs=args.epochs, lr=args.lr,
                          beta=args.beta, margin=args.margin, triplet_weight=args.triplet_weight,
                          predictor_weight=args.predictor_weight, predictor=args.predictor,
                          path_channels=args.path_channels, degree_features=args.degree_features,
                          predictor_lr=args.predictor_lr, holdout=args.holdout, seed=args.seed)
    metrics = train_gvae(cfg, args.out, device=args.device, backend=args.backend, progress=not args.no_progress)
    print(json.dumps(metrics))
    return 0


def _lr_or_none(text: str) -> float | None:
    if text.strip().lower() == "none":
        return None
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a learning rate or 'none', got {text!r}") from None
    if not math.isfinite(v) or v < 0:
        raise argparse.ArgumentTypeError(f"a learning rate is a finite number >= 0, got {text!r}")
    return v


def _int_list(text: str) -> list[int]:
    try:
        v = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not v:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    return v


def _train_flow(args: argparse.Namespace) -> int:
    from .train.flow import TrainFlowConfig, train_flow

    given = {
        "conditions": [a.strip() for a in args.conditions.split(",") if a.strip()] if args.conditions else None,
        "hidden": args.hidden, "activation": args.activation, "divergence": args.divergence,
        "latent_norm": args.latent_norm, "solver": args.solver, "rtol": args.rtol, "atol": args.atol,
        "eval_rtol": args.eval_rtol, "eval_atol": args.eval_atol, "batch": args.batch, "epochs": args.epochs,
        "lr": args.lr, "weight_decay": args.weight_decay, "clip": args.clip, "seed": args.seed,
        "ckpt_every": args.ckpt_every, "val_fraction": args.val_fraction, "sanity_n": args.sanity_n,
    }
    kw = {k: v for k, v in given.items() if v is not None}  # unset: TrainFlowConfig's defaults
    if args.max_cells is not None:
        kw["max_cells"] = None if args.max_cells == 0 else args.max_cells
    if args.no_adjoint:
        kw["adjoint"] = False
    if args.no_zero_init:
        kw["zero_init"] = False
    metrics = train_flow(TrainFlowConfig(**kw), args.gvae, args.out, device=args.device,
                         progress=not args.no_progress)
    print(json.dumps(metrics))
    return 0


def _write_json_list_atomic(path: str, rows: list[Any]) -> None:
    """A JSON list, one element per line, written to ``PATH.partial`` and renamed into place."""
    from .io import write_text_atomic

    write_text_atomic(path, "[\n" + ",\n".join(json.dumps(r) for r in rows) + "\n]\n")


def _pipeline(args: argparse.Namespace) -> int:
    from .pipeline import PipelineConfig, run_pipeline

    cfg = PipelineConfig(space=args.space, store=args.store,
                         proxies=[a.strip() for a in args.proxies.split(",") if a.strip()], labels=args.labels,
                         stratified=args.stratified, batch_size=args.batch_size, images=args.images,
                         workers=args.workers, seed=args.seed, gvae_epochs=args.gvae_epochs, gvae_lr=args.gvae_lr,
                         unlabelled=args.unlabelled, seed_space_cells=args.seed_space_cells, heldout=args.heldout,
                         latent=args.latent, gvae_hidden=args.gvae_hidden, gvae_layers=args.gvae_layers,
                         gvae_batch=args.gvae_batch, gvae_predictor=args.gvae_predictor,
                         gvae_predictor_lr=args.gvae_predictor_lr, seed_labels=args.seed_labels,
                         gvae_holdout=args.gvae_holdout,
                         flow_epochs=args.flow_epochs, flow_batch=args.flow_batch, flow_max_cells=args.flow_max_cells,
                         flow_hidden=args.flow_hidden)
    summary = run_pipeline(cfg, args.out, device=args.device, progress=not args.no_progress,
                           command=["cgnf", *args.argv] if args.record_argv else None)
    print(json.dumps({"out": args.out, "model": summary["stages"]["export"]["dir"],
                      **{k: v.get("seconds") for k, v in summary["stages"].items() if isinstance(v, dict)}}))
    return 0


def _reference_arg(text: str) -> Any:
    """``--reference``: ``best``, an NB201 string, or a JSON cell ``{"matrix": ..., "ops": ...}``."""
    if not text.lstrip().startswith("{"):
        return text
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise CLIError(f"--reference: not valid JSON ({e})") from None
    if not isinstance(obj, dict) or "matrix" not in obj or "ops" not in obj:
        raise CLIError('--reference: a JSON cell is an object with keys "matrix" and "ops"')
    return (obj["matrix"], obj["ops"])


def _sample(args: argparse.Namespace) -> int:
    import importlib.util
    import os
    from pathlib import Path

    from .sampling import COUNT_ATTRIBUTES, cell_text, draw_cells, parse_condition_args, sample_with_info

    if args.png and importlib.util.find_spec("matplotlib") is None:
        raise CLIError("--png needs matplotlib: pip install 'cgnf_fast[plot]'")
    _check_outputs(("--out", args.out), ("--png", args.png))
    condition = parse_condition_args(args.condition or [])
    reference = _reference_arg(args.reference)
    t0 = time.perf_counter()
    cells, info = sample_with_info(reference, condition or None, n=args.n, space=args.space,
                                   temperature=args.temperature, seed=args.seed, novel_only=args.novel_only,
                                   device=args.device, model=args.model, oversample=args.oversample)
    seconds = time.perf_counter() - t0
    png_tmp = None
    if args.png:  # drawn first, both files renamed into place only once everything succeeded
        png_tmp = args.png + ".drawing.png"
        draw_cells(cells, png_tmp, key_attribute=next(iter(condition), None) if condition else None)
    try:
        if args.out:
            _write_json_list_atomic(args.out, [c.to_json() for c in cells])
        if png_tmp:
            os.replace(png_tmp, args.png)
    finally:
        if png_tmp and os.path.exists(png_tmp):
            os.unlink(png_tmp)

    def fmt(a: str, v: float) -> str:
        return f"{v:.4f}M" if a in COUNT_ATTRIBUTES else f"{v:.4g}"

    ref = info["reference_nb201"] or cell_text(info["reference"])
    print(f"reference  {ref}")
    print("predicted  " + ", ".join(f"{a}={fmt(a, v)}" for a, v in info["reference_predicted"].items()))
    tg = ", ".join(f"{a}={fmt(a, v)}" + (f" ({info['condition'][a].text})" if a in info["condition"] else "")
                   for a, v in info["targets"].items())
    filters = [t for t in info["condition"].values() if t.attribute in COUNT_ATTRIBUTES
               and t.kind in ("at_most", "at_least")]
    if filters:
        tg += "; filters on exact counts: " + ", ".join(f"{t.attribute}{t.text}" for t in filters)
    print(f"targets    {tg}")
    print(f"drew       {info['drawn']} latents in {info['rounds']} round(s), {seconds:.1f} s: {info['repaired']} "
          f"repaired, {info['invalid']} invalid, {info['duplicates']} duplicates"
          + (f", {info['in_seed_space_dropped']} in the seed space dropped" if args.novel_only else "")
          + (f", {info['outside_bounds']} outside the bounds" if filters else ""))
    attrs = list(cells[0].predicted) if cells else []
    head = [f"{'#':>3}", f"{'seed':>4}", f"{'params':>9}", f"{'FLOPs':>9}"] + [f"{a:>10}" for a in attrs] + ["cell"]
    print()
    print("  ".join(head))
    for i, c in enumerate(cells, start=1):
        seed_mark = "-" if c.in_seed_space is None else ("yes" if c.in_seed_space else "no")
        row = [f"{i:>3}", f"{seed_mark:>4}", f"{c.params / 1e6:>8.4f}M", f"{c.flops / 1e6:>8.2f}M"]
        row += [f"{fmt(a, c.predicted[a]):>10}" for a in attrs]
        row.append(c.nb201 or cell_text(c.cell))
        print("  ".join(row))
    print("\nparams/FLOPs: exact, of the network the cell builds; other columns: G-VAE predictions; seed: inside "
          f"the seed space ({info['seed_space'] or 'none'})")
    for flag, path in (("--out", args.out), ("--png", args.png)):
        if path:
            print(f"wrote {path}", file=sys.stderr)
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
    sizes = sorted({k for d in r["per_attribute"].values() for k in d["by_vertices"]}, key=int)
    print("mean % by vertices of the pruned cell: " + "  ".join(f"{k}" for k in sizes))
    for a, d in r["per_attribute"].items():
        print(f"{a:<12} " + "  ".join(f"{d['by_vertices'][k]['mean_error_pct']:.2f}" if k in d["by_vertices"] else "-"
                                      for k in sizes))
    return 0


def _evaluate_latent(args: argparse.Namespace) -> int:
    from .evaluate.predictor import evaluate_latent

    _check_outputs(("--png", args.png))
    r = evaluate_latent(args.gvae, args.truth, args.space, png=args.png, color=args.color, n=args.n,
                        device=args.device, workers=args.workers, progress=not args.no_progress)
    print(json.dumps(r))
    return 0


def _evaluate_sampler(args: argparse.Namespace) -> int:
    from .evaluate.sampler import evaluate_sampler

    _check_outputs(("--png", args.png))
    reference = _reference_arg(args.reference)
    try:
        levels = [float(x) for x in args.levels.split(",") if x.strip()]
    except ValueError:
        raise CLIError(f"--levels: expected comma-separated numbers, got {args.levels!r}") from None
    r = evaluate_sampler(args.model, space=args.space, reference=reference,
                         attributes=[a.strip() for a in args.attributes.split(",") if a.strip()], levels=levels,
                         n=args.n, batch=args.batch, batches=args.batches, seed=args.seed,
                         temperature=args.temperature,
                         oversample=args.oversample, store=args.store,
                         png=args.png, device=args.device, progress=not args.no_progress)
    if args.json:
        print(json.dumps(r))
        return 0
    print(f"space {r['space']}, reference predicted " + ", ".join(f"{k}={v:.4g}" for k, v in
                                                                r["reference_predicted"].items()))
    for a, c in r["conditioning"].items():
        print(f"{a}: Spearman(target, measured) = {c['spearman_target_achieved']:.3f} over "
              f"{sum(x['n'] for x in c['levels'])} cells; level means Spearman = {c['spearman_levels_means']}")
        print(f"  {'level':>6} {'target':>10} {'measured':>10} {'predicted':>10} {'in seed':>7}")
        for x in c["levels"]:
            print(f"  {x['level_std']:>+6.2f} {x['target']:>10.4g} {x['achieved_mean']:>10.4g} "
                  f"{x['predicted_mean']:>10.4g} {x['in_seed_space']:>4}/{x['n']}")
    if "batch" in r:
        b = r["batch"]
        nov = f"{b['novelty']:.1%}" if b["novelty"] is not None else "-"
        print(f"{b['batch']} draws: validity {b['validity']:.1%}, uniqueness {b['uniqueness']:.1%}, "
              f"novelty (outside {b['seed_space']}) {nov}")
        bs = r["batches"]
        if len(bs["runs"]) > 1:
            print(f"{len(bs['runs'])} batches of {b['batch']} (seeds {bs['seeds'][0]}-{bs['seeds'][-1]}): uniqueness "
                  f"{', '.join(format(x['uniqueness'], '.1%') for x in bs['runs'])} (mean {bs['uniqueness_mean']:.1%}, "
                  f"min {bs['uniqueness_min']:.1%}); validity min {bs['validity_min']:.1%}")
    return 0


def _seeds_arg(text: str) -> list[int]:
    try:
        seeds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise CLIError(f"--seeds: expected comma-separated integers, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise CLIError(f"--seeds: expected distinct comma-separated integers, got {text!r}")
    return seeds


def _check_outputs(*outputs: tuple[str, str | None]) -> None:
    """Refuses, before any work, an output file (flag, path) whose folder does not exist."""
    for flag, path in outputs:
        if path and not Path(path).resolve().parent.is_dir():
            raise CLIError(f"{flag} {path}: the folder {Path(path).resolve().parent} does not exist")


def _upper_bound_like(args: argparse.Namespace, task_kw: dict[str, Any], sets: list[str], transfer: bool) -> int:
    from .evaluate.protocol import get_protocol
    from .evaluate.tasks import load_task
    from .evaluate.upper_bound import run_upper_bound, summary_markdown, transfer_markdown
    from .io import write_text_atomic

    proto = get_protocol(args.protocol, space=args.space)
    task = load_task(args.task, proto, **task_kw)
    _check_outputs(("--json", args.json), ("--md", args.md), ("--png", args.png))
    if args.png and importlib.util.find_spec("matplotlib") is None:
        raise CLIError("--png needs matplotlib: pip install 'cgnf_fast[plot]'")
    png_tmp = args.png + ".drawing.png" if args.png else None
    r = run_upper_bound(args.space, _reference_arg(args.reference), n=args.n, seed=args.seed, model=args.model,
                        task=task, protocol=proto, seeds=_seeds_arg(args.seeds), sets=sets, store=args.store,
                        work_dir=args.work_dir, device=args.device, png=png_tmp, benchmark=None if not transfer else False,
                        progress=not args.no_progress)
    table = (transfer_markdown(r) + "\n\n" + summary_markdown(r).split("\n\n", 1)[1]) if transfer \
        else summary_markdown(r)
    print(f"{r['task']}\n{r['protocol_text']}\n")
    print(transfer_markdown(r) if transfer else summary_markdown(r, per_cell=False))
    if args.json:
        write_text_atomic(args.json, json.dumps(r, indent=1))
    if args.md:
        write_text_atomic(args.md, f"Task: {r['task']}\n\n{r['protocol_text']}\n\n{table}\n")
    if png_tmp:
        os.replace(png_tmp, args.png)
    return 0


def _evaluate_upper_bound(args: argparse.Namespace) -> int:
    sets = [x.strip() for x in args.sets.split(",") if x.strip()]
    return _upper_bound_like(args, {}, sets, transfer=False)


def _evaluate_transfer(args: argparse.Namespace) -> int:
    return _upper_bound_like(args, dict(loss=args.loss, metric=args.metric, objective=args.objective), ["generated"],
                             transfer=True)


def _evaluate_all(args: argparse.Namespace) -> int:
    from .evaluate.report import run_all

    r = run_all(args.out, protocol=args.protocol, seeds=tuple(_seeds_arg(args.seeds)), n=args.n, seed=args.seed,
                store=args.store, truth_nb201=args.truth_nb201, truth_nb101=args.truth_nb101,
                model_nb201=args.model_nb201, model_nb101=args.model_nb101, transfer_task=args.transfer_task,
                transfer_loss=args.transfer_loss, transfer_metric=args.transfer_metric,
                nb101_cells=args.nb101_cells, device=args.device,
                command="cgnf " + " ".join(shlex.quote(a) for a in args.argv), progress=not args.no_progress)
    print(f"wrote {Path(args.out) / 'report.md'} ({r['seconds'] / 60:.1f} min)")
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
    from .sampling import DEFAULT_OVERSAMPLE
    from .space import spaces
    from . import __version__
    from .train.data import HOLDOUTS

    p = argparse.ArgumentParser(prog="cgnf",
                                description="cgnf_fast: cells, design spaces, zero-cost scores, models and sampling.")
    cuda = "CUDA kernels" if BUILT_WITH_CUDA else "no CUDA kernels"
    p.add_argument("--version", action="version", version=f"cgnf_fast {__version__} ({cuda}; torch {torch.__version__})")
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
    zs.add_argument("--stratified", action="store_true",
                    help="with --n: spread the cells evenly over vertex counts (small cells are rare otherwise)")
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
    tg.add_argument("--predictor", choices=("graph", "paths", "latent"), default="graph",
                    help="attribute predictor: learned path gains of the cell's graph (default; a latent through its "
                    "decoded cell), of the decoder's soft graph (paths), or an MLP on z (latent)")
    tg.add_argument("--predictor-lr", type=_lr_or_none, default=3e-3,
                    help="the predictor's learning rate ('none': --lr, one parameter group, as older runs)")
    tg.add_argument("--degree-features", action=argparse.BooleanOptionalAction, default=None,
                    help="the path predictor also reads output in-degree features (default: on for NB101-skeleton "
                    "spaces, whose outputs concatenate)")
    tg.add_argument("--path-channels", type=int, default=16, help="learned path-gain channels (graph/paths predictors)")
    tg.add_argument("--holdout", choices=HOLDOUTS, default="eval", help=HOLDOUT_HELP)
    tg.add_argument("--seed", type=int, default=0)
    tg.add_argument("--device", default="cpu")
    tg.add_argument("--backend", choices=("native", "torch"), default="native", help="message-passing kernel")
    tg.add_argument("--no-progress", action="store_true")
    tg.set_defaults(func=_train_gvae)

    tf = tps.add_parser("flow", help="train the conditional flow on a trained G-VAE's latents (resumable: rerun to "
                        "continue); prints the metrics as JSON")
    tf.add_argument("--gvae", required=True, help="the G-VAE run directory (what train gvae wrote)")
    tf.add_argument("--out", required=True, help="run directory (checkpoints, final flow, metrics); for `cgnf sample "
                    "--model DIR` use DIR/flow next to DIR/gvae")
    tf.add_argument("--conditions", help="comma-separated G-VAE attributes to condition on (default: all of them)")
    tf.add_argument("--hidden", type=_int_list, help="hidden sizes of the dynamics MLP, e.g. 128,128")
    tf.add_argument("--activation", choices=("tanh", "softplus"))
    tf.add_argument("--divergence", choices=("exact", "hutchinson"),
                    help="default: exact for latents up to 64 dims, else hutchinson")
    tf.add_argument("--latent-norm", choices=("data", "none"))
    tf.add_argument("--solver", help="an adaptive torchdiffeq solver (default dopri5)")
    tf.add_argument("--rtol", type=float, help="training solver tolerance")
    tf.add_argument("--atol", type=float, help="training solver tolerance")
    tf.add_argument("--eval-rtol", type=float, help="tolerance saved with the flow (evaluation, sampling)")
    tf.add_argument("--eval-atol", type=float, help="tolerance saved with the flow (evaluation, sampling)")
    tf.add_argument("--no-adjoint", action="store_true", help="backpropagate through the solver instead")
    tf.add_argument("--no-zero-init", action="store_true", help="do not start from the identity flow")
    tf.add_argument("--batch", type=int)
    tf.add_argument("--epochs", type=int)
    tf.add_argument("--lr", type=float)
    tf.add_argument("--weight-decay", type=float)
    tf.add_argument("--clip", type=float, help="gradient-norm clip")
    tf.add_argument("--seed", type=int)
    tf.add_argument("--ckpt-every", type=int, help="steps between checkpoints")
    tf.add_argument("--val-fraction", type=float)
    tf.add_argument("--max-cells", type=_nonneg_int, help="cap on the latents used (0: all)")
    tf.add_argument("--sanity-n", type=_nonneg_int, help="validation rows of the conditioning check")
    tf.add_argument("--device", default="cpu")
    tf.add_argument("--no-progress", action="store_true")
    tf.set_defaults(func=_train_flow)

    pl = sub.add_parser(
        "pipeline", help="everything from scratch: score labels on real images, train the G-VAE and the flow, "
        "export a model directory (resumable: rerun to continue)",
        description="Stages: (1) score LABELS random + STRATIFIED cells of the space (+ SEED_LABELS networks of its "
        "seed space) on CIFAR-10 images into the store, (2) train the G-VAE in OUT/gvae, (3) train the "
        "conditional flow in OUT/flow, (4) export the sampling model to OUT/model (use with `cgnf sample --model "
        "OUT/model`). Defaults reproduce the pretrained nb201-like model that ships with the package.")
    pl.add_argument("--space", required=True, help=f"one of: {', '.join(spaces.names())}")
    pl.add_argument("--out", required=True, help="run directory")
    pl.add_argument("--store", help="score store (default OUT/scores.sqlite; cells already scored are reused)")
    pl.add_argument("--proxies", default="synflow,nwot,params,flops", help="labels (comma-separated proxies)")
    pl.add_argument("--labels", type=_nonneg_int, default=3000, help="random cells scored (default 3000)")
    pl.add_argument("--stratified", type=_nonneg_int, default=1500,
                    help="cells spread over vertex counts, also scored (default 1500)")
    pl.add_argument("--seed-labels", type=_nonneg_int, default=0,
                    help="networks of the seed space outside its predictor evaluation set, also scored (NB101 only: "
                    "every NB201 cell is evaluated; default 0)")
    pl.add_argument("--batch-size", type=int, default=16, help="images per proxy evaluation (default 16)")
    pl.add_argument("--images", help="a folder of class sub-folders instead of the embedded CIFAR-10 batch")
    pl.add_argument("--workers", type=int, default=1, help="scoring processes")
    pl.add_argument("--seed", type=int, default=0)
    pl.add_argument("--gvae-epochs", type=int, default=40)
    pl.add_argument("--gvae-lr", type=float, default=2e-3)
    pl.add_argument("--unlabelled", type=_nonneg_int, default=100_000, help="unlabelled cells for the G-VAE")
    pl.add_argument("--seed-space-cells", type=_nonneg_int, default=20_000,
                    help="seed-space structures the G-VAE also learns (without their labels)")
    pl.add_argument("--heldout", type=_nonneg_int, default=2000, help="cells kept out to measure reconstruction")
    pl.add_argument("--latent", type=int, default=32)
    pl.add_argument("--gvae-hidden", type=int, default=128)
    pl.add_argument("--gvae-layers", type=int, default=4)
    pl.add_argument("--gvae-batch", type=int, default=512)
    pl.add_argument("--gvae-predictor", choices=("graph", "paths", "latent"), default="graph",
                    help="the G-VAE's attribute predictor (default: graph; see `cgnf train gvae --help`)")
    pl.add_argument("--gvae-predictor-lr", type=_lr_or_none, default=3e-3,
                    help="the predictor's learning rate ('none': --gvae-lr, as older runs)")
    pl.add_argument("--gvae-holdout", choices=HOLDOUTS, default="eval", help=HOLDOUT_HELP)
    pl.add_argument("--flow-epochs", type=int, default=30,
                    help="epochs of the flow (default 30; at 15 the shipped flows were still improving)")
    pl.add_argument("--flow-batch", type=int, default=256)
    pl.add_argument("--flow-max-cells", type=int, default=30_000, help="latents the flow trains on")
    pl.add_argument("--flow-hidden", type=_int_list, default=[128, 128])
    pl.add_argument("--device", default="cpu")
    pl.add_argument("--no-record-argv", dest="record_argv", action="store_false",
                    help="do not store the command line in the exported model.json")
    pl.add_argument("--no-progress", action="store_true")
    pl.set_defaults(func=_pipeline)

    sm = sub.add_parser(
        "sample", help="new cells around a reference under target attributes (prints a table)",
        description="Draws N distinct new cells around a reference with a trained G-VAE + conditional flow "
        "(--model DIR: a directory with gvae/ and flow/ sub-directories, from `cgnf train gvae --out DIR/gvae` "
        "and `cgnf train flow --gvae DIR/gvae --out DIR/flow`). Conditions: ATTR=VALUE with VALUE a number "
        "(store units; params/flops in millions or with K/M/G), a relative change of the reference's predicted "
        "value (+10%, -5%) or a bound (<=0.8M, >=1.2M; params/flops bounds filter on exact counts).")
    sm.add_argument("--space", default="nb201-like", help=f"one of: {', '.join(spaces.names())} (default nb201-like)")
    sm.add_argument("--reference", default="best", help="'best', an NB201 string, or a JSON cell "
                    "{\"matrix\": ..., \"ops\": ...} (default best)")
    sm.add_argument("--n", type=int, default=20, help="distinct cells to return (default 20)")
    sm.add_argument("--seed", type=int, default=0)
    sm.add_argument("--condition", action="append", metavar="ATTR=VALUE",
                    help="e.g. synflow=+10%% or 'params=<=0.8M'; repeatable or comma-separated")
    sm.add_argument("--temperature", type=float, default=1.0, help="std of the flow's base noise (default 1)")
    sm.add_argument("--oversample", type=float, default=DEFAULT_OVERSAMPLE,
                    help="candidates drawn per returned cell; the N closest to the condition are kept (default 5; "
                    "1 keeps the first N drawn)")
    sm.add_argument("--novel-only", action="store_true", help="drop cells inside the seed space")
    sm.add_argument("--model", help="model directory with gvae/ and flow/ (default: the installed pretrained one)")
    sm.add_argument("--out", help="write the cells as a JSON list here")
    sm.add_argument("--png", help="draw the cells as a grid of DAGs here (needs matplotlib)")
    sm.add_argument("--device", default="cpu")
    sm.set_defaults(func=_sample)

    ev = sub.add_parser("evaluate", help="measure trained models")
    evs = ev.add_subparsers(dest="evaluate_command", metavar="SUBCOMMAND", required=True)
    ep = evs.add_parser("predictor", help="attribute-predictor error on a whole seed space (paper, Sec. 4.2)")
    el = evs.add_parser("latent", help="how the latent space clusters by ZC score (numbers + PNG), e.g. "
                        "with vs without the triplet loss")
    for e in (ep, el):
        e.add_argument("--space", default="nb201", choices=("nb201", "nb101"))
        e.add_argument("--truth", required=True,
                       help="score store with (or to receive) the seed space's true scores")
        e.add_argument("--n", type=_nonneg_int, default=None,
                       help="NB101: cells sampled (default 4000: the networks a model trained with the 'eval' "
                       "holdout kept out of its labels; fewer are the first N of them)")
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

    es = evs.add_parser("sampler", help="does conditioning work (targets vs measured scores of sampled cells), "
                        "and validity / uniqueness / novelty of a batch of draws")
    es.add_argument("--model", help="model directory with gvae/ and flow/ (default: the installed pretrained one)")
    es.add_argument("--space", default="nb201-like")
    es.add_argument("--reference", default="best", help="'best', an NB201 string or a JSON cell")
    es.add_argument("--attributes", default="synflow,params", help="attributes conditioned one at a time")
    es.add_argument("--levels", default="-1,-0.5,0,0.5,1",
                    help="target offsets from the reference, in stds of the attribute; write --levels=-1,0,1 "
                    "(default -1,-0.5,0,0.5,1)")
    es.add_argument("--n", type=int, default=20, help="cells sampled per level (default 20)")
    es.add_argument("--batch", type=_nonneg_int, default=1000, help="draws for validity/uniqueness/novelty")
    es.add_argument("--batches", type=_pos_int, default=5,
                    help="independent batches of --batch draws (seeds SEED, SEED+1, ...; default 5)")
    es.add_argument("--seed", type=int, default=0)
    es.add_argument("--temperature", type=float, default=1.0)
    es.add_argument("--oversample", type=float, default=DEFAULT_OVERSAMPLE, help="as in cgnf sample")
    es.add_argument("--store", help="score store for the measured ZC scores (cache; needed for ZC attributes)")
    es.add_argument("--png", help="write target-vs-measured plots here")
    es.add_argument("--device", default="cpu")
    es.add_argument("--json", action="store_true")
    es.add_argument("--no-progress", action="store_true")
    es.set_defaults(func=_evaluate_sampler)

    def training_args(e: argparse.ArgumentParser) -> None:
        e.add_argument("--protocol", default=None,
                       help="training protocol: a preset (nb201, nb101, cpu-small, tiny), preset:key=value,... "
                       "overrides (e.g. cpu-small:epochs=10) or a JSON file (default: the seed benchmark's own "
                       "recipe, nb201 or nb101, a GPU budget; on a CPU use cpu-small)")
        e.add_argument("--seeds", default="0", help="training seeds, comma-separated (default 0)")
        e.add_argument("--store", help="score store caching trained results (and measured ZC scores): reruns "
                       "resume from it")
        e.add_argument("--device", default="cpu")
        e.add_argument("--no-progress", action="store_true")

    eu = evs.add_parser("upper-bound", help="train the reference, its generated cells and baselines with one "
                        "protocol and the same seeds (paper, Sec. 4.3)")
    et = evs.add_parser("transfer", help="reference vs generated cells on a user task (paper, Table 1)")
    for e in (eu, et):
        e.add_argument("--model", help="model directory (default: the installed pretrained one)")
        e.add_argument("--space", default="nb201-like")
        e.add_argument("--reference", default="best", help="'best', an NB201 string or a JSON cell")
        e.add_argument("--n", type=int, default=20, help="cells per set (default 20)")
        e.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
        training_args(e)
        e.add_argument("--work-dir", help="per-epoch checkpoints of the cell in training (resume mid-cell)")
        e.add_argument("--json", help="write the full result here")
        e.add_argument("--md", help="write the markdown table here")
        e.add_argument("--png", help="write the per-set plot here")
    eu.add_argument("--task", default="cifar10", help="cifar10 (shared JPEGs), a folder with train/ and test/ "
                    "class folders, or an .npz/.safetensors file (default cifar10)")
    eu.add_argument("--sets", default=",".join(("generated", "random-extended", "random-seed", "neighbours")),
                    help="cell sets to train (default: all four)")
    et.add_argument("--task", required=True, help="a folder with train/ and test/ class folders, or an "
                    ".npz/.safetensors file with x_train, y_train, x_test, y_test")
    et.add_argument("--loss", choices=("cross_entropy", "mse"), help="default: by the labels' dtype")
    et.add_argument("--metric", choices=("accuracy", "loss", "mse", "mae"), help="default: accuracy or mse")
    et.add_argument("--objective", choices=("max", "min"), help="default: the metric's direction")
    eu.set_defaults(func=_evaluate_upper_bound)
    et.set_defaults(func=_evaluate_transfer)

    ea = evs.add_parser("all", help="run every evaluation and write a markdown report with figures (resumable)")
    ea.add_argument("--out", required=True, help="report directory (report.md, results.json, PNGs)")
    training_args(ea)
    ea.add_argument("--n", type=int, default=20, help="cells per set (default 20)")
    ea.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    ea.add_argument("--truth-nb201", help="score store with (or to receive) true ZC scores of all NB201 cells")
    ea.add_argument("--truth-nb101", help="score store with (or to receive) true ZC scores of NB101 cells")
    ea.add_argument("--nb101-cells", type=int, default=4000,
                    help="NB101 cells for the predictor (default 4000; at most 4000 for a model trained with the "
                    "'eval' holdout, such as the shipped nb101-like one: the networks it held out)")
    ea.add_argument("--model-nb201", help="nb201-like model directory (default: the installed one)")
    ea.add_argument("--model-nb101", help="nb101-like model directory (default: the installed one, if any)")
    ea.add_argument("--transfer-task", help="a user task for the transfer section (folder or .npz/.safetensors)")
    ea.add_argument("--transfer-loss", choices=("cross_entropy", "mse"))
    ea.add_argument("--transfer-metric", choices=("accuracy", "loss", "mse", "mae"))
    ea.set_defaults(func=_evaluate_all)

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
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        if getattr(args, "device", None) is not None:
            check_device(args.device)
        return int(args.func(args) or 0)
    except BrokenPipeError:  # e.g. `cgnf cell hash | head`
        return 0
    except (CLIError, ValueError, OSError, CudaUnavailable) as e:
        print(f"cgnf: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cgnf: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
