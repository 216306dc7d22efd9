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
