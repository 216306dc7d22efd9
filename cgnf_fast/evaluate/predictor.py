"""The paper's Section 4.2: error of the attribute predictor on a whole seed space.

The G-VAE was trained without the labels of the evaluated cells: its labelled data excludes
every cell that builds a seed-space network (holdout "seed") or every network of the seed
space's evaluation set (holdout "eval"; see :func:`cgnf_fast.train.data.load_labelled`), and
an evaluation outside what was held out is refused.
Ground truth: the same proxies, computed with the same data batch, seed and code version as
the training labels, read from a score store (``truth``); missing cells are scored into it
first (resumable). Cells that build the same network share its scores, so one cell per
network class is scored (NB201: 5,425 networks for the 15,625 cells).

Error of a cell on an attribute: ``|predicted - true| / max|training value| * 100`` (the
paper's "% of the maximum zero-cost score in the training set").
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..models.api import GraphVAE
from ..space import Cell
from ..space.spaces import extensions, grows_from
from ..train.data import EVAL_SETS, HOLDOUTS, eval_cells, eval_networks, eval_set_sha256
from ..zc.store import ScoreStore

#: Attributes that are not zero-cost proxies (reported apart from the headline figure).
COST_ATTRIBUTES = ("params", "flops")


def find_batch(data_fp: str):
    """The embedded calibration batch whose fingerprint is ``data_fp`` (tries every size)."""
    from ..zc.images import calibration_batch
    from ..zc.run import data_fingerprint

    for k in (16, 32, 64, 128, 250, *range(1, 251)):
        try:
            b = calibration_batch(k)
        except ValueError:
            continue
        if data_fingerprint(*b) == data_fp:
            return b
    raise ValueError(f"the training labels used a data batch (fingerprint {data_fp}) that is not a prefix of the "
                     "embedded calibration batch; score the evaluation cells into the truth store yourself with "
                     "the same --images/--batch-size and rerun")


def _truth_by_network(truth: str, space: str, fp: str, seed: int, ver: str,
                      attributes: list[str]) -> dict[int, dict[str, float]]:
    out: dict[int, dict[str, float]] = {}
    network_of: dict[int, int] = {}  # stored canonical code -> network code (rows repeat it per proxy)
    with ScoreStore(truth) as st:
        for r in st.rows(space=space, data_fp=fp, seed=seed, code_version=ver, proxies=attributes):
            key = network_of.get(r["code"])
            if key is None:
                key = network_of[r["code"]] = Cell.from_json(r["cell"]).network_code()
            v = r["value"] if r["status"] != "error" else float("nan")
            out.setdefault(key, {})[r["proxy"]] = v
    return out


def _check_held_out(vae: GraphVAE, space: str, cells: list[Cell]) -> None:
    """Refuses to evaluate cells whose labels the G-VAE may have learnt from: a model of a space
    that does not grow from ``space`` held none of its cells out, and under the "eval" holdout
    only the seed space's default evaluation set was kept out of its labels."""
    model_space, labelled = vae.cfg.space, vae.training_labels()
    if grows_from(model_space) != space:
        grows = extensions(space)
        raise ValueError(f"this G-VAE learnt {model_space} labels, none of which were held out for an evaluation on "
                         f"{space}; evaluate a model of {' or '.join(grows) or 'its extended space'}")
    holdout = labelled.get("holdout", "seed")  # models from before the option held out the whole seed space
    if holdout not in HOLDOUTS:
        raise ValueError(f"this G-VAE's labels were loaded with holdout {holdout!r}, which keeps {space} labels in; "
                         f"its predictor cannot be evaluated on {space}")
    if holdout == "seed":
        return
    recorded = labelled.get("held_out_sha256")  # (G-VAEs trained before it was recorded: not checked)
    if recorded is not None and recorded != eval_set_sha256(space):
        n, seed = EVAL_SETS[space]
        raise ValueError(f"this install draws a different {space} evaluation set ({n} networks, seed {seed}) from the "
                         f"one this G-VAE held out of its labels (sha256 {recorded[:12]}... recorded, "
                         f"{eval_set_sha256(space)[:12]}... now), so it may have learnt some of the cells; "
                         "retrain it with this install")
    held = eval_networks(space)
    outside = sum(c.network_code() not in held for c in cells)
    if outside:
        n, seed = EVAL_SETS[space]
        raise ValueError(f"{outside} of the {len(cells)} {space} cells to evaluate are outside the {n} networks "
                         f"(seed {seed}) this G-VAE held out of its labels, so it may have learnt them; "
                         f"evaluate on at most {n} cells with the default seed (the first n of those networks)")


def truth_matrix(vae: GraphVAE, truth: str, space: str = "nb201", *, n: int | None = None, device: str = "cpu",
                 workers: int = 1, progress: bool = True) -> tuple[list[Cell], np.ndarray, int]:
    """``(cells, values [M, A] (NaN where not finite), networks)``: the true attributes of the
    seed space's cells, computed like the G-VAE's training labels (missing ones are scored)."""
    from ..zc.run import WAIT_FOR_OTHERS, code_version, require_complete, score_cells

    lab = vae.training_labels()
    attrs = vae.attributes
    fp, seed, ver = lab["data_fp"], int(lab["seed"]), lab["code_version"]
    if code_version() != ver:
        raise ValueError(f"the training labels come from proxy code version {ver}; this install computes "
                         f"{code_version()}, so its scores are not comparable")
    cells = eval_cells(space, n)
    _check_held_out(vae, space, cells)
    reps: dict[int, Cell] = {}
    keys = []
    for c in cells:
        k = c.network_code()
        keys.append(k)
        reps.setdefault(k, c)
    table = _truth_by_network(truth, space, fp, seed, ver, attrs)
    missing = [c for k, c in reps.items() if k not in table or any(a not in table[k] for a in attrs)]
    if missing:
        if progress:
            print(f"scoring {len(missing)} {space} networks missing from {truth} ...", file=sys.stderr)
        require_complete(score_cells(missing, space=space, proxies=attrs, store=truth, batch=find_batch(fp),
                                     seed=seed, device=device, workers=workers, progress=progress,
                                     wait=WAIT_FOR_OTHERS), truth)
        table = _truth_by_network(truth, space, fp, seed, ver, attrs)
    values = np.array([[table[k].get(a, math.nan) for a in attrs] for k in keys], dtype=np.float64)
    values[~np.isfinite(values)] = math.nan
    return cells, values, len(reps)


def evaluate_predictor(gvae: str | GraphVAE, truth: str, space: str = "nb201", *, n: int | None = None,
                       device: str = "cpu", workers: int = 1, progress: bool = True) -> dict[str, Any]:
    """Predictor error on every cell of a seed space (see the module doc)."""
    vae = gvae if isinstance(gvae, GraphVAE) else GraphVAE.load(gvae, device=device)
    cells, values, networks = truth_matrix(vae, truth, space, n=n, device=device, workers=workers, progress=progress)
    attrs = vae.attributes
    pred = vae.predict(cells)
    scale = vae.model.attr_max.double().cpu().numpy()
    per: dict[str, Any] = {}
    zc_errors: list[np.ndarray] = []
    sizes = np.array([c.pruned(allow_zero=True).num_nodes for c in cells])
    for i, a in enumerate(attrs):
        true = values[:, i]
        ok = np.isfinite(true)
        err = np.abs(pred[a][ok] - true[ok]) / scale[i] * 100.0
        by_size = {str(k): {"n": int((sizes[ok] == k).sum()), "mean_error_pct": float(err[sizes[ok] == k].mean()),
                            "max_error_pct": float(err[sizes[ok] == k].max())}
                   for k in sorted(set(sizes[ok].tolist()))}
        per[a] = {"n": int(ok.sum()), "nonfinite_truth": int((~ok).sum()), "mean_error_pct": float(err.mean()),
                  "max_error_pct": float(err.max()), "train_max": float(scale[i]), "by_vertices": by_size}
        if a not in COST_ATTRIBUTES or all(b in COST_ATTRIBUTES for b in attrs):
            zc_errors.append(err)
    # the headline pools the ZC proxies (all attributes when the model learnt only params/flops)
    zc_attrs = [a for a in attrs if a not in COST_ATTRIBUTES] or list(attrs)
    pooled = np.concatenate(zc_errors) if zc_errors else np.zeros(0)
    return {
        "space": space,
        "cells": len(cells),
        "networks": networks,
        "attributes": zc_attrs,
        "n": int(min(per[a]["n"] for a in zc_attrs)) if zc_attrs else 0,
        "mean_error_pct": float(pooled.mean()) if pooled.size else math.nan,
        "max_error_pct": float(pooled.max()) if pooled.size else math.nan,
        "per_attribute": per,
        "truth": {"store": str(truth), **{k: vae.training_labels()[k] for k in ("data_fp", "seed", "code_version")}},
    }


def evaluate_latent(gvaes: list[str], truth: str, space: str = "nb201", *, png: str | None = None,
                    color: str | None = None, n: int | None = None, device: str = "cpu", workers: int = 1,
                    progress: bool = True) -> dict[str, Any]:
    """Latent-space clustering metrics (and a PNG) of one or more G-VAEs on a seed space's cells."""
    from .latent import latent_metrics, plot_latents

    if not gvaes:
        raise ValueError("give at least one G-VAE directory")
    vaes = [GraphVAE.load(g, device=device) for g in gvaes]
    for vae in vaes[1:]:  # before the truth is computed (it may score cells); truth_matrix checks the first
        _check_held_out(vae, space, eval_cells(space, n))
    cells, values, _ = truth_matrix(vaes[0], truth, space, n=n, device=device, workers=workers, progress=progress)
    attrs = vaes[0].attributes
    zc = [i for i, a in enumerate(attrs) if a not in COST_ATTRIBUTES] or list(range(len(attrs)))
    ok = np.isfinite(values[:, zc]).all(1)
    color = color or attrs[zc[0]]
    if color not in attrs:
        raise ValueError(f"--color must be one of the attributes {attrs}, got {color!r}")
    out: dict[str, Any] = {"space": space, "cells": int(ok.sum()), "zc_attributes": [attrs[i] for i in zc], "models": []}
    panels = []
    sel = [c for c, k in zip(cells, ok) if k]
    for g, vae in zip(gvaes, vaes):
        if vae.attributes != attrs:
            raise ValueError(f"{g} was trained on attributes {vae.attributes}, {gvaes[0]} on {attrs}")
        z = vae.encode(sel).cpu().numpy()
        m = latent_metrics(z, values[ok][:, zc])
        tw = vae.info.get("train", {}).get("triplet_weight")
        m.update({"gvae": str(g), "triplet_weight": tw})
        out["models"].append(m)
        title = f"{Path(g).name}\ntriplet weight {tw}: rank corr. of distances {m['distance_spearman']:.3f}"
        panels.append((title, z, values[ok][:, attrs.index(color)]))
    if png:
        plot_latents(panels, color, png)
        out["png"] = png
    return out
