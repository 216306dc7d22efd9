"""The argument checks every layer uses (ops, models): validate once at the boundary, and name
the argument, what was expected and what arrived."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["check_choice", "check_int", "check_positive", "check_tensor"]


def check_tensor(name: str, x: object, shape_doc: str, *, dtype: torch.dtype | tuple[torch.dtype, ...],
                 shape: Sequence[int | None] | None = None,
                 ndim: int | None = None, device: torch.device | None = None, dtype_of: str | None = None,
                 dtype_note: str | None = None, device_of: str = "the other arguments are",
                 device_hint: str = "", devices: Sequence[str] | None = None, contiguous: bool = False,
                 finite: bool = False) -> torch.Tensor:
    """``x`` checked, or ``ValueError`` naming ``name``:

    - a tensor of ``dtype`` (or of one of a tuple of dtypes; message: "the dtype of ``dtype_of``"
      when it must match another argument's, else the dtype with ``dtype_note``, default the shape);
    - of ``shape`` (``None`` entries: any size, printed as ``B``) or of ``ndim`` dimensions,
      described as ``shape_doc`` (``"[B, N, N]"``);
    - on ``device`` (message: "``name`` is on X but ``device_of`` on Y" + ``device_hint``), and
      on a device type in ``devices``;
    - contiguous, and without NaN/inf, when asked.
    """
    dtypes = dtype if isinstance(dtype, tuple) else (dtype,)
    if not isinstance(x, torch.Tensor):
        kinds = " or ".join(str(d).removeprefix("torch.") for d in dtypes) if len(dtypes) > 1 else str(dtype)
        raise ValueError(f"{name} must be a torch.Tensor {shape_doc} {kinds}, got {type(x).__name__}")
    if x.dtype not in dtypes:
        if dtype_of is not None:
            raise ValueError(f"{name} must have the dtype of {dtype_of} ({dtype}), got {x.dtype}")
        raise ValueError(f"{name} must have dtype {' or '.join(map(str, dtypes))} "
                         f"({dtype_note or f'shape {shape_doc}'}), got {x.dtype}")
    if shape is not None:
        if x.dim() != len(shape) or any(s is not None and x.shape[i] != s for i, s in enumerate(shape)):
            want = "[" + ", ".join("B" if s is None else str(s) for s in shape) + "]"
            raise ValueError(f"{name} must have shape {shape_doc} = {want}, got {list(x.shape)}")
    elif ndim is not None and x.dim() != ndim:
        raise ValueError(f"{name} must have shape {shape_doc}, got {list(x.shape)}")
    if device is not None and x.device != device:
        raise ValueError(f"{name} is on {x.device} but {device_of} on {device}{device_hint}")
    if devices is not None and x.device.type not in devices:
        raise ValueError(f"{name} is on {x.device}; cgnf_fast ops support {' and '.join(devices)} tensors")
    if contiguous and not x.is_contiguous():
        raise ValueError(f"{name} must be contiguous (call .contiguous() first)")
    if finite and x.numel() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} must be finite, got {int((~torch.isfinite(x)).sum())} NaN/inf entries")
    return x


def check_choice(name: str, value: object, choices: Sequence[str]) -> str:
    """``value``, one of ``choices``, or a ValueError listing them."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f'{name} must be one of {{"' + '", "'.join(choices) + f'"}}, got {value!r}')
    return value


def check_int(name: str, value: object, minimum: int) -> int:
    """``value``, an int (not a bool) >= ``minimum``, or a ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def check_positive(name: str, value: object) -> float:
    """``value`` as a finite float > 0, or a ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)) or value <= 0:
        raise ValueError(f"{name} must be a finite float > 0, got {value!r}")
    return float(value)
