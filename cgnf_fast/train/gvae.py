"""Semi-supervised G-VAE training: reconstruction + KL on every cell, a triplet-margin loss on
normalised ZC vectors and an attribute predictor on the labelled ones.

A run lives in one directory:

    train.json          the training config (a rerun with a different one is refused)
    data.safetensors    the exact training data: unlabelled, labelled (+ values), held-out cells
    checkpoint.safetensors  model + optimizer state, with the step reached and the rest of the
                        state as JSON metadata in the same file (written every ``ckpt_every``
                        steps, on Ctrl-C and at the end; atomic rename); checkpoint.json
                        mirrors the metadata for people
    gvae.safetensors + gvae.json
                        the final model (what :class:`cgnf_fast.models.GraphVAE` loads)
    metrics.json        held-out reconstruction, prior validity/uniqueness, predictor error

Rerunning the same command resumes from the last checkpoint. Every step's randomness is seeded
from ``(seed, step)`` and each epoch's order from ``(seed, epoch)``, so a resumed run takes the
same steps an uninterrupted one would.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ..models.api import CONFIG, WEIGHTS, GraphVAE
from ..models.api import FORMAT as GVAE_FORMAT
from ..models.api import FORMAT_VERSION as GVAE_FORMAT_VERSION
from ..models.codec import CellCodec
from ..models.gvae import BACKENDS, GVAE, GVAEConfig, kl_divergence, reconstruction_loss, triplet_loss
from ..space import Cell
from ..io import (CheckpointError, load_json, load_tensors, refuse_changed_config, save_json, save_tensors,
                  sha256_file)
from .checkpoint import load_training, save_on_interrupt, save_training
from .data import HOLDOUTS, load_labelled, unlabelled_cells


@dataclass
class TrainGVAEConfig:
    """How to train a G-VAE; ``cgnf train gvae`` and ``cgnf pipeline`` take their defaults from here
    (the architecture's from :class:`~cgnf_fast.models.gvae.GVAEConfig`).

    ``lr`` is 2e-3: every G-VAE the project reports or ships was trained with it (both pretrained
    models through ``cgnf pipeline``, whose default it was, and the README's ``cgnf train gvae ...
    --lr 0.002`` commands); the 1e-3 this config and ``cgnf train gvae`` once declared was never
    used for a reported result.
    """

    space: str
    store: str
    attributes: list[str] | None = None
    n_unlabelled: int = 100_000
    include_seed_space: int = 20_000
    heldout: int = 2000
    val_fraction: float = 0.1
    hidden: int = GVAEConfig.hidden
    layers: int = GVAEConfig.layers
    latent: int = GVAEConfig.latent
    dec_hidden: int = GVAEConfig.dec_hidden
    pred_hidden: int = GVAEConfig.pred_hidden
    #: the attribute predictor (see cgnf_fast.models.gvae): "graph" (learned path gains of the
    #: exact graph -> MLP; a latent through its decoded cell), "paths" (of the decoder's soft
    #: graph) or "latent" (MLP on z)
    predictor: str = "graph"
    path_channels: int = GVAEConfig.path_channels
    #: the path predictor's degree features (None: on for NB101-skeleton spaces, resolved by
    #: :meth:`validate`; see GVAEConfig)
    degree_features: bool | None = None
    batch: int = 512
    labelled_batch: int = 128
    epochs: int = 40
    lr: float = 2e-3
    beta: float = 1e-3
    margin: float = 0.5
    triplet_weight: float = 1.0
    predictor_weight: float = 10.0
    #: which labels are kept out (cgnf_fast.train.data.load_labelled): every seed-space cell
    #: ("seed") or only the seed space's predictor evaluation set ("eval")
    holdout: str = "eval"
    #: the predictor's own learning rate (same cosine decay); None: ``lr``, one parameter group
    #: and one gradient clip for the whole model, as runs before this field were trained
    predictor_lr: float | None = 3e-3
    seed: int = 0
    ckpt_every: int = 500
    #: a user space: {"ops": [...], "max_nodes": n, "max_edges": e or None, "allow_zero": bool}
    space_spec: dict[str, Any] | None = None

    #: fields that may change between a run and its resumption
    RESUMABLE_CHANGES = ("epochs", "ckpt_every")
    #: what a run directory written before a field existed was trained with
    LEGACY_DEFAULTS = {"predictor": "latent", "path_channels": 16, "degree_features": False, "predictor_lr": None,
                       "holdout": "seed"}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def design_space(self):
        """The space by name, or the user space described by ``space_spec``."""
        from ..space.spaces import from_spec

        return from_spec(self.space, self.space_spec)

    def validate(self) -> None:
        self.design_space()
        if self.degree_features is None:  # only the path predictor has them
            self.degree_features = self.predictor in ("graph", "paths") and self.design_space().skeleton == "nb101"
        for f in ("n_unlabelled", "heldout", "hidden", "layers", "latent", "batch", "labelled_batch", "epochs",
                  "ckpt_every", "dec_hidden", "pred_hidden"):
            v = getattr(self, f)
            if not isinstance(v, int) or v < (0 if f in ("n_unlabelled", "heldout") else 1):
                raise ValueError(f"{f} must be a positive int, got {v!r}")
        if self.holdout not in HOLDOUTS:
            raise ValueError(f"holdout must be one of {HOLDOUTS}, got {self.holdout!r}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        _model_config(self, []).validate()
        for f in ("lr", "beta", "margin", "triplet_weight", "predictor_weight", "predictor_lr"):
            v = getattr(self, f)
            if f == "predictor_lr" and v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or not math.isfinite(v):
                raise ValueError(f"{f} must be a finite non-negative number, got {v!r}")


def _stack(codec: CellCodec, cells: list[Cell]) -> tuple[torch.Tensor, torch.Tensor]:
    adj, ops = codec.encode(cells)
    return adj.to(torch.uint8), ops


def _build_data(cfg: TrainGVAEConfig, codec: CellCodec, progress: bool) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    lab = load_labelled(cfg.store, cfg.space, cfg.attributes, holdout=cfg.holdout)
    rng = np.random.default_rng(cfg.seed)
    perm = rng.permutation(len(lab.cells))
    n_val = int(round(cfg.val_fraction * len(perm)))
    val_idx, tr_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    lab_codes = {c.canonical_code() for c in lab.cells}
    if progress:
        print(f"sampling {cfg.n_unlabelled} unlabelled cells of {cfg.space} ...", file=sys.stderr)
    unl = unlabelled_cells(cfg.design_space(), cfg.n_unlabelled + cfg.heldout, cfg.seed, cfg.include_seed_space)
    seen: set[int] = set()
    pool: list[Cell] = []
    for c in unl:
        k = c.pruned(allow_zero=True).canonical_code()
        if k in seen or k in lab_codes:
            continue
        seen.add(k)
        pool.append(c)
    # held-out cells: drawn from the extended-space sample only (not the seed space structures)
    n_ext = min(len(pool), cfg.n_unlabelled + cfg.heldout)
    hperm = rng.permutation(n_ext)[: cfg.heldout]
    hset = set(hperm.tolist())
    held = [pool[i] for i in sorted(hset)]
    train = [c for i, c in enumerate(pool) if i not in hset]
    ua, uo = _stack(codec, train)
    la, lo = _stack(codec, lab.cells)
    ha, ho = _stack(codec, held)
    values = torch.from_numpy(lab.values)
    tensors = {
        "unl_adj": ua, "unl_ops": uo,
        "lab_adj": la[tr_idx], "lab_ops": lo[tr_idx], "lab_values": values[tr_idx],
        "val_adj": la[val_idx], "val_ops": lo[val_idx], "val_values": values[val_idx],
        "held_adj": ha, "held_ops": ho,
    }
    info = {"labelled": lab.info(), "unlabelled": len(train), "heldout": len(held),
            "labelled_train": int(len(tr_idx)), "labelled_val": int(len(val_idx))}
    return tensors, info


def _model_config(cfg: TrainGVAEConfig, attributes: list[str]) -> GVAEConfig:
    sp = cfg.design_space()
    return GVAEConfig(space=cfg.space, num_nodes=sp.max_nodes, ops=list(sp.ops), hidden=cfg.hidden, layers=cfg.layers,
                      latent=cfg.latent, dec_hidden=cfg.dec_hidden, pred_hidden=cfg.pred_hidden,
                      attributes=list(attributes), max_edges=sp.max_edges, allow_zero=sp.allow_zero,
                      predictor=cfg.predictor, path_channels=cfg.path_channels,
                      degree_features=bool(cfg.degree_features))  # resolved by cfg.validate()


def _check_resume(out: Path, cfg: TrainGVAEConfig) -> None:
    refuse_changed_config(out, "a G-VAE run", load_json(out / "train.json"), cfg.to_dict(),
                          TrainGVAEConfig.RESUMABLE_CHANGES, TrainGVAEConfig.LEGACY_DEFAULTS)


def _batches(data: dict[str, torch.Tensor], key: str, idx: torch.Tensor, device: torch.device):
    adj = data[f"{key}_adj"][idx].to(device=device, dtype=torch.float32)
    ops = data[f"{key}_ops"][idx].to(device)
    return adj, ops


@torch.no_grad()
def evaluate_run(vae: GraphVAE, data: dict[str, torch.Tensor], n_prior: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Held-out reconstruction, prior validity/uniqueness and predictor error on the validation labels."""
    codec = vae.codec
    out: dict[str, Any] = {}
    for key in ("held", "val"):
        if f"{key}_adj" not in data or data[f"{key}_adj"].shape[0] == 0:
            continue
        adj = data[f"{key}_adj"].float()
        ops = data[f"{key}_ops"]
        cells = codec.decode(adj, ops)
        z, _ = vae.model.encode(adj.to(vae.device), ops.to(vae.device), vae.backend)
        back = vae.decode(z)
        # (a decoded cell the space cannot repair is None: not a reconstruction)
        exact = sum(b is not None and a.canonical_code() == b.canonical_code() for a, b in zip(cells, back))
        out[f"{key}_reconstruction"] = {"n": len(cells), "exact": exact, "rate": exact / len(cells)}
        if key == "val":
            pred = vae.model.predict(z).double().cpu()
            true = data["val_values"].double()
            scale = vae.model.attr_max.double().cpu()
            err = ((pred - true).abs() / scale * 100.0)
            out["val_predictor_error_pct"] = {
                a: {"mean": float(err[:, i].mean()), "max": float(err[:, i].max())}
                for i, a in enumerate(vae.attributes)}
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n_prior, vae.cfg.latent, generator=g)
    cells = vae.decode(z)
    valid = [c for c in cells if c is not None and vae.space.contains(c) and not c.is_zero]
    nets = {c.network_code() for c in valid}
    out["prior"] = {"n": n_prior, "valid": len(valid), "validity": len(valid) / n_prior,
                    "unique_networks": len(nets), "uniqueness": len(nets) / max(len(valid), 1)}
    return out


def _model_and_optimizer(cfg: TrainGVAEConfig, mcfg: GVAEConfig, data: dict[str, torch.Tensor],
                         dev: torch.device) -> tuple[GVAE, torch.optim.Optimizer]:
    """The untrained model (seeded; attribute statistics from the labels) and its optimizer."""
    torch.manual_seed(cfg.seed)
    model = GVAE(mcfg)
    vals = data["lab_values"].double()
    model.attr_mean.copy_(vals.mean(0).float())
    model.attr_std.copy_(vals.std(0).clamp_min(1e-12).float())
    model.attr_max.copy_(vals.abs().max(0).values.clamp_min(1e-12).float())
    model.to(dev)
    # parameter groups: [encoder + decoder, predictor] with their own learning rates and
    # gradient clips (the graph and paths predictors' loss never reaches the encoder or decoder,
    # so their settings leave those alone; "latent" trains the encoder through z); with
    # predictor_lr None, one group and one clip, as runs before it
    pred_params = list(model.predictor.parameters())
    pred_ids = {id(q) for q in pred_params}
    groups = ([{"params": [q for q in model.parameters() if id(q) not in pred_ids], "base_lr": cfg.lr},
               {"params": pred_params, "base_lr": cfg.predictor_lr}] if cfg.predictor_lr is not None
              else [{"params": list(model.parameters()), "base_lr": cfg.lr}])
    return model, torch.optim.Adam(groups, lr=cfg.lr)


def _step_loss(model: GVAE, cfg: TrainGVAEConfig, data: dict[str, torch.Tensor], lab_std: torch.Tensor,
               idx: torch.Tensor, lidx: torch.Tensor, dev: torch.device,
               backend: str) -> tuple[torch.Tensor, dict[str, float]]:
    """One step's loss on unlabelled rows ``idx`` and labelled rows ``lidx`` (reconstruction +
    KL on both, triplet and predictor losses on the labelled ones) and its parts."""
    ua, uo = _batches(data, "unl", idx, dev)
    la, lo = _batches(data, "lab", lidx, dev)
    adj, ops = torch.cat([ua, la]), torch.cat([uo, lo])
    mu, logvar = model.encode(adj, ops, backend)
    z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
    op_logits, edge_logits = model.decode_logits(z)
    rec = reconstruction_loss(model, op_logits, edge_logits, adj, ops)
    kl = kl_divergence(mu, logvar)
    nl = la.shape[0]
    target = lab_std[lidx].to(dev)
    trip = triplet_loss(mu[-nl:], target, cfg.margin)
    predictor = model.cfg.predictor
    if predictor == "graph":  # the labelled cells' exact graphs
        p_std = model.predict_layout_std(la, lo)
    else:  # "paths" reads the decoded graph of the posterior mean (what it sees at inference)
        p_std = model.predict_std(mu[-nl:] if predictor == "paths" else z[-nl:])
    pred = torch.nn.functional.mse_loss(p_std, target)
    loss = rec + cfg.beta * kl + cfg.triplet_weight * trip + cfg.predictor_weight * pred
    return loss, {"rec": rec.item(), "kl": kl.item(), "trip": trip.item(), "pred": pred.item()}


def train_gvae(cfg: TrainGVAEConfig, out: str, *, device: str = "cpu", backend: str = "native",
               progress: bool = True) -> dict[str, Any]:
    """Train (or resume) a G-VAE run in directory ``out``; returns the final metrics."""
    cfg.validate()
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    outp = Path(out)
    dev = torch.device(device)
    sp = cfg.design_space()
    codec = CellCodec(sp)
    if (outp / "train.json").exists():
        _check_resume(outp, cfg)
    if (outp / "data.safetensors").exists():  # (written after train.json: the same config's)
        data, _ = load_tensors(outp / "data.safetensors")
        data_info = load_json(outp / "data.json")
        save_json(outp / "train.json", cfg.to_dict())
    else:
        # built before anything is written, so a start that fails (a mistyped store, unknown
        # attributes) changes nothing on disk
        data, data_info = _build_data(cfg, codec, progress)
        save_json(outp / "train.json", cfg.to_dict())
        save_json(outp / "data.json", data_info)
        save_tensors(outp / "data.safetensors", data)
    mcfg = _model_config(cfg, data_info["labelled"]["attributes"])
    model, opt = _model_and_optimizer(cfg, mcfg, data, dev)
    U = data["unl_adj"].shape[0]
    M = data["lab_adj"].shape[0]
    steps_per_epoch = max(1, math.ceil(U / cfg.batch))
    total = cfg.epochs * steps_per_epoch
    def lr_at(s: int, base: float) -> float:  # cosine decay, set before every step (so a resume needs no scheduler state)
        return base * (0.5 * (1 + math.cos(math.pi * min(s, total) / total)))

    ck_path = outp / "checkpoint.safetensors"
    ck = load_training(ck_path, model, opt)
    step = ck["step"] if ck else 0
    history: list[dict[str, float]] = ck.get("history", []) if ck else []

    def save_checkpoint() -> None:
        save_training(ck_path, model, opt, {"step": step, "history": history[-200:], "total_steps": total,
                                            "loss_averages": acc})

    vmean = model.attr_mean.double().cpu()
    vstd = model.attr_std.double().cpu()
    lab_std = ((data["lab_values"].double() - vmean) / vstd).float()
    bar = tqdm(total=total, initial=step, desc=f"train gvae {cfg.space}", unit="step", disable=not progress,
               file=sys.stderr, dynamic_ncols=True)
    model.train()
    t0 = time.time()
    # the loss averages go on from the checkpoint's last record (a resumed run, even one with
    # no step left, reports the losses it ended with)
    # (unrounded where the checkpoint has them; checkpoints from before kept only the rounded history)
    acc: dict[str, float] = dict(ck["loss_averages"]) if ck and "loss_averages" in ck else (
        {k: v for k, v in history[-1].items() if k != "step"} if history else {})
    with save_on_interrupt(save_checkpoint, bar, lambda: (step, total)) as boundary:
        while step < total:
            boundary()
            epoch, k = divmod(step, steps_per_epoch)
            perm = torch.randperm(U, generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch))
            idx = perm[k * cfg.batch:(k + 1) * cfg.batch]
            torch.manual_seed(cfg.seed * 1_000_003 + step)
            lidx = torch.randint(0, M, (min(cfg.labelled_batch, M),))
            loss, parts = _step_loss(model, cfg, data, lab_std, idx, lidx, dev, backend)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {loss.item()} at step {step}; lower --lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            for g in opt.param_groups:
                torch.nn.utils.clip_grad_norm_(g["params"], 10.0)
                g["lr"] = lr_at(step, g["base_lr"])
            opt.step()
            step += 1
            for key, v in parts.items():
                acc[key] = 0.98 * acc.get(key, v) + 0.02 * v
            if step % 50 == 0 or step == total:
                history.append({"step": step, **{k2: round(v, 5) for k2, v in acc.items()}})
                bar.set_postfix({k2: f"{v:.3g}" for k2, v in acc.items()})
            bar.update(1)
            if step % cfg.ckpt_every == 0:
                save_checkpoint()
        boundary()
    bar.close()
    save_checkpoint()
    model.eval()
    save_tensors(outp / WEIGHTS, model.state_dict())
    meta = {"format": GVAE_FORMAT, "version": GVAE_FORMAT_VERSION, "config": mcfg.to_dict(), "train": cfg.to_dict(),
            "data": data_info, "steps": step, "weights_sha256": sha256_file(outp / WEIGHTS)}
    save_json(outp / CONFIG, meta)
    vae = GraphVAE(model, device=dev, backend=backend, info=meta)
    metrics = evaluate_run(vae, data, seed=cfg.seed)
    metrics["train_seconds_this_session"] = round(time.time() - t0, 1)
    metrics["final_losses"] = acc
    save_json(outp / "metrics.json", metrics)
    return metrics


__all__ = ["CheckpointError", "TrainGVAEConfig", "evaluate_run", "train_gvae"]
