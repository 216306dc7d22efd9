"""Does the sampler do what it promises? ``cgnf evaluate sampler``.

Two measurements on a model directory (a G-VAE + its conditional flow):

**Conditioning.** For each attribute in ``attributes`` (e.g. synflow and params), ``levels``
target values around the reference: ``t(ref) + k * std`` for ``k`` in ``levels``, where ``t``
is the flow's transform of that attribute (identity for ZC proxies, log for params/FLOPs, so a
params level is a multiplicative step) and ``std`` the spread of that attribute over the flow's
training cells; only that attribute is given, so the others follow it from the reference's
predicted values as they co-vary in the training data (what :func:`cgnf_fast.sample` does with
a partial condition). At each level, :func:`cgnf_fast.sample` draws ``n`` cells (same seed
at every level). Their attribute is then **measured**, not predicted: params/FLOPs are the exact
counts of the built network; ZC proxies are computed on the very images, seed and code version
of the G-VAE's training labels (cached in ``store``). Reported: Spearman between target and
achieved over all ``levels * n`` cells, and per level the mean/median achieved value, the mean
predicted value, and how many cells fall inside the seed space.

**Batch statistics.** ``batch`` latents drawn from the flow under the reference's own predicted
attributes, decoded (with the decoder's repair of invalid layouts, as in sampling), without any
deduplication: validity (share decoding to a valid, non-zero cell), uniqueness (distinct
networks / ``batch``) and novelty (share of the distinct networks outside the seed space).
"""

from __future__ import annotations

import math
import statistics
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .._stats import spearman
from ..sampling import DEFAULT_OVERSAMPLE
from ..space import Cell

__all__ = ["DEFAULT_LEVELS", "batch_statistics", "evaluate_sampler", "measure"]

#: Offsets of the target levels, in units of the attribute's std over the flow's training cells.
DEFAULT_LEVELS = (-1.0, -0.5, 0.0, 0.5, 1.0)


def measure(cells: Sequence[Cell], attribute: str, *, space: str, model, store: str | None,
            device: str = "cpu", progress: bool = False) -> np.ndarray:
    """The true ``attribute`` of each cell in store units (params/FLOPs in millions; ZC proxies
    on the G-VAE's label images and seed). ZC scores go through the score store ``store``."""
    from ..nets import ExactCounts
    from ..sampling import COUNT_ATTRIBUTES
    from ..zc.run import WAIT_FOR_OTHERS, code_version, require_complete, score_cells
    from ..zc.store import ScoreStore
    from .predictor import find_batch

    cells = list(cells)
    if attribute in COUNT_ATTRIBUTES:
        counts = ExactCounts(model.space.skeleton)
        i = COUNT_ATTRIBUTES.index(attribute)
        return np.array([counts.get(c, c.network_code())[i] / 1e6 for c in cells])
    if store is None:
        raise ValueError(f"measuring {attribute!r} needs a score store (--store): ZC scores are computed, not "
                         f"predicted")
    lab = model.vae.training_labels()
    fp, seed, ver = lab["data_fp"], int(lab["seed"]), lab["code_version"]
    if code_version() != ver:
        raise ValueError(f"the G-VAE's labels come from proxy code version {ver}; this install computes "
                         f"{code_version()}, so measured scores would not be comparable")
    require_complete(score_cells(cells, space=space, proxies=[attribute], store=store, batch=find_batch(fp),
                                 seed=seed, device=device, progress=progress, wait=WAIT_FOR_OTHERS), store)
    codes = {c.pruned(allow_zero=True).canonical_code() for c in cells}
    values: dict[int, float] = {}
    with ScoreStore(store) as st:
        for r in st.rows(space=space, data_fp=fp, seed=seed, code_version=ver, proxies=[attribute]):
            if r["code"] in codes:
                values[r["code"]] = r["value"] if r["status"] != "error" else math.nan
    return np.array([values.get(c.pruned(allow_zero=True).canonical_code(), math.nan) for c in cells])


def batch_statistics(model, reference: Cell, *, batch: int = 1000, seed: int = 0,
                     temperature: float = 1.0) -> dict[str, Any]:
    """Validity, uniqueness and novelty of ``batch`` raw draws under the reference's condition."""
    from ..sampling import draw_round
    from ..space.spaces import get as get_space

    conds, sp = model.conditions, model.space
    pred = model.vae.predict([reference])
    c = conds.to_flow(torch.tensor([[float(pred[a][0]) for a in conds.names]], dtype=torch.float64))  # [1, A]
    _, decoded = draw_round(model, c, batch, torch.Generator().manual_seed(seed), temperature)
    seed_name = sp.seed_space
    seed_sp = get_space(sp.grows_from) if sp.grows_from is not None else None
    valid = repaired = 0
    nets: dict[int, Cell] = {}
    for cell, rep in decoded:
        if cell is None:
            continue
        valid += 1
        repaired += int(rep)
        nets.setdefault(cell.network_code(), cell)
    novel = sum(1 for cell in nets.values() if seed_sp is not None and not seed_sp.contains(cell))
    return {"batch": batch, "valid": valid, "validity": valid / batch, "repaired": repaired,
            "unique_networks": len(nets), "uniqueness": len(nets) / batch,
            "novel": novel if seed_sp is not None else None,
            "novelty": (novel / len(nets) if nets else 0.0) if seed_sp is not None else None,
            "seed_space": seed_name}


def evaluate_sampler(model: str | None = None, *, space: str = "nb201-like", reference: Any = "best",
                     attributes: Sequence[str] = ("synflow", "params"), levels: Sequence[float] = DEFAULT_LEVELS,
                     n: int = 20, batch: int = 1000, batches: int = 5, seed: int = 0, temperature: float = 1.0,
                     oversample: float = DEFAULT_OVERSAMPLE, store: str | None = None, png: str | None = None, device: str = "cpu",
                     progress: bool = True) -> dict[str, Any]:
    """The measurements of the module doc; ``model`` None: the installed pretrained model."""
    from ..sampling import resolve_model, resolve_reference, sample
    from ..space.spaces import get as get_space

    sp = get_space(space)
    m = resolve_model(model, sp, device)
    ref = resolve_reference(reference, sp)
    conds = m.conditions
    unknown = [a for a in attributes if a not in conds.names]
    if unknown:
        raise ValueError(f"attributes {unknown}: the flow is conditioned on {conds.names} only")
    if len(levels) < 2:
        raise ValueError(f"need at least 2 levels, got {list(levels)}")
    if isinstance(batches, bool) or not isinstance(batches, int) or batches < 1:
        raise ValueError(f"batches must be an int >= 1, got {batches!r}")
    ref_pred = {a: float(v[0]) for a, v in m.vae.predict([ref]).items()}
    out: dict[str, Any] = {"space": sp.name, "reference": ref.to_json(),
                           "reference_predicted": ref_pred, "n": n, "seed": seed, "temperature": temperature, "oversample": oversample,
                           "levels_std": list(levels), "model": str(m.directory) if m.directory else None,
                           "conditioning": {}}
    for a in attributes:
        i = conds.names.index(a)
        t_ref = float(conds.transform(torch.tensor([[ref_pred[x] for x in conds.names]]))[0, i])
        rows = []
        targets, achieved = [], []
        for k in levels:
            t = t_ref + k * conds.std[i]
            value = math.exp(t) if conds.transforms[i] == "log" else t
            if progress:
                print(f"[sampler] {a}: level {k:+g} std -> target {value:.6g}", file=sys.stderr, flush=True)
            cells = sample(ref, {a: value}, n=n, space=sp, temperature=temperature, seed=seed, model=m,
                           oversample=oversample)
            got = measure([s.cell for s in cells], a, space=sp.name, model=m, store=store, device=device,
                          progress=progress)
            pred = np.array([s.predicted[a] for s in cells])
            targets += [value] * len(cells)
            achieved += got.tolist()
            fin = got[np.isfinite(got)]
            rows.append({"level_std": k, "target": value, "achieved_mean": float(fin.mean()) if fin.size else None,
                         "achieved_median": float(np.median(fin)) if fin.size else None,
                         "predicted_mean": float(pred.mean()), "n": len(cells), "nonfinite": int((~np.isfinite(got)).sum()),
                         "in_seed_space": sum(1 for s in cells if s.in_seed_space)})
        tg, ac = np.array(targets), np.array(achieved)
        ok = np.isfinite(ac)
        means = [r["achieved_mean"] for r in rows]
        out["conditioning"][a] = {
            "spearman_target_achieved": round(spearman(tg[ok], ac[ok]), 4),
            "spearman_levels_means": round(spearman(np.array([r["target"] for r in rows]), np.array(means)), 4)
            if all(x is not None for x in means) else None,
            "levels": rows, "targets": targets, "achieved": achieved}
    if batch:
        if progress:
            print(f"[sampler] validity / uniqueness / novelty of {batch} draws", file=sys.stderr, flush=True)
        seeds = [seed + k for k in range(batches)]
        runs = [batch_statistics(m, ref, batch=batch, seed=s, temperature=temperature) for s in seeds]
        validity, uniqueness = [r["validity"] for r in runs], [r["uniqueness"] for r in runs]
        out["batch"] = runs[0]  # (the first batch, as before --batches)
        out["batches"] = {"seeds": seeds, "runs": runs,
                          "validity_min": min(validity), "validity_mean": statistics.fmean(validity),
                          "uniqueness_min": min(uniqueness), "uniqueness_mean": statistics.fmean(uniqueness)}
    if png:
        plot_conditioning(out, png)
    return out


def plot_conditioning(result: dict[str, Any], path: str) -> None:
    """One panel per attribute: achieved (measured) vs target, cells as dots, level means as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    attrs = list(result["conditioning"])
    fig, axes = plt.subplots(1, len(attrs), figsize=(4.6 * len(attrs), 4.2), squeeze=False)
    for ax, a in zip(axes[0], attrs):
        r = result["conditioning"][a]
        tg, ac = np.array(r["targets"]), np.array(r["achieved"])
        rng = np.random.default_rng(0)
        span = (tg.max() - tg.min()) or 1.0
        ax.scatter(tg + rng.uniform(-0.012, 0.012, tg.size) * span, ac, s=10, alpha=0.45, label="sampled cells")
        lv = r["levels"]
        ax.plot([x["target"] for x in lv], [x["achieved_mean"] for x in lv], "o-", color="C3", label="mean per level")
        lo, hi = min(tg.min(), np.nanmin(ac)), max(tg.max(), np.nanmax(ac))
        ax.plot([lo, hi], [lo, hi], ":", color="grey", label="achieved = target")
        unit = " (M)" if a in ("params", "flops") else ""
        ax.set_xlabel(f"target {a}{unit}")
        ax.set_ylabel(f"measured {a}{unit}")
        ax.set_title(f"{a}: Spearman {r['spearman_target_achieved']:.2f} ({len(tg)} cells)")
        ax.legend(fontsize=8)
    fig.suptitle(f"{result['space']}: one attribute asked at {len(result['levels_std'])} levels around the reference "
                 f"(the others follow it); measured, not predicted", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
