// Minimal fork-join parallel-for over [0, n) with std::thread (no OpenMP: torch brings its own
// runtime and we must not load a second one). Work is split into contiguous chunks, one per
// thread; callers pass the number of threads (the Python layer passes torch's setting).
#pragma once

#include <algorithm>
#include <cstdint>
#include <exception>
#include <thread>
#include <vector>

namespace cgnf {

// The chunk length parallel_for uses for these arguments: chunk i is [i * chunk, (i + 1) * chunk)
// clipped to n, so a body can name its chunk (lo / chunk), e.g. to reuse per-chunk buffers.
inline int64_t parallel_chunk(int64_t n, int64_t num_threads, int64_t min_chunk) {
  int64_t threads = std::max<int64_t>(1, num_threads);
  threads = std::min<int64_t>(threads, (n + min_chunk - 1) / std::max<int64_t>(1, min_chunk));
  return threads <= 1 ? std::max<int64_t>(n, 1) : (n + threads - 1) / threads;
}

template <typename F>
void parallel_for(int64_t n, int64_t num_threads, int64_t min_chunk, F&& body) {
  if (n <= 0) return;
  const int64_t chunk = parallel_chunk(n, num_threads, min_chunk);
  const int64_t threads = (n + chunk - 1) / chunk;
  if (threads <= 1) {
    body(int64_t{0}, n);
    return;
  }
  std::vector<std::thread> pool;
  std::vector<std::exception_ptr> errors(threads);
  pool.reserve(threads - 1);
  for (int64_t t = 1; t < threads; ++t) {
    const int64_t lo = t * chunk, hi = std::min(n, lo + chunk);
    if (lo >= hi) break;
    pool.emplace_back([&, t, lo, hi] {
      try {
        body(lo, hi);
      } catch (...) {
        errors[t] = std::current_exception();
      }
    });
  }
  try {
    body(int64_t{0}, std::min(n, chunk));
  } catch (...) {
    errors[0] = std::current_exception();
  }
  for (auto& th : pool) th.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace cgnf
