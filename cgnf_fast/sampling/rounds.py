"""Rounds of draws: noise -> the flow's latents under a condition -> decoded, repaired cells.

The noise comes from a CPU ``torch.Generator`` in round order, so a seed gives the same draws on
every device; :func:`_rounds` solves later rounds in a worker thread while the caller examines
the current one, without changing what is drawn.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

import torch

from ..models.decode import decode_logits
from ..space import Cell

if TYPE_CHECKING:
    from .model import SamplingModel

__all__ = ["draw_round"]


def _round_noise(model: SamplingModel, generator: torch.Generator, size: int, temperature: float) -> torch.Tensor:
    """``temperature * N(0, I)`` noise for one round, ``[size, D]`` float64, from the CPU generator."""
    return torch.randn((size, model.flow.latent), generator=generator, dtype=torch.float64) * float(temperature)


def _solve_round(model: SamplingModel, c_row: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The flow's latents for ``noise`` under the condition ``c_row [1, A]``."""
    p = model.flow
    with torch.no_grad():  # (here too: grad mode is per thread, and this may run in a worker)
        return model.flow.sample(c_row.to(p.device, p.dtype).expand(noise.shape[0], -1).contiguous(),
                                 noise=noise.to(p.device, p.dtype))


def _decode_round(model: SamplingModel, z: torch.Tensor,
                  known: set[int] | None) -> list[tuple[Cell | None, bool | None]]:
    vae = model.vae
    with torch.no_grad():
        op_logits, edge_logits = vae.model.decode_logits(z.to(vae.device, torch.float32))
    return decode_logits(op_logits, edge_logits, vae.codec, model.space, known)


def draw_round(model: SamplingModel, c_row: torch.Tensor, size: int, generator: torch.Generator,
               temperature: float = 1.0,
               known: set[int] | None = None) -> tuple[torch.Tensor, list[tuple[Cell | None, bool | None]]]:
    """One round of draws (:mod:`cgnf_fast.sampling.sampler`, steps 3-4): ``size`` noise vectors
    ``temperature * N(0, I)`` from the CPU ``generator``, the flow's latents under the condition
    ``c_row [1, A]`` (the flow's standardised units), decoded and repaired.

    Returns ``(z [size, D], [(cell or None, repaired)] * size)``; rows that decode to a network
    in ``known`` are ``(None, None)`` (:func:`decode_logits`).
    """
    z = _solve_round(model, c_row, _round_noise(model, generator, size, temperature))
    return z, _decode_round(model, z, known)


_AHEAD = 4  # rounds solved ahead of the one being decoded, at most (worker and calling thread together)


def _rounds(model: SamplingModel, c_row: torch.Tensor, generator: torch.Generator, temperature: float, chunk: int,
            limit: int, known: set[int]) -> Iterator[tuple[int, torch.Tensor, list[tuple[Cell | None, bool | None]]]]:
    """The rounds of :func:`draw_round` up to ``limit`` latents, as ``(size, z, decoded)``, with
    the flow's solves running ahead in a worker thread while the caller decodes and examines
    round ``k`` (the native solve releases the GIL). When the caller would otherwise wait for
    the worker (the solves take longer than the decoding: nb101-like's flow), it solves a later
    round itself meanwhile, keeping one round queued for the worker, up to ``_AHEAD`` rounds
    ahead. The noise is drawn in the calling thread in round order and each solve depends only
    on its own noise (bitwise: which thread solves a round changes nothing), so the rounds are
    exactly those of :func:`draw_round` one after another; ``known`` is read when a round is
    decoded (after the caller has examined the previous one). On the CPU this thread gives up
    one of torch's threads to the worker until the generator is closed; rounds solved ahead and
    not consumed are dropped (queued ones cancelled) when it is."""
    if min(chunk, limit) <= 0:
        return
    threads = torch.get_num_threads()
    # one core for the solves ahead; with one core, solving in this thread too would only time-slice
    helps = model.flow.device.type == "cpu" and threads > 1
    if helps:
        torch.set_num_threads(threads - 1)
    pool = ThreadPoolExecutor(1, thread_name_prefix="cgnf-flow")
    planned = 0  # latents whose noise is drawn
    ahead: list[tuple[int, Future]] = []  # in round order: the worker's, and finished ones solved here

    def noise() -> tuple[int, torch.Tensor] | None:
        nonlocal planned
        size = min(chunk, limit - planned)
        if size <= 0:
            return None
        planned += size
        return size, _round_noise(model, generator, size, temperature)

    def submit() -> None:
        nxt = noise()
        if nxt is not None:
            ahead.append((nxt[0], pool.submit(_solve_round, model, c_row, nxt[1])))

    def solve_here() -> bool:
        nxt = noise()
        if nxt is None:
            return False
        done: Future = Future()
        try:  # a failed solve fails its round when (if) the caller reaches it, as in the worker
            done.set_result(_solve_round(model, c_row, nxt[1]))
        except Exception as e:
            done.set_exception(e)
        ahead.append((nxt[0], done))
        return True

    try:
        submit()
        while ahead:
            size, head = ahead[0]
            if helps and not head.done() and len(ahead) < _AHEAD:
                if not any(not f.running() and not f.done() for _, f in ahead):
                    submit()  # the worker's next round, so it does not idle while this thread solves
                if len(ahead) < _AHEAD and solve_here():
                    continue
            del ahead[0]
            z = head.result()
            if all(f.done() for _, f in ahead):
                submit()  # keep the worker busy while this round is decoded
            yield size, z, _decode_round(model, z, known)
    finally:
        try:
            pool.shutdown(wait=True, cancel_futures=True)
        finally:
            torch.set_num_threads(threads)
