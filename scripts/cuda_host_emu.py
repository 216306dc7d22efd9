"""Run the real CUDA kernels of csrc/ on the CPU: compile a .cu's kernel section as host C++.

The shared machinery behind scripts/emulate_count_cuda.py and scripts/emulate_cuda_kernels.py.
A .cu file marks the code to emulate (its kernels and host launchers) with two comment lines,
``// <marker>: begin ...`` and ``// <marker>: end``; :meth:`Harness.source` cuts that text out,
rewrites the few CUDA-only constructs (same line numbers; ``#line`` directives make compile
errors point at the .cu) and wraps it in a runtime that plays the device:

* ``kernel<<<grid, block, smem, stream>>>(args)`` (template arguments and line breaks allowed)
  becomes ``::cuda_emu::launch(...)``, which checks the configuration as the device would (grid
  and block sizes, at most 1024 threads a block and no more than the kernel's
  ``__launch_bounds__``, dynamic plus static shared memory within the 48 KiB a kernel gets
  without opting in, at most 4 KiB of kernel parameters (from the kernel's signature), the
  caller's stream: ``FAKE_STREAM``, the one the drivers hand the launchers), optionally lowers
  ``gridDim.x`` to a cap (kernels with grid-stride loops then run several items per thread) and
  runs the blocks one after another, ``blockIdx`` / ``threadIdx`` / ``blockDim`` / ``gridDim``
  with x, y and z.
* A block's threads run in one of two ways (``Library.set_schedule``):
  ``threads``: blockDim OS threads, preemptively, ``__syncthreads`` a barrier of them (the
  model of the original count emulation); ``forward`` / ``reverse`` / ``shuffle``: one fiber
  (ucontext) per thread on the calling thread, each running until it reaches ``__syncthreads``
  or returns, in thread order, reverse order or a seeded random order per phase. Fibers are
  deterministic: each thread runs as far as the barriers let it before the next one starts, so a
  missing barrier shows up the same way on every run (run one pass in thread order and one in
  reverse order, as scripts/emulate_cuda_kernels.py does, and a thread that reads what a
  higher- or a lower-numbered thread writes shows either way); they are also much faster than
  256 OS threads on two cores. Either way a ``__syncthreads`` that some threads of a block never
  reach (divergent barrier) is reported instead of hanging.
* ``extern __shared__ T name[];`` (dynamic shared memory) becomes a pointer to a per-block
  buffer of the launch's ``smem`` bytes with 64 KiB of guard on both sides; every byte, guards too,
  is set to 0xFF before each block (NaN for float and double, -1 for signed integers), so a read
  of shared memory the block did not write shows up, and a write outside the buffer is reported
  after the block. Static ``__shared__`` declarations become statics that the first thread of
  each block to reach them poisons the same way (their sizes count towards the 48 KiB).
* ``atomicAdd`` is a ``std::atomic_ref`` add, ``__ldg`` a plain load, ``min`` / ``max`` the
  CUDA overloads, the math functions the host's; ``__CUDACC__`` and ``__CUDA_ARCH__`` are
  defined (after the standard headers), so shared host/device headers compile their device
  branches (``__popc``, ``__ffs``, ``__constant__`` tables ...), as nvcc's device pass would.
* ``cuda_emu::Counted<V>`` is a number type (a V, same size) whose stores into registered
  global ranges are counted and whose reads from registered forbidden ranges (the poisoned
  guards around the buffers) are reported: instantiating a kernel template with it shows how
  often each output entry is written (``Library.track_stores``), any out-of-bounds read of a
  value of that type at either end of a buffer and any read of a never-written value (all
  bytes 0xFF: poisoned shared memory, guards), used or not (``Library.track_loads``).
* ``cuda_emu::visits`` counts the items (masks, graphs ...) a harness's hooks report and
  ``cuda_emu::guarded_visits`` checks that a launcher visited each exactly once.

The Python side: :func:`build_many` compiles :class:`Harness` objects in parallel (after
:func:`check_compiler`: :class:`CompilerUnavailable` without a g++ that builds C++20
``std::atomic_ref`` with threads) and loads each as a :class:`Library`, whose
``call`` maps the launchers' C++ exceptions to ValueError (``std::invalid_argument``, as _C
does) / RuntimeError and a misbehaving launch to :class:`EmulationError`.

What this cannot see: the hardware (warps in lock-step or not, memory coalescing, register and
local-memory limits, occupancy, the real 65535-block grid cap, launch latency), nvcc's code
generation and device math library (host libm, host float rounding, no FMA contraction), races
beyond the block barrier model (blocks run one at a time, so nothing between blocks except
atomics is exercised; fibers run a thread's phase without interruption, so a non-atomic
read-modify-write race inside a phase does not show with them; the C++ memory model is not the
GPU's), out-of-bounds reads other than those of a Counted value at the ends of a buffer, warp
intrinsics (``__shfl_*`` and the like are not provided: a kernel using them does not compile
here), opting in to more than 48 KiB of shared memory, and the launchers' CUDA API calls beyond
launches and ``cudaGetLastError``. The compiler is ``$CXX`` or g++ (C++20, -Og unless
``CUDA_EMU_OPT`` says otherwise).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CSRC = REPO / "csrc"
CXXFLAGS = ["-std=c++20", os.environ.get("CUDA_EMU_OPT", "-Og"), "-pthread", "-shared", "-fPIC", "-fno-strict-aliasing"]
FAKE_STREAM = 0x5EED  # the stream every launch must use (the drivers pass it to the launchers)
SCHEDULES = {"threads": 0, "forward": 1, "reverse": 2, "shuffle": 3}
SHARED_LIMIT = 48 * 1024  # bytes of shared memory a kernel gets without cudaFuncSetAttribute


class CompilerUnavailable(RuntimeError):
    """No C++ compiler that can build the harness (g++ missing, or no C++20 atomic_ref/threads)."""


class EmulationError(RuntimeError):
    """The emulated kernel misbehaved (divergent barrier, bad launch, wrong stream, write outside
    its shared memory)."""


class HarnessError(RuntimeError):
    """The .cu's kernel section could not be cut out, rewritten or compiled."""


# A stand-in for <cuda_runtime.h>, just enough for csrc/common/cuda_utils.h and the launchers.
CUDA_RUNTIME_STUB = r"""
#pragma once
#include <cstdint>
typedef struct CUstream_st* cudaStream_t;
enum cudaError_t { cudaSuccess = 0, cudaErrorLaunchFailure = 4 };
cudaError_t cudaGetLastError();
inline const char* cudaGetErrorString(cudaError_t e) { return e == cudaSuccess ? "no error" : "emulated launch failure"; }
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
"""

# The runtime: everything before the project's headers.
RUNTIME = r"""
#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <initializer_list>
#include <map>
#include <math.h>
#include <memory>
#include <mutex>
#include <numeric>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <sys/mman.h>
#include <thread>
#include <type_traits>
#include <ucontext.h>
#include <unistd.h>
#include <utility>
#include <vector>

#include <cuda_runtime.h>

#define __device__
#define __global__
#define __host__
#define __forceinline__ inline
#define __constant__
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
#define __shared__ static  /* declarations in a kernel section are rewritten (poisoned per block) */
#define __CUDACC__ 1
#define __CUDA_ARCH__ 900

static dim3 blockIdx{0, 0, 0}, blockDim, gridDim;  // blocks run one after another
static thread_local dim3 threadIdx{0, 0, 0};

// Device intrinsics and the CUDA math overloads the kernels use.
inline int __ffs(int x) { return x ? __builtin_ctz(unsigned(x)) + 1 : 0; }
inline int __ffsll(long long x) { return x ? __builtin_ctzll((unsigned long long)x) + 1 : 0; }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x ? __builtin_clz(unsigned(x)) : 32; }
template <typename T>
inline T __ldg(const T* p) { return *p; }
template <typename A, typename B>
inline std::common_type_t<A, B> min(A a, B b) {
  using C = std::common_type_t<A, B>;
  return C(b) < C(a) ? C(b) : C(a);
}
template <typename A, typename B>
inline std::common_type_t<A, B> max(A a, B b) {
  using C = std::common_type_t<A, B>;
  return C(a) < C(b) ? C(b) : C(a);
}
template <typename T>
inline T atomicAdd(T* p, T v) { return std::atomic_ref<T>(*p).fetch_add(v); }

namespace cuda_emu {

constexpr size_t kSharedLimit = """ + str(SHARED_LIMIT) + r""";
constexpr size_t kGuard = 64 * 1024;  // poisoned bytes on each side of the dynamic shared memory
enum { kThreads = 0, kForward = 1, kReverse = 2, kShuffle = 3 };
int schedule = kThreads;
unsigned long long seed = 1;
unsigned grid_cap = 0;  // 0: no cap; else gridDim.x is lowered to it
constexpr intptr_t kStream = """ + str(FAKE_STREAM) + r""";
long long launches = 0, strided = 0, blocks = 0, barriers = 0, max_shared = 0;
unsigned long long block_serial = 0;
std::string error;  // set by a launch that misbehaved; the launcher then raises
cudaError_t last = cudaSuccess;
std::mutex mutex;

inline void fail(const std::string& what) {
  std::lock_guard<std::mutex> l(mutex);
  if (error.empty()) error = what;
  last = cudaErrorLaunchFailure;
}

// ----------------------------------------------------------------------- shared memory
unsigned char* dyn_base = nullptr;  // [kGuard | smem | kGuard]
size_t dyn_cap = 0;
inline unsigned char* dynamic_shared() { return dyn_base + kGuard; }
inline bool all_ff(const unsigned char* p, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (p[i] != 0xFF) return false;
  return true;
}
struct StaticShared { unsigned long long serial = 0, launch = 0; };
std::map<const void*, StaticShared> statics;
size_t launch_static_bytes = 0;
inline void shared_static(const void* p, size_t bytes) {
  std::lock_guard<std::mutex> l(mutex);
  StaticShared& s = statics[p];
  if (s.serial == block_serial) return;
  s.serial = block_serial;
  std::memset(const_cast<void*>(p), 0xFF, bytes);
  if (s.launch != (unsigned long long)launches) {
    s.launch = launches;
    launch_static_bytes += bytes;
  }
}

// ------------------------------------------------------------------ OS-thread barrier
// A block barrier that never hangs: a thread that leaves the kernel while others wait (or
// arrives after one left) breaks it and the launch reports a divergent __syncthreads.
struct Barrier {
  std::mutex m;
  std::condition_variable cv;
  unsigned n, waiting = 0, exited = 0;
  unsigned long long generation = 0;
  bool broken = false;
  explicit Barrier(unsigned n_) : n(n_) {}
  void wait() {
    std::unique_lock<std::mutex> l(m);
    if (broken) return;
    if (exited) { broken = true; cv.notify_all(); return; }
    const auto g = generation;
    if (++waiting == n) { waiting = 0; ++generation; cv.notify_all(); return; }
    cv.wait(l, [&] { return generation != g || broken; });
  }
  void leave() {
    std::lock_guard<std::mutex> l(m);
    ++exited;
    if (waiting) { broken = true; cv.notify_all(); }
  }
};
static thread_local Barrier* block_barrier = nullptr;

// ---------------------------------------------------------------------------- fibers
constexpr size_t kStack = 256 * 1024;
enum { kReady = 0, kAtBarrier = 1, kDone = 2 };
struct Fiber { ucontext_t ctx; int state = kReady; dim3 idx; char* stack = nullptr; };
std::vector<Fiber> fibers;
ucontext_t scheduler;
int current = -1;
const std::function<void()>* fiber_body = nullptr;
inline bool in_fiber() { return current >= 0; }

void fiber_entry() {
  (*fiber_body)();
  fibers[current].state = kDone;
  swapcontext(&fibers[current].ctx, &scheduler);
}

inline void fiber_sync() {
  Fiber& f = fibers[current];
  f.state = kAtBarrier;
  swapcontext(&f.ctx, &scheduler);
}

inline dim3 thread_index(unsigned t, dim3 block) {
  return dim3(t % block.x, (t / block.x) % block.y, t / (block.x * block.y));
}

bool run_block_fibers(const std::function<void()>& body, dim3 block, std::mt19937_64& rng) {
  const unsigned n = block.x * block.y * block.z;
  if (fibers.size() < n) fibers.resize(n);
  for (unsigned t = 0; t < n; ++t) {
    Fiber& f = fibers[t];
    if (!f.stack) {
      void* p = mmap(nullptr, kStack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (p == MAP_FAILED) throw std::runtime_error("cuda_emu: cannot map a fiber stack");
      mprotect(p, size_t(sysconf(_SC_PAGESIZE)), PROT_NONE);  // overflow guard
      f.stack = static_cast<char*>(p);
    }
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = f.stack;
    f.ctx.uc_stack.ss_size = kStack;
    f.ctx.uc_link = nullptr;
    makecontext(&f.ctx, fiber_entry, 0);
    f.state = kReady;
    f.idx = thread_index(t, block);
  }
  fiber_body = &body;
  std::vector<unsigned> order(n);
  std::iota(order.begin(), order.end(), 0u);
  if (schedule == kReverse) std::reverse(order.begin(), order.end());
  for (;;) {
    if (schedule == kShuffle) std::shuffle(order.begin(), order.end(), rng);
    for (unsigned t : order) {
      if (fibers[t].state != kReady) continue;
      current = int(t);
      threadIdx = fibers[t].idx;
      swapcontext(&scheduler, &fibers[t].ctx);
    }
    current = -1;
    unsigned done = 0, waiting = 0;
    for (unsigned t = 0; t < n; ++t) (fibers[t].state == kDone ? done : waiting) += 1;
    if (done == n) return true;
    if (done) return false;  // some returned while others wait at a barrier
    ++barriers;
    for (unsigned t = 0; t < n; ++t) fibers[t].state = kReady;
  }
}

bool run_block_threads(const std::function<void()>& body, dim3 block) {
  const unsigned n = block.x * block.y * block.z;
  Barrier bar{n};
  std::vector<std::thread> ts;
  ts.reserve(n);
  for (unsigned t = 0; t < n; ++t)
    ts.emplace_back([&, t] {
      threadIdx = thread_index(t, block);
      block_barrier = &bar;
      body();
      bar.leave();
    });
  for (auto& th : ts) th.join();
  barriers += (long long)bar.generation;
  return !bar.broken;
}

inline void syncthreads() {
  if (in_fiber()) fiber_sync();
  else block_barrier->wait();
}

// ---------------------------------------------------------------------------- launch
constexpr size_t kParamLimit = 4096;  // bytes of kernel parameters (32764 from CUDA 12.1 on Volta+)
template <typename... A>
constexpr size_t param_bytes(void (*)(A...)) {  // the kernel's parameters, laid out in order
  size_t n = 0;
  ((n = (n + alignof(A) - 1) / alignof(A) * alignof(A) + sizeof(A)), ...);
  return n;
}

template <typename F>
void launch(const char* kernel, int line, long long max_threads, size_t params, F&& kernel_body, dim3 grid,
            dim3 block, size_t smem = 0, cudaStream_t stream = nullptr) {
  auto bad = [&](const std::string& what) {
    fail(std::string(kernel) + " (launched at line " + std::to_string(line) + "): " + what);
  };
  const unsigned long long nthreads = (unsigned long long)block.x * block.y * block.z;
  if (grid.x < 1 || grid.y < 1 || grid.z < 1 || grid.x > 2147483647u || grid.y > 65535 || grid.z > 65535)
    return bad("bad grid " + std::to_string(grid.x) + "x" + std::to_string(grid.y) + "x" + std::to_string(grid.z));
  if (block.x < 1 || block.y < 1 || block.z < 1 || block.x > 1024 || block.y > 1024 || block.z > 64 || nthreads > 1024)
    return bad("bad block " + std::to_string(block.x) + "x" + std::to_string(block.y) + "x" + std::to_string(block.z));
  if (max_threads > 0 && nthreads > (unsigned long long)max_threads)
    return bad(std::to_string(nthreads) + " threads a block, more than its __launch_bounds__ " + std::to_string(max_threads));
  if (smem > kSharedLimit)
    return bad(std::to_string(smem) + " bytes of dynamic shared memory, more than " + std::to_string(kSharedLimit));
  if (params > kParamLimit)
    return bad(std::to_string(params) + " bytes of kernel parameters, more than " + std::to_string(kParamLimit));
  if (reinterpret_cast<intptr_t>(stream) != kStream) return bad("launched on a stream other than the caller's");
  ++launches;
  launch_static_bytes = 0;
  if (grid_cap && grid.x > grid_cap) { grid.x = grid_cap; ++strided; }
  blockDim = block;
  gridDim = grid;
  if (dyn_cap < smem + 2 * kGuard) {
    std::free(dyn_base);
    dyn_cap = smem + 2 * kGuard;
    dyn_base = static_cast<unsigned char*>(std::aligned_alloc(256, (dyn_cap + 255) / 256 * 256));
  }
  std::mt19937_64 rng(seed ^ (unsigned long long)launches * 0x9E3779B97F4A7C15ull);
  const std::function<void()> body = [&] { kernel_body(); };
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) {
        blockIdx = dim3(x, y, z);
        ++block_serial;
        ++blocks;
        std::memset(dyn_base, 0xFF, smem + 2 * kGuard);
        const bool ok = schedule == kThreads ? run_block_threads(body, block) : run_block_fibers(body, block, rng);
        if (!ok) return bad("divergent __syncthreads (a thread returned while others waited at a barrier)");
        if (!all_ff(dyn_base, kGuard) || !all_ff(dyn_base + kGuard + smem, kGuard))
            return bad("wrote outside its " + std::to_string(smem) + " bytes of dynamic shared memory (block " +
                       std::to_string(x) + ")");
      }
  const size_t total = smem + launch_static_bytes;
  if ((long long)total > max_shared) max_shared = (long long)total;
  if (total > kSharedLimit)
    return bad(std::to_string(total) + " bytes of shared memory (" + std::to_string(launch_static_bytes) +
               " static), more than " + std::to_string(kSharedLimit));
}

// ---------------------------------------------------------------------- visit counts
// One more visit of an item: its uint8 count goes up atomically, saturating at 255.
inline void count_visit(uint8_t& count) {
  std::atomic_ref<uint8_t> c(count);
  uint8_t old = c.load();
  while (old < 255 && !c.compare_exchange_weak(old, uint8_t(old + 1))) {}
}
// The items 0..n-1 (masks, graphs ...) one launcher call must visit exactly once: a harness's
// hooks call visits.visit(i); guarded_visits (below) resets and checks them around the call.
struct Visits {
  std::vector<uint8_t> counts;
  std::atomic<long long> outside{0};  // visits of an index outside [0, n)
  void visit(int64_t i) {
    if (i < 0 || uint64_t(i) >= counts.size()) ++outside;
    else count_visit(counts[size_t(i)]);
  }
  // sets error (unless a launch did) when an item was visited never or more than once; the
  // message calls them `items` and numbers them from `base`
  void check(const std::string& items, int64_t base) {
    if (!error.empty()) return;
    long long never = 0, repeated = 0, first = -1;
    for (size_t i = 0; i < counts.size(); ++i)
      if (counts[i] != 1) {
        (counts[i] ? repeated : never) += 1;
        if (first < 0) first = base + (long long)i;
      }
    if (never || repeated || outside)
      error = items + " visited not exactly once: " + std::to_string(never) + " never, " + std::to_string(repeated) +
              " more than once (first " + std::to_string(first) + "), " + std::to_string(outside.load()) +
              " visits outside them";
  }
} visits;

// ------------------------------------------------------------------ counted stores
// Counted<V>: a V whose assignments into registered ranges are counted (one uint8 per element,
// saturating at 255). Same size and layout as V, so a kernel template instantiated with it runs
// on the same buffers as with V.
struct StoreRange { uintptr_t lo, hi; size_t elem; uint8_t* counts; };
std::vector<StoreRange> store_ranges;
inline void note_store(const void* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  for (const StoreRange& r : store_ranges)
    if (a >= r.lo && a < r.hi) return count_visit(r.counts[(a - r.lo) / r.elem]);
}
// Loads: a Counted read (copied, assigned from or used in a compound assignment) from one of
// the forbidden ranges (the poisoned guards around the buffers) is counted, the first address
// kept. Reads from the running fiber's stack (locals) are skipped quickly.
struct LoadRange { uintptr_t lo, hi; };
std::vector<LoadRange> load_ranges;
std::atomic<long long> bad_loads{0}, poison_loads{0};
std::atomic<uintptr_t> first_bad_load{0}, first_poison_load{0};
// A value whose bytes are all 0xFF was never written (poison: shared memory before the block
// writes it, the guards); arithmetic never makes that NaN.
template <typename V>
inline void note_load(const void* p, const V& v) {
  if (load_ranges.empty()) return;
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  if (current >= 0) {  // a local of the running fiber
    const uintptr_t s = reinterpret_cast<uintptr_t>(fibers[current].stack);
    if (a >= s && a < s + kStack) return;
  }
  using Bits = std::conditional_t<sizeof(V) == 8, uint64_t, std::conditional_t<sizeof(V) == 4, uint32_t, void>>;
  Bits bits;
  std::memcpy(&bits, &v, sizeof(V));
  if (bits == Bits(~Bits(0))) {
    uintptr_t zero = 0;
    first_poison_load.compare_exchange_strong(zero, a);
    ++poison_loads;
  }
  const uintptr_t d = reinterpret_cast<uintptr_t>(dyn_base);
  if (a >= d && a < d + dyn_cap) return;  // dynamic shared memory
  // the last range starting at or below a (ranges sorted by lo, disjoint)
  auto it = std::upper_bound(load_ranges.begin(), load_ranges.end(), a,
                             [](uintptr_t x, const LoadRange& r) { return x < r.lo; });
  if (it == load_ranges.begin() || a >= (--it)->hi) return;
  uintptr_t zero = 0;
  first_bad_load.compare_exchange_strong(zero, a);
  ++bad_loads;
}
template <typename V>
struct Counted {
  V v;
  Counted() = default;
  template <typename U, typename = std::enable_if_t<std::is_arithmetic_v<U>>>
  constexpr Counted(U x) : v(V(x)) {}
  Counted(const Counted& o) : v(o.v) { read(o); }
  Counted& operator=(const Counted& o) { read(o); v = o.v; note_store(this); return *this; }
  Counted& operator+=(const Counted& o) { read(o); read(*this); v += o.v; note_store(this); return *this; }
  Counted& operator-=(const Counted& o) { read(o); read(*this); v -= o.v; note_store(this); return *this; }
  Counted& operator*=(const Counted& o) { read(o); read(*this); v *= o.v; note_store(this); return *this; }
  Counted& operator/=(const Counted& o) { read(o); read(*this); v /= o.v; note_store(this); return *this; }
  static void read(const Counted& o) { note_load(&o, o.v); }
  explicit operator V() const { return v; }
  friend Counted operator+(Counted a, Counted b) { return Counted(a.v + b.v); }
  friend Counted operator-(Counted a, Counted b) { return Counted(a.v - b.v); }
  friend Counted operator*(Counted a, Counted b) { return Counted(a.v * b.v); }
  friend Counted operator/(Counted a, Counted b) { return Counted(a.v / b.v); }
  friend Counted operator-(Counted a) { return Counted(-a.v); }
  friend bool operator==(Counted a, Counted b) { return a.v == b.v; }
  friend bool operator!=(Counted a, Counted b) { return a.v != b.v; }
  friend bool operator<(Counted a, Counted b) { return a.v < b.v; }
  friend bool operator>(Counted a, Counted b) { return a.v > b.v; }
  friend bool operator<=(Counted a, Counted b) { return a.v <= b.v; }
  friend bool operator>=(Counted a, Counted b) { return a.v >= b.v; }
  friend Counted exp(Counted a) { return Counted(std::exp(a.v)); }
  friend Counted log1p(Counted a) { return Counted(std::log1p(a.v)); }
  friend Counted tanh(Counted a) { return Counted(std::tanh(a.v)); }
  friend Counted log(Counted a) { return Counted(std::log(a.v)); }
  friend Counted sqrt(Counted a) { return Counted(std::sqrt(a.v)); }
  friend Counted fabs(Counted a) { return Counted(std::fabs(a.v)); }
};
static_assert(sizeof(Counted<double>) == sizeof(double) && sizeof(Counted<float>) == sizeof(float));
static_assert(std::is_trivially_default_constructible_v<Counted<double>>);

// ------------------------------------------------------------------ calls from Python
thread_local std::string message;
// 0 ok, 1 std::invalid_argument (ValueError in _C), 2 other exception (RuntimeError), 3 the
// emulation found the launch misbehaving (EmulationError)
template <typename F>
int guarded(F&& f) {
  error.clear();
  last = cudaSuccess;
  try {
    f();
  } catch (const std::invalid_argument& e) {
    message = e.what();
    return 1;
  } catch (const std::exception& e) {
    message = e.what();
    return error.empty() ? 2 : 3;
  }
  return error.empty() ? 0 : 3;
}
// guarded(f), with visits counting n items afresh for f and checked after it
template <typename F>
int guarded_visits(int64_t n, const std::string& items, int64_t base, F&& f) {
  return guarded([&] {
    visits.counts.assign(size_t(n > 0 ? n : 0), 0);
    visits.outside = 0;
    f();
    visits.check(items, base);
  });
}

}  // namespace cuda_emu

inline void __syncthreads() { ::cuda_emu::syncthreads(); }

cudaError_t cudaGetLastError() {
  const cudaError_t e = cuda_emu::last;
  cuda_emu::last = cudaSuccess;
  return e;
}

extern "C" {
const char* cuda_emu_message() { return cuda_emu::error.empty() ? cuda_emu::message.c_str() : cuda_emu::error.c_str(); }
void cuda_emu_set_grid_cap(unsigned cap) { cuda_emu::grid_cap = cap; }
void cuda_emu_set_schedule(int s, unsigned long long seed) { cuda_emu::schedule = s; cuda_emu::seed = seed; }
void cuda_emu_stats(long long* out) {
  out[0] = cuda_emu::launches; out[1] = cuda_emu::strided; out[2] = cuda_emu::blocks;
  out[3] = cuda_emu::barriers; out[4] = cuda_emu::max_shared;
}
// (lo, hi) x n; out: reads there, the first one's address, reads of poison, the first one's address
void cuda_emu_track_loads(const long long* ranges, int n, long long* out) {
  if (out) {
    out[0] = cuda_emu::bad_loads.load(); out[1] = (long long)cuda_emu::first_bad_load.load();
    out[2] = cuda_emu::poison_loads.load(); out[3] = (long long)cuda_emu::first_poison_load.load();
  }
  cuda_emu::poison_loads = 0;
  cuda_emu::first_poison_load = 0;
  cuda_emu::load_ranges.clear();
  for (int i = 0; i < n; ++i) cuda_emu::load_ranges.push_back({uintptr_t(ranges[2 * i]), uintptr_t(ranges[2 * i + 1])});
  std::sort(cuda_emu::load_ranges.begin(), cuda_emu::load_ranges.end(),
            [](const cuda_emu::LoadRange& a, const cuda_emu::LoadRange& b) { return a.lo < b.lo; });
  cuda_emu::bad_loads = 0;
  cuda_emu::first_bad_load = 0;
}
void cuda_emu_reset_max_shared() { cuda_emu::max_shared = 0; }
void cuda_emu_track_stores(const long long* ranges, int n) {  // (ptr, bytes, elem, counts ptr) x n
  cuda_emu::store_ranges.clear();
  for (int i = 0; i < n; ++i) {
    const long long* r = ranges + 4 * i;
    cuda_emu::store_ranges.push_back({uintptr_t(r[0]), uintptr_t(r[0] + r[1]), size_t(r[2]),
                                      reinterpret_cast<uint8_t*>(r[3])});
  }
}
}
"""

PROBE = r"""
#include <atomic>
#include <thread>
#include <ucontext.h>
extern "C" int probe() {
  unsigned long long x = 0;
  std::thread t([&] { std::atomic_ref<unsigned long long>(x).fetch_add(1); });
  t.join();
  ucontext_t c;
  getcontext(&c);
  return int(x);
}
"""


# ------------------------------------------------------------------------ the kernel text


def kernel_section(path: Path, marker: str) -> tuple[int, str]:
    """(first line number, text) of the code between ``// <marker>: begin`` and ``... end``."""
    begin_tag, end_tag = f"// {marker}: begin", f"// {marker}: end"
    lines = Path(path).read_text().splitlines(keepends=True)
    begin = [i for i, s in enumerate(lines) if s.lstrip().startswith(begin_tag)]
    end = [i for i, s in enumerate(lines) if s.lstrip().startswith(end_tag)]
    if len(begin) != 1 or len(end) != 1 or begin[0] >= end[0]:
        raise HarnessError(f"{path}: expected one '{begin_tag}' line before one '{end_tag}' line "
                           f"(found {len(begin)} and {len(end)})")
    return begin[0] + 2, "".join(lines[begin[0] + 1 : end[0]])


def _matching(s: str, i: int, where: str, open_: str = "(", close: str = ")") -> int:
    depth = 0
    for j in range(i, len(s)):
        if s[j] == open_:
            depth += 1
        elif s[j] == close:
            depth -= 1
            if depth == 0:
                return j
    raise HarnessError(f"{where}: unbalanced '{open_}{close}'")


def _split_top(s: str, sep: str = ",") -> list[str]:
    """``s`` split at ``sep`` outside (), [] and {}."""
    out, depth, cur = [], 0, []
    for ch in s:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == sep and depth == 0:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return out


def launch_bounds(code: str, where: str) -> dict[str, str]:
    """kernel name -> the expression of its ``__launch_bounds__`` (max threads a block)."""
    out = {}
    for m in re.finditer(r"__launch_bounds__\s*\(", code):
        close = _matching(code, m.end() - 1, where)
        args = _split_top(code[m.end() : close])
        name = re.match(r"\s*(\w+)\s*\(", code[close + 1 :])
        if not name:
            raise HarnessError(f"{where}: cannot find the kernel that __launch_bounds__({args[0]}) decorates")
        out[name.group(1)] = args[0].strip()
    return out


_LAUNCH = re.compile(r"\b(\w+)(\s*<[^<>;{}]*>)?\s*<<<(.*?)>>>\s*\(", re.S)


def rewrite_launches(code: str, where: str, bounds: dict[str, str] | None = None) -> str:
    """``k<T, 4><<<cfg>>>(args);`` -> ``::cuda_emu::launch("k<T, 4>", line, bound, param_bytes(&k<T, 4>),
    [&] { k<T, 4>(args); }, cfg);`` on the same lines (the bound is the kernel's
    ``__launch_bounds__``, or 0)."""
    bounds = bounds or {}
    out, pos, n = [], 0, 0
    while m := _LAUNCH.search(code, pos):
        close = _matching(code, m.end() - 1, where)
        args = code[m.end() : close]
        name = m.group(1) + re.sub(r"\s+", " ", m.group(2) or "")
        skipped = code[m.start() : m.end()].count("\n") - m.group(3).count("\n")
        out.append(code[pos : m.start()])
        out.append(f'::cuda_emu::launch("{name}", __LINE__, {bounds.get(m.group(1), "0")}, '
                   f"::cuda_emu::param_bytes(&{name}), [&] {{ {name}({args}); }}, {m.group(3)})"
                   + "\n" * skipped)
        pos, n = close + 1, n + 1
    out.append(code[pos:])
    text = "".join(out)
    if n == 0 or "<<<" in text or ">>>" in text:
        raise HarnessError(f"{where}: found {n} kernel launches to rewrite between the markers"
                           + (" and some '<<<'/'>>>' left over" if n else ""))
    return text


_EXTERN_SHARED = re.compile(r"\bextern\s+__shared__\s+([^;\[\]]*?)\b(\w+)\s*\[\s*\]\s*;")
_STATIC_SHARED = re.compile(r"(?<!extern )\b__shared__\s+([^;]*);")


def rewrite_shared(code: str, where: str) -> str:
    """Dynamic shared memory -> the launch's per-block buffer; static ``__shared__`` -> statics
    that poison themselves once per block (statements appended on the same line)."""

    def dynamic(m: re.Match) -> str:
        ty = re.sub(r"__align__\s*\([^)]*\)", "", m.group(1)).strip()
        return f"{ty}* {m.group(2)} = reinterpret_cast<{ty}*>(::cuda_emu::dynamic_shared());"

    code = _EXTERN_SHARED.sub(dynamic, code)
    if re.search(r"\bextern\s+__shared__", code):
        raise HarnessError(f"{where}: an 'extern __shared__' declaration the rewrite cannot parse")

    def static(m: re.Match) -> str:
        names = []
        for piece in _split_top(m.group(1)):
            head = piece.split("[")[0].split("=")[0].split("{")[0]
            words = re.findall(r"\w+", head)
            if not words:
                raise HarnessError(f"{where}: cannot parse the __shared__ declaration '{m.group(0)}'")
            names.append(words[-1])
        return f"static {m.group(1)};" + "".join(
            f" ::cuda_emu::shared_static({x}, sizeof({x}));" for x in names)

    return _STATIC_SHARED.sub(static, code)


@dataclass
class Section:
    """One .cu's code between its markers."""

    path: Path
    marker: str

    def text(self) -> str:
        first, code = kernel_section(self.path, self.marker)
        where = str(self.path)
        code = rewrite_launches(rewrite_shared(code, where), where, launch_bounds(code, where))
        return f'#line {first} "{self.path}"\n{code}'


@dataclass
class Harness:
    """One library to build: the .cu sections, the project headers they need (``includes``,
    relative to csrc/), ``prelude`` (hooks, after the headers), ``tail`` (the extern "C" entry
    points, ``emu_<name>``) and each entry point's ctypes argument types (``functions``)."""

    sections: list[Section]
    includes: list[str]
    functions: dict[str, Sequence]
    prelude: str = ""
    tail: str = ""

    def source(self) -> str:
        """The whole translation unit: runtime, headers, prelude, each section inside
        ``namespace cgnf``, tail."""
        parts = [RUNTIME, *(f'#include "{inc}"\n' for inc in self.includes)]
        parts += ['#line 1 "cuda_host_emu_prelude"\n', self.prelude, "\nnamespace cgnf {\n"]
        parts += [s.text() for s in self.sections]
        parts += ['\n#line 1 "cuda_host_emu_tail"\n}  // namespace cgnf\n', self.tail]
        return "".join(parts)


# ----------------------------------------------------------------------------- building


def _stub(workdir: Path) -> None:
    """Write the <cuda_runtime.h> stand-in, once per folder before its compiles start (a rewrite
    while another compile reads it could break that compile)."""
    (workdir / "cuda_runtime.h").write_text(CUDA_RUNTIME_STUB)


def _start(source: str, workdir: Path, name: str, cxx: str) -> subprocess.Popen:
    """Start compiling ``source`` into workdir/lib<name>.so (the library is the command's last
    argument); workdir holds the runtime stub (:func:`_stub`)."""
    src, lib = workdir / f"{name}.cpp", workdir / f"lib{name}.so"
    src.write_text(source)
    cmd = [cxx, *CXXFLAGS, f"-I{workdir}", f"-I{CSRC}", str(src), "-o", str(lib)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def check_compiler(cxx: str | None = None) -> str:
    """The compiler to use; raises CompilerUnavailable when it is missing or too old (probed
    once per compiler and process)."""
    return _probe(cxx or os.environ.get("CXX") or "g++")


@functools.lru_cache(maxsize=None)
def _probe(cxx: str) -> str:
    if shutil.which(cxx) is None:
        raise CompilerUnavailable(f"no C++ compiler '{cxx}' on PATH")
    with tempfile.TemporaryDirectory(prefix="cuda_emu_probe_") as d:
        _stub(Path(d))
        proc = _start(PROBE, Path(d), "probe", cxx)
        _, err = proc.communicate()
        if proc.returncode != 0:
            errors = [ln for ln in err.splitlines() if "error" in ln] or err.splitlines()[-1:]
            raise CompilerUnavailable(f"'{cxx}' cannot build C++20 std::atomic_ref with threads and ucontext: "
                                      + (errors[0].strip() if errors else f"exit status {proc.returncode}"))
    return cxx


class Library:
    """A compiled harness, loaded. ``functions`` maps each extern "C" entry point (without its
    ``emu_`` prefix) to its ctypes argument types; every one returns the guarded() code."""

    def __init__(self, lib_path: Path, functions: dict[str, Sequence]):
        self.lib = lib = ctypes.CDLL(str(lib_path))
        for name, argtypes in functions.items():
            f = getattr(lib, "emu_" + name)
            f.argtypes, f.restype = list(argtypes), ctypes.c_int
        lib.cuda_emu_message.restype = ctypes.c_char_p
        lib.cuda_emu_set_grid_cap.argtypes = [ctypes.c_uint]
        lib.cuda_emu_set_schedule.argtypes = [ctypes.c_int, ctypes.c_ulonglong]
        lib.cuda_emu_stats.argtypes = [ctypes.POINTER(ctypes.c_longlong)]
        lib.cuda_emu_track_stores.argtypes = [ctypes.POINTER(ctypes.c_longlong), ctypes.c_int]
        lib.cuda_emu_track_loads.argtypes = [ctypes.POINTER(ctypes.c_longlong), ctypes.c_int,
                                             ctypes.POINTER(ctypes.c_longlong)]

    def set_grid_cap(self, blocks: int) -> None:
        """Lower every launch's gridDim.x to at most ``blocks`` (0: no cap)."""
        if blocks < 0:
            raise ValueError("the grid cap must be >= 0 (0: none)")
        self.lib.cuda_emu_set_grid_cap(blocks)

    def set_schedule(self, schedule: str, seed: int = 1) -> None:
        """How a block's threads run: ``threads`` (OS threads) or fibers in ``forward`` /
        ``reverse`` / ``shuffle`` (seeded) order."""
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {sorted(SCHEDULES)}, got {schedule!r}")
        self.lib.cuda_emu_set_schedule(SCHEDULES[schedule], seed)

    def stats(self) -> dict[str, int]:
        """Counts since the library was loaded (launches, those whose grid was capped, blocks,
        barriers passed) and the most shared memory one launch used (see reset_max_shared)."""
        a = (ctypes.c_longlong * 5)()
        self.lib.cuda_emu_stats(a)
        return dict(zip(("launches", "strided", "blocks", "barriers", "max_shared"), a))

    def reset_max_shared(self) -> None:
        """Start stats()["max_shared"] (the most shared memory one launch used) afresh."""
        self.lib.cuda_emu_reset_max_shared()

    def track_stores(self, ranges: Sequence[tuple[int, int, int, int]]) -> None:
        """Count Counted<V> stores into these ``(address, bytes, element size, counts address)``
        ranges (counts: one uint8 per element); an empty list stops counting."""
        flat = (ctypes.c_longlong * (4 * max(1, len(ranges))))(*[x for r in ranges for x in r])
        self.lib.cuda_emu_track_stores(flat, len(ranges))

    def track_loads(self, ranges: Sequence[tuple[int, int]]) -> tuple[int, int, int, int]:
        """Count Counted<V> reads from these ``[lo, hi)`` address ranges, and reads of values whose
        bytes are all 0xFF (never written: poison), from now on (an empty list stops); returns
        ``(reads in the ranges, first address, reads of poison, first address)`` since the
        previous call."""
        flat = (ctypes.c_longlong * (2 * max(1, len(ranges))))(*[x for r in ranges for x in r])
        out = (ctypes.c_longlong * 4)()
        self.lib.cuda_emu_track_loads(flat, len(ranges), out)
        return out[0], out[1], out[2], out[3]

    def call(self, name: str, *args) -> None:
        rc = getattr(self.lib, "emu_" + name)(*args)
        if rc:
            msg = self.lib.cuda_emu_message().decode()
            raise (ValueError, RuntimeError, EmulationError)[rc - 1](msg)


def build_many(harnesses: dict[str, Harness], workdir: str | os.PathLike | None = None,
               cxx: str | None = None) -> dict[str, Library]:
    """Compile the harnesses in parallel into ``workdir`` (<name>_cuda_emu.cpp and its library; a
    temporary folder, removed once they are loaded, without one) and load them.
    CompilerUnavailable without a usable compiler, HarnessError when a harness does not compile."""
    cxx = check_compiler(cxx)
    with contextlib.ExitStack() as stack:
        d = Path(workdir) if workdir else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cuda_emu_")))
        d.mkdir(parents=True, exist_ok=True)
        _stub(d)
        procs = {n: _start(h.source(), d, f"{n}_cuda_emu", cxx) for n, h in harnesses.items()}
        errors = {n: p.communicate()[1] for n, p in procs.items()}
        for n, p in procs.items():
            if p.returncode != 0:
                raise HarnessError(f"compiling the {n} emulation failed:\n{errors[n]}")
        return {n: Library(Path(p.args[-1]), harnesses[n].functions) for n, p in procs.items()}
