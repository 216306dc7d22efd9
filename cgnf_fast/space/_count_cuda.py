"""The CUDA path of :func:`cgnf_fast.space.counting.count` (kernels: csrc/dag/count_cuda.cu).

The GPU visits the adjacency masks (valid matrices, unique cells with Burnside counts, and the
network keys of every identity subset); keys are deduplicated on the device with
``torch.unique`` and merged exactly on the host, where the final Burnside count over the
distinct weighted networks runs (the same code as the CPU path).
"""

from __future__ import annotations

import sys
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


def count(sp: DesignSpace, *, networks: bool, progress: bool) -> dict[str, Any]:
    _native.require_cuda("space count --device cuda")
    dev = torch.device("cuda", torch.cuda.current_device())
    stream = torch.cuda.current_stream(dev).cuda_stream
    max_edges = -1 if sp.max_edges is None else sp.max_edges
    num_ops = len(sp.ops)
    host = counting._counter(sp, networks=networks, emit=False)  # network keys merge + finalize
    units = host.units()
    collect_networks = networks and any(counting._ops.op_info(o).identity for o in sp.ops)
    valid = torch.zeros(1, dtype=torch.int64, device=dev)
    unique = torch.zeros(2, dtype=torch.int64, device=dev)
    count_buf = torch.zeros(1, dtype=torch.int64, device=dev)
    capacity = _KEY_CAPACITY
    keys = torch.empty((capacity, 4), dtype=torch.int64, device=dev) if collect_networks else None
    weights = [hi - lo for _, lo, hi in units]
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
                        distinct = torch.unique(keys[:produced], dim=0).cpu().contiguous()
                        host.add_network_keys(distinct.data_ptr(), distinct.shape[0], _native.num_threads())
            bar.update(w)
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
