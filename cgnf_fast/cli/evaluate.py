"""``cgnf evaluate predictor|latent|sampler|upper-bound|transfer|calibrate|beyond|all``: measure trained models."""

from __future__ import annotations

import argparse
import json
import os
import shlex
from pathlib import Path
from typing import Any

from ._common import (DEVICE_HELP, JSON_HELP, NO_PROGRESS_HELP, CLIError, add_alias, check_outputs, check_png, nonneg_int,
                      pos_int, reference_arg, seeds_arg)
from ..io import shown_paths
from .sample import MODEL_HELP

HELP = "measure trained models"
SEED_HELP = "sampling seed (default 0)"
REFERENCE_HELP = "'best', an NB201 string or a JSON cell"
PROTOCOL_KINDS = ("training protocol: a preset (nb201, nb101, cpu-calibrated, cpu-small, tiny), preset:key=value,... "
                  "overrides (e.g. cpu-small:epochs=10) or a JSON file")
PROTOCOL_HELP = (PROTOCOL_KINDS + " (default: the seed benchmark's own recipe, nb201 or nb101, a GPU budget; on a "
                 "CPU use cpu-calibrated, or cpu-small for a quick look)")


def add_parser(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser("evaluate", help=HELP)
    evs = ev.add_subparsers(dest="evaluate_command", metavar="SUBCOMMAND", required=True)
    _add_predictor_and_latent(evs)
    _add_sampler(evs)
    _add_upper_bound_and_transfer(evs)
    _add_calibrate(evs)
    _add_beyond(evs)
    _add_all(evs)


def _add_predictor_and_latent(evs: argparse._SubParsersAction) -> None:
    ep = evs.add_parser("predictor", help="attribute-predictor error on a whole seed space (paper, Sec. 4.2)")
    el = evs.add_parser("latent", help="how the latent space clusters by ZC score (numbers + PNG), e.g. "
                        "with vs without the triplet loss")
    for e in (ep, el):
        e.add_argument("--space", default="nb201", choices=("nb201", "nb101"),
                       help="the seed space evaluated on (default nb201)")
        e.add_argument("--truth", required=True,
                       help="score store with (or to receive) the seed space's true scores")
        e.add_argument("--n", type=nonneg_int, default=None,
                       help="NB101: cells sampled (default 4000: the networks a model trained with the 'eval' "
                       "holdout kept out of its labels; fewer are the first N of them)")
        e.add_argument("--device", default="cpu", help=DEVICE_HELP)
        e.add_argument("--workers", type=int, default=1, help="processes scoring missing cells")
        e.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)
    ep.add_argument("--gvae", required=True, help="a G-VAE run directory")
    ep.add_argument("--json", action="store_true", help=JSON_HELP)
    ep.set_defaults(func=_predictor)
    el.add_argument("--gvae", required=True, action="append", help="a G-VAE run directory (repeat to compare)")
    el.add_argument("--png", help="write the 2-D projections coloured by a ZC score here")
    el.add_argument("--color", help="attribute that colours the points (default: the first ZC proxy)")
    el.set_defaults(func=_latent)


def _add_sampler(evs: argparse._SubParsersAction) -> None:
    from ..sampling import DEFAULT_OVERSAMPLE

    es = evs.add_parser("sampler", help="does conditioning work (targets vs measured scores of sampled cells), "
                        "and validity / uniqueness / novelty of a batch of draws")
    es.add_argument("--model", help=MODEL_HELP)
    es.add_argument("--space", default="nb201-like", help="the model's design space (default nb201-like)")
    es.add_argument("--reference", default="best", help=REFERENCE_HELP)
    es.add_argument("--attributes", default="synflow,params", help="attributes conditioned one at a time")
    es.add_argument("--levels", default="-1,-0.5,0,0.5,1",
                    help="target offsets from the reference, in stds of the attribute; write --levels=-1,0,1 "
                    "(default -1,-0.5,0,0.5,1)")
    es.add_argument("--n", type=int, default=20, help="cells sampled per level (default 20)")
    es.add_argument("--draws", dest="draws", metavar="N", type=nonneg_int, default=1000,
                    help="latents drawn per batch for validity/uniqueness/novelty (default %(default)s)")
    add_alias(es, "--batch", "draws", type=nonneg_int)
    es.add_argument("--batches", type=pos_int, default=5,
                    help="independent batches of --draws draws (seeds SEED, SEED+1, ...; default 5)")
    es.add_argument("--seed", type=int, default=0, help=SEED_HELP)
    es.add_argument("--temperature", type=float, default=1.0, help="as in cgnf sample (default 1)")
    es.add_argument("--oversample", type=float, default=DEFAULT_OVERSAMPLE, help="as in cgnf sample")
    es.add_argument("--store", help="score store for the measured ZC scores (cache; needed for ZC attributes)")
    es.add_argument("--png", help="write target-vs-measured plots here")
    es.add_argument("--device", default="cpu", help=DEVICE_HELP)
    es.add_argument("--json", action="store_true", help=JSON_HELP)
    es.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)
    es.set_defaults(func=_sampler)


def _add_training_options(e: argparse.ArgumentParser) -> None:
    e.add_argument("--protocol", default=None,
                   help=PROTOCOL_HELP)
    e.add_argument("--seeds", default="0", help="training seeds, comma-separated (default 0)")
    e.add_argument("--store", help="score store caching trained results (and measured ZC scores): reruns "
                   "resume from it")
    e.add_argument("--device", default="cpu", help=DEVICE_HELP)
    e.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)


def _add_upper_bound_and_transfer(evs: argparse._SubParsersAction) -> None:
    eu = evs.add_parser("upper-bound", help="train the reference, its generated cells and baselines with one "
                        "protocol and the same seeds (paper, Sec. 4.3)")
    et = evs.add_parser("transfer", help="reference vs generated cells on a user task (paper, Table 1)")
    for e in (eu, et):
        e.add_argument("--model", help="model directory (default: the installed pretrained one)")
        e.add_argument("--space", default="nb201-like", help="the model's design space (default nb201-like)")
        e.add_argument("--reference", default="best", help=REFERENCE_HELP)
        e.add_argument("--n", type=int, default=20, help="cells per set (default 20)")
        e.add_argument("--seed", type=int, default=0, help=SEED_HELP)
        _add_training_options(e)
        e.add_argument("--work-dir", help="per-epoch checkpoints of the cell in training (resume mid-cell)")
        e.add_argument("--json", help="write the full result here")
        e.add_argument("--md", help="write the markdown table here")
        e.add_argument("--png", help="write the per-set plot here")
    eu.add_argument("--task", default="cifar10", help="cifar10 (shared JPEGs), a folder with train/ and test/ "
                    "class folders, or an .npz/.safetensors file (default cifar10)")
    eu.add_argument("--sets", default=",".join(("generated", "random-extended", "random-params", "random-seed",
                                                "neighbours")),
                    help="cell sets to train (default: all five)")
    et.add_argument("--task", required=True, help="a folder with train/ and test/ class folders, or an "
                    ".npz/.safetensors file with x_train, y_train, x_test, y_test")
    et.add_argument("--loss", choices=("cross_entropy", "mse"), help="default: by the labels' dtype")
    et.add_argument("--metric", choices=("accuracy", "loss", "mse", "mae"), help="default: accuracy or mse")
    et.add_argument("--objective", choices=("max", "min"), help="default: the metric's direction")
    eu.set_defaults(func=_upper_bound)
    et.set_defaults(func=_transfer)


def _nb201_table(table: str | None) -> str:
    from ..evaluate.upper_bound import nb201_table

    if table is not None:
        return table
    default = nb201_table()
    if default is None:
        raise CLIError("--table is required (or set CGNF_DATA_DIR to the shared data folder)")
    return str(default)


def _add_calibrate(evs: argparse._SubParsersAction) -> None:
    ec = evs.add_parser("calibrate", help="can a training protocol rank NB201's top cells? Spearman of trained vs "
                        "published accuracy on networks from the top few percent (resumable)")
    ec.add_argument("--protocol", required=True, help=PROTOCOL_KINDS)
    ec.add_argument("--seeds", default="0", help="training seeds, comma-separated (default 0)")
    ec.add_argument("--cells", type=pos_int, default=40, help="networks to train (default 40)")
    ec.add_argument("--top", type=float, default=0.05, help="share of NB201's networks they come from (default 0.05)")
    ec.add_argument("--draw-seed", type=int, default=0, help="which networks are drawn (default 0)")
    ec.add_argument("--table", help="NB201 table (default: $CGNF_DATA_DIR/nb201/naswot_arch_score_acc.csv)")
    ec.add_argument("--column", default="cifar10_test_200ep", help="its accuracy column (default %(default)s)")
    ec.add_argument("--store", help="score store caching trained results: reruns resume from it, and "
                    "upper-bound runs with the same protocol reuse them")
    ec.add_argument("--work-dir", help="per-epoch checkpoints of the cell in training (resume mid-cell)")
    ec.add_argument("--device", default="cpu", help=DEVICE_HELP)
    ec.add_argument("--json", help="write the full result here")
    ec.add_argument("--md", help="write the markdown summary here")
    ec.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)
    ec.set_defaults(func=_calibrate)


def _calibrate(args: argparse.Namespace) -> int:
    from ..io import write_text_atomic
    from ..searching.calibrate import calibration_markdown, run_calibration

    check_outputs(("--json", args.json), ("--md", args.md))
    try:
        r = run_calibration(args.protocol, table=_nb201_table(args.table), column=args.column, cells=args.cells,
                            top=args.top, seeds=seeds_arg(args.seeds), draw_seed=args.draw_seed, store=args.store,
                            device=args.device, work_dir=args.work_dir, progress=not args.no_progress)
    except ValueError as e:
        raise CLIError(str(e)) from None
    md = calibration_markdown(r)
    if args.json:
        write_text_atomic(args.json, json.dumps(shown_paths(r), indent=1))
    if args.md:
        write_text_atomic(args.md, md + "\n")
    print(md)
    return 0


def _add_beyond(evs: argparse._SubParsersAction) -> None:
    from ..searching.beyond import RULES

    eb = evs.add_parser("beyond", help="the paper's beyond-the-seed-space claim on ground truth: per rule, a seed "
                        "space cut out of NB201, a model trained with its labels only, 20 generated cells outside it "
                        "against baselines, over several seeds (resumable; about 5 min a rule here)")
    eb.add_argument("--out", required=True, help="run directory (each rule's labels, model and rows; beyond.json)")
    eb.add_argument("--table", help="NB201 table (default: $CGNF_DATA_DIR/nb201/naswot_arch_score_acc.csv)")
    eb.add_argument("--column", default="cifar10_test_200ep", help="its accuracy column (default %(default)s)")
    eb.add_argument("--rules", default=",".join(RULES), help=f"comma-separated rules (default all: {', '.join(RULES)})")
    eb.add_argument("--seeds", type=pos_int, default=10, help="sampling seeds (default 10)")
    eb.add_argument("--n", type=pos_int, default=20, help="cells per set (default 20)")
    eb.add_argument("--md", help="write the markdown table here")
    eb.add_argument("--png", help="write the per-rule plot here (needs matplotlib)")
    eb.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)
    eb.set_defaults(func=_beyond)


def _beyond(args: argparse.Namespace) -> int:
    from ..searching.beyond import BeyondConfig, plot_beyond, run_beyond, to_markdown

    if args.png:
        check_png(args.png)
    cfg = BeyondConfig(table=_nb201_table(args.table), column=args.column, rules=[r for r in args.rules.split(",") if r],
                       seeds=args.seeds, n=args.n)
    try:
        cfg.validate()
    except ValueError as e:
        raise CLIError(str(e)) from None
    result = run_beyond(cfg, args.out, progress=not args.no_progress)
    md = to_markdown(result)
    if args.md:
        Path(args.md).write_text(md)
    if args.png:
        plot_beyond(result, args.png)
    print(md)
    return 0


def _add_all(evs: argparse._SubParsersAction) -> None:
    ea = evs.add_parser("all", help="run every evaluation and write a markdown report with figures (resumable)")
    ea.add_argument("--out", required=True, help="report directory (report.md, results.json, PNGs)")
    _add_training_options(ea)
    ea.add_argument("--n", type=int, default=20, help="cells per set (default 20)")
    ea.add_argument("--seed", type=int, default=0, help=SEED_HELP)
    ea.add_argument("--truth-nb201", help="score store with (or to receive) true ZC scores of all NB201 cells")
    ea.add_argument("--truth-nb101", help="score store with (or to receive) true ZC scores of NB101 cells")
    ea.add_argument("--nb101-cells", type=int, default=4000,
                    help="NB101 cells for the predictor (default 4000; at most 4000 for a model trained with the "
                    "'eval' holdout, such as the shipped nb101-like one: the networks it held out)")
    ea.add_argument("--spaces", default="nb201-like,nb101-like",
                    help="design spaces whose sections run, comma-separated (default both)")
    ea.add_argument("--model-nb201", help="nb201-like model directory (default: the installed one)")
    ea.add_argument("--model-nb101", help="nb101-like model directory (default: the installed one, if any)")
    ea.add_argument("--transfer-task", help="a user task for the transfer section (folder or .npz/.safetensors)")
    ea.add_argument("--transfer-loss", choices=("cross_entropy", "mse"),
                    help="loss of the transfer task (default: by the labels' dtype)")
    ea.add_argument("--transfer-metric", choices=("accuracy", "loss", "mse", "mae"),
                    help="metric of the transfer task (default: accuracy or mse)")
    ea.set_defaults(func=_all)


def _predictor(args: argparse.Namespace) -> int:
    from ..evaluate.predictor import evaluate_predictor

    r = evaluate_predictor(args.gvae, args.truth, args.space, n=args.n, device=args.device, workers=args.workers,
                           progress=not args.no_progress)
    if args.json:
        print(json.dumps(shown_paths(r)))
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


def _latent(args: argparse.Namespace) -> int:
    from ..evaluate.predictor import evaluate_latent

    check_outputs(("--png", args.png))
    r = evaluate_latent(args.gvae, args.truth, args.space, png=args.png, color=args.color, n=args.n,
                        device=args.device, workers=args.workers, progress=not args.no_progress)
    print(json.dumps(shown_paths(r)))
    return 0


def _sampler(args: argparse.Namespace) -> int:
    from ..evaluate.sampler import evaluate_sampler

    check_outputs(("--png", args.png))
    reference = reference_arg(args.reference)
    try:
        levels = [float(x) for x in args.levels.split(",") if x.strip()]
    except ValueError:
        raise CLIError(f"--levels: expected comma-separated numbers, got {args.levels!r}") from None
    r = evaluate_sampler(args.model, space=args.space, reference=reference,
                         attributes=[a.strip() for a in args.attributes.split(",") if a.strip()], levels=levels,
                         n=args.n, batch=args.draws, batches=args.batches, seed=args.seed,
                         temperature=args.temperature,
                         oversample=args.oversample, store=args.store,
                         png=args.png, device=args.device, progress=not args.no_progress)
    if args.json:
        print(json.dumps(shown_paths(r)))
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


def _upper_bound_like(args: argparse.Namespace, task_kw: dict[str, Any], sets: list[str], transfer: bool) -> int:
    from ..evaluate.protocol import get_protocol
    from ..evaluate.tasks import load_task
    from ..evaluate.upper_bound import run_upper_bound, summary_markdown, transfer_markdown
    from ..io import write_text_atomic

    proto = get_protocol(args.protocol, space=args.space)
    task = load_task(args.task, proto, **task_kw)
    check_outputs(("--json", args.json), ("--md", args.md), ("--png", args.png))
    check_png(args.png)
    png_tmp = args.png + ".drawing.png" if args.png else None
    r = run_upper_bound(args.space, reference_arg(args.reference), n=args.n, seed=args.seed, model=args.model,
                        task=task, protocol=proto, seeds=seeds_arg(args.seeds), sets=sets, store=args.store,
                        work_dir=args.work_dir, device=args.device, png=png_tmp, benchmark=None if not transfer else False,
                        progress=not args.no_progress)
    table = (transfer_markdown(r) + "\n\n" + summary_markdown(r).split("\n\n", 1)[1]) if transfer \
        else summary_markdown(r)
    print(f"{r['task']}\n{r['protocol_text']}\n")
    print(transfer_markdown(r) if transfer else summary_markdown(r, per_cell=False))
    if args.json:
        write_text_atomic(args.json, json.dumps(shown_paths(r), indent=1))
    if args.md:
        write_text_atomic(args.md, f"Task: {r['task']}\n\n{r['protocol_text']}\n\n{table}\n")
    if png_tmp:
        os.replace(png_tmp, args.png)
    return 0


def _upper_bound(args: argparse.Namespace) -> int:
    sets = [x.strip() for x in args.sets.split(",") if x.strip()]
    return _upper_bound_like(args, {}, sets, transfer=False)


def _transfer(args: argparse.Namespace) -> int:
    return _upper_bound_like(args, dict(loss=args.loss, metric=args.metric, objective=args.objective), ["generated"],
                             transfer=True)


def _table_section(key: str, title: str, fn) -> tuple:
    """A section of ``evaluate all`` that reads the shared NB201 table, ``fn(table, outdir) ->
    (markdown, results)``; skipped, saying why, without the table."""
    from ..evaluate.upper_bound import nb201_table

    table = nb201_table()

    def run(outdir: Path) -> tuple[str, dict]:
        if table is None or not table.is_file():
            why = "no NB201 table (set CGNF_DATA_DIR to the shared data folder)"
            return f"Skipped: {why}.", {"skipped": why}
        return fn(table, outdir)

    return ((key, title, run),)


def _report_sections(args: argparse.Namespace) -> tuple:
    """``cgnf evaluate calibrate`` (with the report's protocol, seeds and store: does the
    protocol behind the upper-bound section rank good cells?) and ``cgnf evaluate beyond`` as
    sections of ``evaluate all``."""
    def calibrate(table: Path, outdir: Path) -> tuple[str, dict]:
        from ..searching.calibrate import calibration_markdown, run_calibration

        res = run_calibration(args.protocol, table=table, seeds=seeds_arg(args.seeds), device=args.device,
                              store=args.store or str(outdir / "store.sqlite"), work_dir=str(outdir / ".work"),
                              progress=not args.no_progress)
        return calibration_markdown(res), res

    def beyond(table: Path, outdir: Path) -> tuple[str, dict]:
        from ..searching.beyond import BeyondConfig, run_beyond, to_markdown

        res = run_beyond(BeyondConfig(table=str(table)), outdir / "beyond", progress=False)
        return to_markdown(res), res

    return (_table_section("calibration", "Does the protocol rank NB201's top cells? (`cgnf evaluate calibrate`)",
                           calibrate)
            + _table_section("beyond", "Beyond the seed space, on ground truth (`cgnf evaluate beyond`)", beyond))


def _all(args: argparse.Namespace) -> int:
    from ..evaluate.report import run_all

    r = run_all(args.out, protocol=args.protocol, seeds=tuple(seeds_arg(args.seeds)), n=args.n, seed=args.seed,
                store=args.store, truth_nb201=args.truth_nb201, truth_nb101=args.truth_nb101,
                model_nb201=args.model_nb201, model_nb101=args.model_nb101, transfer_task=args.transfer_task,
                transfer_loss=args.transfer_loss, transfer_metric=args.transfer_metric,
                nb101_cells=args.nb101_cells, device=args.device,
                spaces=tuple(x.strip() for x in args.spaces.split(",") if x.strip()),
                command="cgnf " + " ".join(shlex.quote(a) for a in args.argv), progress=not args.no_progress,
                extra=_report_sections(args))
    print(f"wrote {Path(args.out) / 'report.md'} ({r['seconds'] / 60:.1f} min)")
    return 0
