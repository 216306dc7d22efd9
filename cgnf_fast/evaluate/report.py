"""``cgnf evaluate all``: every claim of the library checked on real data, as one markdown report.

Sections (each is skipped, with the reason written in the report, when what it needs is missing):

1. **Predictor** (paper Sec. 4.2): the G-VAE's attribute-predictor error on every NB201 cell
   (and >= 4k NB101 cells), needs ``truth`` (a score store; missing scores are computed).
2. **Latent space**: 2-D projection of the seed space's latents coloured by a ZC score.
3. **Sampled cells**: the 20 cells ``cgnf sample`` proposes for the reference, drawn.
4. **Conditioning**: targets vs *measured* scores of sampled cells, validity/uniqueness/novelty.
5. **Upper bound** (Sec. 4.3) with baselines (generated / random extended / random seed /
   seed-space neighbours), all trained with one protocol and the same seeds.
6. **Accuracy vs ZC**: trained accuracy of every cell trained in 5 against its measured ZC score.
7. **Transfer** (Table 1): reference vs generated cells on a user task, if one is given.

Every trained result and every measured ZC score is cached in ``store``, so a rerun skips what
is done (the command is resumable); figures and JSON are written next to ``report.md``.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..space import get as get_space

__all__ = ["run_all"]


def _say(msg: str, progress: bool) -> None:
    if progress:
        print(f"[report] {msg}", file=sys.stderr, flush=True)


def _model_for(space: str, model: str | None, device: str):
    from ..sampling import NoDefaultModelError, resolve_model
    try:
        return resolve_model(model, get_space(space), device), None
    except NoDefaultModelError as e:
        return None, str(e)


def _plot_acc_vs_zc(points: list[tuple[str, float, float]], zc: str, metric: str, path: Path, title: str) -> float:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .._stats import spearman

    fig, ax = plt.subplots(figsize=(5.6, 4.2))
    names = sorted({p[0] for p in points})
    for i, name in enumerate(n for n in names if n != "reference"):
        xs = [p[1] for p in points if p[0] == name]
        ys = [p[2] for p in points if p[0] == name]
        ax.scatter(xs, ys, s=16, alpha=0.75, label=name, color=f"C{i}")
    ref = [p for p in points if p[0] == "reference"]
    if ref:
        ax.scatter([p[1] for p in ref], [p[2] for p in ref], s=160, marker="*", color="C3", edgecolor="k",
                   zorder=5, label="reference")
    x = np.array([p[1] for p in points])
    y = np.array([p[2] for p in points])
    ok = np.isfinite(x) & np.isfinite(y)
    rho = spearman(x[ok], y[ok]) if ok.sum() > 2 else math.nan
    ax.set_xlabel(f"measured {zc}")
    ax.set_ylabel(f"trained {metric}")
    ax.set_title(f"{title}\nSpearman {rho:.2f} over {int(ok.sum())} cells", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return float(rho)


def run_all(out: str | os.PathLike, *, protocol: str | None = None, seeds: tuple[int, ...] = (0,), n: int = 20,
            seed: int = 0, store: str | None = None, truth_nb201: str | None = None, truth_nb101: str | None = None,
            model_nb201: str | None = None, model_nb101: str | None = None, transfer_task: str | None = None,
            transfer_loss: str | None = None, transfer_metric: str | None = None, nb101_cells: int = 4000,
            device: str = "cpu", data_dir: str | None = None, command: str | None = None,
            progress: bool = True) -> dict[str, Any]:
    """Writes ``out/report.md``, ``out/results.json`` and the figures; returns the results.
    ``protocol`` None: each seed benchmark's own recipe (``nb201`` for nb201-like and the
    transfer task, ``nb101`` for nb101-like; GPU budgets)."""
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise ValueError("the report draws figures and needs matplotlib: pip install 'cgnf_fast[plot]'")
    from .. import __version__
    from ..sampling import draw_cells, sample
    from ..io import write_text_atomic
    from .predictor import evaluate_latent, evaluate_predictor
    from .sampler import evaluate_sampler, measure
    from .training import get_protocol, load_task
    from .upper_bound import run_upper_bound, summary_markdown, transfer_markdown

    t_start = time.time()
    outdir = Path(out)
    outdir.mkdir(parents=True, exist_ok=True)
    protos = {fam: get_protocol(protocol, space=fam) for fam in ("nb201", "nb101")}
    proto = protos["nb201"]
    transfer = None
    if transfer_task is not None:  # read (and checked) before hours of work, not after
        transfer = load_task(transfer_task, proto, loss=transfer_loss, metric=transfer_metric, data_dir=data_dir)
    work = outdir / ".work"  # per-epoch checkpoints of the cell in training (removed when finished)
    if store is None:
        store = str(outdir / "store.sqlite")
    data_dir = data_dir or os.environ.get("CGNF_DATA_DIR")
    results: dict[str, Any] = {"version": __version__, "protocol": proto.to_json(),
                               "protocol_nb101": protos["nb101"].to_json(), "seeds": list(seeds), "n": n,
                               "seed": seed, "store": str(store), "device": device}
    md: list[str] = []
    cmd = command or "cgnf evaluate all --out " + shlex.quote(str(out))
    md += ["# cgnf_fast evaluation report", "",
           f"Produced by `{cmd}` with cgnf_fast {__version__}, torch "
           f"{__import__('torch').__version__}, Python {platform.python_version()} on {platform.machine()} "
           f"({os.cpu_count()} CPUs), device `{device}`, started {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
           "",
           f"* Sampling seed {seed}, {n} cells per set; training seeds {', '.join(map(str, seeds))}.",
           f"* Training: {proto.describe()}." if protocol is not None else
           f"* Training: the benchmarks' recipes: {proto.describe()}; nb101-like: {protos['nb101'].describe()}.",
           "* **Honest labelling:** trained accuracies come from the shared JPEG copy of CIFAR-10 (lossy) with the "
           "protocol above; they compare cells *with each other* and are not comparable with NB201's or NB101's "
           "published accuracies. Published NB201 accuracies (200 epochs, original CIFAR-10) are shown separately, "
           "for the cells inside NB201, as `benchmark acc.`",
           f"* Cache: every trained result and measured ZC score is in `{store}`; rerunning the command reuses them.",
           ""]

    m201, why201 = _model_for("nb201-like", model_nb201, device)
    m101, why101 = _model_for("nb101-like", model_nb101, device)

    # 1. predictor ---------------------------------------------------------------------------
    md += ["## 1. Attribute predictor on the seed spaces (paper Sec. 4.2)", ""]
    pred_rows = []
    for fam, m, why, truth, ncells in (("nb201", m201, why201, truth_nb201, None),
                                       ("nb101", m101, why101, truth_nb101, nb101_cells)):
        if m is None:
            md.append(f"* {fam}: skipped, {why}")
            continue
        if truth is None:
            md.append(f"* {fam}: skipped, no truth store given (`--truth-{fam}`)")
            continue
        _say(f"predictor error on {fam}", progress)
        r = evaluate_predictor(m.vae, truth, fam, n=ncells, device=device, progress=progress)
        results[f"predictor_{fam}"] = r
        pred_rows.append((fam, r))
    md.append("")
    if pred_rows:
        md += ["| seed space | cells (networks) | attribute | mean error % | max error % |", "|---|---:|---|---:|---:|"]
        for fam, r in pred_rows:
            for a, d in r["per_attribute"].items():
                md.append(f"| {fam} | {r['cells']:,} ({r['networks']:,}) | {a} | {d['mean_error_pct']:.2f} | "
                          f"{d['max_error_pct']:.2f} |")
            md.append(f"| {fam} | | **ZC pooled** | **{r['mean_error_pct']:.2f}** | **{r['max_error_pct']:.2f}** |")
        md += ["", "Error = |predicted - true| as % of the largest training value (the paper's measure; paper: NB201 "
               "0.91 / 9.65, NB101 0.78 / 5.26). True scores: computed on the labels' own images, seed and code "
               "version; none of these cells' labels were used in training.", ""]

    # 2. latent ------------------------------------------------------------------------------
    md += ["", "## 2. Latent space", ""]
    if m201 is not None and truth_nb201 is not None and m201.directory is not None:
        _say("latent projection", progress)
        png = outdir / "latent_nb201.png"
        r = evaluate_latent([str(Path(m201.directory) / "gvae")], truth_nb201, "nb201", png=str(png), device=device,
                            progress=progress)
        results["latent_nb201"] = r
        mm = r["models"][0]
        md += ["![latent](latent_nb201.png)", "",
               f"All {r['cells']:,} NB201 cells encoded by the nb201-like G-VAE, PCA to 2-D, coloured by "
               f"{r['zc_attributes'][0]}. Rank correlation between latent distance and ZC distance: "
               f"{mm['distance_spearman']:.3f}.", ""]
    else:
        md.append("Skipped: needs the nb201-like model and `--truth-nb201`.")

    # 3. sampled cells -----------------------------------------------------------------------
    md += ["", "## 3. Sampled cells", ""]
    if m201 is not None:
        cells = sample("best", None, n=n, space="nb201-like", seed=seed, model=m201, device=device)
        draw_cells(cells, outdir / "samples_nb201like.png")
        md += [f"`cgnf sample --space nb201-like --reference best --n {n} --seed {seed}`:", "",
               "![samples](samples_nb201like.png)", ""]
    else:
        md.append(f"Skipped: {why201}")

    # 4. conditioning ------------------------------------------------------------------------
    md += ["", "## 4. Conditioning: asked vs measured", ""]
    if m201 is not None:
        _say("conditioning (sampler)", progress)
        r = evaluate_sampler(m201, space="nb201-like", store=store, png=str(outdir / "conditioning_nb201like.png"),
                             n=n, seed=seed, device=device, progress=progress)
        results["sampler_nb201like"] = r
        md += ["![conditioning](conditioning_nb201like.png)", "",
               "| attribute | Spearman(target, measured) | level means |", "|---|---:|---|"]
        for a, c in r["conditioning"].items():
            means = ", ".join(f"{x['achieved_mean']:.4g}" for x in c["levels"])
            md.append(f"| {a} | {c['spearman_target_achieved']:.3f} | {means} |")
        b = r.get("batch")
        if b:
            md += ["", f"{b['batch']} raw draws: validity {b['validity']:.1%} ({b['repaired']} repaired), uniqueness "
                   f"{b['uniqueness']:.1%}, novelty (outside {b['seed_space']}) {b['novelty']:.1%}."]
        md.append("")
    else:
        md.append(f"Skipped: {why201}")

    # 5. upper bound -------------------------------------------------------------------------
    md += ["", "## 5. Pushing the upper bound (paper Sec. 4.3), with baselines", ""]
    ub_results = {}
    cifar: dict[tuple[int | None, int | None], Any] = {}  # images each protocol uses -> the task, or why not
    for space, m, why in (("nb201-like", m201, why201), ("nb101-like", m101, why101)):
        fam = get_space(space).skeleton
        budget = (protos[fam].train_images, protos[fam].test_images)
        if budget not in cifar:  # decoded once for both spaces when their protocols use as many images
            try:
                cifar[budget] = load_task("cifar10", protos[fam], data_dir=data_dir)
            except ValueError as e:
                cifar[budget] = str(e)
        if isinstance(cifar[budget], str):
            md += [f"### {space}", "", f"Skipped: {cifar[budget]}", ""]
            continue
        if m is None:
            md += [f"### {space}", "", f"Skipped: {why}", ""]
            continue
        _say(f"upper bound on {space}", progress)
        png = outdir / f"upper_bound_{space}.png"
        r = run_upper_bound(space, "best", n=n, seed=seed, model=m, task=cifar[budget], protocol=protos[fam], seeds=seeds,
                            store=store,
                            work_dir=str(work), device=device, png=str(png), data_dir=data_dir,
                            progress=progress)
        ub_results[space] = r
        results[f"upper_bound_{space}"] = r
        md += [f"### {space}", "", f"Task: {r['task']}.", "", summary_markdown(r), "", f"![upper bound]({png.name})", ""]

    # 6. accuracy vs ZC ----------------------------------------------------------------------
    md += ["", "## 6. Trained accuracy vs zero-cost score", ""]
    if "nb201-like" in ub_results:
        r = ub_results["nb201-like"]
        from ..space import Cell

        rows = [("reference", r["reference"])] + [(k, x) for k, s in r["sets"].items() for x in s["rows"]]
        cells = [Cell.from_json(x["cell"]) for _, x in rows]
        _say("measuring synflow of the trained cells", progress)
        zc = measure(cells, "synflow", space="nb201-like", model=m201, store=store, device=device, progress=progress)
        pts = [(k, float(z), float(x["trained_mean"])) for (k, x), z in zip(rows, zc)]
        rho = _plot_acc_vs_zc(pts, "synflow", r["metric"], outdir / "accuracy_vs_synflow.png",
                              f"nb201-like cells trained with protocol {proto.name!r}")
        results["accuracy_vs_synflow"] = {"spearman": rho, "points": pts}
        md += ["![accuracy vs synflow](accuracy_vs_synflow.png)", "",
               f"Spearman between measured synflow and trained accuracy over the {len(pts)} cells of section 5: "
               f"{rho:.3f}.", ""]
    else:
        md.append("Skipped: needs the nb201-like upper-bound run.")

    # 7. transfer ----------------------------------------------------------------------------
    md += ["", "## 7. Transfer to a user task (paper Table 1)", ""]
    if transfer_task is None:
        md.append("Skipped: no task given (`--transfer-task FOLDER|FILE.npz`).")
    elif m201 is None:
        md.append(f"Skipped: {why201}")
    else:
        task = transfer
        _say(f"transfer to {task.name}", progress)
        r = run_upper_bound("nb201-like", "best", n=n, seed=seed, model=m201, task=task, protocol=proto, seeds=seeds,
                            sets=("generated",), store=store, work_dir=str(work), device=device,
                            data_dir=data_dir, benchmark=False, progress=progress)
        results["transfer"] = r
        md += [f"Task: {r['task']} (source: {task.source}).", "", transfer_markdown(r), "",
               summary_markdown(r, per_cell=True).split("\n\n", 1)[1], ""]

    if work.is_dir() and not any(work.iterdir()):
        work.rmdir()
    results["seconds"] = time.time() - t_start
    md += ["", "---", f"Total time: {results['seconds'] / 60:.1f} min (cached results are not retrained)."]
    write_text_atomic(outdir / "results.json", json.dumps(results, indent=1, default=float))
    write_text_atomic(outdir / "report.md", "\n".join(md) + "\n")
    return results
