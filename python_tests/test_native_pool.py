"""The CPU kernels' worker pool (csrc/common/parallel.cpp): results independent of the thread
count, the pool grows to the threads asked for, concurrent callers, and a forked child (whose
parent's workers do not exist there) gets its own pool instead of hanging."""

from __future__ import annotations

import os
import signal
import threading
import time

import torch

from cgnf_fast import _C
from cgnf_fast.ops.cnf import cnf_dynamics

D, C, H = 32, 4, 64


def _weights(seed: int = 0) -> list[list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    widths = [D, H, H, D]
    out = []
    for n_in, n_out in zip(widths[:-1], widths[1:]):
        out.append([torch.randn(n_out, n_in, generator=g) / n_in ** 0.5, torch.randn(n_out, generator=g) * 0.1,
                    torch.randn(n_out, 1 + C, generator=g) * 0.1, torch.randn(n_out, generator=g) * 0.1,
                    torch.randn(n_out, 1 + C, generator=g) * 0.1])
    return out


def _inputs(B: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, D, generator=g), torch.randn(B, C, generator=g)


def _eval(ws, z, c, threads: int) -> tuple[torch.Tensor, torch.Tensor]:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            return cnf_dynamics(torch.tensor(0.3), z, c, ws, "tanh", "exact")
    finally:
        torch.set_num_threads(before)


def test_results_do_not_depend_on_the_thread_count_and_the_pool_grows():
    ws = _weights()
    z, c = _inputs(2048, 1)
    dz1, div1 = _eval(ws, z, c, 1)
    for threads in (2, 3, 4, 8):
        dz, div = _eval(ws, z, c, threads)
        assert torch.equal(dz, dz1) and torch.equal(div, div1), threads  # rows are independent: bitwise
    assert _C.pool_workers() >= 7  # (8 threads asked for: the caller and 7 workers)


def test_concurrent_callers_get_their_own_results():
    """A call that finds the pool busy runs on its own thread: the same results."""
    ws = _weights()
    cases = [_inputs(640, seed) for seed in range(4)]
    want = [_eval(ws, z, c, 1) for z, c in cases]
    errors: list[str] = []

    def work(i: int) -> None:
        z, c = cases[i]
        for _ in range(15):
            with torch.no_grad():
                dz, div = cnf_dynamics(torch.tensor(0.3), z, c, ws, "tanh", "exact")
            if not (torch.equal(dz, want[i][0]) and torch.equal(div, want[i][1])):
                errors.append(f"caller {i}: results differ")

    torch.set_num_threads(2)
    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(cases))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a caller hung"
    assert not errors, errors


def test_a_forked_child_does_not_hang_on_the_parents_pool():
    ws = _weights()
    z, c = _inputs(1024, 2)
    want = _eval(ws, z, c, 4)  # the parent's pool has workers now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: only this thread exists here
        try:
            dz, div = _eval(ws, z, c, 4)
            os.write(write, b"same" if torch.equal(dz, want[0]) and torch.equal(div, want[1]) else b"diff")
        finally:
            os._exit(0)
    os.close(write)
    deadline = time.monotonic() + 120
    while os.waitpid(pid, os.WNOHANG) == (0, 0):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError("the forked child hung")
        time.sleep(0.05)
    assert os.read(read, 16) == b"same"
    os.close(read)
