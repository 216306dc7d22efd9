"""Timing shared by the benchmarks (run as ``python benches/bench_*.py``, so importable by name)."""

from __future__ import annotations

import time

import torch


def timed(fn, device: str) -> float:
    """Seconds one call of ``fn`` takes, with the CUDA queue drained before and after."""
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


_MMAP_THRESHOLD, _TRIM_THRESHOLD = 32 << 20, 2**31 - 1  # glibc's largest mmap threshold; trimming off
#: fix_glibc_malloc's setting for a child process, through glibc's environment variables.
FIXED_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(_MMAP_THRESHOLD), "MALLOC_TRIM_THRESHOLD_": str(_TRIM_THRESHOLD)}
FIXED_MALLOC = "glibc, mmap threshold fixed at 32 MiB, no trimming"


def fix_glibc_malloc() -> str:
    """Fix glibc's mmap threshold at its largest value (32 MiB) and turn off heap trimming, for
    the rest of the process; returns what the rows should record as ``"malloc"``.

    By default glibc serves blocks above a threshold with fresh ``mmap`` pages and raises that
    threshold only after such a block is freed, so whether PyTorch's temporaries of a few MB
    (the reference's ``[B, D, width]`` tangents) are reused or faulted in again at every step
    depends on the process's history: the torch path's training step at B = 256 measured
    0.31-0.53 s between runs with the default and 0.33-0.35 s with the threshold fixed
    (``bench_cnf.py --train-step``, 2-core CPU, 2026-12-07: benches/RESULTS.md). Fixing it
    measures torch at its best; the default measures what a user gets without tuning. Raises
    ``RuntimeError`` where glibc is not the allocator."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    if libc is None or not hasattr(libc, "mallopt"):
        raise RuntimeError("--malloc fixed needs glibc's mallopt, which this platform's C library lacks")
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's <malloc.h>
    if not (libc.mallopt(m_mmap_threshold, _MMAP_THRESHOLD) and libc.mallopt(m_trim_threshold, _TRIM_THRESHOLD)):
        raise RuntimeError("glibc's mallopt refused the mmap or trim threshold")
    return FIXED_MALLOC
