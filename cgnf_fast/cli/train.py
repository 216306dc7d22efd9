"""``cgnf train gvae|flow``: the G-VAE and the conditional flow.

Every option but those in :data:`GVAE_RUN_OPTIONS` / :data:`FLOW_RUN_OPTIONS` sets the field of
the training config it is named after (``dest``), and takes its default (and choices) from there.
"""

from __future__ import annotations

import argparse
import json

from ._common import (DEVICE_HELP, NO_PROGRESS_HELP, config_defaults, config_kwargs, int_list, lr_or_none, nonneg_int,
                      space_help)

HELP = "train models"
HOLDOUT_HELP = ("labels kept out so the predictor can be evaluated on the seed space: 'eval' (default) only the "
                "networks of its evaluation set (all of NB201; 4,000 NB101 networks), 'seed' every seed-space cell")
#: options of ``train gvae`` that are not TrainGVAEConfig fields
GVAE_RUN_OPTIONS = ("out", "device", "backend", "no_progress")
#: options of ``train flow`` that are not TrainFlowConfig fields
FLOW_RUN_OPTIONS = ("gvae", "out", "device", "no_progress")


def add_parser(sub: argparse._SubParsersAction) -> None:
    tp = sub.add_parser("train", help=HELP)
    tps = tp.add_subparsers(dest="train_command", metavar="SUBCOMMAND", required=True)
    _add_gvae(tps)
    _add_flow(tps)


def _add_gvae(tps: argparse._SubParsersAction) -> None:
    from ..models.gvae import BACKENDS, PREDICTORS
    from ..train.data import HOLDOUTS
    from ..train.gvae import TrainGVAEConfig

    d = config_defaults(TrainGVAEConfig)
    tg = tps.add_parser("gvae", help="train the graph VAE + attribute predictor (resumable: rerun to continue)")
    tg.add_argument("--space", required=True, help=space_help())
    tg.add_argument("--store", required=True, help="score store with ZC labels for cells of the space")
    tg.add_argument("--out", required=True, help="run directory (checkpoints, final model, metrics)")
    tg.add_argument("--attributes", default=d["attributes"],
                    help="comma-separated proxies to learn (default: those in the store)")
    tg.add_argument("--unlabelled", dest="n_unlabelled", metavar="UNLABELLED", type=nonneg_int,
                    default=d["n_unlabelled"], help="distinct unlabelled cells sampled (default %(default)s)")
    tg.add_argument("--seed-space-cells", dest="include_seed_space", metavar="SEED_SPACE_CELLS", type=nonneg_int,
                    default=d["include_seed_space"],
                    help="also learn (without labels) up to this many seed-space structures (default %(default)s)")
    tg.add_argument("--heldout", type=nonneg_int, default=d["heldout"],
                    help="cells kept out to measure reconstruction (default %(default)s)")
    tg.add_argument("--latent", type=int, default=d["latent"], help="latent dimensions (default %(default)s)")
    tg.add_argument("--hidden", type=int, default=d["hidden"], help="width of the GIN encoder (default %(default)s)")
    tg.add_argument("--layers", type=int, default=d["layers"], help="GIN layers (default %(default)s)")
    tg.add_argument("--batch", type=int, default=d["batch"], help="unlabelled cells per step (default %(default)s)")
    tg.add_argument("--epochs", type=int, default=d["epochs"],
                    help="passes over the unlabelled cells (default %(default)s)")
    tg.add_argument("--lr", type=float, default=d["lr"],
                    help="Adam learning rate, cosine-decayed (default %(default)s)")
    tg.add_argument("--beta", type=float, default=d["beta"], help="weight of the KL term (default %(default)s)")
    tg.add_argument("--margin", type=float, default=d["margin"], help="triplet margin m (default %(default)s)")
    tg.add_argument("--triplet-weight", type=float, default=d["triplet_weight"],
                    help="0 disables the triplet loss (ablation; default %(default)s)")
    tg.add_argument("--predictor-weight", type=float, default=d["predictor_weight"],
                    help="weight of the attribute predictor's loss (default %(default)s)")
    tg.add_argument("--predictor", choices=PREDICTORS, default=d["predictor"],
                    help="attribute predictor: learned path gains of the cell's graph (default; a latent through its "
                    "decoded cell), of the decoder's soft graph (paths), or an MLP on z (latent)")
    tg.add_argument("--predictor-lr", type=lr_or_none, default=d["predictor_lr"],
                    help="the predictor's learning rate ('none': --lr, one parameter group, as older runs; "
                    "default %(default)s)")
    tg.add_argument("--degree-features", action=argparse.BooleanOptionalAction, default=d["degree_features"],
                    help="the path predictor also reads output in-degree features (default: on for NB101-skeleton "
                    "spaces, whose outputs concatenate)")
    tg.add_argument("--path-channels", type=int, default=d["path_channels"],
                    help="learned path-gain channels (graph/paths predictors; default %(default)s)")
    tg.add_argument("--holdout", choices=HOLDOUTS, default=d["holdout"], help=HOLDOUT_HELP)
    tg.add_argument("--seed", type=int, default=d["seed"],
                    help="seed of the data, the initialisation and every step (default %(default)s)")
    tg.add_argument("--device", default="cpu", help=DEVICE_HELP)
    tg.add_argument("--backend", choices=BACKENDS, default="native", help="message-passing kernel (default native)")
    tg.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)
    tg.set_defaults(func=_train_gvae)


def _add_flow(tps: argparse._SubParsersAction) -> None:
    from ..models.flow import ACTIVATIONS, DIVERGENCES
    from ..models.flow import BACKENDS as FLOW_BACKENDS
    from ..train.flow import LATENT_NORMS, TrainFlowConfig

    d = config_defaults(TrainFlowConfig)
    tf = tps.add_parser("flow", help="train the conditional flow on a trained G-VAE's latents (resumable: rerun to "
                        "continue); prints the metrics as JSON")
    tf.add_argument("--gvae", required=True, help="the G-VAE run directory (what train gvae wrote)")
    tf.add_argument("--out", required=True, help="run directory (checkpoints, final flow, metrics); for `cgnf sample "
                    "--model DIR` use DIR/flow next to DIR/gvae")
    tf.add_argument("--conditions", default=d["conditions"],
                    help="comma-separated G-VAE attributes to condition on (default: all of them)")
    tf.add_argument("--hidden", type=int_list, default=d["hidden"],
                    help=f"hidden sizes of the dynamics MLP (default {','.join(map(str, d['hidden']))})")
    tf.add_argument("--activation", choices=ACTIVATIONS, default=d["activation"],
                    help="activation of the dynamics MLP (default %(default)s)")
    tf.add_argument("--divergence", choices=DIVERGENCES, default=d["divergence"],
                    help="default: exact for latents up to 64 dims, else hutchinson")
    tf.add_argument("--latent-norm", choices=LATENT_NORMS, default=d["latent_norm"],
                    help="'data': standardise the latents by their training mean and std (default %(default)s)")
    tf.add_argument("--solver", default=d["solver"], help="an adaptive torchdiffeq solver (default %(default)s)")
    tf.add_argument("--rtol", type=float, default=d["rtol"], help="training solver tolerance (default %(default)s)")
    tf.add_argument("--atol", type=float, default=d["atol"], help="training solver tolerance (default %(default)s)")
    tf.add_argument("--eval-rtol", type=float, default=d["eval_rtol"],
                    help="tolerance saved with the flow (evaluation, sampling; default %(default)s)")
    tf.add_argument("--eval-atol", type=float, default=d["eval_atol"],
                    help="tolerance saved with the flow (evaluation, sampling; default %(default)s)")
    tf.add_argument("--no-adjoint", dest="adjoint", action="store_false", default=d["adjoint"],
                    help="backpropagate through the solver instead")
    tf.add_argument("--no-zero-init", dest="zero_init", action="store_false", default=d["zero_init"],
                    help="do not start from the identity flow")
    tf.add_argument("--batch", type=int, default=d["batch"], help="latents per step (default %(default)s)")
    tf.add_argument("--epochs", type=int, default=d["epochs"], help="passes over the latents (default %(default)s)")
    tf.add_argument("--lr", type=float, default=d["lr"],
                    help="Adam learning rate, cosine-decayed (default %(default)s)")
    tf.add_argument("--weight-decay", type=float, default=d["weight_decay"],
                    help="Adam weight decay (default %(default)s)")
    tf.add_argument("--clip", type=float, default=d["clip"], help="gradient-norm clip (default %(default)s)")
    tf.add_argument("--seed", type=int, default=d["seed"],
                    help="seed of the data, the initialisation and every step (default %(default)s)")
    tf.add_argument("--ckpt-every", type=int, default=d["ckpt_every"],
                    help="steps between checkpoints (default %(default)s)")
    tf.add_argument("--val-fraction", type=float, default=d["val_fraction"],
                    help="share of the latents kept for validation (default %(default)s)")
    tf.add_argument("--max-cells", type=nonneg_int, default=d["max_cells"],
                    help="cap on the latents used (0: all; default %(default)s)")
    tf.add_argument("--sanity-n", type=nonneg_int, default=d["sanity_n"],
                    help="validation rows of the conditioning check (default %(default)s)")
    tf.add_argument("--backend", choices=FLOW_BACKENDS, default=d["backend"],
                    help="the dynamics' kernels while training: native (fused CPU kernels for both solves of the "
                    "adjoint) or torch (torchdiffeq with stock PyTorch ops); same steps (default %(default)s)")
    tf.add_argument("--device", default="cpu", help=DEVICE_HELP)
    tf.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)
    tf.set_defaults(func=_train_flow)


def _train_gvae(args: argparse.Namespace) -> int:
    from ..train.gvae import TrainGVAEConfig, train_gvae

    kw = config_kwargs(TrainGVAEConfig, args)
    kw["attributes"] = [a.strip() for a in args.attributes.split(",")] if args.attributes else None
    metrics = train_gvae(TrainGVAEConfig(**kw), args.out, device=args.device, backend=args.backend,
                         progress=not args.no_progress)
    print(json.dumps(metrics))
    return 0


def _train_flow(args: argparse.Namespace) -> int:
    from ..train.flow import TrainFlowConfig, train_flow

    kw = config_kwargs(TrainFlowConfig, args)
    kw["conditions"] = [a.strip() for a in args.conditions.split(",") if a.strip()] if args.conditions else None
    if kw["max_cells"] == 0:
        kw["max_cells"] = None
    metrics = train_flow(TrainFlowConfig(**kw), args.gvae, args.out, device=args.device,
                         progress=not args.no_progress)
    print(json.dumps(metrics))
    return 0
