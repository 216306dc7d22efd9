"""``cgnf pipeline``: score labels, train the G-VAE and the flow, export a model directory.

Every option but those in :data:`RUN_OPTIONS` sets the entry of a pipeline record
(:meth:`cgnf_fast.pipeline.PipelineConfig.to_dict`) it is named after (``dest``), and takes its
default from the default config's record (the nested training configs' defaults included).
"""

from __future__ import annotations

import argparse
import json

from ._common import DEVICE_HELP, IMAGE_BATCH_HELP, NO_PROGRESS_HELP, add_alias, int_list, lr_or_none, name_list, nonneg_int, space_help
from .train import HOLDOUT_HELP

HELP = ("everything from scratch: score labels on real images, train the G-VAE and the flow, export a model "
        "directory (resumable: rerun to continue)")
#: options that are not entries of the pipeline's record
RUN_OPTIONS = ("out", "device", "record_argv", "no_progress")


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..models.gvae import PREDICTORS
    from ..pipeline import PipelineConfig
    from ..train.data import HOLDOUTS

    d = PipelineConfig.default_record()
    pl = sub.add_parser(
        "pipeline", help=HELP,
        description="Stages: (1) score LABELS random + STRATIFIED cells of the space (+ SEED_LABELS networks of its "
        "seed space) on CIFAR-10 images into the store, (2) train the G-VAE in OUT/gvae, (3) train the "
        "conditional flow in OUT/flow, (4) export the sampling model to OUT/model (use with `cgnf sample --model "
        "OUT/model`). Defaults reproduce the pretrained nb201-like model that ships with the package.")
    pl.add_argument("--space", required=True, help=space_help())
    pl.add_argument("--out", required=True, help="run directory")
    pl.add_argument("--store", default=d["store"],
                    help="score store (default OUT/scores.sqlite; cells already scored are reused)")
    pl.add_argument("--proxies", type=name_list, default=d["proxies"],
                    help=f"labels (comma-separated proxies; default {','.join(d['proxies'])})")
    pl.add_argument("--labels", type=nonneg_int, default=d["labels"], help="random cells scored (default %(default)s)")
    pl.add_argument("--stratified", type=nonneg_int, default=d["stratified"],
                    help="cells spread over vertex counts, also scored (default %(default)s)")
    pl.add_argument("--seed-labels", type=nonneg_int, default=d["seed_labels"],
                    help="networks of the seed space outside its predictor evaluation set, also scored (NB101 only: "
                    "every NB201 cell is evaluated; default %(default)s)")
    pl.add_argument("--image-batch", dest="batch_size", metavar="N", type=int, default=d["batch_size"], help=IMAGE_BATCH_HELP)
    add_alias(pl, "--batch-size", "batch_size", type=int)
    pl.add_argument("--images", default=d["images"],
                    help="a folder of class sub-folders instead of the embedded CIFAR-10 batch")
    pl.add_argument("--workers", type=int, default=d["workers"], help="scoring processes (default %(default)s)")
    pl.add_argument("--seed", type=int, default=d["seed"],
                    help="seed of every stage: cells sampled, scoring, G-VAE and flow (default %(default)s)")
    _add_gvae_options(pl, d, PREDICTORS, HOLDOUTS)
    _add_flow_options(pl, d)
    pl.add_argument("--device", default="cpu", help=DEVICE_HELP)
    pl.add_argument("--no-record-argv", dest="record_argv", action="store_false",
                    help="do not store the command line in the exported model.json")
    pl.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)
    pl.set_defaults(func=_pipeline)


def _add_gvae_options(pl: argparse.ArgumentParser, d: dict, predictors: tuple[str, ...],
                      holdouts: tuple[str, ...]) -> None:
    """Stage 2: the nested TrainGVAEConfig's fields that have options (see `cgnf train gvae`)."""
    pl.add_argument("--gvae-epochs", type=int, default=d["gvae_epochs"],
                    help="epochs of the G-VAE (default %(default)s)")
    pl.add_argument("--gvae-lr", type=float, default=d["gvae_lr"],
                    help="the G-VAE's learning rate (default %(default)s)")
    pl.add_argument("--unlabelled", type=nonneg_int, default=d["unlabelled"],
                    help="unlabelled cells for the G-VAE (default %(default)s)")
    pl.add_argument("--seed-space-cells", type=nonneg_int, default=d["seed_space_cells"],
                    help="seed-space structures the G-VAE also learns (without their labels; default %(default)s)")
    pl.add_argument("--heldout", type=nonneg_int, default=d["heldout"],
                    help="cells kept out to measure reconstruction (default %(default)s)")
    pl.add_argument("--latent", type=int, default=d["latent"], help="latent dimensions (default %(default)s)")
    pl.add_argument("--gvae-hidden", type=int, default=d["gvae_hidden"],
                    help="width of the G-VAE's GIN encoder (default %(default)s)")
    pl.add_argument("--gvae-layers", type=int, default=d["gvae_layers"], help="GIN layers (default %(default)s)")
    pl.add_argument("--gvae-batch", type=int, default=d["gvae_batch"],
                    help="unlabelled cells per G-VAE step (default %(default)s)")
    pl.add_argument("--gvae-predictor", choices=predictors, default=d["gvae_predictor"],
                    help="the G-VAE's attribute predictor (default: %(default)s; see `cgnf train gvae --help`)")
    pl.add_argument("--gvae-predictor-lr", type=lr_or_none, default=d["gvae_predictor_lr"],
                    help="the predictor's learning rate ('none': --gvae-lr, as older runs; default %(default)s)")
    pl.add_argument("--gvae-holdout", choices=holdouts, default=d["gvae_holdout"], help=HOLDOUT_HELP)


def _add_flow_options(pl: argparse.ArgumentParser, d: dict) -> None:
    """Stage 3: the nested TrainFlowConfig's fields that have options (see `cgnf train flow`)."""
    pl.add_argument("--flow-epochs", type=int, default=d["flow_epochs"],
                    help="epochs of the flow (default %(default)s; at 15 the shipped flows were still improving)")
    pl.add_argument("--flow-batch", type=int, default=d["flow_batch"],
                    help="latents per flow step (default %(default)s)")
    pl.add_argument("--flow-max-cells", type=int, default=d["flow_max_cells"],
                    help="latents the flow trains on (default %(default)s)")
    pl.add_argument("--flow-hidden", type=int_list, default=d["flow_hidden"],
                    help=f"hidden sizes of the flow's dynamics MLP (default {','.join(map(str, d['flow_hidden']))})")


def _pipeline(args: argparse.Namespace) -> int:
    from ..pipeline import PipelineConfig, run_pipeline

    cfg = PipelineConfig.from_dict({k: v for k, v in vars(args).items()
                                    if k == "space" or k in PipelineConfig.default_record()})
    summary = run_pipeline(cfg, args.out, device=args.device, progress=not args.no_progress,
                           command=["cgnf", *args.argv] if args.record_argv else None)
    print(json.dumps({"out": args.out, "model": summary["stages"]["export"]["dir"],
                      **{k: v.get("seconds") for k, v in summary["stages"].items() if isinstance(v, dict)}}))
    return 0
