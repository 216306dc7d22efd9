"""Run the real CUDA kernels of gin_aggregate_cuda.cu, cnf_dynamics_cuda.cu,
canonical_code_cuda.cu, nb101_hash_cuda.cu and prune_cuda.cu without a GPU, against the package's CPU ops and references.

Each .cu's kernels *and* host launchers (the text between its ``// cuda_host_emu: begin`` /
``end`` marker comments) are compiled as host C++ by scripts/cuda_host_emu.py (which says how
launches, blocks, barriers and shared memory are emulated) into three libraries: ``gin``,
``cnf`` and ``dag`` (canonical_code_cuda.cu, nb101_hash_cuda.cu and prune_cuda.cu together). The drivers below call the
real launchers (``gin_aggregate_fwd_cuda`` ...) with the data pointers of CPU tensors, as the
ops in cgnf_fast/ops would hand them device pointers, on a fake stream that every launch must
use. Around every call:

* every input and output buffer sits between guard regions of 0xFF bytes (NaN for float and
  double, -1 / 255 for integers; 16384 elements, or as many as the buffer if more), checked after
  the call: a write past either end is reported, a read past either end reads NaN;
* the outputs start poisoned (0xFF bytes) in one pass and zeroed in another, and the two must
  agree byte for byte (an entry that no thread writes cannot agree), and no NaN may be left;
* dynamic and static shared memory start poisoned before every block (cuda_host_emu.py), so a
  read of shared memory the block did not write turns into NaN in a float output;
* the poisoned pass runs a block's threads as fibers in thread order, the zeroed pass in reverse
  order (``--schedule``), and the two must agree byte for byte, so a result that depends on the
  order of the threads between two barriers (a missing barrier) shows;
* ``--grid-cap`` style caps (per case: ``cap=``) lower the block count every launch asks for,
  so grid-stride loops run several items per thread and blocks reuse their shared memory.

gin (csrc/gnn/gin_aggregate_cuda.cu, against cgnf_fast/reference/gnn.py): the forward,
grad_h and grad_adj kernels through ``gin_aggregate_fwd_cuda`` / ``gin_aggregate_bwd_cuda``
(argument checks, eps -> self weight, dtype dispatch, block_for / grid_for, the dynamic
shared-memory size and the NMAX template choice as the .cu makes them), in float64 (to 1e-12)
and float32 (per entry, to twice the first-order rounding bound of its sum: (terms + 1) *
2**-23 * the sum of the absolute values of its terms). A second pass instantiates the same
templated launchers (``fwd_typed<T>`` / ``bwd_typed<T>``) with ``cuda_emu::Counted<double |
float>``, a number type that counts its stores into the outputs and watches its reads: every
entry of out, grad_h and grad_adj must be written exactly once, no value may be read from the
guards around any buffer (an out-of-bounds read at either end, even one whose value is never
used) and none may be read from never-written memory (0xFF poison, e.g. shared memory that the
block did not stage, also by idle threads whose result is discarded), and the values must equal
the first pass's bit for bit.
The cases (those of the Python transliteration this replaced): every N in 1..16 (NMAX 4/8/16 and grad_adj 8/16),
every block shape (H 1..1000, incl. tx = 96/160/224 that leave threads idle and H > 256 with
several column strides), B = 0, 1, 7 and a few hundred (ragged last graph group), eps 0, 0.25,
-1 (self term skipped), 0/1, soft and dense adjacencies, without grad_adj (h not passed),
non-finite features behind zero weights (skipped, as on the CPU), lowered grid caps.

cnf (csrc/cnf/cnf_dynamics_cuda.cu, against cgnf_fast/reference/cnf.py): both kernels through
``cnf_dynamics_fwd_cuda`` with the workspace of ``cnf_cuda_workspace`` (poisoned, exactly that
size, so a read of a workspace entry the forward kernel did not write is NaN), the condition as
a null pointer when C = 0 and the noise / div pointers null where the op passes 0; float64 (dz
to 1e-12, div to 1e-11) and float32 (to 2e-5 of each output's largest magnitude, at least 1); a
Counted pass as for gin (dz, div and the workspace written exactly once each, no read outside
the buffers or of poison, same bits). Every
divergence (none / exact / hutchinson), tanh and softplus (incl. pre-activations past
softplus's threshold of 20), 0 to 3 hidden layers, widths not multiples of anything, up to 512
(MB = 3, 6, 12 or 16 rows a block; exact-divergence chunks of DC = 5 or 16 probe columns, a
ragged last one), B = 0, 1, odd, ragged last row group, lowered grid caps for both kernels.

dag (csrc/dag/canonical_code_cuda.cu, nb101_hash_cuda.cu and prune_cuda.cu, against the CPU ops of _C on the same buffers,
byte for byte): ``dag_prune_cuda``, ``dag_canonical_code_cuda`` and ``dag_nb101_hash_cuda``
over random batches (bytes below the diagonal set, vertex counts outside [2, N] and labels
outside [0, 31] where the kernels must flag them), N = 2..8, B = 0, 1, 127..129, 300 with
lowered grid caps; the per-graph calls (``prune_one``, ``load_bits``, ``load_graph``) are counted
and every graph must be visited exactly once. The shared headers are compiled with their device
branches (``__popc``, ``__ffs``, the ``__constant__`` MD5 tables).

What this cannot check: see cuda_host_emu.py (the hardware, nvcc and the device math library,
races between blocks or inside a fiber's phase, the 65535-block cap at real sizes). The dag
kernels are not templates, so they get no Counted pass: their out-of-bounds reads are not
watched (only writes, through the guards) and prune_one's outputs are written more than once
by design (zero fill, then the kept entries), so no written-once check there. The float32
comparisons are against a float64 reference with a tolerance, so a float32-only precision
regression smaller than that passes. The Counted pass runs the templated launchers below the
entry points (the entry points run in the first pass).

Usage (exit status 1 on any mismatch, 2 when the emulation cannot be built):

    python scripts/emulate_cuda_kernels.py [--only gin cnf cnf_adjoint dag] [--quick] [--schedule forward]
                                           [--workdir DIR]

``--quick`` runs the subset python_tests/test_cuda_host_emulation.py runs in CI.
"""

from __future__ import annotations

import argparse
import ctypes
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cuda_host_emu as rt  # noqa: E402

CSRC = rt.CSRC
MARKER = "cuda_host_emu"
STREAM = rt.FAKE_STREAM
GUARD = 16384  # poisoned elements on each side of every buffer (at least; as many as it holds if more)
I64, F64, INT = ctypes.c_int64, ctypes.c_double, ctypes.c_int
PTR64 = ctypes.POINTER(ctypes.c_int64)

# ------------------------------------------------------------------------------ harnesses

GIN_TAIL = r"""
namespace {
template <typename T>
void gin_counted(int64_t adj, int64_t h, int64_t out, int64_t grad_out, int64_t grad_h, int64_t grad_adj, int64_t B,
                 int64_t N, int64_t H, double eps, int64_t stream) {
  using V = decltype(T::v);
  const T self = T(V(1.0 + eps));
  cgnf::fwd_typed<T>(reinterpret_cast<const T*>(adj), reinterpret_cast<const T*>(h), reinterpret_cast<T*>(out), B,
                     int(N), H, self, cgnf::as_stream(stream));
  cgnf::bwd_typed<T>(reinterpret_cast<const T*>(grad_out), reinterpret_cast<const T*>(adj),
                     reinterpret_cast<const T*>(h), reinterpret_cast<T*>(grad_h), reinterpret_cast<T*>(grad_adj), B,
                     int(N), H, self, cgnf::as_stream(stream));
}
}  // namespace

extern "C" {
int emu_gin_aggregate_fwd_cuda(int64_t adj, int64_t h, int64_t out, int64_t B, int64_t N, int64_t H, double eps,
                               int float64, int64_t stream) {
  return cuda_emu::guarded([&] { cgnf::gin_aggregate_fwd_cuda(adj, h, out, B, N, H, eps, float64 != 0, stream); });
}
int emu_gin_aggregate_bwd_cuda(int64_t grad_out, int64_t adj, int64_t h, int64_t grad_h, int64_t grad_adj, int64_t B,
                               int64_t N, int64_t H, double eps, int float64, int64_t stream) {
  return cuda_emu::guarded(
      [&] { cgnf::gin_aggregate_bwd_cuda(grad_out, adj, h, grad_h, grad_adj, B, N, H, eps, float64 != 0, stream); });
}
int emu_gin_counted(int64_t adj, int64_t h, int64_t out, int64_t grad_out, int64_t grad_h, int64_t grad_adj,
                    int64_t B, int64_t N, int64_t H, double eps, int float64, int64_t stream) {
  return cuda_emu::guarded([&] {
    if (float64)
      gin_counted<cuda_emu::Counted<double>>(adj, h, out, grad_out, grad_h, grad_adj, B, N, H, eps, stream);
    else
      gin_counted<cuda_emu::Counted<float>>(adj, h, out, grad_out, grad_h, grad_adj, B, N, H, eps, stream);
  });
}
}
"""

CNF_TAIL = r"""
namespace {
template <typename T>
void cnf_counted(int64_t t, int64_t z, int64_t c, int64_t noise, const std::vector<int64_t>& weights,
                 const std::vector<int64_t>& widths, int64_t dz, int64_t div, int64_t workspace, int64_t B, int64_t C,
                 int64_t activation, int64_t divergence, int64_t stream) {
  cgnf::launch<T>(reinterpret_cast<const T*>(t), reinterpret_cast<const T*>(z), reinterpret_cast<const T*>(c),
                  reinterpret_cast<const T*>(noise), weights, widths, reinterpret_cast<T*>(dz),
                  reinterpret_cast<T*>(div), reinterpret_cast<T*>(workspace), B, C, activation == cgnf::kCnfSoftplus,
                  int(divergence), cgnf::as_stream(stream));
}
}  // namespace

extern "C" {
int emu_cnf_dynamics_fwd_cuda(int64_t t, int64_t z, int64_t c, int64_t noise, const int64_t* weights, int64_t nw,
                              const int64_t* widths, int64_t nwidths, int64_t dz, int64_t div, int64_t workspace,
                              int64_t workspace_size, int64_t B, int64_t C, int64_t activation, int64_t divergence,
                              int float64, int64_t stream) {
  return cuda_emu::guarded([&] {
    cgnf::cnf_dynamics_fwd_cuda(t, z, c, noise, std::vector<int64_t>(weights, weights + nw),
                                std::vector<int64_t>(widths, widths + nwidths), dz, div, workspace, workspace_size, B,
                                C, activation, divergence, float64 != 0, stream);
  });
}
int emu_cnf_counted(int64_t t, int64_t z, int64_t c, int64_t noise, const int64_t* weights, int64_t nw,
                    const int64_t* widths, int64_t nwidths, int64_t dz, int64_t div, int64_t workspace, int64_t B,
                    int64_t C, int64_t activation, int64_t divergence, int float64, int64_t stream) {
  return cuda_emu::guarded([&] {
    const std::vector<int64_t> w(weights, weights + nw), wd(widths, widths + nwidths);
    if (float64)
      cnf_counted<cuda_emu::Counted<double>>(t, z, c, noise, w, wd, dz, div, workspace, B, C, activation, divergence, stream);
    else
      cnf_counted<cuda_emu::Counted<float>>(t, z, c, noise, w, wd, dz, div, workspace, B, C, activation, divergence, stream);
  });
}
}
"""

CNF_ADJ_TAIL = r"""
extern "C" {
int emu_cnf_adjoint_cuda(int64_t t, int64_t z, int64_t c, int64_t noise, const int64_t* weights, int64_t nw,
                         const int64_t* widths, int64_t nwidths, int64_t a_z, int64_t a_div, int64_t dz, int64_t div,
                         int64_t g_t, int64_t g_z, int64_t g_c, const int64_t* g_weights, int64_t ngw,
                         int64_t workspace, int64_t workspace_size, int64_t B, int64_t C, int64_t activation,
                         int64_t divergence, int float64, int64_t stream) {
  return cuda_emu::guarded([&] {
    cgnf::cnf_adjoint_cuda(t, z, c, noise, std::vector<int64_t>(weights, weights + nw),
                           std::vector<int64_t>(widths, widths + nwidths), a_z, a_div, dz, div, g_t, g_z, g_c,
                           std::vector<int64_t>(g_weights, g_weights + ngw), workspace, workspace_size, B, C,
                           activation, divergence, float64 != 0, stream);
  });
}
int64_t emu_cnf_adjoint_workspace_cuda(int64_t B, const int64_t* widths, int64_t nwidths, int64_t C, int64_t divergence) {
  return cgnf::cnf_adjoint_workspace_cuda(B, std::vector<int64_t>(widths, widths + nwidths), C, divergence);
}
}
"""

# Every graph b of a launch must be visited exactly once (cuda_emu::guarded_visits): the kernels'
# per-graph calls are counted by the labels pointer they get (labels + b * N).
DAG_PRELUDE = r"""
namespace dag_emu {
const int8_t* base = nullptr;
int64_t stride = 1;
inline void visit(const int8_t* labels) {
  const int64_t off = labels - base;
  cuda_emu::visits.visit(base && off % stride == 0 ? off / stride : -1);
}
template <typename F>
int tracked(const char* what, int64_t labels, int64_t N, int64_t B, F&& f) {
  base = reinterpret_cast<const int8_t*>(labels);
  stride = N > 0 ? N : 1;
  return cuda_emu::guarded_visits(B, std::string(what) + ": graphs", 0, f);
}
template <typename... A>
inline void visit_prune_one(const uint8_t* adj, const int8_t* labels, A&&... a) {
  visit(labels);
  cgnf::prune_one(adj, labels, std::forward<A>(a)...);
}
template <typename... A>
inline bool visit_load_bits(const uint8_t* adj, const int8_t* labels, A&&... a) {
  visit(labels);
  return cgnf::load_bits(adj, labels, std::forward<A>(a)...);
}
template <typename... A>
inline bool visit_load_graph(const uint8_t* adj, const int8_t* labels, A&&... a) {
  visit(labels);
  return cgnf::load_graph(adj, labels, std::forward<A>(a)...);
}
}  // namespace dag_emu
#define prune_one ::dag_emu::visit_prune_one
#define load_bits ::dag_emu::visit_load_bits
#define load_graph ::dag_emu::visit_load_graph
"""

DAG_TAIL = r"""
extern "C" {
int emu_dag_prune_cuda(int64_t adj, int64_t labels, int64_t n, int64_t out_adj, int64_t out_labels, int64_t out_n,
                       int64_t B, int64_t N, int64_t stream) {
  return dag_emu::tracked("dag_prune_kernel", labels, N, B,
                          [&] { cgnf::dag_prune_cuda(adj, labels, n, out_adj, out_labels, out_n, B, N, stream); });
}
int emu_dag_canonical_code_cuda(int64_t adj, int64_t labels, int64_t n, int64_t out, int64_t B, int64_t N,
                                int64_t stream) {
  return dag_emu::tracked("canonical_code_kernel", labels, N, B,
                          [&] { cgnf::dag_canonical_code_cuda(adj, labels, n, out, B, N, stream); });
}
int emu_dag_nb101_hash_cuda(int64_t adj, int64_t labels, int64_t n, int64_t out, int64_t B, int64_t N,
                            int64_t stream) {
  return dag_emu::tracked("nb101_hash_kernel", labels, N, B,
                          [&] { cgnf::dag_nb101_hash_cuda(adj, labels, n, out, B, N, stream); });
}
}
"""


def harnesses() -> dict[str, rt.Harness]:
    cu = lambda p: rt.Section(CSRC / p, MARKER)  # noqa: E731
    gin_args = [I64] * 6 + [F64, INT, I64]
    return {
        "gin": rt.Harness(
            [cu("gnn/gin_aggregate_cuda.cu")], ["common/checks.h", "common/cuda_utils.h", "gnn/gnn.h"],
            {"gin_aggregate_fwd_cuda": gin_args,
             "gin_aggregate_bwd_cuda": [I64] * 8 + [F64, INT, I64],
             "gin_counted": [I64] * 9 + [F64, INT, I64]},
            tail=GIN_TAIL),
        "cnf": rt.Harness(
            [cu("cnf/cnf_dynamics_cuda.cu")], ["common/checks.h", "common/cuda_utils.h", "cnf/cnf.h"],
            {"cnf_dynamics_fwd_cuda": [I64] * 4 + [PTR64, I64, PTR64] + [I64] * 9 + [INT, I64],
             "cnf_counted": [I64] * 4 + [PTR64, I64, PTR64] + [I64] * 8 + [INT, I64]},
            tail=CNF_TAIL),
        "cnf_adjoint": rt.Harness(
            [cu("cnf/cnf_adjoint_cuda.cu")], ["common/checks.h", "common/cuda_utils.h", "cnf/cnf.h"],
            {"cnf_adjoint_cuda": [I64] * 4 + [PTR64, I64, PTR64, I64] + [I64] * 7 + [PTR64, I64] + [I64] * 6
             + [INT, I64]},
            tail=CNF_ADJ_TAIL),
        "dag": rt.Harness(
            [cu("dag/canonical_code_cuda.cu"), cu("dag/nb101_hash_cuda.cu"), cu("dag/prune_cuda.cu")],
            ["common/checks.h", "common/cuda_utils.h", "dag/dag.h", "dag/graph_impl.h", "dag/prune_impl.h"],
            {"dag_prune_cuda": [I64] * 9, "dag_canonical_code_cuda": [I64] * 7, "dag_nb101_hash_cuda": [I64] * 7},
            prelude=DAG_PRELUDE, tail=DAG_TAIL),
    }


def build(names=("gin", "cnf", "cnf_adjoint", "dag"), workdir=None, cxx: str | None = None) -> dict[str, rt.Library]:
    """Compile the named harnesses (in parallel) and load them."""
    hs = harnesses()
    return rt.build_many({n: hs[n] for n in names}, workdir, cxx)


# -------------------------------------------------------------------------------- buffers


class Buf:
    """A tensor inside a larger one whose guard elements on each side (GUARD, or as many as the
    tensor has if more) are 0xFF bytes: a write past either end lands there and is reported, a
    read there is NaN (and reported by the Counted pass)."""

    def __init__(self, shape, dtype, init="poison"):
        n = math.prod(shape)
        self.g = max(GUARD, n)
        self.big = torch.empty(n + 2 * self.g, dtype=dtype)
        self.big.view(torch.uint8).fill_(255)
        self.t = self.big[self.g : self.g + n].view(*shape)
        if isinstance(init, torch.Tensor):
            self.t.copy_(init.reshape(shape))
        elif init == "zero":
            self.t.zero_()
        elif init != "poison":
            raise ValueError(init)

    @property
    def ptr(self) -> int:
        return self.big.data_ptr() + self.g * self.big.element_size()

    def guard_ok(self) -> bool:
        b = self.big.view(torch.uint8)
        k = self.g * self.big.element_size()
        return bool((b[:k] == 255).all() and (b[b.numel() - k :] == 255).all())

    def guards(self) -> list[tuple[int, int]]:
        """The two guard regions as [lo, hi) addresses."""
        lo, e = self.big.data_ptr(), self.big.element_size()
        end = lo + self.big.numel() * e
        return [(lo, self.ptr), (end - self.g * e, end)]

    def where(self, address: int) -> str | None:
        """``address`` described relative to this buffer when it lies in one of its guards."""
        (a, b), (c, d) = self.guards()
        e = self.big.element_size()
        if a <= address < b:
            return f"{(b - address) // e} element(s) before"
        if c <= address < d:
            return f"{(address - c) // e + 1} element(s) past the end of"
        return None

    def counts(self) -> np.ndarray:
        return np.zeros(self.t.numel(), dtype=np.uint8)


def track(lib: rt.Library, pairs) -> None:
    """Count Counted stores into these (Buf, counts array) pairs."""
    lib.track_stores([(b.ptr, b.t.numel() * b.t.element_size(), b.t.element_size(), c.ctypes.data)
                      for b, c in pairs if b.t.numel()])


def watch_loads(lib: rt.Library, named: dict) -> None:
    """Report Counted reads from the guards of these buffers (see loads_outside)."""
    lib.track_loads([g for b in named.values() if b is not None for g in b.guards()])


def loads_outside(lib: rt.Library, res: "Result", tag: str, named: dict) -> None:
    n, first, npoison, first_poison = lib.track_loads([])

    def where(a):
        return next((f"{w} {nm}" for nm, b in named.items() if b is not None and (w := b.where(a))), None)

    if n:
        res.problems.append(f"{tag}: {n} read(s) outside the buffers by the Counted pass "
                            f"(first: {where(first) or hex(first)})")
    if npoison:
        res.problems.append(f"{tag}: {npoison} read(s) of never-written memory (0xFF poison: shared memory the "
                            f"block did not write, or a guard) by the Counted pass, used or not (first at "
                            f"{where(first_poison) or hex(first_poison) + ', not a guard: shared memory?'})")


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.equal(a.contiguous().view(torch.uint8), b.contiguous().view(torch.uint8))


@dataclass
class Result:
    name: str
    problems: list = field(default_factory=list)
    errors: dict = field(default_factory=dict)  # output -> max |err| (or max err / tolerance)
    desc: str = ""
    seconds: float = 0.0
    strided: int = 0  # launches whose grid was lowered to the cap (grid-stride loops ran)

    @property
    def ok(self) -> bool:
        return not self.problems

    def line(self) -> str:
        errs = ", ".join(f"{k} {v:.1e}" if isinstance(v, float) else f"{k} {v}"
                         for k, v in self.errors.items())
        s = f"{'ok  ' if self.ok else 'FAIL'} {self.name}: {errs} [{self.desc}] {self.seconds:.2f}s"
        for p in self.problems[:6]:
            s += "\n       " + p
        if len(self.problems) > 6:
            s += f"\n       ... {len(self.problems) - 6} more"
        return s


def _stats_delta(lib, before) -> dict:
    after = lib.stats()
    return {k: after[k] - before[k] for k in ("launches", "strided", "blocks", "barriers")} | {
        "max_shared": after["max_shared"]}


def _compare(res: Result, name: str, got: torch.Tensor, want: torch.Tensor, tol) -> None:
    """Max |got - want| into res.errors (as a fraction of tol where tol is a tensor)."""
    if got.numel() == 0:
        res.errors[name] = 0.0
        return
    nan = int(torch.isnan(got).sum())
    if nan:
        res.problems.append(f"{name}: {nan} NaN entries (unwritten output, or a read of unwritten memory)")
    err = (got.double() - want.double()).abs()
    if isinstance(tol, torch.Tensor):
        ratio = float((err / tol).nan_to_num(nan=math.inf).max())
        res.errors[name + "/tol"] = ratio
        if not ratio <= 1.0:
            i = int((err / tol).nan_to_num(nan=math.inf).argmax())
            res.problems.append(f"{name}: error {ratio:.2g} x the tolerance at flat index {i} "
                                f"(got {got.reshape(-1)[i].item()!r}, want {want.reshape(-1)[i].item()!r})")
    else:
        e = float(err.nan_to_num(nan=math.inf).max())
        res.errors[name] = e
        if not e <= tol:
            i = int(err.nan_to_num(nan=math.inf).argmax())
            res.problems.append(f"{name}: max |err| {e:.3g} > {tol:g} at flat index {i} "
                                f"(got {got.reshape(-1)[i].item()!r}, want {want.reshape(-1)[i].item()!r})")


def _check_counts(res: Result, name: str, counts: np.ndarray) -> None:
    if counts.size and not (counts == 1).all():
        never, more = int((counts == 0).sum()), int((counts > 1).sum())
        first = int(np.flatnonzero(counts != 1)[0])
        res.problems.append(f"{name}: {never} entries never written and {more} written more than once "
                            f"by the Counted pass (first flat index {first}, written {int(counts[first])}x)")


def _counted_run(lib, res: Result, tag: str, counts, named: dict, name: str, *args) -> bool:
    """Runs the ``Counted<T>`` launcher ``name``: stores into the ``counts`` buffers counted, loads
    from the ``named`` buffers watched (a load outside them is a problem)."""
    track(lib, counts)
    watch_loads(lib, named)
    ok = _run(res, lib, name, *args)
    track(lib, [])
    loads_outside(lib, res, tag, named)
    return ok


def _after_launches(lib, res: Result, tag: str, init: str, before, B: int, descs: list[str], buffers) -> None:
    """Books one pass's launch statistics (described once, on the poisoned pass) and the checks
    common to every driver: no launch for an empty batch, no write outside any of ``buffers``
    (``(name, buffer or None)`` pairs)."""
    st = _stats_delta(lib, before)
    res.strided += st["strided"]
    if init == "poison":
        descs.append(f"{tag}: {st['launches']} launches, {st['blocks']} blocks ({st['strided']} capped), "
                     f"{st['barriers']} barriers, shared {st['max_shared']} B")
    if B == 0 and st["launches"]:
        res.problems.append(f"{tag}: B=0 launched {st['launches']} kernels")
    for nm, b in buffers:
        if b is not None and not b.guard_ok():
            res.problems.append(f"{tag} {init}: wrote outside {nm}")


def _compare_passes(res: Result, tag: str, outs: dict, B: int) -> None:
    """The poisoned and the zeroed (Counted) pass (``outs[init] = (ok, {name: Buf or None})``)
    must agree bit for bit on every output, when both ran and B > 0."""
    (ok_p, p), (ok_z, z) = outs["poison"], outs["zero"]
    if not (ok_p and ok_z and B > 0):
        return
    for nm, b in p.items():
        if b is not None and not same_bits(b.t, z[nm].t):
            d = int((b.t != z[nm].t).sum())
            res.problems.append(f"{tag} {nm}: the poisoned and the zeroed (Counted) pass differ in {d} "
                                "entries (unwritten entries, or an order-dependent result)")


def _run(res: Result, lib: rt.Library, name: str, *args) -> bool:
    try:
        lib.call(name, *args)
        return True
    except (ValueError, RuntimeError) as e:
        res.problems.append(f"{name}: {type(e).__name__}: {e}")
        return False


# ------------------------------------------------------------------------------------ gin

GIN_MAX_NODES = 16


def gin_problem(B, N, H, kind, seed):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(B, N, H, generator=g, dtype=torch.float64)
    go = torch.randn(B, N, 2 * H, generator=g, dtype=torch.float64)
    if kind == "dag":  # 0/1 strictly upper triangular, as cells are
        adj = (torch.rand(B, N, N, generator=g, dtype=torch.float64) < 0.5).double().triu(1)
    elif kind == "soft":  # real weights, about 40 % zeros (skipped)
        w = torch.randn(B, N, N, generator=g, dtype=torch.float64)
        adj = w * (torch.rand(B, N, N, generator=g, dtype=torch.float64) < 0.6)
    elif kind == "dense":  # no zero at all
        adj = torch.rand(B, N, N, generator=g, dtype=torch.float64) + 0.5
    else:
        raise ValueError(kind)
    return adj, h, go


@dataclass
class GinCase:
    B: int
    N: int
    H: int
    kind: str = "soft"
    eps: float = 0.0
    adj_grad: bool = True
    cap: int = 0
    nonfinite: bool = False
    seed: int = 0

    @property
    def name(self) -> str:
        return (f"gin B={self.B} N={self.N} H={self.H} {self.kind} eps={self.eps:g} "
                f"grad_adj={'yes' if self.adj_grad else 'no'}" + (f" cap={self.cap}" if self.cap else "")
                + (" nonfinite" if self.nonfinite else ""))


def gin_cases(quick: bool = False) -> list[GinCase]:
    """The GIN cases (the retired Python transliteration's, and a few more); ``quick``: the CI subset."""
    C = GinCase
    if quick:
        return [
            C(7, 1, 33, "soft", 0.25, seed=1),                  # N=1, NMAX 4, grad_adj<8>
            C(7, 7, 63, "dense", -1.0, cap=1, seed=2),          # NMAX 8, tx 64 ty 4, ragged group, grid-stride
            C(5, 16, 300, "soft", 0.25, cap=2, seed=3),         # NMAX 16, grad_adj<16>, H > 256: 2 column strides
            C(9, 12, 1, "dag", 0.0, cap=2, seed=4),             # H=1: tx 32 ty 8, 31 idle columns
            C(3, 9, 200, "soft", -1.0, adj_grad=False, nonfinite=True, seed=5),  # tx 224 (32 idle), no grad_adj
            C(1, 4, 96, "dag", 0.0, seed=6),                    # B=1, tx 96 ty 2 (64 idle threads)
            C(0, 3, 8, seed=7),                                 # B=0: no launch
        ]
    cases = []
    kinds, epss = ("soft", "dag", "dense"), (0.0, 0.25, -1.0)
    hs_n = (1, 33, 65, 5, 100, 32, 3, 64, 2, 31, 7, 97, 40, 9, 33, 17)
    for N in range(1, GIN_MAX_NODES + 1):
        cases.append(C(7, N, hs_n[N - 1], kinds[N % 3], epss[N % 3], seed=N))
    for i, H in enumerate((1, 31, 32, 63, 96, 129, 200, 224, 256, 257, 300)):
        cases.append(C(7 if H < 200 else 2, (3, 5, 9, 16)[i % 4], H, kinds[i % 3], epss[(i + 1) % 3], seed=100 + i))
    cases += [
        C(1, 4, 5, "dag", 0.0, seed=200), C(1, 16, 70, "soft", 0.25, seed=201),
        C(301, 2, 3, "soft", 0.25, seed=202), C(301, 5, 20, "dag", 0.0, seed=203),
        C(257, 9, 6, "dense", -1.0, seed=204), C(130, 16, 1, "soft", 0.0, seed=205),
        C(300, 1, 1, "soft", 0.0, seed=215), C(300, 16, 33, "soft", 0.25, seed=216),
        C(301, 8, 97, "dense", -1.0, seed=217), C(1, 4, 1000, "soft", 0.25, seed=218),
        C(0, 3, 8, "soft", 0.0, seed=206),
        C(7, 6, 40, "soft", 0.25, adj_grad=False, seed=207), C(300, 12, 2, "dag", 0.0, adj_grad=False, seed=208),
        C(7, 5, 33, "soft", -1.0, adj_grad=False, nonfinite=True, seed=209),
        C(9, 11, 4, "dense", -1.0, adj_grad=False, nonfinite=True, seed=210),
        C(23, 3, 20, "soft", 0.25, cap=2, seed=211), C(37, 7, 70, "dense", 0.0, cap=3, seed=212),
        C(11, 13, 33, "soft", -1.0, cap=2, seed=213), C(9, 16, 260, "dag", 0.25, cap=1, seed=214),
        C(29, 9, 129, "soft", 0.0, cap=4, seed=219), C(50, 4, 16, "dag", -1.0, adj_grad=False, cap=5, seed=220),
    ]
    return cases


def _gin_bound(adj, h, go, eps, N, H):
    """First-order float32 tolerances per entry: (terms + 1) * 2**-23 * sum of |terms|."""
    from cgnf_fast.reference import gnn as ref

    e_abs = abs(1.0 + eps) - 1.0
    out_m = ref.gin_aggregate(adj.abs(), h.abs(), e_abs)
    gh_m, ga_m = ref.gin_aggregate_bwd(go.abs(), adj.abs(), h.abs(), e_abs)
    u = 2.0 ** -23
    return (out_m * (2 * N + 2) * u + 1e-30, gh_m * (2 * N + 2) * u + 1e-30, ga_m * (2 * H + 1) * u + 1e-30)


def check_gin(lib: rt.Library, case: GinCase, dtypes=(torch.float64, torch.float32),
              schedules=("forward", "reverse")) -> Result:
    from cgnf_fast.reference import gnn as ref

    t0 = time.perf_counter()
    res = Result(case.name)
    B, N, H, eps = case.B, case.N, case.H, case.eps
    adj0, h0, go0 = gin_problem(B, N, H, case.kind, case.seed)
    if case.nonfinite:
        # Vertex v: no edge in or out, eps = -1 (self weight 0): its non-finite features only ever
        # meet zero weights and must not reach out / grad_h.
        assert eps == -1.0 and not case.adj_grad
        v = N // 2
        adj0[:, v, :] = 0.0
        adj0[:, :, v] = 0.0
        h0[:, v, 0], h0[:, v, -1] = math.nan, math.inf
        go0[:, v, 0], go0[:, v, H] = -math.inf, math.nan
    lib.set_grid_cap(case.cap)
    descs = []
    for dt in dtypes:
        f64 = dt == torch.float64
        tag = "f64" if f64 else "f32"
        adj, h, go = adj0.to(dt), h0.to(dt), go0.to(dt)
        # the reference in float64 on exactly these inputs; non-finite entries behind zero weights
        # are what zero skipping means: zeros
        a64, h64, g64 = adj.double(), h.double(), go.double()
        rh = torch.where(torch.isfinite(h64), h64, torch.zeros_like(h64))
        rg = torch.where(torch.isfinite(g64), g64, torch.zeros_like(g64))
        r_out = ref.gin_aggregate(a64, rh, eps)
        r_gh, r_ga = ref.gin_aggregate_bwd(rg, a64, h64, eps)
        tols = (1e-12, 1e-12, 1e-12) if f64 else _gin_bound(a64, rh, rg, eps, N, H)

        ins = [Buf((B, N, N), dt, adj), Buf((B, N, H), dt, h), Buf((B, N, 2 * H), dt, go)]
        badj, bh, bgo = ins
        outs = {}
        for init, schedule in (("poison", schedules[0]), ("zero", schedules[1])):
            lib.set_schedule(schedule)
            out, gh = Buf((B, N, 2 * H), dt, init), Buf((B, N, H), dt, init)
            ga = Buf((B, N, N), dt, init) if case.adj_grad else None
            ga_ptr = ga.ptr if ga else 0
            h_ptr = bh.ptr if case.adj_grad else 0  # as cgnf_fast/ops/gnn.py: h only for grad_adj
            lib.reset_max_shared()
            before = lib.stats()
            if init == "poison":  # the real entry points
                ok = _run(res, lib, "gin_aggregate_fwd_cuda", badj.ptr, bh.ptr, out.ptr, B, N, H, eps, f64, STREAM)
                ok = ok and _run(res, lib, "gin_aggregate_bwd_cuda", bgo.ptr, badj.ptr, h_ptr, gh.ptr, ga_ptr, B, N,
                                 H, eps, f64, STREAM)
            elif B > 0:  # the templated launchers with Counted<T>: stores counted
                counts = [(out, out.counts()), (gh, gh.counts())] + ([(ga, ga.counts())] if ga else [])
                named = {"adj": badj, "h": bh, "grad_out": bgo, "out": out, "grad_h": gh, "grad_adj": ga}
                ok = _counted_run(lib, res, tag, counts, named, "gin_counted", badj.ptr, bh.ptr, out.ptr, bgo.ptr,
                                  gh.ptr, ga_ptr, B, N, H, eps, f64, STREAM)
                for (b, c), nm in zip(counts, ("out", "grad_h", "grad_adj")):
                    _check_counts(res, f"{tag} {nm}", c)
            else:
                ok = True
            bufs = {"out": out, "grad_h": gh, "grad_adj": ga}
            _after_launches(lib, res, tag, init, before, B, descs,
                            list(bufs.items()) + [("adj", badj), ("h", bh), ("grad_out", bgo)])
            outs[init] = (ok, bufs)
        ok_p, p = outs["poison"]
        if ok_p:
            _compare(res, f"{tag} out", p["out"].t, r_out, tols[0])
            _compare(res, f"{tag} grad_h", p["grad_h"].t, r_gh, tols[1])
            if case.adj_grad:
                _compare(res, f"{tag} grad_adj", p["grad_adj"].t, r_ga, tols[2])
        _compare_passes(res, tag, outs, B)
    res.desc = "; ".join(descs)
    res.seconds = time.perf_counter() - t0
    return res


# ------------------------------------------------------------------------------------ cnf

DIV_CODE = {None: 0, "exact": 1, "hutchinson": 2}
ACT_CODE = {"tanh": 0, "softplus": 1}


def cnf_problem(B, D, hidden, C, seed, hutchinson, big=False):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s, sc=1.0: torch.randn(*s, generator=g, dtype=torch.float64) * sc  # noqa: E731
    dims = (D, *hidden, D)
    ws = [(r(o, i, sc=i ** -0.5), r(o, sc=25.0 if big else 0.5), r(o, 1 + C), r(o), r(o, 1 + C, sc=0.5))
          for i, o in zip(dims[:-1], dims[1:])]
    t = torch.rand((), generator=g, dtype=torch.float64)
    return t, r(B, D, sc=1.5), r(B, C), ws, (r(B, D) if hutchinson else None)


@dataclass
class CnfCase:
    B: int
    D: int
    hidden: tuple
    C: int
    act: str = "tanh"
    divergence: str | None = None
    cap: int = 0
    big: bool = False  # biases of +-25: pre-activations past softplus's threshold (20)
    seed: int = 0

    @property
    def name(self) -> str:
        return (f"cnf B={self.B} D={self.D} hidden={self.hidden} C={self.C} {self.act} {self.divergence}"
                + (f" cap={self.cap}" if self.cap else "") + (" big" if self.big else ""))


def cnf_cases(quick: bool = False) -> list[CnfCase]:
    C = CnfCase
    if quick:
        return [
            C(21, 20, (6, 7), 2, "softplus", "exact", cap=1, seed=1),   # ragged row group, grid-stride, 2 chunks
            C(9, 4, (), 1, "tanh", "exact", cap=2, seed=2),             # L=1 exact path
            C(37, 2, (3,), 0, "softplus", "hutchinson", cap=1, seed=3),  # C=0 (null c), 3 row groups, even L
            C(3, 5, (40, 30, 9), 1, "tanh", "exact", seed=4),          # 3 hidden layers
            C(13, 20, (512, 24), 1, "tanh", "exact", cap=2, seed=5),    # wmax 512: MB 6, DC 5 (f64)
            C(33, 64, (100,), 3, "tanh", "exact", cap=2, seed=9),       # D = 64 (max exact latent): 4 chunks
            C(5, 3, (4,), 2, "softplus", None, big=True, seed=6),       # softplus threshold, no divergence
            C(1, 7, (9,), 1, "tanh", "hutchinson", seed=7),             # B=1
            C(0, 3, (4,), 1, "tanh", "exact", seed=8),                  # B=0
        ]
    cases = []
    for i, args in enumerate([(5, 3, (4,), 2), (9, 4, (), 1), (7, 2, (3, 5), 0), (21, 20, (6, 7), 2),
                              (3, 5, (40, 30, 9), 1)]):
        for divergence in (None, "exact", "hutchinson"):
            for act in ("tanh", "softplus"):
                cases.append(C(*args, act, divergence, seed=10 * i + DIV_CODE[divergence] * 2 + (act == "tanh")))
    cases += [
        C(13, 20, (512, 64), 1, "tanh", "exact", seed=100),
        C(13, 20, (512, 64), 1, "softplus", "hutchinson", seed=101),
        C(13, 20, (512, 64), 1, "tanh", None, cap=1, seed=102),
        C(33, 64, (100,), 3, "tanh", "exact", cap=2, seed=103),        # D = 64 (max exact): 4 chunks of 16
        C(7, 64, (512, 33, 70), 0, "softplus", "exact", cap=3, seed=104),  # DC 5, ragged last chunk, 3 hidden
        C(37, 9, (17,), 2, "softplus", "hutchinson", cap=2, seed=105),   # 3 row groups, grid-stride
        C(50, 1, (1,), 1, "tanh", "exact", cap=1, seed=106),            # widths of 1
        C(17, 5, (300, 7), 4, "softplus", "exact", big=True, seed=107),
        C(5, 6, (8,), 2, "softplus", "hutchinson", big=True, seed=108),
        C(1, 3, (4,), 0, "tanh", "exact", seed=109),
        C(0, 3, (4,), 1, "tanh", "exact", seed=110), C(0, 3, (4,), 1, "softplus", "hutchinson", seed=111),
        C(16, 512, (512,), 1, "tanh", "hutchinson", cap=2, seed=112),   # widest: MB 3 (f64 Hutchinson)
    ]
    return cases


def check_cnf(lib: rt.Library, case: CnfCase, dtypes=(torch.float64, torch.float32),
              schedules=("forward", "reverse")) -> Result:
    from cgnf_fast import _C
    from cgnf_fast.reference import cnf as ref

    t0 = time.perf_counter()
    res = Result(case.name)
    B, D, C, dv = case.B, case.D, case.C, DIV_CODE[case.divergence]
    widths = [D, *case.hidden, D]
    L = len(widths) - 1
    t_, z_, c_, ws_, noise_ = cnf_problem(B, D, case.hidden, C, case.seed, dv == 2, case.big)
    lib.set_grid_cap(case.cap)
    need = _C.cnf_cuda_workspace(B, widths, dv)
    descs = []
    for dt in dtypes:
        f64 = dt == torch.float64
        tag = "f64" if f64 else "f32"
        t, z, c = t_.to(dt), z_.to(dt), c_.to(dt)
        ws = [tuple(w.to(dt) for w in lw) for lw in ws_]
        noise = None if noise_ is None else noise_.to(dt)
        r_dz, r_div = ref.cnf_dynamics(t.double(), z.double(), c.double(), [tuple(w.double() for w in lw) for lw in ws],
                                       case.act, case.divergence, None if noise is None else noise.double())
        ins = [Buf((1,), dt, t.reshape(1)), Buf((B, D), dt, z), Buf((B, C), dt, c)]
        bt, bz, bc = ins
        bw = [Buf(tuple(w.shape), dt, w) for lw in ws for w in lw]
        bn = Buf((B, D), dt, noise) if noise is not None else None
        wptr = (ctypes.c_int64 * (5 * L))(*[b.ptr for b in bw])
        wdt = (ctypes.c_int64 * (L + 1))(*widths)
        c_ptr = bc.ptr if C > 0 else 0  # as CnfPlan: a null condition when C = 0
        n_ptr = bn.ptr if bn else 0
        outs = {}
        for init, schedule in (("poison", schedules[0]), ("zero", schedules[1])):
            lib.set_schedule(schedule)
            dz = Buf((B, D), dt, init)
            div = Buf((B,), dt, init) if dv else None
            work = Buf((need,), dt, init)  # the workspace: internal, poisoned / zeroed like the outputs
            div_ptr, work_ptr = (div.ptr if div else 0), (work.ptr if need else 0)
            lib.reset_max_shared()
            before = lib.stats()
            if init == "poison":
                ok = _run(res, lib, "cnf_dynamics_fwd_cuda", bt.ptr, bz.ptr, c_ptr, n_ptr, wptr, 5 * L, wdt, L + 1,
                          dz.ptr, div_ptr, work_ptr, need, B, C, ACT_CODE[case.act], dv, f64, STREAM)
            elif B > 0:
                counts = [(dz, dz.counts()), (work, work.counts())] + ([(div, div.counts())] if div else [])
                named = {"t": bt, "z": bz, "c": bc, "noise": bn, "dz": dz, "div": div, "workspace": work}
                named |= {f"layer {i // 5} {'WbGgH'[i % 5]}": b for i, b in enumerate(bw)}
                ok = _counted_run(lib, res, tag, counts, named, "cnf_counted", bt.ptr, bz.ptr, c_ptr, n_ptr, wptr,
                                  5 * L, wdt, L + 1, dz.ptr, div_ptr, work_ptr, B, C, ACT_CODE[case.act], dv, f64,
                                  STREAM)
                for (b, cnt), nm in zip(counts, ("dz", "workspace", "div")):
                    _check_counts(res, f"{tag} {nm}", cnt)
            else:
                ok = True
            bufs = {"dz": dz, "div": div, "workspace": work}
            named = list(bufs.items()) + [("t", bt), ("z", bz), ("c", bc), ("noise", bn)]
            named += [(f"weight {i}", b) for i, b in enumerate(bw)]
            _after_launches(lib, res, tag, init, before, B, descs, named)
            outs[init] = (ok, bufs)
        ok_p, p = outs["poison"]
        if ok_p:
            if f64:
                _compare(res, f"{tag} dz", p["dz"].t, r_dz, 1e-12)
                if dv:
                    _compare(res, f"{tag} div", p["div"].t, r_div, 1e-11)
            else:
                _compare(res, f"{tag} dz", p["dz"].t, r_dz,
                         torch.full_like(r_dz, 2e-5 * max(1.0, float(r_dz.abs().max()) if B else 1.0)))
                if dv:
                    _compare(res, f"{tag} div", p["div"].t, r_div,
                             torch.full_like(r_div, 2e-5 * max(1.0, float(r_div.abs().max()) if B else 1.0)))
        _compare_passes(res, tag, outs, B)
    res.desc = "; ".join(descs)
    res.seconds = time.perf_counter() - t0
    return res


# ---------------------------------------------------------------------------- cnf adjoint


def cnf_adjoint_cases(quick: bool = False) -> list[CnfCase]:
    C = CnfCase
    cases = [
        C(5, 6, (16, 16), 3, "tanh", "exact", cap=2, seed=1),           # the shipped shape, scaled down; grid-stride
        C(4, 4, (), 1, "tanh", "exact", seed=2),                        # L = 1: div = sum_i gate_i W_ii
        C(3, 5, (7, 9, 6), 2, "softplus", "exact", big=True, seed=3),   # 3 hidden layers, softplus past 20
        C(6, 3, (5,), 0, "softplus", "hutchinson", cap=1, seed=4),      # C = 0, one block for every row
        C(3, 4, (6, 5), 2, "tanh", "hutchinson", seed=5),
        C(2, 3, (300,), 1, "tanh", None, seed=6),                       # a layer wider than the block
        C(1, 33, (40,), 2, "tanh", "exact", seed=7),                    # D over the block's threads' stride
        C(0, 3, (4,), 1, "tanh", "exact", seed=8),                      # B = 0: zero gradients
    ]
    if not quick:
        cases += [C(9, 7, (11, 13), 2, act, dv, cap=cap, seed=20 + i)
                  for i, (act, dv, cap) in enumerate([("tanh", None, 0), ("softplus", None, 3), ("tanh", "hutchinson", 2),
                                                      ("softplus", "exact", 4), ("softplus", "hutchinson", 0)])]
    return cases


def check_cnf_adjoint(lib: rt.Library, case: CnfCase, dtypes=(torch.float64, torch.float32),
                      schedules=("forward", "reverse")) -> Result:
    """The adjoint kernels through ``cnf_adjoint_cuda`` against autograd over the reference
    (``cnf_dynamics_vjp(backend="torch")``): dz/dt, div and every vector-Jacobian product; both
    passes (poisoned / zeroed outputs and workspace, forward / reverse fiber order) bit for bit."""
    from cgnf_fast.ops.cnf import cnf_dynamics_vjp

    t0 = time.perf_counter()
    res = Result("adjoint " + case.name)
    B, D, C, dv = case.B, case.D, case.C, DIV_CODE[case.divergence]
    widths = [D, *case.hidden, D]
    L = len(widths) - 1
    t_, z_, c_, ws_, noise_ = cnf_problem(B, D, case.hidden, C, case.seed, dv == 2, case.big)
    g = torch.Generator().manual_seed(case.seed + 1000)
    az_ = torch.randn(B, D, generator=g, dtype=torch.float64)
    ad_ = torch.randn(B, generator=g, dtype=torch.float64) if dv else None
    want = cnf_dynamics_vjp(t_, z_, c_, ws_, az_, ad_, case.act, case.divergence, noise_, backend="torch")
    want_flat = {"dz": want[0], "div": want[1], "g_t": want[2].reshape(1), "g_z": want[3], "g_c": want[4]}
    want_flat |= {f"g_w{i}": w for i, w in enumerate(x for lw in want[5] for x in lw)}
    lib.set_grid_cap(case.cap)
    wd = (ctypes.c_int64 * (L + 1))(*widths)
    need = _adjoint_workspace(lib, B, widths, C, dv)
    descs = []
    for dt in dtypes:
        f64 = dt == torch.float64
        tag = "f64" if f64 else "f32"
        ws = [tuple(w.to(dt) for w in lw) for lw in ws_]
        bt, bz, bc = Buf((1,), dt, t_.to(dt).reshape(1)), Buf((B, D), dt, z_.to(dt)), Buf((B, C), dt, c_.to(dt))
        baz = Buf((B, D), dt, az_.to(dt))
        bad = Buf((B,), dt, ad_.to(dt)) if dv else None
        bw = [Buf(tuple(w.shape), dt, w) for lw in ws for w in lw]
        bn = Buf((B, D), dt, noise_.to(dt)) if noise_ is not None else None
        outs = {}
        for init, schedule in (("poison", schedules[0]), ("zero", schedules[1])):
            lib.set_schedule(schedule)
            o = {"dz": Buf((B, D), dt, init), "div": Buf((B,), dt, init) if dv else None, "g_t": Buf((1,), dt, init),
                 "g_z": Buf((B, D), dt, init), "g_c": Buf((B, C), dt, init)}
            o |= {f"g_w{i}": Buf(tuple(b.t.shape), dt, init) for i, b in enumerate(bw)}
            work = Buf((need,), dt, init)
            wptr = (ctypes.c_int64 * (5 * L))(*[b.ptr for b in bw])
            gptr = (ctypes.c_int64 * (5 * L))(*[o[f"g_w{i}"].ptr for i in range(5 * L)])
            before = lib.stats()
            ok = _run(res, lib, "cnf_adjoint_cuda", bt.ptr, bz.ptr, bc.ptr if C else 0, bn.ptr if bn else 0, wptr,
                      5 * L, wd, L + 1, baz.ptr, bad.ptr if bad else 0, o["dz"].ptr, o["div"].ptr if dv else 0,
                      o["g_t"].ptr, o["g_z"].ptr, o["g_c"].ptr if C else 0, gptr, 5 * L, work.ptr, need, B, C,
                      ACT_CODE[case.act], dv, f64, STREAM)
            named = [(k, v) for k, v in o.items()] + [("workspace", work), ("t", bt), ("z", bz), ("c", bc),
                                                       ("a_z", baz), ("a_div", bad), ("noise", bn)]
            named += [(f"weight {i}", b) for i, b in enumerate(bw)]
            st = _stats_delta(lib, before)
            res.strided += st["strided"]
            if init == "poison":
                descs.append(f"{tag}: {st['launches']} launches, {st['blocks']} blocks ({st['strided']} capped), "
                             f"{st['barriers']} barriers")
            for nm, b in named:
                if b is not None and not b.guard_ok():
                    res.problems.append(f"{tag} {init}: wrote outside {nm}")
            outs[init] = (ok, {k: v for k, v in o.items() if v is not None and (k != "g_c" or C)})
        ok_p, p = outs["poison"]
        if ok_p:
            for k, b in p.items():
                w = want_flat[k]
                if w is None or b.t.numel() == 0:
                    continue
                scale = max(1.0, float(w.abs().max()))
                _compare(res, f"{tag} {k}", b.t, w, 1e-11 * scale if f64 else torch.full_like(w, 3e-5 * scale))
        _compare_passes(res, tag, outs, B)
    res.desc = "; ".join(descs)
    res.seconds = time.perf_counter() - t0
    return res


def _adjoint_workspace(lib: rt.Library, B: int, widths: list[int], C: int, dv: int) -> int:
    """The workspace size, as the library computes it."""
    wd = (ctypes.c_int64 * len(widths))(*widths)
    fn = lib.lib.emu_cnf_adjoint_workspace_cuda
    fn.restype = ctypes.c_int64
    fn.argtypes = [ctypes.c_int64, ctypes.POINTER(ctypes.c_int64), ctypes.c_int64, ctypes.c_int64, ctypes.c_int64]
    return int(fn(B, wd, len(widths), C, dv))


# ------------------------------------------------------------------------------------ dag


@dataclass
class DagCase:
    B: int
    N: int
    cap: int = 0
    seed: int = 0

    @property
    def name(self) -> str:
        return f"dag B={self.B} N={self.N}" + (f" cap={self.cap}" if self.cap else "")


def dag_cases(quick: bool = False) -> list[DagCase]:
    C = DagCase
    if quick:
        return [C(300, 8, cap=1, seed=1), C(600, 5, cap=2, seed=2), C(1, 2, seed=3), C(0, 4, seed=4),
                C(129, 7, cap=1, seed=5)]
    cases = [C(127, N, cap=(0, 1, 2)[N % 3], seed=N) for N in range(2, 9)]
    cases += [C(0, 8, seed=20), C(1, 8, seed=21), C(128, 6, seed=22), C(129, 8, cap=1, seed=23),
              C(300, 8, cap=1, seed=24), C(300, 3, cap=2, seed=25), C(515, 8, cap=3, seed=26)]
    return cases


def dag_batch(B, N, seed, nb101=False):
    rng = np.random.default_rng(seed)
    adj = rng.integers(0, 2, size=(B, N, N), dtype=np.uint8)
    adj *= rng.integers(1, 255, size=adj.shape, dtype=np.uint8)  # any non-zero byte is an edge ...
    below = np.tril(np.ones((N, N), dtype=bool))
    adj[:, below] = rng.integers(0, 256, size=(B, int(below.sum())), dtype=np.uint8)  # ... and these are ignored
    n = rng.integers(2, N + 1, size=B).astype(np.int8)
    if B > 2:  # vertex counts outside [2, N]: the kernels must flag them
        bad = rng.choice(B, size=max(1, B // 10), replace=False)
        n[bad] = rng.choice(np.array([-3, 0, 1, N + 1, 127], dtype=np.int8), size=bad.size)
    if nb101:
        labels = rng.integers(0, 3, size=(B, N)).astype(np.int8)
        labels[:, 0] = -1
        labels[np.arange(B), np.clip(n.astype(np.int64), 1, N) - 1] = -2
    else:
        labels = rng.integers(0, 32, size=(B, N)).astype(np.int8)
        if B > 2:  # labels outside [0, 31]: canonical_code must give -1 when they are intermediate
            idx = rng.choice(B, size=max(1, B // 10), replace=False)
            labels[idx, rng.integers(0, N, size=idx.size)] = rng.choice(np.array([-5, -1, 32, 100], dtype=np.int8),
                                                                        size=idx.size)
    return torch.from_numpy(adj), torch.from_numpy(labels), torch.from_numpy(n)


def check_dag(lib: rt.Library, case: DagCase, schedules=("forward", "reverse")) -> Result:
    from cgnf_fast import _C

    t0 = time.perf_counter()
    res = Result(case.name)
    B, N = case.B, case.N
    lib.set_grid_cap(case.cap)
    descs = []
    ops = [  # (launcher, cpu twin, output shapes and dtypes, nb101 labels)
        ("dag_prune_cuda", _C.dag_prune_cpu,
         [((B, N, N), torch.uint8), ((B, N), torch.int8), ((B,), torch.int8)], False),
        ("dag_canonical_code_cuda", _C.dag_canonical_code_cpu, [((B,), torch.int64)], False),
        ("dag_nb101_hash_cuda", _C.dag_nb101_hash_cpu, [((B, 16), torch.uint8)], True),
    ]
    batches = {nb101: dag_batch(B, N, case.seed + (1000 if nb101 else 0), nb101) for nb101 in (False, True)}
    for name, cpu, shapes, nb101 in ops:
        adj, labels, n = batches[nb101]
        ins = [Buf(tuple(x.shape), x.dtype, x) for x in (adj, labels, n)]
        want = [torch.zeros(s, dtype=d) for s, d in shapes]
        cpu(*(x.data_ptr() for x in (adj, labels, n)), *(w.data_ptr() for w in want), B, N, 1)
        got = {}
        for init, schedule in (("poison", schedules[0]), ("zero", schedules[1])):
            lib.set_schedule(schedule)
            outs = [Buf(s, d, init) for s, d in shapes]
            lib.reset_max_shared()
            before = lib.stats()
            ok = _run(res, lib, name, *(b.ptr for b in ins), *(o.ptr for o in outs), B, N, STREAM)
            st = _stats_delta(lib, before)
            res.strided += st["strided"]
            if init == "poison":
                descs.append(f"{name.removesuffix('_cuda').removeprefix('dag_')}: {st['blocks']} blocks "
                             f"({st['strided']} capped)")
            for i, b in enumerate(ins + outs):
                if not b.guard_ok():
                    res.problems.append(f"{name} {init}: wrote outside argument {i}")
            got[init] = (ok, outs)
        for init, (ok, outs) in got.items():
            if not ok:
                continue
            for i, (o, w) in enumerate(zip(outs, want)):
                if not same_bits(o.t, w):
                    bad = (o.t != w).reshape(B, -1).any(dim=1).nonzero().flatten().tolist() if B else []
                    res.problems.append(f"{name} ({init} outputs): output {i} differs from the CPU op for graphs "
                                        f"{bad[:8]}{' ...' if len(bad) > 8 else ''}")
        res.errors[name.removesuffix("_cuda").removeprefix("dag_") + " problems"] = len(
            [p for p in res.problems if p.startswith(name)])
    res.desc = "; ".join(descs)
    res.seconds = time.perf_counter() - t0
    return res


# ----------------------------------------------------------------------------------- main

CHECKS = {"gin": (gin_cases, check_gin), "cnf": (cnf_cases, check_cnf),
          "cnf_adjoint": (cnf_adjoint_cases, check_cnf_adjoint), "dag": (dag_cases, check_dag)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="+", choices=sorted(CHECKS), default=sorted(CHECKS))
    p.add_argument("--quick", action="store_true", help="the CI subset")
    p.add_argument("--schedule", nargs=2, metavar=("FIRST", "SECOND"), default=("forward", "reverse"),
                   choices=sorted(rt.SCHEDULES),
                   help="how a block's threads run in the poisoned pass and in the zeroed / Counted pass "
                        "(default: fibers forward, then reverse; 'threads' = OS threads)")
    p.add_argument("--workdir", help="keep the generated harnesses and libraries here")
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    try:
        libs = build(a.only, a.workdir)
    except (rt.CompilerUnavailable, rt.HarnessError) as e:
        print(f"cannot build the emulation: {e}", file=sys.stderr)
        return 2
    print(f"compiled {', '.join(a.only)} in {time.perf_counter() - t0:.1f}s", flush=True)
    bad = 0
    for name in a.only:
        cases, check = CHECKS[name]
        t1 = time.perf_counter()
        for case in cases(a.quick):
            r = check(libs[name], case, schedules=tuple(a.schedule))
            bad += not r.ok
            print(r.line(), flush=True)
        print(f"-- {name}: {time.perf_counter() - t1:.1f}s", flush=True)
    print("all match" if not bad else f"{bad} case(s) FAILED", f"({time.perf_counter() - t0:.1f}s)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
