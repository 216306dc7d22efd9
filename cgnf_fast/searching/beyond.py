"""``cgnf evaluate beyond``: the paper's "beyond the seed space" claim decided on ground truth.

The paper (Sec. 4.3) generates ~20 cells around the best cell of a seed space and reports that
some beat it. Here the seed space ``S`` is the part of NAS-Bench-201 a rule cuts out and the whole
of NB201 plays the extended space, so every generated cell has a published accuracy (class means
of a table column, as ``cgnf search`` reads tables). Per rule:

1. **Labels from S only.** Up to ``labels`` networks of ``S`` (a seeded draw) get the pipeline's
   attributes: synflow and nwot as measured for ``cgnf search`` (``pretrained/nb201/``: 16
   embedded CIFAR-10 images, seed 0, the pipeline's defaults) and the exact parameter and FLOP
   counts; they go into a score store as ``cgnf zc score`` would write them.
2. **The model as ``cgnf pipeline`` trains it**, on the space ``nb201``: the G-VAE with its
   default config (the unlabelled cells are NB201's other networks, from anywhere: structures,
   never labels) and the flow with the pipeline's (:attr:`cgnf_fast.pipeline.PipelineConfig.FLOW_DEFAULTS`).
3. **The reference** is the best network of ``S`` by the table. ``sample()`` draws ``n`` (20)
   cells *outside* ``S`` around it (``exclude``), once per sampling seed, with the reference's
   own predicted attributes as the condition ("generated") and with the condition moved one
   standard deviation along the ridge direction of the table's accuracy on ``S``'s attributes
   ("aimed", fitted on ``S`` only).
4. **Baselines**, ``n`` cells outside ``S`` per seed: ``random`` (strings drawn uniformly, distinct
   networks), ``params`` (random among networks within +-10 % of the reference's parameter count),
   ``neighbours`` (the reference's one-edit neighbours outside ``S``; all of them when there are
   at most ``n``) and ``zc`` (the top ``n`` by the sum of the synflow and nwot ranks among
   ``zc_pool`` random networks outside ``S``).

Per (method, seed): how many of the cells beat the reference and best-of-``n`` minus the
reference; per method the means with 95 % bootstrap intervals over the seeds; and paired
one-sided Wilcoxon signed-rank tests of generated (and aimed) against each baseline over the
seeds. The rules are fixed here, before any result (the issue's four, plus one easy rule reported
as a sanity check, not evidence).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._stats import bootstrap_ci
from .._stats import wilcoxon_greater as _wilcoxon_greater
from ..space import vocabulary
from .domain import NB201Domain, nb201_domain
from .generator import zc_table
from .objectives import TableObjective

__all__ = ["RULES", "BeyondConfig", "Rule", "plot_beyond", "run_beyond", "to_markdown"]

_CONVS = ("nor_conv_3x3", "nor_conv_1x1")


@dataclass(frozen=True)
class Rule:
    """A seed space cut out of NB201: the strings whose six edge ops pass ``keep``."""

    name: str
    text: str
    keep: Callable[[tuple[str, ...]], bool]
    sanity: bool = False


#: Fixed before any result (issue 24); ``sanity`` rules have an easy outside and are no evidence.
RULES: dict[str, Rule] = {r.name: r for r in (
    Rule("one-conv3x3", "at most one nor_conv_3x3", lambda ops: ops.count("nor_conv_3x3") <= 1),
    Rule("two-convs", "at most two convolutions of either kind", lambda ops: sum(o in _CONVS for o in ops) <= 2),
    Rule("no-skip", "no skip_connect", lambda ops: "skip_connect" not in ops),
    Rule("no-conv-into-last", "no convolution on an edge into the last node",
         lambda ops: not any(o in _CONVS for o in ops[3:6])),  # edges (0,3), (1,3), (2,3)
    Rule("no-conv3x3", "no nor_conv_3x3",
         lambda ops: "nor_conv_3x3" not in ops, sanity=True),
)}
METHODS = ("generated", "aimed", "random", "params", "neighbours", "zc")
#: latents ``sample()`` may draw for one set (64 of its default rounds of 256)
MAX_DRAWS = 16_384


@dataclass
class BeyondConfig:
    """What ``cgnf evaluate beyond`` runs (module doc)."""

    table: str
    column: str = "cifar10_test_200ep"
    rules: list[str] = field(default_factory=lambda: list(RULES))
    seeds: int = 10
    n: int = 20
    labels: int = 3000
    zc_pool: int = 200
    aim_step: float = 1.0
    seed: int = 0
    #: G-VAE / flow epochs (None: the pipeline's); fewer only for tests
    gvae_epochs: int | None = None
    flow_epochs: int | None = None

    def validate(self) -> None:
        unknown = [r for r in self.rules if r not in RULES]
        if unknown or not self.rules:
            raise ValueError(f"rules must be a non-empty list of {list(RULES)}, got {self.rules!r}")
        for name in ("seeds", "n", "labels", "zc_pool"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        if not isinstance(self.aim_step, (int, float)) or not math.isfinite(self.aim_step):
            raise ValueError(f"aim_step must be a finite number, got {self.aim_step!r}")


# -- the seed space ---------------------------------------------------------------------------
def _edge_ops(dom: NB201Domain) -> list[tuple[str, ...]]:
    names = vocabulary.NB201_EDGE_OPS
    return [tuple(names[int(k)] for k in row) for row in dom.digits]


def seed_classes(rule: Rule, dom: NB201Domain, ops: list[tuple[str, ...]] | None = None) -> np.ndarray:
    """``[classes] bool``: the networks with a string the rule keeps (a network with strings on
    both sides is inside: outside means a network the seed space does not have)."""
    ops = ops if ops is not None else _edge_ops(dom)
    keep = np.fromiter((rule.keep(o) for o in ops), dtype=bool, count=dom.size)
    inside = np.zeros(dom.num_classes, dtype=bool)
    inside[dom.class_of[keep]] = True
    inside[dom.zero_class] = True  # the network with no input -> output path is never a candidate
    return inside


# -- labels and the model ------------------------------------------------------------------
def _exact_counts(dom: NB201Domain) -> np.ndarray:
    """``[classes, 2]`` exact (params, FLOPs) of each network's representative cell."""
    from ..nets import ExactCounts

    ec = ExactCounts("nb201")
    return np.asarray([ec.get(dom.cell(int(i)), dom.network_codes[k]) for k, i in enumerate(dom.representative)],
                      dtype=np.float64)


def write_labels(path: Path, classes: np.ndarray, dom: NB201Domain, zc: dict[str, np.ndarray],
                 counts: np.ndarray) -> int:
    """The attributes of ``classes`` into a score store as ``cgnf zc score`` writes them; returns
    how many were written (a network whose synflow or nwot failed is stored with the failure)."""
    from .. import __version__
    from ..zc import ScoreStore

    fp = "pretrained-nb201-zc"  # the measured scores of pretrained/nb201 (module doc)
    with ScoreStore(path) as st:
        for k in classes.tolist():
            cell = dom.cell(int(dom.representative[k]))
            values = {"params": counts[k, 0] / 1e6, "flops": counts[k, 1] / 1e6}  # store units: millions
            errors = {}
            for p in ("synflow", "nwot"):
                v = zc[p][k]
                if math.isfinite(v):
                    values[p] = v
                else:
                    errors[p] = "not measured (failed in pretrained/nb201)"
            st.put("nb201", cell.canonical_code(), cell.dumps(), fp, 0, __version__, values, errors=errors)
    return len(classes)


def train_rule_model(out: Path, store: Path, cfg: BeyondConfig, progress: bool) -> Path:
    """G-VAE + flow on space nb201 as ``cgnf pipeline`` trains them (module doc); resumable.
    Returns the exported model directory."""
    from ..pipeline import PipelineConfig
    from ..sampling.model import export_model
    from ..train.flow import train_flow
    from ..train.gvae import train_gvae

    model = out / "model"
    if (model / "model.json").is_file():
        return model
    pc = PipelineConfig(space="nb201", store=str(store), seed=cfg.seed)
    g = pc.gvae_config(str(store))
    # NB201 has 5,425 networks: every one not labelled is an unlabelled cell or held out
    g.n_unlabelled, g.include_seed_space, g.heldout = 4925, 0, 500
    g.attributes = ["synflow", "nwot", "params", "flops"]
    if cfg.gvae_epochs is not None:
        g.epochs = cfg.gvae_epochs
    f = pc.flow_config()
    if cfg.flow_epochs is not None:
        f.epochs = cfg.flow_epochs
    train_gvae(g, out / "gvae", progress=progress)
    train_flow(f, out / "gvae", out / "flow", progress=progress)
    export_model(out, model, provenance={"made_by": "cgnf evaluate beyond", "labels": str(store)})
    return model


# -- one rule ------------------------------------------------------------------------------
@dataclass
class _Rule:
    """What the methods of one rule share."""

    rule: Rule
    inside: np.ndarray  # [classes] bool
    acc: np.ndarray  # [classes] table class means
    ref_class: int
    outside_strings: np.ndarray  # strings of networks outside S
    counts: np.ndarray  # [classes, 2]
    zc: dict[str, np.ndarray]


def _distinct(strings: Sequence[int], dom: NB201Domain, k: int) -> list[int]:
    """The networks of ``strings`` in order, the first ``k`` distinct."""
    out: list[int] = []
    for i in strings:
        c = int(dom.class_of[int(i)])
        if c not in out:
            out.append(c)
            if len(out) == k:
                break
    return out


def _baselines(r: _Rule, dom: NB201Domain, n: int, zc_pool: int, seed: int) -> dict[str, list[int]]:
    """Each baseline's networks for one seed (module doc)."""
    rng = np.random.default_rng(10_000 + seed)
    draw = r.outside_strings[rng.permutation(len(r.outside_strings))]
    out = {"random": _distinct(draw, dom, n)}
    ref_params = r.counts[r.ref_class, 0]
    near = np.abs(r.counts[:, 0] - ref_params) <= 0.1 * ref_params
    out["params"] = _distinct([i for i in draw if near[dom.class_of[i]]], dom, n)
    nb = _distinct([i for i in dom.neighbours(int(dom.representative[r.ref_class]))
                    if not r.inside[dom.class_of[i]]], dom, dom.num_classes)
    out["neighbours"] = nb if len(nb) <= n else [nb[j] for j in sorted(rng.choice(len(nb), n, replace=False))]
    pool = np.asarray(_distinct(draw, dom, zc_pool))
    score = np.zeros(len(pool))
    for p in ("synflow", "nwot"):  # rank sum, a failed proxy ranks last
        v = np.where(np.isfinite(r.zc[p][pool]), r.zc[p][pool], -np.inf)
        score += np.argsort(np.argsort(v, kind="stable"), kind="stable")
    out["zc"] = [int(pool[j]) for j in np.argsort(-score, kind="stable")[:n]]
    return out


def _generated(r: _Rule, dom: NB201Domain, model: Any, cfg: BeyondConfig, seed: int,
               condition: dict[str, float] | None) -> list[int]:
    """``sample()``'s ``n`` cells outside S (fewer, reported as such, when even ``MAX_DRAWS``
    latents do not give ``n`` distinct new networks)."""
    from ..sampling import sample
    from ..sampling.sampler import SamplingError

    code2class = {code: k for k, code in enumerate(dom.network_codes)}

    def inside(cell) -> bool:
        k = code2class.get(cell.network_code())
        return k is None or bool(r.inside[k])

    ref = dom.cell(int(dom.representative[r.ref_class]))
    n = cfg.n
    while n > 0:
        try:
            cells = sample(ref, condition, n=n, space="nb201", seed=seed, model=model, exclude=inside,
                           max_draws=MAX_DRAWS, progress=False)
        except SamplingError as e:  # the same draws with n = what they found succeed (SamplingError)
            n = min(e.found, n - 1)
            continue
        return [code2class[c.cell.network_code()] for c in cells]
    return []


def _aim(r: _Rule, model: Any, labelled: np.ndarray, dom: NB201Domain, step: float) -> dict[str, float]:
    """The reference's condition moved ``step`` along the ridge direction of the accuracy on the
    labelled networks' predicted attributes (all of them in ``S``): :func:`cgnf_fast.sampling.aim_condition`."""
    from ..sampling import aim_condition

    cells = [dom.cell(int(dom.representative[k])) for k in labelled]
    ref = dom.cell(int(dom.representative[r.ref_class]))
    return aim_condition(ref, cells, r.acc[labelled].tolist(), step=step, space="nb201", model=model, members=True)


def _row(method: str, seed: int, classes: list[int], r: _Rule) -> dict[str, Any]:
    a = r.acc[classes]
    ref = float(r.acc[r.ref_class])
    return {"method": method, "seed": seed, "k": len(classes), "above": int((a > ref).sum()),
            "best_minus_ref": float(a.max() - ref) if len(a) else math.nan, "classes": [int(c) for c in classes],
            "mean_params_m": float(r.counts[classes, 0].mean() / 1e6) if len(classes) else math.nan}


def _summary(rows: list[dict[str, Any]], seeds: int) -> dict[str, Any]:
    by = {m: sorted((x for x in rows if x["method"] == m), key=lambda x: x["seed"]) for m in METHODS}
    out: dict[str, Any] = {}
    for m, xs in by.items():
        if not xs:
            continue
        if all(x["k"] == 0 for x in xs):  # e.g. no network outside S within 10 % of the reference's params
            out[m] = {"seeds": len(xs), "k": 0, "empty": True}
            continue
        above = np.asarray([x["above"] for x in xs], dtype=np.float64)
        gain = np.asarray([x["best_minus_ref"] for x in xs], dtype=np.float64)
        out[m] = {"seeds": len(xs), "k": [x["k"] for x in xs][0], "mean_above": float(above.mean()),
                  "mean_above_ci95": list(bootstrap_ci(above)), "mean_best_minus_ref": float(gain.mean()),
                  "mean_best_minus_ref_ci95": list(bootstrap_ci(gain)),
                  "seeds_best_above_ref": int((gain > 0).sum()),
                  "mean_params_m": float(np.mean([x["mean_params_m"] for x in xs]))}
    tests = {}
    for ours in ("generated", "aimed"):
        for base in ("random", "params", "neighbours", "zc"):
            if ours in out and base in out and not out[base].get("empty") and len(by[ours]) == len(by[base]):
                da = [a["above"] - b["above"] for a, b in zip(by[ours], by[base])]
                dg = [a["best_minus_ref"] - b["best_minus_ref"] for a, b in zip(by[ours], by[base])]
                tests[f"{ours}_vs_{base}"] = {"above_p_greater": _wilcoxon_greater(np.asarray(da, dtype=float)),
                                              "best_p_greater": _wilcoxon_greater(np.asarray(dg, dtype=float)),
                                              "above_mean_difference": float(np.mean(da))}
    return {"methods": out, "paired_tests": tests}


def run_rule(name: str, cfg: BeyondConfig, out: Path, table: TableObjective, dom: NB201Domain,
             shared: dict[str, Any], progress: bool = True) -> dict[str, Any]:
    """One rule, resumable: labels, model, then every (method, seed) appended to ``rows.jsonl``."""
    from ..sampling.model import SamplingModel

    rule = RULES[name]
    d = out / name
    d.mkdir(parents=True, exist_ok=True)
    inside = seed_classes(rule, dom, shared["ops"])
    acc = table.class_means
    ref_class = int(np.nanargmax(np.where(inside & np.isfinite(acc), acc, -np.inf)))
    outside_strings = np.flatnonzero(~inside[dom.class_of])
    r = _Rule(rule, inside, acc, ref_class, outside_strings, shared["counts"], shared["zc"])
    rng = np.random.default_rng(cfg.seed)
    members = np.flatnonzero(inside & (np.arange(dom.num_classes) != dom.zero_class))
    labelled = np.sort(rng.permutation(members)[:cfg.labels])
    store = d / "labels.sqlite"
    if not store.exists():
        tmp = d / "labels.sqlite.partial"
        tmp.unlink(missing_ok=True)
        write_labels(tmp, labelled, dom, shared["zc"], shared["counts"])
        os.replace(tmp, store)
    t0 = time.perf_counter()
    model_dir = train_rule_model(d, store, cfg, progress)
    model = SamplingModel.load(model_dir)
    rows_path = d / "rows.jsonl"
    rows = [json.loads(x) for x in rows_path.read_text().splitlines()] if rows_path.exists() else []
    done = {(x["method"], x["seed"]) for x in rows}
    aim = _aim(r, model, labelled, dom, cfg.aim_step)
    for seed in range(cfg.seeds):
        todo = {}
        if ("generated", seed) not in done:
            todo["generated"] = _generated(r, dom, model, cfg, seed, None)
        if ("aimed", seed) not in done:
            todo["aimed"] = _generated(r, dom, model, cfg, seed, aim)
        todo |= {m: v for m, v in _baselines(r, dom, cfg.n, cfg.zc_pool, seed).items() if (m, seed) not in done}
        with open(rows_path, "a") as f:
            for m, classes in todo.items():
                row = _row(m, seed, classes, r)
                rows.append(row)
                f.write(json.dumps(row) + "\n")
    ref_idx = int(dom.representative[ref_class])
    outside_acc = acc[~inside & np.isfinite(acc)]
    return {"rule": name, "text": rule.text, "sanity": rule.sanity, "seed_networks": int(members.size),
            "outside_networks": int((~inside).sum()), "labelled": int(len(labelled)),
            "reference": {"index": ref_idx, "arch": dom.arch(ref_idx), "accuracy": float(acc[ref_class]),
                          "params_m": float(r.counts[ref_class, 0] / 1e6)},
            "outside_above_reference": int((outside_acc > acc[ref_class]).sum()),
            "outside_above_reference_share": float((outside_acc > acc[ref_class]).mean()),
            "aim_condition": aim, "seconds_this_run": round(time.perf_counter() - t0, 1), **_summary(rows, cfg.seeds)}


def run_beyond(cfg: BeyondConfig, out: str | os.PathLike, *, progress: bool = True) -> dict[str, Any]:
    """Every rule of ``cfg`` (module doc); writes ``out/beyond.json`` and returns it. Resumable:
    each rule's labels, model and (method, seed) rows are kept in ``out/<rule>/``."""
    cfg.validate()
    outp = Path(out)
    outp.mkdir(parents=True, exist_ok=True)
    dom = nb201_domain()
    table = TableObjective(cfg.table, cfg.column, "max", dom)
    shared = {"ops": _edge_ops(dom), "counts": _exact_counts(dom), "zc": zc_table()}
    from ..io import shown_paths

    result = {"config": shown_paths(asdict(cfg)), "table": table.describe(), "rules": []}
    for name in cfg.rules:
        result["rules"].append(run_rule(name, cfg, outp, table, dom, shared, progress))
        _save(outp / "beyond.json", result)
    return result


def _save(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def to_markdown(result: dict[str, Any]) -> str:
    """Per rule: the reference, then per method the mean number of cells above it and the mean
    best-of-n minus it (95 % bootstrap intervals over the seeds), and the paired tests' p-values."""
    lines = [f"Ground truth: {result['table']}.", ""]
    for r in result["rules"]:
        ref = r["reference"]
        tag = " (sanity check: the outside is easy)" if r["sanity"] else ""
        lines += [f"**{r['rule']}**: {r['text']}{tag}. S: {r['seed_networks']:,} networks; reference {ref['arch']} "
                  f"({ref['accuracy']:.2f}, {ref['params_m']:.2f}M params); {r['outside_above_reference']} of the "
                  f"{r['outside_networks']:,} networks outside S beat it "
                  f"({100 * r['outside_above_reference_share']:.1f} %).", "",
                  "| method | cells | mean above ref [95 % CI] | mean best - ref [95 % CI] | seeds best > ref | "
                  "mean params (M) |", "| --- | --- | --- | --- | --- | --- |"]
        for m, x in r["methods"].items():
            if x.get("empty"):
                lines.append(f"| {m} | 0 | no such network outside S | | | |")
                continue
            a, g = x["mean_above_ci95"], x["mean_best_minus_ref_ci95"]
            lines.append(f"| {m} | {x['k']} | {x['mean_above']:.2f} [{a[0]:.2f}, {a[1]:.2f}] | "
                         f"{x['mean_best_minus_ref']:+.2f} [{g[0]:+.2f}, {g[1]:+.2f}] | "
                         f"{x['seeds_best_above_ref']}/{x['seeds']} | {x['mean_params_m']:.2f} |")
        tests = ", ".join(f"{k.replace('_vs_', ' > ')}: p = {v['above_p_greater']:.3g}"
                          for k, v in r["paired_tests"].items())
        lines += ["", f"Paired one-sided Wilcoxon tests over the seeds (cells above the reference): {tests}.", ""]
    return "\n".join(lines)


def plot_beyond(result: dict[str, Any], path: str | os.PathLike) -> None:
    """One panel per rule: each method's mean number of cells above the reference with its 95 %
    bootstrap interval (a method with no cells is left out); written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..sampling.drawing import save_figure

    rules = result["rules"]
    fig, axes = plt.subplots(1, len(rules), figsize=(3.2 * len(rules), 3.8), squeeze=False, sharey=False)
    colors = {"generated": "#d62728", "aimed": "#ff7f0e", "random": "#7f7f7f", "params": "#9467bd",
              "neighbours": "#2ca02c", "zc": "#1f77b4"}
    for ax, r in zip(axes[0], rules):
        ms = [m for m, x in r["methods"].items() if not x.get("empty")]
        means = [r["methods"][m]["mean_above"] for m in ms]
        lo = [r["methods"][m]["mean_above"] - r["methods"][m]["mean_above_ci95"][0] for m in ms]
        hi = [r["methods"][m]["mean_above_ci95"][1] - r["methods"][m]["mean_above"] for m in ms]
        ax.bar(range(len(ms)), means, yerr=[lo, hi], color=[colors.get(m, "k") for m in ms], capsize=3)
        ax.set_xticks(range(len(ms)), [f"{m} ({r['methods'][m]['k']})" for m in ms], fontsize=7, rotation=40,
                      ha="right")
        ax.set_title(f"{r['rule']}{' (sanity)' if r['sanity'] else ''}\nref {r['reference']['accuracy']:.2f}",
                     fontsize=9)
        ax.tick_params(axis="y", labelsize=8)
    axes[0][0].set_ylabel("cells above the reference\n(mean over seeds, 95 % CI)", fontsize=8)
    fig.suptitle("Beyond the seed space on NB201 ground truth: n cells outside S per seed (set size in brackets)",
                 fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
