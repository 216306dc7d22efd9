"""Tensor argument checks shared by the op wrappers: validate once, name what arrived."""

from __future__ import annotations

import torch


def check_tensor(
    name: str, t: object, *, dtype: torch.dtype, ndim: int, shape_doc: str, device: torch.device | None = None
) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor {shape_doc} {dtype}, got {type(t).__name__}")
    if t.dtype != dtype:
        raise ValueError(f"{name} must have dtype {dtype} (shape {shape_doc}), got {t.dtype}")
    if t.dim() != ndim:
        raise ValueError(f"{name} must have shape {shape_doc}, got {list(t.shape)}")
    if device is not None and t.device != device:
        raise ValueError(f"{name} is on {t.device} but the other arguments are on {device}")
    if t.device.type not in ("cpu", "cuda"):
        raise ValueError(f"{name} is on {t.device}; cgnf_fast ops support cpu and cuda tensors")
    if not t.is_contiguous():
        raise ValueError(f"{name} must be contiguous (call .contiguous() first)")
    return t
