"""File I/O shared by every layer: atomic writes, JSON, tensors in safetensors, and the
refusal of a run directory whose config changed. No pickle anywhere.

Every file is written to ``NAME.partial`` and renamed into place, so an interrupted write
never leaves a half-written file under the real name. Loading checks what can go wrong
(missing file, truncated or foreign file, missing or extra tensors, wrong shapes) and raises
:class:`CheckpointError` naming the file and the problem.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt, or does not match the model it is loaded into."""


def _atomic(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(path.name + ".partial")


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """``text`` written to ``PATH.partial``, synced and renamed into place: readers see the old
    file or the whole new one, never a half-written one (nor a stray ``.partial``)."""
    path = Path(path)
    tmp = _atomic(path)
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # a write that failed leaves nothing behind


def save_json(path: str | os.PathLike, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True))


def load_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        with open(path) as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e}); the file is corrupt or truncated") from None


def load_config(path: str | os.PathLike, fmt: str, version: int, what: str, *,
                default_version: int | None = None) -> dict[str, Any]:
    """The JSON config of a cgnf_fast file format (``{"format": fmt, "version": ..., "config": ...}``)
    at ``path``; :class:`CheckpointError` naming the file when it is not one, or is of another
    version than ``version`` (``default_version``: the version of a file that records none).
    ``what`` names the thing for messages ("G-VAE", "flow")."""
    meta = load_json(path)
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        raise CheckpointError(f"{path}: not a cgnf_fast {what} config (missing format/config keys)")
    if meta.get("version", default_version) != version:
        raise CheckpointError(f"{path}: {what} format version {meta.get('version')!r}, this cgnf_fast reads "
                              f"version {version}; retrain the {what} with this version")
    if "config" not in meta:
        raise CheckpointError(f"{path}: not a cgnf_fast {what} config (missing format/config keys)")
    return meta


def tensors_sha256(tensors: dict[str, torch.Tensor], metadata: str = "") -> str:
    """sha256 over named tensors (names, dtypes, shapes and bytes, in name order) and a
    metadata string: what a checkpoint records of itself to detect a flipped byte."""
    h = hashlib.sha256(metadata.encode())
    for k in sorted(tensors):
        t = tensors[k].detach().contiguous().cpu()
        h.update(f"{k}|{t.dtype}|{list(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def check_sha256(path: str | os.PathLike, expected: str, recorded_in: str) -> None:
    """:class:`CheckpointError` unless the file's sha256 is ``expected`` (recorded in ``recorded_in``)."""
    if not Path(path).is_file():
        raise CheckpointError(f"{path}: no such file")
    got = sha256_file(path)
    if got != expected:
        raise CheckpointError(f"{path}: sha256 {got[:12]}... does not match the {expected[:12]}... recorded in "
                              f"{recorded_in}; the file is corrupt or was replaced")


def sha256_file(path: str | os.PathLike) -> str:
    """sha256 (hex) of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def config_changes(old: dict[str, Any], new: dict[str, Any], resumable: tuple[str, ...] = (),
                   legacy: dict[str, Any] | None = None) -> str:
    """The fields (up to four) where a run directory's saved config ``old`` and ``new`` differ,
    as ``"key: old -> new, ..."``; empty when a resume may go on. ``resumable`` fields may change;
    ``legacy`` gives the values of fields a directory written before they existed was run with."""
    was = {**(legacy or {}), **old}
    diff = sorted(k for k in set(was) | set(new) if k not in resumable and was.get(k) != new.get(k))
    return ", ".join(f"{k}: {was.get(k)!r} -> {new.get(k)!r}" for k in diff[:4])


def refuse_changed_config(out: Any, what: str, old: dict[str, Any], new: dict[str, Any],
                          resumable: tuple[str, ...] = (), legacy: dict[str, Any] | None = None) -> None:
    """Raises ValueError when the run directory ``out`` (holding ``what``, e.g. "a flow run") was
    written with a config other than ``new`` in a field that may not change on resume
    (:func:`config_changes`), naming the fields and, for a directory written before some
    options existed, the flags that resume it (:func:`legacy_flags`)."""
    detail = config_changes(old, new, resumable, legacy)
    if detail:
        hint = legacy_flags(old, new, legacy) if legacy else ""
        raise ValueError(f"{out} holds {what} with a different config ({detail}); use a new --out to start another "
                         f"run{hint}")


def legacy_flags(old: dict[str, Any], new: dict[str, Any], legacy: dict[str, Any]) -> str:
    """The command-line flags that resume a run directory written before some options existed
    (``--field-name value`` for each ``legacy`` field missing from ``old`` whose value differs in
    ``new``), as a sentence to append to a refusal; empty when there are none."""
    flags = []
    for k, v in legacy.items():
        if k in old or new.get(k) == v:
            continue
        name = "--" + k.replace("_", "-")
        if isinstance(v, bool):
            flags.append(name if v else "--no-" + name[2:])
        else:
            flags.append(f"{name} {'none' if v is None else v}")
    return f" (it predates these options; to resume it, add {' '.join(flags)})" if flags else ""


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    path = Path(path)
    tmp = _atomic(path)
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_tensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        out: dict[str, torch.Tensor] = {}
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            for k in f.keys():
                out[k] = f.get_tensor(k)
        return out, meta
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e}); the file is corrupt or truncated") from None


def load_module(module: nn.Module, tensors: dict[str, torch.Tensor], where: str) -> None:
    """Load ``tensors`` into ``module`` strictly, with a clear error on any mismatch."""
    own = module.state_dict()
    missing = sorted(set(own) - set(tensors))
    extra = sorted(set(tensors) - set(own))
    if missing or extra:
        raise CheckpointError(f"{where}: tensors do not match the model (missing {missing[:5]}, unexpected {extra[:5]})")
    bad = [f"{k}: {list(tensors[k].shape)} vs {list(v.shape)}" for k, v in own.items() if tensors[k].shape != v.shape]
    if bad:
        raise CheckpointError(f"{where}: tensor shapes do not match the model's config ({'; '.join(bad[:3])})")
    module.load_state_dict(tensors, strict=True)


# -- paths as results show them ------------------------------------------------------------
def shown_path(path: str | os.PathLike) -> str:
    """A path as results show it: inside the installed package as ``<cgnf_fast>/...``, else
    relative to the working directory they were made in (no machine's absolute paths)."""
    p = Path(path).resolve()
    pkg = Path(__file__).resolve().parent
    if p == pkg or pkg in p.parents:
        return "<cgnf_fast>/" + p.relative_to(pkg).as_posix()
    return os.path.relpath(p)


def shown_paths(obj: Any) -> Any:
    """``obj`` (JSON-able) with every absolute path string that exists replaced by :func:`shown_path`."""
    if isinstance(obj, dict):
        return {k: shown_paths(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [shown_paths(v) for v in obj]
    if isinstance(obj, str) and os.path.isabs(obj) and os.path.exists(obj):
        return shown_path(obj)
    return obj
