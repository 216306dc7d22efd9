"""The CUDA path of :func:`cgnf_fast.space.counting.count` (kernels: csrc/dag/count_cuda.cu).

The GPU visits the adjacency masks (valid matrices, unique cells with Burnside counts, and the
network keys of every identity subset); each work unit's keys are deduplicated on the device
(:func:`_unique_rows`), copied into one of two pinned host buffers and merged exactly on the host
by a worker thread while the GPU goes on with the next unit (the merge is order-independent:
sorted shards); the final Burnside count over the distinct weighted networks runs on the host
(the same code as the CPU path). Where the time went on an H200 for nb201-like before the
pinned buffers and the overlap (``benches/gpu_profile.py``): key kernel 1.4 s, dedup 0.9 s,
copies to pageable memory 1.3 s, host merge 2.2 s, final count 0.4 s, counting kernels 0.06 s.
"""

from __future__ import annotations

import itertools
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch
from tqdm import tqdm

from .. import _native
from .._native import _C
from . import counting
from .spaces import DesignSpace

# Rows of the network-key buffer to start with (grown and the unit rerun when a unit makes more;
# nb201-like's largest work units make 17.7M keys). A module constant so that
# scripts/emulate_count_cuda.py can start it small and run the regrow path.
_KEY_CAPACITY = 1 << 25
# Rows of each pinned host staging buffer to start with (grown to the next power of two); a module
# constant so that the emulation can start it small and run the regrow path.
_STAGING_ROWS = 1 << 20


def _merge(host: Any, buf: torch.Tensor, n: int, threads: int) -> None:
    """The host merge of ``buf[:n]``, holding ``buf`` alive while the native code reads it."""
    host.add_network_keys(buf.data_ptr(), n, threads)


def _unique_rows(keys: torch.Tensor) -> torch.Tensor:
    """The distinct rows of ``keys [n, 4] int64`` in lexicographic order (what
    ``torch.unique(keys, dim=0)`` returns), from four stable 1-D sorts: 1.5x faster on an H200
    for a unit's 17.7M keys."""
    idx = torch.arange(keys.shape[0], device=keys.device)
    for w in reversed(range(keys.shape[1])):
        idx = idx[torch.sort(keys[idx, w], stable=True)[1]]
    rows = keys[idx]
    keep = torch.ones(rows.shape[0], dtype=torch.bool, device=rows.device)
    keep[1:] = (rows[1:] != rows[:-1]).any(dim=1)
    return rows[keep]


def count(sp: DesignSpace, *, networks: bool, progress: bool) -> dict[str, Any]:
    _native.require_cuda("space count --device cuda")
    dev = torch.device("cuda", torch.cuda.current_device())
    stream = torch.cuda.current_stream(dev).cuda_stream
    max_edges = -1 if sp.max_edges is None else sp.max_edges
    num_ops = len(sp.ops)
    host = counting._counter(sp, networks=networks, emit=False)  # network keys merge + finalize
    units = host.units()
    collect_networks = networks and any(counting.vocabulary.op_info(o).identity for o in sp.ops)
    valid = torch.zeros(1, dtype=torch.int64, device=dev)
    unique = torch.zeros(2, dtype=torch.int64, device=dev)
    count_buf = torch.zeros(1, dtype=torch.int64, device=dev)
    capacity = _KEY_CAPACITY
    keys = torch.empty((capacity, 4), dtype=torch.int64, device=dev) if collect_networks else None
    weights = [hi - lo for _, lo, hi in units]
    pin = dev.type == "cuda"
    staging: list[torch.Tensor | None] = [None, None]  # pinned host buffers, used in turn
    merging: list[Future | None] = [None, None]  # the merge reading each buffer
    merger = ThreadPoolExecutor(1, thread_name_prefix="cgnf-merge")

    turns = itertools.count()

    def merge(rows: torch.Tensor) -> None:
        i = next(turns) % 2
        if merging[i] is not None:
            merging[i].result()  # (raises a failed merge here)
        n = rows.shape[0]
        buf = staging[i]
        if buf is None or buf.shape[0] < n:  # (powers of two: few slow pinned allocations)
            rows_needed = max(1 << (n - 1).bit_length(), _STAGING_ROWS)
            buf = staging[i] = torch.empty((rows_needed, 4), dtype=torch.int64, pin_memory=pin)
        buf[:n].copy_(rows)  # (synchronous: the buffer is complete when the merge starts)
        merging[i] = merger.submit(_merge, host, buf, n, _native.num_threads())

    try:
        with tqdm(total=sum(weights), desc=f"count {sp.name} (cuda)", unit="graph", unit_scale=True,
                  disable=not progress, file=sys.stderr, leave=False) as bar:
            for (k, lo, hi), w in zip(units, weights):
                if k == 0:
                    _C.count_valid_cuda(sp.max_nodes, max_edges, lo, hi, valid.data_ptr(), stream)
                else:
                    _C.count_unique_cuda(k, num_ops, max_edges, lo, hi, unique.data_ptr(), stream)
                    if collect_networks:
                        while True:
                            count_buf.zero_()
                            _C.network_keys_cuda(k, max_edges, lo, hi, keys.data_ptr(), capacity,
                                                 count_buf.data_ptr(), stream)
                            produced = int(count_buf.item())
                            if produced <= capacity:
                                break
                            capacity = 1 << (produced - 1).bit_length()
                            keys = torch.empty((capacity, 4), dtype=torch.int64, device=dev)
                        if produced:
                            merge(_unique_rows(keys[:produced]))
                bar.update(w)
        for f in merging:
            if f is not None:
                f.result()
    finally:
        merger.shutdown(wait=True, cancel_futures=True)
        staging.clear()  # (the pinned blocks go back to torch's cache)
    torch.cuda.synchronize(dev)
    host.finalize(_native.num_threads())
    k = sp.max_nodes
    labelings = num_ops ** (k - 2)
    n_unique = int(unique[0].item())
    if not networks:
        n_networks = None
    elif collect_networks:
        n_networks = int(host.totals()["unique_networks"])
    else:
        n_networks = n_unique
    return {
        "labeled": 2 ** (k * (k - 1) // 2) * labelings,
        "valid": int(valid.item()) * labelings,
        "unique": n_unique,
        "unique_networks": n_networks,
    }
