"""Resumable training checkpoints: a model's and its optimizer's tensors with the loop's state
in one atomic safetensors file (:mod:`cgnf_fast.io` writes and checks the files)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..io import CheckpointError, load_json, load_module, load_tensors, save_json, save_tensors, tensors_sha256


def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer's state as flat tensors (``opt.<param index>.<name>``) plus JSON-able rest."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"opt.{idx}.{k}"] = v
            else:
                scalars.setdefault(str(idx), {})[k] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def restore_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], rest: dict[str, Any], where: str) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, v in tensors.items():
        if not name.startswith("opt."):
            continue
        _, idx, k = name.split(".", 2)
        state.setdefault(int(idx), {})[k] = v
    for idx, d in rest.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(d)
    try:
        opt.load_state_dict({"state": state, "param_groups": rest["param_groups"]})
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{where}: optimizer state does not match the model ({e})") from None


def save_training(path: str | os.PathLike, model: nn.Module, opt: torch.optim.Optimizer,
                  state: dict[str, Any]) -> None:
    """A resumable training checkpoint in one atomic file: the model's and the optimizer's
    tensors, with ``state`` (JSON: step, history, ...) and the optimizer's non-tensor state in
    the safetensors metadata, so a kill can never pair tensors with a stale step. A
    human-readable copy of the metadata is written next to it afterwards (``.json``)."""
    path = Path(path)
    ot, orest = optimizer_tensors(opt)
    tens = {f"model.{k}": v for k, v in model.state_dict().items()}
    tens.update(ot)
    full = {**state, "optimizer": orest}
    text = json.dumps(full)
    save_tensors(path, tens, metadata={"checkpoint": text, "sha256": tensors_sha256(tens, text)})
    save_json(path.with_suffix(".json"), full)


def load_training(path: str | os.PathLike, model: nn.Module, opt: torch.optim.Optimizer) -> dict[str, Any] | None:
    """Restores ``model`` and ``opt`` from a :func:`save_training` checkpoint and returns its
    state (``None`` when there is no checkpoint: a fresh run). Also reads the first flow layout,
    where the metadata held only the step and the JSON copy the rest. Raises
    :class:`CheckpointError` for a corrupt file or one that does not match the model."""
    path = Path(path)
    if not path.exists():
        return None
    tens, meta = load_tensors(path)
    if "sha256" in meta and tensors_sha256(tens, meta.get("checkpoint", "")) != meta["sha256"]:
        raise CheckpointError(f"{path}: its tensors or state do not match the sha256 it was saved with; the "
                              f"checkpoint is corrupt (delete it to restart the run)")
    try:
        if "checkpoint" in meta:
            state = json.loads(meta["checkpoint"])
        else:  # first flow layout
            state = {**load_json(path.with_suffix(".json")), "step": int(meta["step"])}
            state["history"] = [h for h in state.get("history", []) if h["step"] <= state["step"]]
        state["step"] = int(state["step"])
        rest = state["optimizer"]
    except (KeyError, ValueError, TypeError):
        raise CheckpointError(f"{path}: no readable checkpoint metadata; the checkpoint is corrupt (delete it to "
                              f"restart the run)") from None
    load_module(model, {k[6:]: v for k, v in tens.items() if k.startswith("model.")}, str(path))
    restore_optimizer(opt, tens, rest, str(path))
    return state


@contextlib.contextmanager
def save_on_interrupt(save: Callable[[], None], bar: Any,
                      position: Callable[[], tuple[int, int]]) -> Iterator[Callable[[], None]]:
    """Ctrl-C inside the block (a training loop) takes effect only at a step boundary.

    The block gets ``boundary``, which the loop calls between steps (before each step and after
    the last). SIGINT only sets a flag; the next ``boundary()`` then ``save()``s a checkpoint,
    closes the progress ``bar``, says at which ``position() = (step, total)`` it stopped and how
    to resume, and raises ``KeyboardInterrupt``. So a checkpoint never holds weights or
    optimizer state from the middle of a step (an interrupt inside ``opt.step()`` used to save
    them one step ahead of the recorded step). A second Ctrl-C stops at once without saving:
    the last periodic checkpoint stands. Outside the main thread (no signal handler can be set)
    a ``KeyboardInterrupt`` propagates unsaved, for the same reason.
    """
    requested = [0]

    def on_sigint(signum: int, frame: Any) -> None:
        requested[0] += 1
        if requested[0] > 1:
            raise KeyboardInterrupt

    def boundary() -> None:
        if requested[0]:
            save()
            bar.close()
            step, total = position()
            print(f"interrupted at step {step}/{total}; checkpoint saved, rerun the same command to resume",
                  file=sys.stderr)
            raise KeyboardInterrupt

    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, on_sigint) if main else None
    try:
        yield boundary
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)
