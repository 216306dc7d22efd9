"""Model directories: a G-VAE and the flow trained on it, as sampling loads them.

The one place that knows the layout::

    DIR/gvae/     a G-VAE run: gvae.safetensors + gvae.json   (cgnf train gvae --out DIR/gvae ...)
    DIR/flow/     a flow run on that G-VAE: flow.safetensors + flow.json
                                                           (cgnf train flow --gvae DIR/gvae --out DIR/flow)
    DIR/model.json  (exported directories) provenance and the sha256 of every file (:func:`export_model`)

The flow must have been trained on exactly that G-VAE (checked: sha256 of its weights). The
pretrained defaults are ``cgnf_fast/pretrained/<space>/`` in the same layout
(:func:`default_model_dir`; ``cgnf pipeline`` makes one in ``RUN/model``). For a space without
one, ``model=None`` raises :class:`NoDefaultModelError` saying how to train one.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from ..io import (CheckpointError, check_sha256, load_config, load_json, load_module, load_tensors, save_json,
                  sha256_file)
from ..models.api import CONFIG as GVAE_CONFIG
from ..models.api import WEIGHTS as GVAE_WEIGHTS
from ..models.api import GraphVAE
from ..models.flow import ConditionalCNF, set_mode
from ..space import DesignSpace
from .conditions import FlowConditions

__all__ = ["FLOW_CONFIG", "FLOW_FORMAT", "FLOW_FORMAT_VERSION", "FLOW_WEIGHTS", "MODEL_FILES", "NoDefaultModelError",
           "SamplingModel", "default_model_dir", "export_model", "gvae_fingerprint", "load_flow", "resolve_model",
           "shipped_spaces"]

#: Where the pretrained default models are installed (one sub-directory per space).
PRETRAINED = Path(__file__).resolve().parent.parent / "pretrained"
FLOW_FORMAT = "cgnf_fast.flow"
FLOW_FORMAT_VERSION = 1
FLOW_WEIGHTS = "flow.safetensors"
FLOW_CONFIG = "flow.json"
#: Files of a model directory (:func:`export_model`).
MODEL_FILES = {"gvae": (GVAE_CONFIG, GVAE_WEIGHTS), "flow": (FLOW_CONFIG, FLOW_WEIGHTS)}


class NoDefaultModelError(ValueError):
    """``model=None`` and no pretrained model is installed for the space."""


# -- the flow of a run directory ------------------------------------------------------------
def gvae_fingerprint(gvae_dir: str | os.PathLike) -> str:
    """sha256 (hex) of a G-VAE run's weights file: what ties a flow to its G-VAE."""
    path = Path(gvae_dir) / GVAE_WEIGHTS
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file (is {gvae_dir} a trained G-VAE run directory?)")
    return sha256_file(path)


def load_flow(out_dir: str | os.PathLike, device: str | torch.device = "cpu",
              gvae_dir: str | os.PathLike | None = None) -> tuple[ConditionalCNF, dict[str, Any]]:
    """The trained flow of a run directory (eval mode, evaluation tolerances) and its
    ``flow.json`` as a dict (``FlowConditions.from_dict(info["conditions"])`` maps attribute
    values to its condition vector). With ``gvae_dir``, checks that the G-VAE there is the one
    the flow was trained on (sha256 of its weights). Raises :class:`CheckpointError` on a
    missing, corrupt or mismatched file."""
    d = Path(out_dir)
    if not d.is_dir():
        raise CheckpointError(f"{d}: no such directory (expected {FLOW_WEIGHTS} and {FLOW_CONFIG} in it)")
    info = load_config(d / FLOW_CONFIG, FLOW_FORMAT, FLOW_FORMAT_VERSION, "flow")
    try:
        flow = ConditionalCNF(**info["config"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{d / FLOW_CONFIG}: bad flow config ({e})") from None
    try:
        conds = FlowConditions.from_dict(info.get("conditions"))
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{d / FLOW_CONFIG}: bad conditions ({e})") from None
    if len(conds.names) != flow.cond_dim:
        raise CheckpointError(f"{d / FLOW_CONFIG}: {len(conds.names)} conditions {conds.names} but the flow takes "
                              f"cond_dim={flow.cond_dim}")
    g = info.get("gvae")
    if not isinstance(g, dict) or not isinstance(g.get("sha256"), str):
        raise CheckpointError(f"{d / FLOW_CONFIG}: missing the fingerprint of the G-VAE the flow belongs to")
    if "weights_sha256" in info:  # (runs trained before it was recorded are checked by a model.json)
        check_sha256(d / FLOW_WEIGHTS, str(info["weights_sha256"]), str(d / FLOW_CONFIG))
    tensors, _ = load_tensors(d / FLOW_WEIGHTS)
    load_module(flow, tensors, str(d / FLOW_WEIGHTS))
    if gvae_dir is not None:
        sha = gvae_fingerprint(gvae_dir)
        if sha != g["sha256"]:
            raise CheckpointError(f"{d} was trained on the G-VAE {g.get('dir')} "
                                  f"(weights sha256 {g['sha256'][:12]}...), "
                                  f"but {gvae_dir} holds other weights (sha256 {sha[:12]}...); pass the G-VAE the "
                                  f"flow was trained with")
    flow.to(device)
    set_mode(flow, False)
    return flow, info


# -- model directories ----------------------------------------------------------------------
MANIFEST = "model.json"


def verify_manifest(d: Path, *, required: bool = True) -> None:
    """Checks the sha256 of every file ``d/model.json`` lists (:func:`export_model` writes it).
    Without a manifest, each run must have recorded its weights' sha256 (``weights_sha256`` in
    ``gvae.json`` / ``flow.json``, checked when they load) unless ``required`` is False.
    Raises :class:`CheckpointError` naming the file and what is wrong."""
    path = d / MANIFEST
    if not path.exists():
        if not required:
            return
        unrecorded = [f"{sub}/{files[0]}" for sub, files in MODEL_FILES.items()
                      if not (d / sub / files[0]).is_file()
                      or "weights_sha256" not in _json_dict(d / sub / files[0])]
        if unrecorded:
            raise CheckpointError(f"{d}: no {MANIFEST}, and {', '.join(unrecorded)} record(s) no sha256 of the "
                                  f"weights, so the files' integrity cannot be checked; load it unverified "
                                  f"(SamplingModel.load(..., verify=False), CLI --unverified) or export it "
                                  f"(cgnf_fast.sampling.export_model) to write a {MANIFEST}")
        return
    info = load_json(path)
    files = info.get("files") if isinstance(info, dict) else None
    if not isinstance(info, dict) or info.get("format") != "cgnf_fast.model" or not isinstance(files, dict) \
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        raise CheckpointError(f"{path}: not a cgnf_fast model manifest (expected format 'cgnf_fast.model' and a "
                              f"'files' object of file -> sha256); the manifest is damaged")
    missing = [f"{sub}/{n}" for sub, names in MODEL_FILES.items() for n in names if f"{sub}/{n}" not in files]
    if missing:
        raise CheckpointError(f"{path}: lists no sha256 for {', '.join(missing)}; the manifest is damaged")
    for name, sha in sorted(files.items()):
        if not (d / name).is_file():
            raise CheckpointError(f"{d / name}: no such file (listed in {path})")
        check_sha256(d / name, sha, str(path))


def _json_dict(path: Path) -> dict[str, Any]:
    info = load_json(path)
    return info if isinstance(info, dict) else {}

def default_model_dir(space: str) -> Path | None:
    """The pretrained model directory shipped for ``space`` (``cgnf_fast/pretrained/<space>``
    holding ``gvae/`` and ``flow/``), or None when none is installed."""
    d = PRETRAINED / space
    if all((d / sub / files[0]).is_file() for sub, files in MODEL_FILES.items()):
        return d
    return None


def shipped_spaces() -> list[str]:
    """Spaces with a pretrained model installed in ``cgnf_fast/pretrained/``."""
    root = PRETRAINED
    return sorted(d.name for d in root.iterdir() if default_model_dir(d.name) is not None) if root.is_dir() else []


def shipped_attributes(space: str) -> list[str]:
    """The attributes a shipped model is conditioned on (read from its ``model.json``, no weights
    loaded): what ``--condition`` accepts for it."""
    d = default_model_dir(space)
    if d is None:
        raise ValueError(f"no pretrained model ships for space {space!r} (shipped: {', '.join(shipped_spaces())})")
    return list(json.loads((Path(d) / "model.json").read_text())["labels"]["attributes"])


def _train_hint(space: str) -> str:
    return f"train one with `cgnf pipeline --space {space} --out RUN`, then pass --model RUN/model"


class SamplingModel:
    """A G-VAE and the conditional flow trained on it, loaded from a model directory (module doc)."""

    def __init__(self, vae: GraphVAE, flow: ConditionalCNF, conditions: FlowConditions, *,
                 directory: Path | None = None, info: dict[str, Any] | None = None) -> None:
        if flow.latent != vae.cfg.latent:
            raise ValueError(f"the flow's latent size {flow.latent} is not the G-VAE's {vae.cfg.latent}")
        missing = [a for a in conditions.names if a not in vae.attributes]
        if missing:
            raise ValueError(f"the flow is conditioned on {missing}, which the G-VAE does not predict "
                             f"(it predicts {vae.attributes})")
        self.vae = vae
        self.flow = flow
        self.conditions = conditions
        self.directory = directory
        self.info = info or {}

    @property
    def space(self) -> DesignSpace:
        return self.vae.space

    @classmethod
    def load(cls, directory: str | os.PathLike, *, device: str | torch.device = "cpu",
             verify: bool = True) -> SamplingModel:
        """Loads ``directory`` (module doc), checking every file's integrity first: the sha256
        values of its ``model.json`` (an exported or shipped model), or, without one, the weights'
        sha256 each run recorded in its config. ``verify=False`` (CLI ``--unverified``) loads a
        directory whose files cannot be checked that way (runs trained by an older version, put
        together by hand); a manifest that is there is checked all the same."""
        d = Path(directory)
        if not d.is_dir():
            raise CheckpointError(f"{d}: no such model directory (expected gvae/ and flow/ sub-directories: a G-VAE "
                                  f"run and a flow run trained on it)")
        for sub in ("gvae", "flow"):
            if not (d / sub).is_dir():
                raise CheckpointError(f"{d}: missing the {sub}/ sub-directory (a model directory holds gvae/, a "
                                      f"G-VAE run, and flow/, a flow run trained on it)")
        verify_manifest(d, required=verify)
        vae = GraphVAE.load(d / "gvae", device=device)
        flow, info = load_flow(d / "flow", device=device, gvae_dir=d / "gvae")
        fspace = info.get("gvae", {}).get("space")
        if fspace is not None and fspace != vae.cfg.space:
            raise CheckpointError(f"{d / 'flow'} was trained for space {fspace!r} but {d / 'gvae'} is a G-VAE of "
                                  f"space {vae.cfg.space!r}")
        return cls(vae, flow, FlowConditions.from_dict(info["conditions"]), directory=d, info=info)


def resolve_model(model: str | os.PathLike | SamplingModel | None, space: DesignSpace,
                   device: str | torch.device) -> SamplingModel:
    if isinstance(model, SamplingModel):
        m = model
    elif model is None:
        d = default_model_dir(space.name)
        if d is None:
            shipped = ", ".join(shipped_spaces()) or "none"
            raise NoDefaultModelError(f"no pretrained model is installed for space {space.name!r} (shipped: "
                                      f"{shipped}); {_train_hint(space.name)}")
        m = SamplingModel.load(d, device=device)
    elif isinstance(model, (str, os.PathLike)):
        m = SamplingModel.load(model, device=device)
    else:
        raise ValueError(f"model must be a model directory (str or path), a SamplingModel or None, got "
                         f"{type(model).__name__}")
    ms = m.space
    if ms.name != space.name or (ms.ops, ms.max_nodes, ms.max_edges, ms.allow_zero) != (
            space.ops, space.max_nodes, space.max_edges, space.allow_zero):
        where = f" in {m.directory}" if m.directory is not None else ""
        raise ValueError(f"the model{where} was trained for space {ms.name!r}, not {space.name!r}; pass "
                         f"space={ms.name!r} or a model trained for {space.name!r}")
    return m


def export_model(run: str | os.PathLike, dest: str | os.PathLike, *,
                 provenance: dict[str, Any] | None = None) -> dict[str, Any]:
    """Copies the files sampling needs from ``run/{gvae,flow}`` to ``dest/{gvae,flow}`` (checked
    to load as a pair first) and writes ``dest/model.json`` (provenance + sha256 of each file)."""
    src = Path(run)
    # refuses a missing, corrupt or mismatched pair before anything is copied (the runs' own
    # weights sha256 are checked where they recorded them; the copy gets a manifest below)
    SamplingModel.load(src, verify=False)
    d = Path(dest)
    tmp = d.with_name(d.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    files: dict[str, str] = {}
    for sub, names in MODEL_FILES.items():
        (tmp / sub).mkdir(parents=True)
        for n in names:
            shutil.copyfile(src / sub / n, tmp / sub / n)
            files[f"{sub}/{n}"] = sha256_file(tmp / sub / n)
    info = {"format": "cgnf_fast.model", "files": files, **(provenance or {})}
    save_json(tmp / "model.json", info)
    SamplingModel.load(tmp)
    if d.exists():
        shutil.rmtree(d)
    tmp.rename(d)
    return info
