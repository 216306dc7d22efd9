// The worker pool behind parallel_for (parallel.h).
//
// One job at a time: a caller claims the pool (a flag; a call that finds it claimed runs its
// chunks alone), publishes the job and bumps a generation counter; workers take chunk indices
// from the job's atomic counter, the caller too, and the caller returns once every chunk has run
// and no worker still holds the job (which lives on the caller's stack). Workers spin on the
// counter for kSpin after each job, then sleep on a condition variable; the caller wakes them
// only when some sleep. Workers are detached and the pool is never freed (no join at exit); a
// forked child starts a fresh pool (the parent's workers do not exist there).
#include "parallel.h"

#include <pthread.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

namespace cgnf {
namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kSpin = std::chrono::microseconds(200);

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

struct Job {
  void (*fn)(void*, int64_t);
  void* ctx;
  int64_t chunks;
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> left{0};

  void work() {
    for (int64_t k = next.fetch_add(1); k < chunks; k = next.fetch_add(1)) {
      fn(ctx, k);
      left.fetch_sub(1, std::memory_order_acq_rel);
    }
  }
};

struct Pool {
  std::atomic<bool> busy{false};
  std::atomic<uint64_t> gen{0};
  std::atomic<Job*> job{nullptr};
  std::atomic<int64_t> helpers{0};  // workers the current job wants (worker i joins if i < helpers)
  std::atomic<int> inside{0};       // workers that may hold a pointer to the current job
  std::atomic<int> sleepers{0};
  std::atomic<int64_t> workers{0};
  std::mutex m;
  std::condition_variable cv;

  void worker(int64_t index, uint64_t seen) {
    for (;;) {
      const auto t0 = Clock::now();
      for (int spins = 1; gen.load(std::memory_order_acquire) == seen; ++spins) {
        cpu_relax();
        if (spins % 256 == 0 && Clock::now() - t0 > kSpin) {
          std::unique_lock<std::mutex> lk(m);
          sleepers.fetch_add(1);
          while (gen.load() == seen) cv.wait(lk);
          sleepers.fetch_sub(1);
          break;
        }
      }
      seen = gen.load(std::memory_order_acquire);
      if (index >= helpers.load(std::memory_order_relaxed)) continue;
      inside.fetch_add(1);
      if (Job* j = job.load()) j->work();
      inside.fetch_sub(1);
    }
  }

  // Starts workers until there are `want` (fewer if the system refuses threads).
  void grow(int64_t want) {
    for (int64_t i = workers.load(); i < want; ++i) {
      try {
        std::thread([this, i, g = gen.load()] { worker(i, g); }).detach();
      } catch (const std::system_error&) {
        return;
      }
      workers.store(i + 1);
    }
  }
};

std::atomic<Pool*> g_pool{nullptr};

void forget_pool_in_child() { g_pool.store(nullptr); }  // (the parent's pool is leaked there)

Pool& pool() {
  Pool* p = g_pool.load(std::memory_order_acquire);
  if (p) return *p;
  static const int registered = pthread_atfork(nullptr, nullptr, forget_pool_in_child);
  (void)registered;
  Pool* fresh = new Pool();
  if (g_pool.compare_exchange_strong(p, fresh)) return *fresh;
  delete fresh;  // another thread made one first
  return *p;
}

}  // namespace

namespace detail {

void pool_run(int64_t chunks, void (*fn)(void*, int64_t), void* ctx) {
  Pool& p = pool();
  bool expected = false;
  if (chunks <= 1 || !p.busy.compare_exchange_strong(expected, true)) {  // busy (or nested): alone
    for (int64_t i = 0; i < chunks; ++i) fn(ctx, i);
    return;
  }
  p.grow(chunks - 1);
  Job j;
  j.fn = fn, j.ctx = ctx, j.chunks = chunks;
  j.left.store(chunks);
  p.helpers.store(chunks - 1, std::memory_order_relaxed);
  p.job.store(&j);
  p.gen.fetch_add(1);
  if (p.sleepers.load() > 0) {
    { std::lock_guard<std::mutex> lk(p.m); }
    p.cv.notify_all();
  }
  j.work();
  for (int spins = 1; j.left.load(std::memory_order_acquire) > 0; ++spins) {
    cpu_relax();
    if (spins % 4096 == 0) std::this_thread::yield();
  }
  p.job.store(nullptr);
  for (int spins = 1; p.inside.load() > 0; ++spins) {
    cpu_relax();
    if (spins % 4096 == 0) std::this_thread::yield();
  }
  p.busy.store(false, std::memory_order_release);
}

}  // namespace detail

int64_t pool_workers() { return pool().workers.load(); }

}  // namespace cgnf
