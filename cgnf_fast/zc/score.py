"""``score``: zero-cost proxies of one cell on a batch of images."""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator

import torch
from tqdm import tqdm

from ..nets import as_cell, build, count_flops, count_params, default_skeleton
from ..space import Cell
from .images import calibration_batch
from .proxies import PROXIES

#: Every proxy name ``score`` accepts.
ALL_PROXIES: tuple[str, ...] = (*PROXIES, "params", "flops")
#: Images taken from the embedded calibration batch when no batch is given: the batch the shipped
#: models' labels were scored on (``cgnf pipeline --image-batch``'s default), so a measured score
#: is comparable with what a shipped model predicts.
DEFAULT_BATCH = 16


def check_proxies(proxies: str | list[str] | tuple[str, ...]) -> list[str]:
    names = [p.strip() for p in proxies.split(",")] if isinstance(proxies, str) else list(proxies)
    if not names or any(not isinstance(p, str) or not p for p in names):
        raise ValueError(f"proxies must be a non-empty list of names from: {', '.join(ALL_PROXIES)}")
    bad = [p for p in names if p not in ALL_PROXIES]
    if bad:
        raise ValueError(f"unknown proxies {bad}; choose from: {', '.join(ALL_PROXIES)}")
    return names


def score(
    cell: Cell | str,
    proxies: str | list[str] | tuple[str, ...] = ALL_PROXIES,
    skeleton: str | None = None,
    batch: tuple[torch.Tensor, torch.Tensor] | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    num_classes: int = 10,
    progress: bool | None = None,
) -> dict[str, float]:
    """Zero-cost scores of a cell's network; deterministic for a seed on a given device.

    Each proxy gets a freshly initialised network (``torch.manual_seed(seed)`` before
    building), so proxies never see each other's side effects. ``batch=None`` uses the first
    16 images of the embedded CIFAR-10 calibration batch (``DEFAULT_BATCH``), the batch the
    shipped models' labels were scored on. Non-finite values are returned as they are (the
    caller decides; the score store flags them). ``progress``: a bar over the proxies on stderr
    (``None``: only when stderr is a terminal).

    Shapes:
        batch: ``(x [B, 3, H, W] float32, y [B] int64)``.
    """
    names = check_proxies(proxies)
    cell = as_cell(cell)
    skeleton = default_skeleton(cell) if skeleton is None else skeleton
    if isinstance(cell, Cell) and skeleton == "nb101":
        cell.pruned()  # a clear error for cells with no input -> output path
    if batch is None:
        batch = calibration_batch(DEFAULT_BATCH)
    x, y = batch
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"batch images must be a [B, 3, H, W] tensor, got {getattr(x, 'shape', type(x))}")
    if not isinstance(y, torch.Tensor) or y.shape != (x.shape[0],):
        raise ValueError(f"batch labels must be a [B] tensor matching {x.shape[0]} images")
    device = torch.device(device)
    x = x.to(device, torch.float32)
    y = y.to(device, torch.int64)
    out: dict[str, float] = {}
    bar = tqdm(names, desc="zc.score", unit="proxy", file=sys.stderr, leave=False,
               disable=None if progress is None else not progress)
    with _deterministic(device), bar:
        for name in bar:
            bar.set_postfix_str(name, refresh=True)
            torch.manual_seed(seed)
            net = build(cell, skeleton, num_classes=num_classes).to(device).train()  # weights drawn on the CPU
            if name == "params":
                out[name] = count_params(net) / 1e6
            elif name == "flops":
                out[name] = count_flops(net, tuple(x.shape[1:])) / 1e6
            else:
                out[name] = float(PROXIES[name](net, (x, y)))
    return out


_FLAGS_LOCK = threading.Lock()


@contextlib.contextmanager
def _deterministic(device: torch.device) -> Iterator[None]:
    """On CUDA: deterministic cuDNN algorithms and no TF32 while scoring (restored afterwards),
    so a seed gives the same scores on every run and float32 scores close to the CPU's."""
    if device.type != "cuda":
        yield
        return
    with _FLAGS_LOCK:  # the flags are process-global: one CUDA scorer at a time flips them
        yield from _with_flags()


def _with_flags() -> Iterator[None]:
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = (cudnn.deterministic, cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32)
    cudnn.deterministic, cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32 = True, False, False, False
    try:
        yield
    finally:
        cudnn.deterministic, cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32 = saved
