"""Where the GPU paths spend their time (for the next optimisation), one JSON line per row:

    python benches/gpu_profile.py [--skip-count]

* ``count_nb201like``: the GPU count of nb201-like split into its parts (the two counting
  kernels, the network-key kernel, the count's dedup of the keys (``_unique_rows``), a copy to
  pageable host memory, the host merge, the host's final Burnside count), run one after another
  with ``torch.cuda.synchronize()`` between parts (the count itself copies into pinned buffers
  and merges while the GPU goes on); and, on the largest unit's keys, ``torch.unique(dim=0)``
  against ``_unique_rows``. (The 2026-11-29 split in benches/RESULTS.md was taken before the
  count used ``_unique_rows``, with ``torch.unique(dim=0)`` in that place.)
* ``gin`` / ``cnf``: forward + backward of one GIN aggregation (B = 16384, N = 8, H = 256) and
  one CNF dynamics evaluation (B = 256 and 4096, hidden 128x128, no divergence and exact), per
  backend: wall time per call (synchronised, median of 20) and the GPU kernel time per call from
  ``torch.profiler`` (so wall - kernels = what the host adds).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from cgnf_fast import _native
from cgnf_fast.ops import cnf_dynamics, gin_aggregate
from cgnf_fast.space import counting, get
from cgnf_fast.space import _count_cuda
from cgnf_fast.space._count_cuda import _unique_rows as unique_rows_sorted

from _timing import timed
from bench_gnn import make_inputs


def sync() -> None:
    torch.cuda.synchronize()


def profile_count() -> None:
    _C = _native._C
    sp = get("nb201-like")
    dev = torch.device("cuda")
    stream = torch.cuda.current_stream().cuda_stream
    host = counting._counter(sp, networks=True, emit=False)
    units = host.units()
    valid = torch.zeros(1, dtype=torch.int64, device=dev)
    unique = torch.zeros(2, dtype=torch.int64, device=dev)
    count_buf = torch.zeros(1, dtype=torch.int64, device=dev)
    capacity = _count_cuda._KEY_CAPACITY
    keys = torch.empty((capacity, 4), dtype=torch.int64, device=dev)
    t = dict.fromkeys(("valid_kernel", "unique_kernel", "key_kernel", "dedup", "to_host", "host_merge",
                       "finalize"), 0.0)
    n_keys = n_distinct = 0
    largest = None
    t_all = time.perf_counter()
    for k, lo, hi in units:
        if k == 0:
            t0 = time.perf_counter(); _C.count_valid_cuda(sp.max_nodes, -1, lo, hi, valid.data_ptr(), stream); sync()
            t["valid_kernel"] += time.perf_counter() - t0
            continue
        t0 = time.perf_counter(); _C.count_unique_cuda(k, len(sp.ops), -1, lo, hi, unique.data_ptr(), stream); sync()
        t["unique_kernel"] += time.perf_counter() - t0
        while True:
            count_buf.zero_()
            t0 = time.perf_counter()
            _C.network_keys_cuda(k, -1, lo, hi, keys.data_ptr(), capacity, count_buf.data_ptr(), stream)
            produced = int(count_buf.item())
            t["key_kernel"] += time.perf_counter() - t0
            if produced <= capacity:
                break
            capacity = 1 << (produced - 1).bit_length()
            keys = torch.empty((capacity, 4), dtype=torch.int64, device=dev)
        if not produced:
            continue
        n_keys += produced
        t0 = time.perf_counter(); d = unique_rows_sorted(keys[:produced]); sync()
        t["dedup"] += time.perf_counter() - t0
        n_distinct += d.shape[0]
        if largest is None or produced > largest.shape[0]:
            largest = keys[:produced].clone()
        t0 = time.perf_counter(); dh = d.cpu().contiguous()
        t["to_host"] += time.perf_counter() - t0
        t0 = time.perf_counter(); host.add_network_keys(dh.data_ptr(), dh.shape[0], _native.num_threads())
        t["host_merge"] += time.perf_counter() - t0
    t0 = time.perf_counter(); host.finalize(_native.num_threads())
    t["finalize"] += time.perf_counter() - t0
    total = time.perf_counter() - t_all
    row = {"bench": "count_nb201like_parts", "total_s": round(total, 3), **{k: round(v, 3) for k, v in t.items()},
           "keys": n_keys, "distinct_per_unit_sum": n_distinct, "unique": int(unique[0].item()),
           "unique_networks": int(host.totals()["unique_networks"]), "threads": _native.num_threads()}
    print(json.dumps(row), flush=True)
    if largest is not None:
        a = torch.unique(largest, dim=0); b = unique_rows_sorted(largest); sync()
        ta, tb = [], []
        for _ in range(3):
            t0 = time.perf_counter(); torch.unique(largest, dim=0); sync(); ta.append(time.perf_counter() - t0)
            t0 = time.perf_counter(); unique_rows_sorted(largest); sync(); tb.append(time.perf_counter() - t0)
        print(json.dumps({"bench": "unique_rows", "rows": largest.shape[0], "torch_unique_dim0_s": round(min(ta), 4),
                          "four_stable_sorts_s": round(min(tb), 4), "same": bool(torch.equal(a, b))}), flush=True)


def wall_and_kernels(fn, reps: int = 20) -> tuple[float, float]:
    for _ in range(3):
        fn()
    sync()
    walls = [timed(fn, "cuda") for _ in range(reps)]
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            fn()
        sync()
    from torch.autograd import DeviceType

    kernel_us = sum(e.self_device_time_total for e in prof.key_averages()
                    if e.device_type == DeviceType.CUDA) / reps  # (us per call)
    return statistics.median(walls), kernel_us * 1e-6


def profile_ops() -> None:
    B = 16384
    adj, h0 = make_inputs(B, "cuda")  # (bench_gnn's graphs: N = 8, H = 256)
    g = torch.Generator().manual_seed(0)
    for backend in ("native", "torch"):
        def step():
            h = h0.detach().requires_grad_(True)
            gin_aggregate(adj, h, 0.0, backend=backend).sum().backward()
        wall, kern = wall_and_kernels(step)
        print(json.dumps({"bench": "gin_fwd_bwd", "backend": backend, "B": B, "wall_s": round(wall, 6),
                          "kernel_s": round(kern, 6)}), flush=True)
    D, C, hidden = 32, 4, (128, 128)
    widths = (D, *hidden, D)
    weights = [tuple(torch.randn(*s, generator=g).cuda() * 0.1 for s in ((o, i), (o,), (o, 1 + C), (o,), (o, 1 + C)))
               for i, o in zip(widths[:-1], widths[1:])]
    for Bc in (256, 4096):
        z = torch.randn(Bc, D, generator=g).cuda()
        c = torch.randn(Bc, C, generator=g).cuda()
        for divergence in (None, "exact"):
            for backend in ("native", "torch"):
                def ev():
                    with torch.no_grad():
                        cnf_dynamics(0.5, z, c, weights, "tanh", divergence, None, backend=backend)
                wall, kern = wall_and_kernels(ev)
                print(json.dumps({"bench": "cnf_eval", "backend": backend, "B": Bc, "divergence": divergence,
                                  "wall_s": round(wall, 6), "kernel_s": round(kern, 6)}), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-count", action="store_true")
    args = ap.parse_args()
    if not torch.cuda.is_available() or not _native.cuda_available():
        print("needs a CUDA device and a CUDA build", file=sys.stderr)
        return 2
    profile_ops()
    if not args.skip_count:
        profile_count()
    return 0


if __name__ == "__main__":
    sys.exit(main())
