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

import torch
from torch import nn

from ..space import Cell
from ..zc.images import interleaved

from .tasks import Task

__all__ = ["PROTOCOLS", "Protocol", "TrainResult", "get_protocol", "train_cell", "train_cells"]


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
#: ``cpu-calibrated``: ``cpu-small`` with 10 epochs on 10,000 training images, tested on all 10,000
#: test images: the cheapest protocol tried whose mean over two seeds ranks 40 of NB201's top-5 %
#: networks at Spearman >= 0.5 with their published accuracy (``cgnf evaluate calibrate``; about
#: 25 s per cell and seed here). ``tiny``: tests.
PROTOCOLS: dict[str, Protocol] = {
    "nb201": Protocol(name="nb201"),
    "nb101": Protocol(name="nb101", epochs=108, optimizer="rmsprop", nesterov=False, weight_decay=1e-4),
    "cpu-small": Protocol(name="cpu-small", epochs=5, batch_size=128, train_images=5000, test_images=2000,
                          resolution=16, nb201={"channels": 8, "cells_per_stage": 1},
                          nb101={"stem_channels": 16, "num_stacks": 2, "cells_per_stack": 1, "bn_momentum": 0.1}),
    "cpu-calibrated": Protocol(name="cpu-calibrated", epochs=10, batch_size=128, train_images=10000,
                               test_images=10000, resolution=16, nb201={"channels": 8, "cells_per_stage": 1},
                               nb101={"stem_channels": 16, "num_stacks": 2, "cells_per_stack": 1,
                                      "bn_momentum": 0.1}),
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
