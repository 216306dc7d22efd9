"""Check csrc/dag/count_cuda.cu (the GPU space count) without a GPU.

Compiles the .cu's own kernels *and* launchers (the text between its ``emulate_count_cuda:
begin`` / ``end`` marker comments) as host C++ with g++, against the real graph_impl.h,
space_impl.h, checks.h and cuda_utils.h (their device branches: ``__CUDA_ARCH__`` is defined),
with the machinery of scripts/cuda_host_emu.py: ``__syncthreads`` is a barrier of the block's
threads, ``atomicAdd`` a ``std::atomic_ref`` add, ``__shared__`` a static that is poisoned
(0xFF bytes) before each block, and each ``kernel<<<grid, threads, smem, stream>>>(...)`` runs
its blocks one after another, each block as ``threads`` (128) OS threads running the kernel
body concurrently (this script keeps cuda_host_emu's ``threads`` schedule). The library is loaded
with ctypes and the real ``cgnf_fast.space._count_cuda.count`` runs against it, with only the
device plumbing swapped, for the duration of the run: the module's ``_C`` (the three
``*_cuda`` launchers go to the emulation, anything else named ``*_cuda`` is an error),
``_native.require_cuda`` (a no-op), ``torch.device("cuda", ...)`` (the CPU: the kernels write
the CPU tensors through their data pointers) and ``torch.cuda.current_device`` /
``current_stream`` / ``synchronize``; ``_count_cuda._KEY_CAPACITY`` (the initial key buffer)
and ``_STAGING_ROWS`` (the host staging buffers' initial rows) are set small so that the
grow-and-rerun loop and the staging buffers' growth run. The counts (labeled, valid, unique,
unique_networks) must equal ``counting.count(space, device="cpu")`` exactly.

What it checks: the kernels' index arithmetic and grid-stride loops (the block count the
launcher asks for, ``grid_for``'s, is lowered to ``--grid``, so every thread visits several
masks; each kernel's per-mask call, ``preds_of`` or ``canonical_class``, is counted and every
mask of a launch's [lo, hi) must be visited exactly once), the shared-memory reduction and the
per-block atomics, the key-slot counter and the capacity guard against a buffer that is too
small (buffers from ``torch.empty`` are poisoned with -1, so a key slot left unwritten makes
the host merge reject a corrupt code), that the key kernel makes ``2**(k-2)`` keys for every
class the unique kernel counted in each unit, the launchers (argument checks, the
``max_edges < 0`` mapping, the argument order into the kernels, every launch on the caller's
stream) and the Python glue (work units, key regrow loop, dedup, host merge). A
``__syncthreads`` that some threads of a block never reach (divergent barrier) is reported as
an error instead of hanging.

What it cannot check: races beyond this barrier model (threads of a block run preemptively on
OS threads, which is harsher than lock-step warps for a missing barrier, and a missing one in
the reduction does show up, but a race may still go unseen in a given run; blocks run one at
a time, so nothing between blocks other than the atomics is exercised; the C++ memory model is
not the GPU's); the hardware, nvcc's code generation, register/stack limits and the
real 65535-block grid cap (grids here are a few blocks); torch.unique on the device (it runs on
the CPU here).

Keep the markers around the code this needs when the .cu changes (a launch the rewrite cannot
parse, a missing marker or a compile error stops the run; compile errors point at the .cu's
lines). python_tests/test_count_cuda_emulation.py runs it on three small spaces. Usage
(default spaces: about 5 s with the build; --all adds nb101, nb101-like and the 8-vertex k8e9:
about 45 s on two cores; exit status 1 on any mismatch, 2 when it cannot be built):

    python scripts/emulate_count_cuda.py [--all] [--space NAME ...] [--grid 3] [--capacity 16]
                                         [--workdir DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cuda_host_emu as emu_rt  # noqa: E402  (the shared machinery, beside this script)
from cuda_host_emu import CompilerUnavailable, EmulationError, HarnessError  # noqa: E402,F401

REPO = emu_rt.REPO
CU = REPO / "csrc" / "dag" / "count_cuda.cu"
MARKER = "emulate_count_cuda"  # the .cu's "// emulate_count_cuda: begin" / "end" lines
FAKE_STREAM = emu_rt.FAKE_STREAM  # what the fake torch.cuda.current_stream hands out; every launch must use it
LAUNCHERS = {  # name -> number of int64 arguments (the pybind signature in csrc/bindings.cpp)
    "count_valid_cuda": 6,
    "count_unique_cuda": 7,
    "network_keys_cuda": 8,
}

# After the project headers: every mask of a launch's range [lo, hi) must be visited exactly
# once (cuda_emu::guarded_visits); the per-mask calls of the kernels (preds_of in
# count_valid_kernel, canonical_class in the other two) are counted.
PRELUDE = r"""
namespace cgnf_emu {
int64_t visit_lo = 0;
template <typename... A>
inline void visit_preds_of(uint64_t mask, A&&... a) {
  cuda_emu::visits.visit(int64_t(mask) - visit_lo);
  cgnf::preds_of(mask, std::forward<A>(a)...);
}
template <typename... A>
inline decltype(auto) visit_canonical_class(uint64_t mask, A&&... a) {
  cuda_emu::visits.visit(int64_t(mask) - visit_lo);
  return cgnf::canonical_class(mask, std::forward<A>(a)...);
}
}  // namespace cgnf_emu
#define preds_of ::cgnf_emu::visit_preds_of
#define canonical_class ::cgnf_emu::visit_canonical_class
"""

TAIL = r"""
namespace {
template <typename F>
int tracked(const char* kernel, int64_t lo, int64_t hi, F&& f) {
  cgnf_emu::visit_lo = lo < 0 ? 0 : lo;
  const int64_t n = hi > cgnf_emu::visit_lo ? hi - cgnf_emu::visit_lo : 0;
  return cuda_emu::guarded_visits(n, std::string(kernel) + ": masks of [" + std::to_string(cgnf_emu::visit_lo) +
                                         ", " + std::to_string(cgnf_emu::visit_lo + n) + ")",
                                  cgnf_emu::visit_lo, f);
}
}  // namespace

extern "C" {
int emu_count_valid_cuda(int64_t K, int64_t max_edges, int64_t lo, int64_t hi, int64_t out, int64_t stream) {
  return tracked("count_valid_kernel", lo, hi, [&] { cgnf::count_valid_cuda(K, max_edges, lo, hi, out, stream); });
}
int emu_count_unique_cuda(int64_t k, int64_t num_ops, int64_t max_edges, int64_t lo, int64_t hi, int64_t out,
                          int64_t stream) {
  return tracked("count_unique_kernel", lo, hi, [&] { cgnf::count_unique_cuda(k, num_ops, max_edges, lo, hi, out, stream); });
}
int emu_network_keys_cuda(int64_t k, int64_t max_edges, int64_t lo, int64_t hi, int64_t keys, int64_t capacity,
                          int64_t count, int64_t stream) {
  return tracked("network_keys_kernel", lo, hi, [&] { cgnf::network_keys_cuda(k, max_edges, lo, hi, keys, capacity, count, stream); });
}
}
"""

HARNESS = emu_rt.Harness([emu_rt.Section(CU, MARKER)],
                         ["common/checks.h", "common/cuda_utils.h", "dag/graph_impl.h", "dag/space_impl.h"],
                         {name: [ctypes.c_int64] * nargs for name, nargs in LAUNCHERS.items()}, PRELUDE, TAIL)


def build(workdir: str | os.PathLike | None = None, cxx: str | None = None) -> emu_rt.Library:
    """Write the harness, compile it (CompilerUnavailable without a usable g++) and load it."""
    return emu_rt.build_many({"count": HARNESS}, workdir, cxx)["count"]


class _FakeC:
    """``_count_cuda._C``: the CUDA launchers go to the emulation; other names to the real _C.

    It also checks one invariant between the kernels, unit by unit: network_keys_kernel makes
    one key per identity subset (``2**(k-2)``) of every canonical class that count_unique_kernel
    counted as a skeleton (``out[1]``), so a mask the key kernel skips shows up even when the
    distinct networks happen not to change.
    """

    def __init__(self, emu: emu_rt.Library, real_c):
        self._emu, self._real = emu, real_c
        self.calls: dict[str, int] = dict.fromkeys(LAUNCHERS, 0)
        self.overflows = 0  # network_keys_cuda calls that made more keys than the buffer holds
        self.skeletons: dict[tuple[int, int, int], int] = {}  # (k, lo, hi) -> classes counted
        self.problems: list[str] = []

    def __getattr__(self, name: str):
        if name in LAUNCHERS:
            def launcher(*args):
                self.calls[name] += 1
                if len(args) != LAUNCHERS[name] or not all(isinstance(a, int) for a in args):
                    raise TypeError(f"{name}{args}: expected {LAUNCHERS[name]} ints")
                if name == "count_unique_cuda":  # (k, num_ops, max_edges, lo, hi, out, stream)
                    k, lo, hi, out = args[0], args[3], args[4], args[5]
                    before = ctypes.c_int64.from_address(out + 8).value
                self._emu.call(name, *args)
                if name == "count_unique_cuda":
                    self.skeletons[(k, lo, hi)] = ctypes.c_int64.from_address(out + 8).value - before
                elif name == "network_keys_cuda":  # (k, max_edges, lo, hi, keys, capacity, count, stream)
                    k, lo, hi, capacity = args[0], args[2], args[3], args[5]
                    produced = ctypes.c_int64.from_address(args[6]).value
                    self.overflows += produced > capacity
                    want = self.skeletons.get((k, lo, hi), -1) << (k - 2)
                    if produced != want:
                        self.problems.append(f"unit k={k} [{lo}, {hi}): {produced} network keys, "
                                             f"the unique kernel's classes make {want}")
            return launcher
        if name.endswith("_cuda"):
            raise AttributeError(f"_C.{name}: not emulated (add it to scripts/emulate_count_cuda.py)")
        return getattr(self._real, name)


def _host_torch(torch):
    """``torch`` as _count_cuda sees it: cuda devices are the CPU, streams and syncs are fakes."""

    class HostTorch(types.ModuleType):
        def __getattr__(self, name):
            return getattr(torch, name)

    t = HostTorch("torch")

    def device(type, index=None):  # noqa: A002 - torch's own argument name
        if isinstance(type, str) and type.startswith("cuda"):
            return torch.device("cpu")
        return torch.device(type) if index is None else torch.device(type, index)

    def empty(*size, **kwargs):  # poisoned: an entry the kernels should have written and did not shows
        x = torch.empty(*size, **kwargs)
        return x.fill_(float("nan") if x.is_floating_point() else -1)

    t.device = device
    t.empty = empty
    t.cuda = types.SimpleNamespace(
        current_device=lambda: 0,
        current_stream=lambda device=None: types.SimpleNamespace(cuda_stream=FAKE_STREAM),
        synchronize=lambda device=None: None,
    )
    return t


@contextlib.contextmanager
def emulated(emu: emu_rt.Library, capacity: int) -> Iterator[_FakeC]:
    """Swap _count_cuda's device plumbing for the emulation (restored on exit)."""
    import torch

    from cgnf_fast import _native
    from cgnf_fast.space import _count_cuda as cc

    swapped = ("_C", "_native", "torch", "_KEY_CAPACITY", "_STAGING_ROWS")
    for name in swapped:
        if name not in vars(cc):
            raise HarnessError(f"cgnf_fast.space._count_cuda has no '{name}' to swap: update the emulation")
    fake = _FakeC(emu, _native._C)
    native = types.ModuleType("cgnf_fast._native")
    native.__dict__.update(vars(_native))
    native.require_cuda = lambda what: None
    saved = {n: getattr(cc, n) for n in swapped}
    try:
        cc._C, cc._native, cc.torch, cc._KEY_CAPACITY = fake, native, _host_torch(torch), capacity
        cc._STAGING_ROWS = 2  # (so that the host staging buffers grow too)
        yield fake
    finally:
        for n, v in saved.items():
            setattr(cc, n, v)


KEYS = ("labeled", "valid", "unique", "unique_networks")


def check_space(emu: emu_rt.Library, sp, *, grid: int = 3, capacity: int = 16) -> dict:
    """Counts of ``sp`` through the emulated GPU path (at most ``grid`` blocks a launch) and the
    CPU path; ``ok`` when equal."""
    from cgnf_fast.space import _count_cuda, counting

    if grid < 1:
        raise ValueError("grid must be >= 1 block")
    emu.set_grid_cap(grid)
    before = emu.stats()
    t0 = time.perf_counter()
    with emulated(emu, capacity) as fake:
        try:
            got = _count_cuda.count(sp, networks=True, progress=False)
        except (EmulationError, RuntimeError, ValueError) as e:  # (the host merge rejects corrupt keys)
            got = dict.fromkeys(KEYS)
            fake.problems.insert(0, f"stopped: {type(e).__name__}: {e}")
    seconds = time.perf_counter() - t0
    after = emu.stats()
    want = counting.count(sp, device="cpu", progress=False)
    return {
        "space": sp.name,
        "ok": all(got[k] == want[k] for k in KEYS) and not fake.problems,
        "problems": fake.problems,
        "got": {k: got[k] for k in KEYS},
        "want": {k: want[k] for k in KEYS},
        "seconds": seconds,
        "launches": after["launches"] - before["launches"],
        "strided": after["strided"] - before["strided"],
        "key_reruns": fake.overflows,
    }


def spaces(all_: bool) -> dict:
    from cgnf_fast.space import DesignSpace, get

    three = ("skip_connect", "nor_conv_3x3", "avg_pool_3x3")
    out = {
        "s5": DesignSpace(three, max_nodes=5, name="s5"),
        "s6e7": DesignSpace(("skip_connect", "nor_conv_1x1"), max_nodes=6, max_edges=7, name="s6e7"),
        "s6e5": DesignSpace(three, max_nodes=6, max_edges=5, name="s6e5"),
        "nb101ish": DesignSpace(("conv3x3-bn-relu", "maxpool3x3"), max_nodes=5, max_edges=4, name="nb101ish"),
        "s6": DesignSpace(three, max_nodes=6, name="s6"),
    }
    if all_:
        out |= {"nb101": get("nb101"), "nb101-like": get("nb101-like"),
                "k8e9": DesignSpace(three, max_nodes=8, max_edges=9, name="k8e9")}
    return out


def format_result(r: dict, grid: int, capacity: int) -> str:
    counts = " ".join(f"{k}={r['got'][k]}" for k in KEYS)
    line = (f"{r['space']:<10} {'match' if r['ok'] else 'MISMATCH'}  {counts}  grid={grid} "
            f"capacity={capacity} launches={r['launches']} strided={r['strided']} "
            f"key_reruns={r['key_reruns']}  {r['seconds']:.1f}s")
    if r["got"] != r["want"]:
        line += "\n           cpu: " + " ".join(f"{k}={r['want'][k]}" for k in KEYS)
    for p in r["problems"][:5]:
        line += "\n           " + p
    if len(r["problems"]) > 5:
        line += f"\n           ... and {len(r['problems']) - 5} more such units"
    return line


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--all", action="store_true", help="add nb101, nb101-like and k8e9 (8 vertices, <= 9 edges)")
    p.add_argument("--space", action="append", default=None, help="run only these (repeatable)")
    p.add_argument("--grid", type=int, default=3, help="blocks per launch at most (grid_for's cap; default 3)")
    p.add_argument("--capacity", type=int, default=16, help="initial key-buffer rows (default 16)")
    p.add_argument("--workdir", help="keep the generated harness and library here")
    a = p.parse_args(argv)
    sps = spaces(a.all or bool(a.space))
    if a.space:
        unknown = set(a.space) - set(sps)
        if unknown:
            p.error(f"unknown space(s) {sorted(unknown)}; known: {sorted(sps)}")
        sps = {n: sps[n] for n in a.space}
    t0 = time.perf_counter()
    try:
        emu = build(a.workdir)
    except (CompilerUnavailable, HarnessError) as e:
        print(f"cannot build the emulation: {e}", file=sys.stderr)
        return 2
    print(f"compiled the kernel section of {CU.relative_to(REPO)} in {time.perf_counter() - t0:.1f}s", flush=True)
    bad = 0
    for sp in sps.values():
        r = check_space(emu, sp, grid=a.grid, capacity=a.capacity)
        bad += not r["ok"]
        print(format_result(r, a.grid, a.capacity), flush=True)
    print("all match" if not bad else f"{bad} space(s) MISMATCH", f"({time.perf_counter() - t0:.1f}s)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
