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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..io import shown_path, shown_paths
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


@dataclass
class _Report:
    """What every section of one report run reads and adds to."""

    outdir: Path
    protos: dict[str, Any]  # seed-space family -> Protocol
    store: str
    seeds: tuple[int, ...]
    n: int
    seed: int
    device: str
    data_dir: str | None
    progress: bool
    results: dict[str, Any] = field(default_factory=dict)
    md: list[str] = field(default_factory=list)

    @property
    def work(self) -> Path:
        """Per-epoch checkpoints of the cell in training (removed when finished)."""
        return self.outdir / ".work"

    def say(self, msg: str) -> None:
        _say(msg, self.progress)


def _shown_command(command: str) -> str:
    """The command with its absolute path arguments shown relative (:func:`shown_path`)."""
    return " ".join(shlex.quote(shown_paths(a)) for a in shlex.split(command))


def _section_header(r: _Report, command: str, protocol: str | None) -> None:
    from .. import __version__

    proto = r.protos["nb201"]
    r.results.update({"version": __version__, "protocol": proto.to_json(),
                      "protocol_nb101": r.protos["nb101"].to_json(), "seeds": list(r.seeds), "n": r.n,
                      "seed": r.seed, "store": r.store, "device": r.device})
    r.md += ["# cgnf_fast evaluation report", "",
             f"Produced by `{_shown_command(command)}` with cgnf_fast {__version__}, torch "
             f"{__import__('torch').__version__}, Python {platform.python_version()} on {platform.machine()} "
             f"({os.cpu_count()} CPUs), device `{r.device}`, started "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
             "",
             f"* Sampling seed {r.seed}, {r.n} cells per set; training seeds {', '.join(map(str, r.seeds))}.",
             f"* Training: {proto.describe()}." if protocol is not None else
             f"* Training: the benchmarks' recipes: {proto.describe()}; nb101-like: {r.protos['nb101'].describe()}.",
             "* **Honest labelling:** trained accuracies come from the shared JPEG copy of CIFAR-10 (lossy) with the "
             "protocol above; they compare cells *with each other* and are not comparable with NB201's or NB101's "
             "published accuracies. Published NB201 accuracies (200 epochs, original CIFAR-10) are shown separately, "
             "for the cells inside NB201, as `benchmark acc.`",
             f"* Cache: every trained result and measured ZC score is in `{shown_path(r.store)}`; rerunning the "
             f"command reuses them.",
             ""]


def _section_predictor(r: _Report, models: dict[str, tuple[Any, str | None]], truths: dict[str, str | None],
                       nb101_cells: int) -> None:
    from .predictor import evaluate_predictor

    r.md += ["## 1. Attribute predictor on the seed spaces (paper Sec. 4.2)", ""]
    pred_rows = []
    for fam, ncells in (("nb201", None), ("nb101", nb101_cells)):
        m, why = models[fam]
        if m is None:
            r.md.append(f"* {fam}: skipped, {why}")
            continue
        if truths[fam] is None:
            r.md.append(f"* {fam}: skipped, no truth store given (`--truth-{fam}`)")
            continue
        r.say(f"predictor error on {fam}")
        res = evaluate_predictor(m.vae, truths[fam], fam, n=ncells, device=r.device, progress=r.progress)
        r.results[f"predictor_{fam}"] = res
        pred_rows.append((fam, res))
    r.md.append("")
    if pred_rows:
        r.md += ["| seed space | cells (networks) | attribute | mean error % | max error % |",
                 "|---|---:|---|---:|---:|"]
        for fam, res in pred_rows:
            for a, d in res["per_attribute"].items():
                r.md.append(f"| {fam} | {res['cells']:,} ({res['networks']:,}) | {a} | {d['mean_error_pct']:.2f} | "
                            f"{d['max_error_pct']:.2f} |")
            r.md.append(f"| {fam} | | **ZC pooled** | **{res['mean_error_pct']:.2f}** | "
                        f"**{res['max_error_pct']:.2f}** |")
        r.md += ["", "Error = |predicted - true| as % of the largest training value (the paper's measure; paper: "
                 "NB201 0.91 / 9.65, NB101 0.78 / 5.26). True scores: computed on the labels' own images, seed and "
                 "code version; none of these cells' labels were used in training.", ""]


def _section_latent(r: _Report, m201: Any, truth_nb201: str | None) -> None:
    from .predictor import evaluate_latent

    r.md += ["", "## 2. Latent space", ""]
    if m201 is None or truth_nb201 is None or m201.directory is None:
        r.md.append("Skipped: needs the nb201-like model and `--truth-nb201`.")
        return
    r.say("latent projection")
    png = r.outdir / "latent_nb201.png"
    res = evaluate_latent([str(Path(m201.directory) / "gvae")], truth_nb201, "nb201", png=str(png), device=r.device,
                          progress=r.progress)
    r.results["latent_nb201"] = res
    mm = res["models"][0]
    r.md += ["![latent](latent_nb201.png)", "",
             f"All {res['cells']:,} NB201 cells encoded by the nb201-like G-VAE, PCA to 2-D, coloured by "
             f"{res['zc_attributes'][0]}. Rank correlation between latent distance and ZC distance: "
             f"{mm['distance_spearman']:.3f}.", ""]


def _section_samples(r: _Report, m201: Any, why201: str | None) -> None:
    from ..sampling import BEST_NB201, draw_cells, sample

    r.md += ["", "## 3. Sampled cells", ""]
    if m201 is None:
        r.md.append(f"Skipped: {why201}")
        return
    cells = sample("best", None, n=r.n, space="nb201-like", seed=r.seed, model=m201, device=r.device)
    draw_cells(cells, r.outdir / "samples_nb201like.png", reference=BEST_NB201,
               title=f"{r.n} cells sampled from nb201-like (seed {r.seed}) around the best NB201 cell; "
               f"condition: none (the reference's predicted attributes)")
    r.md += [f"`cgnf sample --space nb201-like --reference best --n {r.n} --seed {r.seed}`:", "",
             "![samples](samples_nb201like.png)", ""]


def _section_conditioning(r: _Report, m201: Any, why201: str | None) -> None:
    from .sampler import evaluate_sampler

    r.md += ["", "## 4. Conditioning: asked vs measured", ""]
    if m201 is None:
        r.md.append(f"Skipped: {why201}")
        return
    r.say("conditioning (sampler)")
    res = evaluate_sampler(m201, space="nb201-like", store=r.store, png=str(r.outdir / "conditioning_nb201like.png"),
                           n=r.n, seed=r.seed, device=r.device, progress=r.progress)
    r.results["sampler_nb201like"] = res
    r.md += ["![conditioning](conditioning_nb201like.png)", "",
             "| attribute | Spearman(target, measured) | level means |", "|---|---:|---|"]
    for a, c in res["conditioning"].items():
        means = ", ".join(f"{x['achieved_mean']:.4g}" for x in c["levels"])
        r.md.append(f"| {a} | {c['spearman_target_achieved']:.3f} | {means} |")
    b = res.get("batch")
    if b:
        r.md += ["", f"{b['batch']} raw draws: validity {b['validity']:.1%} ({b['repaired']} repaired), uniqueness "
                 f"{b['uniqueness']:.1%}, novelty (outside {b['seed_space']}) {b['novelty']:.1%}."]
    r.md.append("")


def _section_upper_bound(r: _Report, models: dict[str, tuple[Any, str | None]]) -> dict[str, Any]:
    from .tasks import load_task
    from .upper_bound import run_upper_bound, summary_markdown

    r.md += ["", "## 5. Pushing the upper bound (paper Sec. 4.3), with baselines", ""]
    ub_results = {}
    cifar: dict[tuple[int | None, int | None], Any] = {}  # images each protocol uses -> the task, or why not
    for space in ("nb201-like", "nb101-like"):
        fam = get_space(space).skeleton
        m, why = models[get_space(space).seed_space]
        budget = (r.protos[fam].train_images, r.protos[fam].test_images)
        if budget not in cifar:  # decoded once for both spaces when their protocols use as many images
            try:
                cifar[budget] = load_task("cifar10", r.protos[fam], data_dir=r.data_dir)
            except ValueError as e:
                cifar[budget] = str(e)
        if isinstance(cifar[budget], str):
            r.md += [f"### {space}", "", f"Skipped: {cifar[budget]}", ""]
            continue
        if m is None:
            r.md += [f"### {space}", "", f"Skipped: {why}", ""]
            continue
        r.say(f"upper bound on {space}")
        png = r.outdir / f"upper_bound_{space}.png"
        res = run_upper_bound(space, "best", n=r.n, seed=r.seed, model=m, task=cifar[budget], protocol=r.protos[fam],
                              seeds=r.seeds, store=r.store, work_dir=str(r.work), device=r.device, png=str(png),
                              data_dir=r.data_dir, progress=r.progress)
        ub_results[space] = res
        r.results[f"upper_bound_{space}"] = res
        r.md += [f"### {space}", "", f"Task: {res['task']}.", "", summary_markdown(res), "",
                 f"![upper bound]({png.name})", ""]
    return ub_results


def _section_accuracy_vs_zc(r: _Report, ub_results: dict[str, Any], m201: Any) -> None:
    from ..space import Cell
    from .sampler import measure

    r.md += ["", "## 6. Trained accuracy vs zero-cost score", ""]
    if "nb201-like" not in ub_results:
        r.md.append("Skipped: needs the nb201-like upper-bound run.")
        return
    res = ub_results["nb201-like"]
    rows = [("reference", res["reference"])] + [(k, x) for k, s in res["sets"].items() for x in s["rows"]]
    cells = [Cell.from_json(x["cell"]) for _, x in rows]
    r.say("measuring synflow of the trained cells")
    zc = measure(cells, "synflow", space="nb201-like", model=m201, store=r.store, device=r.device,
                 progress=r.progress)
    pts = [(k, float(z), float(x["trained_mean"])) for (k, x), z in zip(rows, zc)]
    rho = _plot_acc_vs_zc(pts, "synflow", res["metric"], r.outdir / "accuracy_vs_synflow.png",
                          f"nb201-like cells trained with protocol {r.protos['nb201'].name!r}")
    r.results["accuracy_vs_synflow"] = {"spearman": rho, "points": pts}
    r.md += ["![accuracy vs synflow](accuracy_vs_synflow.png)", "",
             f"Spearman between measured synflow and trained accuracy over the {len(pts)} cells of section 5: "
             f"{rho:.3f}.", ""]


def _section_transfer(r: _Report, transfer: Any, m201: Any, why201: str | None) -> None:
    from .upper_bound import run_upper_bound, summary_markdown, transfer_markdown

    r.md += ["", "## 7. Transfer to a user task (paper Table 1)", ""]
    if transfer is None:
        r.md.append("Skipped: no task given (`--transfer-task FOLDER|FILE.npz`).")
        return
    if m201 is None:
        r.md.append(f"Skipped: {why201}")
        return
    r.say(f"transfer to {transfer.name}")
    res = run_upper_bound("nb201-like", "best", n=r.n, seed=r.seed, model=m201, task=transfer,
                          protocol=r.protos["nb201"], seeds=r.seeds, sets=("generated",), store=r.store,
                          work_dir=str(r.work), device=r.device, data_dir=r.data_dir, benchmark=False,
                          progress=r.progress)
    r.results["transfer"] = res
    r.md += [f"Task: {res['task']} (source: {shown_path(transfer.source)}).", "", transfer_markdown(res), "",
             summary_markdown(res, per_cell=True).split("\n\n", 1)[1], ""]


def run_all(out: str | os.PathLike, *, protocol: str | None = None, seeds: tuple[int, ...] = (0,), n: int = 20,
            seed: int = 0, store: str | None = None, truth_nb201: str | None = None, truth_nb101: str | None = None,
            model_nb201: str | None = None, model_nb101: str | None = None, transfer_task: str | None = None,
            transfer_loss: str | None = None, transfer_metric: str | None = None, nb101_cells: int = 4000,
            device: str = "cpu", data_dir: str | None = None, command: str | None = None,
            progress: bool = True, extra: tuple = (), spaces: tuple[str, ...] = ("nb201-like", "nb101-like")
            ) -> dict[str, Any]:
    """Writes ``out/report.md``, ``out/results.json`` and the figures; returns the results.
    ``protocol`` None: each seed benchmark's own recipe (``nb201`` for nb201-like and the
    transfer task, ``nb101`` for nb101-like; GPU budgets). Paths in the report are shown
    relative to the working directory (:func:`shown_path`). ``extra``: more sections from
    upper layers, ``(key, title, fn)`` with ``fn(outdir) -> (markdown, results)`` (the CLI adds
    ``cgnf evaluate beyond`` this way). ``spaces``: the design spaces whose sections run (the
    others are reported as left out)."""
    import importlib.util

    bad = sorted(set(spaces) - {"nb201-like", "nb101-like"})
    if bad or not spaces:
        raise ValueError(f"spaces must be nb201-like and/or nb101-like, got {', '.join(bad) or 'none'}")
    if importlib.util.find_spec("matplotlib") is None:
        raise ValueError("the report draws figures and needs matplotlib: pip install 'cgnf_fast[plot]'")
    from ..io import write_text_atomic
    from .protocol import get_protocol
    from .tasks import load_task

    t_start = time.time()
    outdir = Path(out)
    outdir.mkdir(parents=True, exist_ok=True)
    protos = {fam: get_protocol(protocol, space=fam) for fam in ("nb201", "nb101")}
    transfer = None
    if transfer_task is not None:  # read (and checked) before hours of work, not after
        transfer = load_task(transfer_task, protos["nb201"], loss=transfer_loss, metric=transfer_metric,
                             data_dir=data_dir)
    r = _Report(outdir, protos, store if store is not None else str(outdir / "store.sqlite"), tuple(seeds), n, seed,
                device, data_dir or os.environ.get("CGNF_DATA_DIR"), progress)
    _section_header(r, command or "cgnf evaluate all --out " + shlex.quote(str(out)), protocol)
    left_out = "left out of this report (`--spaces " + ",".join(spaces) + "`)"
    models = {fam: _model_for(space, model, device) if space in spaces else (None, left_out)
              for fam, space, model in (("nb201", "nb201-like", model_nb201), ("nb101", "nb101-like", model_nb101))}
    (m201, why201) = models["nb201"]
    _section_predictor(r, models, {"nb201": truth_nb201, "nb101": truth_nb101}, nb101_cells)
    _section_latent(r, m201, truth_nb201)
    _section_samples(r, m201, why201)
    _section_conditioning(r, m201, why201)
    ub_results = _section_upper_bound(r, models)
    _section_accuracy_vs_zc(r, ub_results, m201)
    _section_transfer(r, transfer, m201, why201)
    for key, title, fn in extra:
        r.say(f"{title} ...")
        text, res = fn(outdir)
        r.results[key] = res
        number = 1 + sum(line.startswith("## ") for line in r.md)  # numbered on from the sections above
        r.md += ["", f"## {number}. {title}", "", text, ""]

    if r.work.is_dir() and not any(r.work.iterdir()):
        r.work.rmdir()
    r.results["seconds"] = time.time() - t_start
    r.md += ["", "---", f"Total time: {r.results['seconds'] / 60:.1f} min (cached results are not retrained)."]
    write_text_atomic(outdir / "results.json", json.dumps(shown_paths(r.results), indent=1, default=float))
    write_text_atomic(outdir / "report.md", "\n".join(r.md) + "\n")
    return r.results
