// Fork-join parallel-for over [0, n) on a persistent worker pool (parallel.cpp; no OpenMP: torch
// brings its own runtime and we must not load a second one). Work is split into contiguous
// chunks, at most one per thread; callers pass the number of threads (the Python layer passes
// torch's setting). The calling thread runs chunks too.
//
// Why a pool: the CNF solves call a kernel dozens of times per solve, ~1.6 ms each at B = 256;
// a std::thread per call cost ~40 us (start ~22 us, join) here, 2.5 % of such a call. The pool's
// workers spin briefly after a job (so the next call of a solve finds them awake), then sleep.
// A call made while the pool is busy (from another thread, or from inside a body) runs its
// chunks on the calling thread alone, in order: the same results, no deadlock.
#pragma once

#include <algorithm>
#include <cstdint>
#include <exception>
#include <vector>

namespace cgnf {

// The chunk length parallel_for uses for these arguments: chunk i is [i * chunk, (i + 1) * chunk)
// clipped to n, so a body can name its chunk (lo / chunk), e.g. to reuse per-chunk buffers.
inline int64_t parallel_chunk(int64_t n, int64_t num_threads, int64_t min_chunk) {
  int64_t threads = std::max<int64_t>(1, num_threads);
  threads = std::min<int64_t>(threads, (n + min_chunk - 1) / std::max<int64_t>(1, min_chunk));
  return threads <= 1 ? std::max<int64_t>(n, 1) : (n + threads - 1) / threads;
}

namespace detail {
// Runs fn(ctx, i) for every i < chunks, on the pool's workers and the calling thread (each i
// once; which thread runs which i is not fixed). Returns after all have finished.
void pool_run(int64_t chunks, void (*fn)(void*, int64_t), void* ctx);
}  // namespace detail

// Workers the pool holds now (for tests: it grows to the largest number of threads asked for).
int64_t pool_workers();

template <typename F>
void parallel_for(int64_t n, int64_t num_threads, int64_t min_chunk, F&& body) {
  if (n <= 0) return;
  const int64_t chunk = parallel_chunk(n, num_threads, min_chunk);
  const int64_t chunks = (n + chunk - 1) / chunk;
  if (chunks <= 1) {
    body(int64_t{0}, n);
    return;
  }
  struct Ctx {
    F* body;
    int64_t n, chunk;
    std::vector<std::exception_ptr> errors;
  } ctx{&body, n, chunk, std::vector<std::exception_ptr>(size_t(chunks))};
  detail::pool_run(chunks, [](void* p, int64_t i) {
    Ctx& c = *static_cast<Ctx*>(p);
    try {
      (*c.body)(i * c.chunk, std::min(c.n, (i + 1) * c.chunk));
    } catch (...) {
      c.errors[size_t(i)] = std::current_exception();
    }
  }, &ctx);
  for (auto& e : ctx.errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace cgnf
