"""Loads the compiled core ``cgnf_fast._C`` (after torch: one OpenMP runtime per process)."""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import torch  # noqa: F401  (must be imported before _C)

try:
    from . import _C
except ImportError as e:  # pragma: no cover - exercised only on broken installs
    here = Path(__file__).resolve().parent
    raise ImportError(
        f"cgnf_fast's native module _C could not be loaded from {here} ({e}). "
        "Install the package with `pip install .` (running from a source checkout without "
        "building it is not supported)."
    ) from e

#: Whether the native module contains the CUDA kernels.
BUILT_WITH_CUDA: bool = bool(_C.build_config()["cuda"])


@functools.cache
def cuda_available() -> bool:
    """True when the CUDA kernels were built and torch and the native runtime see a GPU."""
    return BUILT_WITH_CUDA and torch.cuda.is_available() and _C.cuda_device_count() > 0


class CudaUnavailable(RuntimeError):
    """A CUDA kernel was asked for where cgnf_fast cannot run one."""


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch.device, or a ValueError naming what is wrong with it: not a device
    string, a device other than the CPU or a CUDA GPU, or a GPU torch does not see."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"device {device!r} is not a device; use 'cpu', 'cuda' or 'cuda:N'") from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device {device!r}: cgnf_fast runs on 'cpu' or 'cuda[:N]', not {dev.type}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            cpu_only = torch.version.cuda is None and getattr(torch.version, "hip", None) is None
            build = "a CPU build of torch" if cpu_only else "no GPU visible"
            raise ValueError(f"device {device!r}: torch {torch.__version__} sees no CUDA GPU ({build})")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: torch sees {torch.cuda.device_count()} CUDA GPU(s)")
    return dev


def require_cuda(what: str) -> None:
    if not BUILT_WITH_CUDA:
        raise CudaUnavailable(
            f"{what}: cgnf_fast was built without CUDA kernels (no nvcc at build time, or "
            "CGNF_ENABLE_CUDA=OFF); rebuild on a machine with nvcc or use device='cpu'"
        )
    if not cuda_available():
        raise CudaUnavailable(f"{what}: no CUDA device is available to cgnf_fast's native runtime")


_KERNEL_THREADS: int | None = None


def num_threads() -> int:
    """Threads the native CPU kernels use: torch's setting, or the count kept by
    :func:`kernels_own_the_cores`."""
    return _KERNEL_THREADS or max(1, torch.get_num_threads())


@contextlib.contextmanager
def kernels_own_the_cores():
    """Inside: torch runs its ops on one thread while the native kernels keep torch's thread
    count. For loops of small tensor ops around long native calls (flow training on the CPU):
    a torch op that runs an OpenMP region leaves its workers spinning for milliseconds (libgomp's
    default wait policy), on the cores the next native call needs; measured, the forward solve of a
    training step after the optimizer's ops took 38 instead of 33 ms."""
    global _KERNEL_THREADS
    outer, before = _KERNEL_THREADS, torch.get_num_threads()
    _KERNEL_THREADS = num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
        _KERNEL_THREADS = outer


def stream_of(t: torch.Tensor) -> int:
    return torch.cuda.current_stream(t.device).cuda_stream


def eager_plain(*ts: torch.Tensor | None) -> bool:
    """True when calling an op's kernel directly is the same as calling its ``torch.library``
    custom op: plain cpu/cuda tensors (or parameters) with storage, eager mode with no
    compilation, tracing, functorch transform, dispatch or function mode active, and nothing for
    autograd to record (``None`` entries are skipped). The ops' wrappers then skip the
    dispatcher; the custom ops stay the path for autograd, ``torch.compile``, ``make_fx``/jit
    tracing, ``vmap``, flop counters and fake/meta tensors. (Their first eager call imports
    ``torch._dynamo``, which costs seconds that inference does not need.)"""
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return False
    if (torch._C._len_torch_dispatch_stack() > 0 or torch._C._is_torch_function_mode_enabled()
            or torch._C._functorch.peek_interpreter_stack() is not None):
        return False
    grad = torch.is_grad_enabled()
    for t in ts:
        if t is None:
            continue
        if type(t) not in (torch.Tensor, torch.nn.Parameter) or t.device.type not in ("cpu", "cuda"):
            return False
        if grad and t.requires_grad:
            return False
    return True
