"""Maximum-likelihood training of the conditional CNF on a trained G-VAE's latents.

The paper's mechanism: once the G-VAE is trained, every cell has a latent ``z`` (its posterior
mean) and an *estimated* attribute vector ``c_hat`` (the G-VAE's predictor on ``z``); the flow
learns ``p(z | c)`` from these pairs, so sampling under a target ``c`` lands in the part of the
latent space whose cells the predictor scores near ``c``.

Data: the G-VAE run's own training cells (its unlabelled + labelled-train cells, read from its
``data.safetensors``; never its labelled-validation or held-out cells), capped at ``max_cells``
(a seeded random subset) and split ``val_fraction`` into a validation part. Latents and
predicted attributes are computed once and saved, so a resumed run trains on the very same
numbers.

Conditions: the chosen G-VAE attributes, as predicted, in the units of the score store (ZC
proxies as stored: synflow is already a log there), except ``params`` and ``flops`` (millions in
the store), which are taken as ``log(max(x, LOG_FLOOR))`` (a predictor may undershoot to <= 0;
the floor is 1e-4 M = 100 parameters / FLOPs); then standardised with the mean and std of the
flow's training split. :class:`FlowConditions` holds this map, is saved in ``flow.json`` and
maps raw attribute values to the flow's ``c`` and back.

Latent normalisation (``latent_norm="data"``, the default): the flow is built with
``moving_batchnorm=True``; the input batch-norm's running statistics are set to the training
latents' mean and variance and both batch-norm layers are kept in *eval* mode for the whole
run, so they act as a fixed data standardisation followed by a learned diagonal affine map
(log-scale and shift), identical in training, evaluation and sampling (no batch statistics,
which would also make the per-row likelihood depend on the batch). ``"none"``: no batch-norm.

Solver tolerances: training uses ``rtol``/``atol`` (default 1e-3, looser than the model's
1e-5 default: fewer dynamics evaluations per forward and adjoint solve as the learned dynamics
stiffen, which is what CPU training pays for; the likelihood's gradient only has to be good
enough to descend). The saved flow carries the evaluation tolerances ``eval_rtol``/``eval_atol``
(default 1e-5), which every reported likelihood and the conditioning check use.

A run lives in one directory:

    train.json          the training config and the G-VAE it belongs to (path + sha256 of its
                        weights); a rerun with another config or another G-VAE is refused
    data.safetensors    latents, predicted attributes and source indices (train / val)
    checkpoint.safetensors + checkpoint.json
                        flow + optimizer state (every ``ckpt_every`` steps, on Ctrl-C, at the end;
                        the step reached is also in the safetensors metadata, which wins if a kill
                        fell between the two writes)
    flow.safetensors + flow.json
                        the final flow (what :func:`load_flow` loads)
    metrics.json        NLL (nats per latent and per dim) at init and at the end, train and
                        validation, and the conditioning check

Rerunning the same command resumes from the last checkpoint. Each step's randomness (the
Hutchinson probes) is seeded from ``(seed, step)`` and each epoch's order from ``(seed, epoch)``,
so a killed and resumed run ends with the same weights, bit for bit, as an uninterrupted one.

Conditioning check (metrics ``conditioning``): for up to ``sanity_n`` validation rows, sample a
latent from the flow under that row's condition, run the G-VAE predictor on it and compare with
the requested condition (transformed as above): Spearman per attribute and mean absolute error
in units of the condition's std; ``baseline_*`` is the same error for latents drawn at random
from the training latents (what ignoring the condition gives); ``decoded`` repeats it after
decoding the sampled latents to cells and encoding them again (what sampling cells sees).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ..io import (CheckpointError, load_json, load_tensors, refuse_changed_config, save_json, save_tensors,
                  sha256_file)
from .._native import kernels_own_the_cores
from .._stats import spearman
from ..models.api import GraphVAE
from ..models.flow import ConditionalCNF, set_mode
from ..sampling.conditions import FlowConditions
from ..sampling.model import FLOW_CONFIG as CONFIG
from ..sampling.model import FLOW_FORMAT as FORMAT
from ..sampling.model import FLOW_FORMAT_VERSION as FORMAT_VERSION
from ..sampling.model import FLOW_WEIGHTS as WEIGHTS
from ..sampling.model import gvae_fingerprint, load_flow
from .checkpoint import load_training, save_on_interrupt, save_training

__all__ = ["TrainFlowConfig", "train_flow"]

LATENT_NORMS = ("data", "none")
#: Above this latent size the default divergence is Hutchinson (exact costs O(D) per evaluation).
EXACT_MAX_LATENT = 64


# -- config -------------------------------------------------------------------------------
@dataclass
class TrainFlowConfig:
    """How to train the flow. The G-VAE run directory is an argument of :func:`train_flow`
    (recorded with the sha256 of its weights in ``train.json``), not part of this config.
    ``cgnf train flow`` and ``cgnf pipeline`` take their defaults from here (the pipeline caps
    ``max_cells`` lower: see :class:`cgnf_fast.pipeline.PipelineConfig`)."""

    #: G-VAE attributes the flow is conditioned on (None: all of the G-VAE's, in its order)
    conditions: list[str] | None = None
    hidden: list[int] = field(default_factory=lambda: [128, 128])
    activation: str = "tanh"
    #: None: "exact" for latents of size <= 64, else "hutchinson"
    divergence: str | None = None
    latent_norm: str = "data"
    zero_init: bool = True
    solver: str = "dopri5"
    rtol: float = 1e-3
    atol: float = 1e-3
    eval_rtol: float = 1e-5
    eval_atol: float = 1e-5
    adjoint: bool = True
    batch: int = 256
    epochs: int = 30
    lr: float = 1e-3
    weight_decay: float = 1e-5
    clip: float = 10.0
    seed: int = 0
    ckpt_every: int = 200
    val_fraction: float = 0.05
    #: cap on the number of latents used (a seeded random subset); None: all
    max_cells: int | None = 100_000
    #: validation conditions used by the conditioning check
    sanity_n: int = 256
    #: the dynamics' kernels while training ("native" or "torch": the same function and steps to
    #: rounding; the saved flow loads with the default, native)
    backend: str = "native"

    #: fields that may change between a run and its resumption (they do not change the steps taken)
    RESUMABLE_CHANGES = ("epochs", "ckpt_every", "eval_rtol", "eval_atol", "sanity_n", "backend")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainFlowConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown flow training config keys {unknown}; known: {sorted(known)}")
        return cls(**d)

    def validate(self) -> None:
        from ..models.flow import ACTIVATIONS, BACKENDS, DIVERGENCES, FIXED_STEP_SOLVERS, SOLVERS

        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")

        if self.conditions is not None:
            if (not isinstance(self.conditions, list) or not self.conditions
                    or not all(isinstance(a, str) for a in self.conditions)
                    or len(set(self.conditions)) != len(self.conditions)):
                raise ValueError(f"conditions must be None (all G-VAE attributes) or a non-empty list of distinct "
                                 f"attribute names, got {self.conditions!r}")
        if (not isinstance(self.hidden, list) or not self.hidden
                or not all(isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in self.hidden)):
            raise ValueError(f"hidden must be a non-empty list of ints >= 1, got {self.hidden!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if self.divergence is not None and self.divergence not in DIVERGENCES:
            raise ValueError(f"divergence must be None (automatic) or one of {DIVERGENCES}, got {self.divergence!r}")
        if self.latent_norm not in LATENT_NORMS:
            raise ValueError(f"latent_norm must be one of {LATENT_NORMS}, got {self.latent_norm!r}")
        adaptive = tuple(s for s in SOLVERS if s not in FIXED_STEP_SOLVERS)
        if self.solver not in adaptive:
            raise ValueError(f"solver must be an adaptive torchdiffeq solver {adaptive}, got {self.solver!r}")
        for f in ("zero_init", "adjoint"):
            if not isinstance(getattr(self, f), bool):
                raise ValueError(f"{f} must be a bool, got {getattr(self, f)!r}")
        for f in ("batch", "epochs", "ckpt_every"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{f} must be an int >= 1, got {v!r}")
        for f in ("seed", "sanity_n"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{f} must be an int >= 0, got {v!r}")
        if self.max_cells is not None and (isinstance(self.max_cells, bool) or not isinstance(self.max_cells, int)
                                           or self.max_cells < 2):
            raise ValueError(f"max_cells must be None (no cap) or an int >= 2, got {self.max_cells!r}")
        for f in ("rtol", "atol", "eval_rtol", "eval_atol", "lr", "clip"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"{f} must be a finite number > 0, got {v!r}")
        v = self.weight_decay
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ValueError(f"weight_decay must be a finite number >= 0, got {v!r}")
        if not (isinstance(self.val_fraction, (int, float)) and 0.0 <= self.val_fraction < 1.0):
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction!r}")

    def resolved_divergence(self, latent: int) -> str:
        if self.divergence is not None:
            return self.divergence
        return "exact" if latent <= EXACT_MAX_LATENT else "hutchinson"


def _load_gvae(gvae_dir: str | os.PathLike, device: str | torch.device):
    return GraphVAE.load(gvae_dir, device=device)


# -- data ---------------------------------------------------------------------------------
@torch.no_grad()
def _build_data(cfg: TrainFlowConfig, vae, gvae_dir: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Latents (posterior means) and predicted attributes of the G-VAE's training cells."""
    src_path = gvae_dir / "data.safetensors"
    if not src_path.is_file():
        raise CheckpointError(f"{src_path}: no such file; the flow trains on the G-VAE run's own training cells, "
                              f"so pass the G-VAE's run directory (the one train gvae wrote), not an export")
    src, _ = load_tensors(src_path)
    need = ("unl_adj", "unl_ops", "lab_adj", "lab_ops")
    missing = [k for k in need if k not in src]
    if missing:
        raise CheckpointError(f"{src_path}: missing tensors {missing} (not a G-VAE run's data file)")
    adj = torch.cat([src["unl_adj"], src["lab_adj"]])  # [N, V, V] uint8
    ops = torch.cat([src["unl_ops"], src["lab_ops"]])  # [N, V] int64
    n_unl = int(src["unl_adj"].shape[0])
    n = int(adj.shape[0])
    rng = np.random.default_rng(cfg.seed)
    perm = rng.permutation(n)
    if cfg.max_cells is not None:
        perm = perm[: cfg.max_cells]
    n_val = int(round(cfg.val_fraction * len(perm)))
    if len(perm) - n_val < 2:
        raise ValueError(f"the G-VAE run has {n} training cells; with max_cells={cfg.max_cells} and "
                         f"val_fraction={cfg.val_fraction} fewer than 2 remain to train the flow on")
    parts = {"val": np.sort(perm[:n_val]), "train": np.sort(perm[n_val:])}
    out: dict[str, torch.Tensor] = {}
    model = vae.model
    for name, idx in parts.items():
        idx_t = torch.from_numpy(idx.astype(np.int64))
        zs, ps = [], []
        for s in range(0, len(idx_t), 4096):
            b = idx_t[s:s + 4096]
            mu, _ = model.encode(adj[b].to(vae.device, torch.float32), ops[b].to(vae.device), vae.backend)
            zs.append(mu.float().cpu())
            ps.append(model.predict(mu).float().cpu())
        D, A = vae.cfg.latent, len(vae.attributes)
        out[f"{name}_z"] = torch.cat(zs) if zs else torch.zeros(0, D)  # [M, D] float32
        out[f"{name}_attrs"] = torch.cat(ps) if ps else torch.zeros(0, A)  # [M, A] float32, store units
        out[f"{name}_src"] = idx_t  # [M] index into G-VAE (unl ++ lab_train) cells
    if not (torch.isfinite(out["train_z"]).all() and torch.isfinite(out["train_attrs"]).all()):
        raise ValueError("the G-VAE produced non-finite latents or predictions for its own training cells")
    info = {"gvae_cells": n, "gvae_unlabelled": n_unl, "gvae_labelled_train": n - n_unl,
            "train": int(len(parts["train"])), "val": int(len(parts["val"])), "attributes": vae.attributes,
            "src_index": "row of concat(unl, lab) in the G-VAE's data.safetensors"}
    return out, info


# -- model --------------------------------------------------------------------------------
def _make_flow(cfg: TrainFlowConfig, latent: int, cond_dim: int, train_z: torch.Tensor):
    """The flow at step 0 (deterministic in ``cfg.seed`` and the data)."""
    torch.manual_seed(cfg.seed)
    flow = ConditionalCNF(latent, cond_dim, hidden=tuple(cfg.hidden), activation=cfg.activation,
                          divergence=cfg.resolved_divergence(latent), solver=cfg.solver, rtol=cfg.rtol,
                          atol=cfg.atol, adjoint=cfg.adjoint, moving_batchnorm=cfg.latent_norm == "data",
                          zero_init=cfg.zero_init, backend=cfg.backend)
    if flow.bn_in is not None:
        z = train_z.double()
        with torch.no_grad():
            flow.bn_in.running_mean.copy_(z.mean(0).float())
            flow.bn_in.running_var.copy_(z.var(0, unbiased=False).float())
    return flow


# -- evaluation ---------------------------------------------------------------------------
@torch.no_grad()
def _nll(flow, z: torch.Tensor, c: torch.Tensor, divergence: str, seed: int, batch: int = 1024) -> float:
    """Mean ``-log p(z | c)`` in nats (float64 accumulation)."""
    dev = flow.device
    g = torch.Generator(device=dev).manual_seed(seed)
    tot = 0.0
    for s in range(0, z.shape[0], batch):
        zb = z[s:s + batch].to(dev)
        cb = c[s:s + batch].to(dev)
        lp = flow.log_prob(zb, cb, divergence=divergence, generator=g if divergence == "hutchinson" else None)
        tot += float(-lp.double().sum())
    return tot / max(z.shape[0], 1)


def _subset(n: int, k: int, seed: int) -> torch.Tensor:
    if n <= k:
        return torch.arange(n)
    return torch.sort(torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:k]).values


def _condition_errors(conds: FlowConditions, req_t: torch.Tensor, got_raw: torch.Tensor) -> dict[str, Any]:

    got_t = conds.transform(got_raw)
    std = torch.tensor(conds.std, dtype=torch.float64)
    err = ((got_t - req_t).abs() / std)  # [n, A] in units of each condition's std
    out: dict[str, Any] = {}
    for i, name in enumerate(conds.names):
        out[name] = {"spearman": round(spearman(req_t[:, i].numpy(), got_t[:, i].numpy()), 4)
                     if req_t.shape[0] >= 3 else None,
                     "mean_abs_error_std": round(float(err[:, i].mean()), 4) if err.shape[0] else None}
    return out


@torch.no_grad()
def _evaluate(flow, vae, conds: FlowConditions, cols: list[int], data: dict[str, torch.Tensor],
              cfg: TrainFlowConfig, init_flow) -> dict[str, Any]:
    dev = flow.device
    latent = flow.latent
    div = "exact" if latent <= EXACT_MAX_LATENT else flow.divergence
    out: dict[str, Any] = {"nll_divergence": div, "eval_rtol": flow.rtol, "eval_atol": flow.atol}
    nll: dict[str, Any] = {}
    for part in ("train", "val"):
        z = data[f"{part}_z"]
        if z.shape[0] == 0:
            continue
        sub = _subset(z.shape[0], 2048, cfg.seed + 7)
        zs = z[sub]
        cs = conds.to_flow(data[f"{part}_attrs"][sub][:, cols]).float()
        final = _nll(flow, zs, cs, div, cfg.seed)
        init = _nll(init_flow, zs, cs, div, cfg.seed)
        nll[part] = {"n": int(zs.shape[0]), "init": round(init, 5), "final": round(final, 5),
                     "init_per_dim": round(init / latent, 5), "final_per_dim": round(final / latent, 5)}
    out["nll"] = nll
    # conditioning check
    part = "val" if data["val_z"].shape[0] >= 3 else "train"
    n_rows = data[f"{part}_z"].shape[0]
    rows = _subset(n_rows, cfg.sanity_n, cfg.seed + 11)
    if rows.numel() == 0:
        return out
    req_raw = data[f"{part}_attrs"][rows][:, cols].double()  # [n, A]
    req_t = conds.transform(req_raw)
    c = conds.standardise(req_t).float().to(dev)
    g = torch.Generator(device=dev).manual_seed(cfg.seed + 13)
    z = flow.sample(c, generator=g)  # [n, D]
    pred = vae.model.predict(z.to(vae.device)).double().cpu()[:, cols]
    g_rnd = torch.Generator().manual_seed(cfg.seed + 17)
    rnd = torch.randint(0, data["train_z"].shape[0], (rows.numel(),), generator=g_rnd)
    base = vae.model.predict(data["train_z"][rnd].to(vae.device)).double().cpu()[:, cols]
    check: dict[str, Any] = {"split": part, "n": int(rows.numel()),
                             "latent": _condition_errors(conds, req_t, pred),
                             "baseline_random_latents": _condition_errors(conds, req_t, base)}
    cells = vae.decode(z.to(vae.device), repair=False)  # the decoder's own validity, before repair
    ok = [i for i, cell in enumerate(cells) if vae.space.contains(cell) and not cell.is_zero]
    dec: dict[str, Any] = {"valid": len(ok), "validity": round(len(ok) / len(cells), 4)}
    if ok:
        p2 = vae.model.predict(vae.encode([cells[i] for i in ok])).double().cpu()[:, cols]
        dec["attributes"] = _condition_errors(conds, req_t[ok], p2)
    check["decoded"] = dec
    out["conditioning"] = check
    return out


# -- run directory ------------------------------------------------------------------------
def _check_resume(out: Path, cfg: TrainFlowConfig, sha: str) -> None:
    old = load_json(out / "train.json")
    if not isinstance(old, dict) or old.get("format") != FORMAT + ".train" or "config" not in old:
        raise CheckpointError(f"{out / 'train.json'}: not a flow training run (use a new --out)")
    refuse_changed_config(out, "a flow run", old["config"], cfg.to_dict(), TrainFlowConfig.RESUMABLE_CHANGES)
    old_sha = old.get("gvae", {}).get("sha256")
    if old_sha != sha:
        raise ValueError(f"{out} holds a flow run trained on another G-VAE ({old.get('gvae', {}).get('dir')}, "
                         f"weights sha256 {str(old_sha)[:12]}...), not this one (sha256 {sha[:12]}...); use a "
                         f"new --out")


def _resolve_conditions(cfg: TrainFlowConfig, vae) -> tuple[list[str], list[int]]:
    names = list(vae.attributes) if cfg.conditions is None else list(cfg.conditions)
    unknown = [a for a in names if a not in vae.attributes]
    if unknown:
        raise ValueError(f"conditions {unknown} are not attributes of this G-VAE; it predicts {vae.attributes}")
    return names, [vae.attributes.index(a) for a in names]


def _run_data(cfg: TrainFlowConfig, vae: GraphVAE, gdir: Path, outp: Path,
              progress: bool) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The run's training data: ``outp/data.safetensors`` when a previous session built it, else
    built from the G-VAE (:func:`_build_data`) and saved there."""
    if (outp / "data.safetensors").exists():
        data, meta = load_tensors(outp / "data.safetensors")
        try:
            return data, json.loads(meta["info"])
        except (KeyError, json.JSONDecodeError):
            raise CheckpointError(f"{outp / 'data.safetensors'}: missing its info metadata; delete it to "
                                  f"rebuild") from None
    if progress:
        print(f"encoding the G-VAE's training cells ({gdir}) ...", file=sys.stderr)
    data, data_info = _build_data(cfg, vae, gdir)
    save_tensors(outp / "data.safetensors", data, metadata={"info": json.dumps(data_info)})
    return data, data_info


def train_flow(cfg: TrainFlowConfig, gvae_dir: str | os.PathLike, out: str | os.PathLike, *, device: str = "cpu",
               progress: bool = True) -> dict[str, Any]:
    """Train (or resume) the conditional flow of the G-VAE run ``gvae_dir`` in directory ``out``;
    returns the final metrics (also written to ``out/metrics.json``)."""
    cfg.validate()
    gdir = Path(gvae_dir)
    sha = gvae_fingerprint(gdir)
    vae = _load_gvae(gdir, device)
    names, cols = _resolve_conditions(cfg, vae)
    outp = Path(out)
    outp.mkdir(parents=True, exist_ok=True)
    dev = torch.device(device)
    if (outp / "train.json").exists():
        _check_resume(outp, cfg, sha)
    save_json(outp / "train.json", {"format": FORMAT + ".train", "config": cfg.to_dict(),
                                    "gvae": {"dir": str(gdir.resolve()), "sha256": sha}})
    data, data_info = _run_data(cfg, vae, gdir, outp, progress)
    conds = FlowConditions.fit(names, data["train_attrs"][:, cols].double())
    train_z = data["train_z"]  # [M, D]
    train_c = conds.to_flow(data["train_attrs"][:, cols]).float()  # [M, A]
    latent = int(train_z.shape[1])
    flow = _make_flow(cfg, latent, len(names), train_z).to(dev)
    params = [p for p in flow.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    M = int(train_z.shape[0])
    steps_per_epoch = max(1, math.ceil(M / cfg.batch))
    total = cfg.epochs * steps_per_epoch
    ck_path = outp / "checkpoint.safetensors"
    ck = load_training(ck_path, flow, opt)
    step = ck["step"] if ck else 0
    history: list[dict[str, float]] = ck.get("history", []) if ck else []

    def lr_at(s: int) -> float:
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(s, total) / total))

    def save_checkpoint() -> None:
        save_training(ck_path, flow, opt, {"step": step, "history": history[-500:], "total_steps": total,
                                           "nll_ema": ema})

    bar = tqdm(total=total, initial=step, desc="train flow", unit="step", disable=not progress, file=sys.stderr,
               dynamic_ncols=True)
    set_mode(flow, True)
    t0 = time.time()
    # the average goes on from the checkpoint (unrounded where it has it; older ones: the rounded history)
    ema: float | None = ck["nll_ema"] if ck and "nll_ema" in ck else (
        history[-1].get("nll_ema") if history else None)
    # native CPU kernels: the loop's tensor ops (B x D) run on one torch thread, so no idle OpenMP
    # workers spin on the cores the next solve needs (_native.kernels_own_the_cores)
    cores = kernels_own_the_cores() if cfg.backend == "native" and dev.type == "cpu" else contextlib.nullcontext()
    with cores, save_on_interrupt(save_checkpoint, bar, lambda: (step, total)) as boundary:
        while step < total:
            boundary()
            epoch, k = divmod(step, steps_per_epoch)
            perm = torch.randperm(M, generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch))
            idx = perm[k * cfg.batch:(k + 1) * cfg.batch]
            torch.manual_seed(cfg.seed * 1_000_003 + step)  # the Hutchinson probes of this step
            z, c = train_z[idx].to(dev), train_c[idx].to(dev)
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            loss = -flow.log_prob(z, c).mean()
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the flow's NLL became {loss.item()} at step {step}; lower lr or the "
                                         f"solver tolerances")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.clip)
            opt.step()
            step += 1
            v = loss.item()
            ema = v if ema is None else 0.95 * ema + 0.05 * v
            if step % 10 == 0 or step == total:
                history.append({"step": step, "nll": round(v, 5), "nll_ema": round(ema, 5), "nfe": flow.nfe})
                bar.set_postfix({"nll": f"{ema:.4g}", "nfe": flow.nfe})
            bar.update(1)
            if step % cfg.ckpt_every == 0:
                save_checkpoint()
        boundary()
    bar.close()
    save_checkpoint()
    train_seconds = time.time() - t0
    fcfg = {**flow.config(), "rtol": cfg.eval_rtol, "atol": cfg.eval_atol, "backend": "native"}
    save_tensors(outp / WEIGHTS, flow.state_dict())
    meta = {"format": FORMAT, "version": FORMAT_VERSION, "config": fcfg,
            "train_tolerances": {"rtol": cfg.rtol, "atol": cfg.atol},
            "conditions": conds.to_dict(), "latent_norm": cfg.latent_norm,
            "gvae": {"dir": str(gdir.resolve()), "sha256": sha, "space": vae.cfg.space, "latent": latent,
                     "attributes": vae.attributes},
            "train": cfg.to_dict(), "data": data_info, "steps": step,
            "weights_sha256": sha256_file(outp / WEIGHTS)}
    save_json(outp / CONFIG, meta)
    final, _ = load_flow(outp, device=device, gvae_dir=gdir)  # what users get, checked end to end
    init_flow = _make_flow(cfg, latent, len(names), train_z).to(dev)
    init_flow.rtol, init_flow.atol = cfg.eval_rtol, cfg.eval_atol
    set_mode(init_flow, False)
    metrics = _evaluate(final, vae, conds, cols, data, cfg, init_flow)
    metrics["steps"] = step
    metrics["train_seconds_this_session"] = round(train_seconds, 1)
    metrics["final_train_nll_ema"] = ema
    save_json(outp / "metrics.json", metrics)
    return metrics
