"""``cgnf pipeline``: everything from scratch, one resumable command.

Stages, each resumable on its own (rerunning the same command continues where it stopped):

1. **score** -- ``labels`` distinct cells sampled uniformly from the space plus ``stratified``
   cells spread evenly over vertex counts (:meth:`DesignSpace.sample_stratified`; uniform
   sampling almost never draws small cells) plus ``seed_labels`` networks of the seed space
   outside its predictor evaluation set (:func:`cgnf_fast.train.data.seed_label_cells`) are
   scored on real CIFAR-10 images (the embedded calibration batch, or ``images``: a folder of
   class sub-folders) into the SQLite score store.
   Cells already in the store (same proxies, images, seed and code version) are not recomputed,
   so an existing store can be passed with ``store``.
2. **gvae** -- the graph VAE + attribute predictor (:func:`cgnf_fast.train.gvae.train_gvae`) in
   ``OUT/gvae``.
3. **flow** -- the conditional CNF on the G-VAE's latents
   (:func:`cgnf_fast.train.flow.train_flow`) in ``OUT/flow``.
4. **export** -- the files sampling needs (G-VAE and flow weights + configs, nothing else) in
   ``OUT/model/{gvae,flow}``: a model directory for ``cgnf sample --model OUT/model``, and what
   ships as the pretrained default in ``cgnf_fast/pretrained/<space>/`` (with ``model.json``:
   the pipeline config, the exact command and the sha256 of every file).

``OUT/pipeline.json`` records the config; a rerun with a different config is refused (the
stages would otherwise mix two experiments), except for the fields in
:attr:`PipelineConfig.RESUMABLE_CHANGES`.
"""

from __future__ import annotations

import copy
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .io import CheckpointError, load_json, refuse_changed_config, save_json
from .sampling.model import export_model
from .train.flow import TrainFlowConfig
from .train.gvae import TrainGVAEConfig
from .zc.score import DEFAULT_BATCH

__all__ = ["DEFAULT_PROXIES", "PipelineConfig", "run_pipeline"]

#: Proxies scored and learned by default: the two the paper conditions on, plus the exact counts.
DEFAULT_PROXIES = ("synflow", "nwot", "params", "flops")


def _default_gvae() -> TrainGVAEConfig:
    """The pipeline's G-VAE training config: every default is :class:`TrainGVAEConfig`'s; the
    fields in :attr:`PipelineConfig.OWNED` are placeholders the pipeline fills."""
    return TrainGVAEConfig(space="", store="")


def _default_flow() -> TrainFlowConfig:
    """The pipeline's flow training config: :class:`TrainFlowConfig`'s defaults, except
    :attr:`PipelineConfig.FLOW_DEFAULTS`."""
    return TrainFlowConfig(**PipelineConfig.FLOW_DEFAULTS)


@dataclass
class PipelineConfig:
    """What ``cgnf pipeline`` runs (defaults: the shipped nb201-like model).

    The G-VAE and flow stages are configured by nested training configs, ``gvae``
    (:class:`~cgnf_fast.train.gvae.TrainGVAEConfig`) and ``flow``
    (:class:`~cgnf_fast.train.flow.TrainFlowConfig`), which own their defaults; change them in
    place (``cfg.gvae.lr = 1e-3``). The pipeline departs from one of them on purpose
    (:attr:`FLOW_DEFAULTS`): the flow trains on at most 30,000 latents, fewer than ``cgnf train
    flow`` caps them at by default; the pipeline has used this cap since it was written, and both
    shipped models were trained with it. The pipeline sets the :attr:`OWNED` fields of the
    nested configs itself (the G-VAE's space, store, attributes and seed, the flow's seed) from
    its own ``space``, ``store``, ``proxies`` and ``seed``; they stay at their placeholders here.

    Records (``OUT/pipeline.json``, a model's ``model.json``) are flat, as before the nesting:
    :meth:`to_dict` names each nested field ``gvae_<field>`` / ``flow_<field>`` except the four
    in :attr:`RECORD_NAMES` (named as their ``cgnf pipeline`` options); :meth:`from_dict` reads
    these and the records of older versions, which hold only the fields that had a pipeline
    option (the others ran with the training configs' defaults).
    """

    space: str
    #: score store (None: ``OUT/scores.sqlite``)
    store: str | None = None
    proxies: list[str] = field(default_factory=lambda: list(DEFAULT_PROXIES))
    labels: int = 3000
    stratified: int = 1500
    #: seed-space networks outside the seed space's evaluation set (NB101 only: every NB201 cell
    #: is evaluated), learnt from under the "eval" holdout
    seed_labels: int = 0
    #: images per proxy evaluation (``--image-batch``): the shipped models' labels used 16
    batch_size: int = DEFAULT_BATCH
    images: str | None = None
    workers: int = 1
    seed: int = 0
    #: stage 2, the G-VAE
    gvae: TrainGVAEConfig = field(default_factory=_default_gvae)
    #: stage 3, the conditional flow
    flow: TrainFlowConfig = field(default_factory=_default_flow)

    #: the pipeline's defaults where they differ from TrainFlowConfig's (see the class doc)
    FLOW_DEFAULTS = {"max_cells": 30_000}
    #: nested fields the pipeline sets, and from which of its own fields
    OWNED = {"gvae": {"space": "space", "store": "store", "attributes": "proxies", "seed": "seed",
                      "space_spec": "space"},
             "flow": {"seed": "seed"}}
    #: record names of nested fields not named ``<stage>_<field>``
    RECORD_NAMES = {("gvae", "n_unlabelled"): "unlabelled", ("gvae", "include_seed_space"): "seed_space_cells",
                    ("gvae", "heldout"): "heldout", ("gvae", "latent"): "latent"}
    #: may change between a run and its resumption (it does not change what is computed)
    RESUMABLE_CHANGES = ("workers",)
    #: what a run directory written before a field existed used (record names)
    LEGACY_DEFAULTS = {"gvae_predictor": "latent", "gvae_predictor_lr": None, "seed_labels": 0,
                       "gvae_holdout": "seed"}

    @classmethod
    def record_keys(cls) -> dict[str, tuple[str, str]]:
        """Record name -> (stage, field) of every nested field the record holds."""
        keys = {}
        for stage, sub in (("gvae", TrainGVAEConfig), ("flow", TrainFlowConfig)):
            for f in fields(sub):
                if f.name not in cls.OWNED[stage]:
                    keys[cls.RECORD_NAMES.get((stage, f.name), f"{stage}_{f.name}")] = (stage, f.name)
        return keys

    def to_dict(self) -> dict[str, Any]:
        """The flat record (see the class doc)."""
        d = asdict(self)
        nested = {stage: d.pop(stage) for stage in ("gvae", "flow")}
        for key, (stage, name) in self.record_keys().items():
            d[key] = nested[stage][name]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PipelineConfig:
        """Reads a record, this version's or an older one: a missing key is read as
        :attr:`LEGACY_DEFAULTS` gives it (what a run before the option existed used), else as
        today's default."""
        keys = cls.record_keys()
        top = {f.name for f in fields(cls)} - {"gvae", "flow"}
        unknown = sorted(set(d) - top - set(keys))
        if unknown:
            raise ValueError(f"unknown pipeline config keys {unknown}")
        if "space" not in d:
            raise ValueError("a pipeline config record names its space")
        d = {**cls.LEGACY_DEFAULTS, **d}
        cfg = cls(**{k: v for k, v in d.items() if k in top})
        for key, (stage, name) in keys.items():
            if key in d:
                setattr(getattr(cfg, stage), name, copy.deepcopy(d[key]))
        return cfg

    @classmethod
    def default_record(cls) -> dict[str, Any]:
        """:meth:`to_dict` of the default config, less ``space`` (it has none): what each option
        of ``cgnf pipeline`` defaults to."""
        d = cls(space="").to_dict()
        del d["space"]
        return d

    def validate(self) -> None:
        """Every field, including what the G-VAE and flow stages will get, before any work."""
        from .space import spaces
        from .zc.images import calibration_batch
        from .zc.score import check_proxies

        spaces.get(self.space)  # a clear error for an unknown space
        self.proxies = list(check_proxies(self.proxies))
        for stage, owned in self.OWNED.items():
            blank = _default_gvae() if stage == "gvae" else _default_flow()
            for name, source in owned.items():
                if getattr(getattr(self, stage), name) != getattr(blank, name):
                    raise ValueError(f"{stage}.{name} is set by the pipeline from its {source}; leave it at "
                                     f"{getattr(blank, name)!r}")
        for f in ("labels", "stratified", "seed_labels"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{f} must be an int >= 0, got {v!r}")
        if self.labels + self.stratified < 2:
            raise ValueError("labels + stratified must be at least 2 (the G-VAE learns from labelled cells)")
        from .train.data import HOLDOUTS, no_seed_labels

        if self.gvae.holdout not in HOLDOUTS:  # (also in the G-VAE config's check, after these)
            raise ValueError(f"gvae_holdout must be one of {HOLDOUTS}, got {self.gvae.holdout!r}")
        if self.seed_labels:
            why = no_seed_labels(self.space)
            if why:
                raise ValueError(f"seed_labels must be 0 for {self.space}: {why}")
            if self.gvae.holdout != "eval":
                raise ValueError("seed_labels need gvae_holdout 'eval' (the 'seed' holdout drops every "
                                 "seed-space label)")
        record = self.to_dict()
        for f in ("batch_size", "workers", "gvae_epochs", "flow_epochs", "flow_batch", "flow_max_cells", "latent",
                  "gvae_hidden", "gvae_layers", "gvae_batch"):
            v = record[f]
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{f} must be an int >= 1, got {v!r}")
        if self.images is not None and not Path(self.images).is_dir():
            raise ValueError(f"images: {self.images} is not a directory (a folder of class sub-folders)")
        if self.images is None:
            available = calibration_batch()[0].shape[0]
            if self.batch_size > available:
                raise ValueError(f"batch_size {self.batch_size}: the embedded calibration batch has {available} "
                                 f"images; pass --images DIR for larger batches")
        self.gvae_config("scores.sqlite").validate()
        self.flow_config().validate()

    def gvae_config(self, store: str) -> TrainGVAEConfig:
        """The G-VAE stage's config: ``gvae`` with the pipeline's space, ``store``, proxies and seed."""
        from .zc import ALL_PROXIES

        attrs = [p for p in ALL_PROXIES if p in self.proxies]  # the store's canonical order
        return replace(copy.deepcopy(self.gvae), space=self.space, store=store, attributes=attrs, seed=self.seed,
                       space_spec=None)

    def flow_config(self) -> TrainFlowConfig:
        """The flow stage's config: ``flow`` with the pipeline's seed."""
        return replace(copy.deepcopy(self.flow), seed=self.seed)


def _stage(name: str, progress: bool) -> float:
    if progress:
        print(f"[pipeline] {name}", file=sys.stderr, flush=True)
    return time.perf_counter()


def _check_resume(out: Path, cfg: PipelineConfig) -> None:
    old = load_json(out / "pipeline.json")
    if not isinstance(old, dict) or old.get("format") != "cgnf_fast.pipeline" or "config" not in old:
        raise CheckpointError(f"{out / 'pipeline.json'}: not a pipeline run directory (use a new --out)")
    try:
        recorded = PipelineConfig.from_dict(old["config"]).to_dict()
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{out / 'pipeline.json'}: not a pipeline config this version reads ({e}); use a "
                              f"new --out") from None
    # an older record lacks the fields that had no option (read as their defaults); the keys of
    # LEGACY_DEFAULTS stay missing so that the refusal names the flags that resume such a run
    recorded = {k: v for k, v in recorded.items() if k in old["config"] or k not in PipelineConfig.LEGACY_DEFAULTS}
    refuse_changed_config(out, "a pipeline run", recorded, cfg.to_dict(), PipelineConfig.RESUMABLE_CHANGES,
                          PipelineConfig.LEGACY_DEFAULTS)


def run_pipeline(cfg: PipelineConfig, out: str | Path, *, device: str = "cpu", progress: bool = True,
                 command: list[str] | None = None) -> dict[str, Any]:
    """Runs (or resumes) every stage in ``out``; returns a summary (also in ``out/pipeline.json``)."""
    from .space import spaces
    from .train.data import seed_label_cells
    from .train.flow import train_flow
    from .train.gvae import train_gvae
    from .zc import calibration_batch, run
    from .zc.images import folder_batch

    outp = Path(out).resolve()  # absolute: a resume from another directory finds the same run
    if cfg.store is not None:
        cfg.store = str(Path(cfg.store).resolve())
    if cfg.images is not None:
        cfg.images = str(Path(cfg.images).resolve())
    cfg.validate()
    outp.mkdir(parents=True, exist_ok=True)
    if (outp / "pipeline.json").exists():
        _check_resume(outp, cfg)
    store = cfg.store or str(outp / "scores.sqlite")
    cmd = " ".join(shlex.quote(a) for a in (command or []))
    summary: dict[str, Any] = {"format": "cgnf_fast.pipeline", "config": cfg.to_dict(), "command": cmd or None,
                               "stages": {}}
    save_json(outp / "pipeline.json", summary)

    # 1. labels
    extra = f" + {cfg.seed_labels} seed-space" if cfg.seed_labels else ""
    t0 = _stage(f"1/4 score {cfg.labels} random + {cfg.stratified} stratified{extra} {cfg.space} cells into {store}",
                progress)
    sp = spaces.get(cfg.space)
    cells = sp.sample(cfg.labels, seed=cfg.seed, unique=True) if cfg.labels else []
    if cfg.stratified:
        cells = cells + sp.sample_stratified(cfg.stratified, seed=cfg.seed)
    cells = cells + seed_label_cells(sp.name, cfg.seed_labels, cfg.seed)
    if cfg.images:
        batch = folder_batch(cfg.images, cfg.batch_size)
    else:
        batch = calibration_batch(cfg.batch_size)
    sc = run.score_cells(cells, space=sp.name, proxies=cfg.proxies, store=store, batch=batch, seed=cfg.seed,
                         device=device, workers=cfg.workers, progress=progress, wait=run.WAIT_FOR_OTHERS)
    run.require_complete(sc, store)
    summary["stages"]["score"] = {**sc, "seconds": round(time.perf_counter() - t0, 1)}

    # 2. G-VAE: it learns from the store's largest label group; make sure that is this run's
    from .train.data import load_labelled
    from .zc.run import code_version, data_fingerprint

    t0 = _stage("2/4 train the G-VAE", progress)
    gcfg = cfg.gvae_config(store)
    lab = load_labelled(store, sp.name, gcfg.attributes, holdout=gcfg.holdout)
    want = (data_fingerprint(*batch), cfg.seed, code_version())
    if (lab.data_fp, lab.seed, lab.code_version) != want:
        raise ValueError(f"{store}: its largest label group (images {lab.data_fp}, seed {lab.seed}, code "
                         f"{lab.code_version}) is not this pipeline's (images {want[0]}, seed {want[1]}, code "
                         f"{want[2]}), and the G-VAE learns from the largest group; use a store without other scores")
    gm = train_gvae(gcfg, str(outp / "gvae"), device=device, progress=progress)
    summary["stages"]["gvae"] = {"metrics": gm, "seconds": round(time.perf_counter() - t0, 1)}
    save_json(outp / "pipeline.json", summary)

    # 3. flow
    t0 = _stage("3/4 train the conditional flow", progress)
    fm = train_flow(cfg.flow_config(), outp / "gvae", outp / "flow", device=device, progress=progress)
    summary["stages"]["flow"] = {"metrics": fm, "seconds": round(time.perf_counter() - t0, 1)}

    # 4. export
    _stage(f"4/4 export the model to {outp / 'model'}", progress)
    from . import __version__

    labels = load_json(outp / "gvae" / "gvae.json").get("data", {}).get("labelled")
    info = export_model(outp, outp / "model", provenance={
        "space": sp.name, "cgnf_fast_version": __version__, "command": cmd or None, "pipeline": cfg.to_dict(),
        "labels": labels, "gvae_metrics": gm, "flow_conditioning": fm.get("conditioning")})
    summary["stages"]["export"] = {"dir": str(outp / "model"), "files": info["files"]}
    save_json(outp / "pipeline.json", summary)
    return summary
