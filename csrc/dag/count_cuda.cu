// CUDA space counting (the --device cuda path of `cgnf space count`).
//
// Work split: one thread per adjacency-matrix mask (grid-stride loop over [lo, hi)); a thread
// prunes its matrix (valid job) or checks fullness and canonical form and runs the Burnside
// count over the automorphisms (unique job), exactly as count_cpu.cpp does, with the same
// host/device code (graph_impl.h, space_impl.h). Per-thread sums are reduced in shared memory
// and added to the global counters with one atomicAdd per block. For networks, each canonical
// class folds every identity subset and appends its exact 256-bit key to a buffer (atomic slot
// counter); deduplication happens afterwards with torch.unique on the device. All launches use
// the caller's stream.
#include <cuda_runtime.h>

#include "../common/checks.h"
#include "../common/cuda_utils.h"
#include "count.h"
#include "graph_impl.h"
#include "space_impl.h"

namespace cgnf {

// emulate_count_cuda: begin (scripts/emulate_count_cuda.py compiles from here to the end marker as host C++)
namespace {

constexpr int kThreads = 128;

__device__ void block_add(unsigned long long value, unsigned long long* out) {
  __shared__ unsigned long long sums[kThreads];
  __syncthreads();  // a previous block_add may still be reading sums
  sums[threadIdx.x] = value;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) sums[threadIdx.x] += sums[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0 && sums[0]) atomicAdd(out, sums[0]);
}

__global__ void count_valid_kernel(int K, int max_edges, uint64_t lo, uint64_t hi, unsigned long long* out) {
  unsigned long long count = 0;
  uint8_t pred[kMax];
  for (uint64_t mask = lo + blockIdx.x * uint64_t(blockDim.x) + threadIdx.x; mask < hi;
       mask += uint64_t(gridDim.x) * blockDim.x) {
    preds_of(mask, K, pred);
    const uint32_t keep = keep_from_preds(pred, K);
    if (!keep) continue;
    int edges = 0;
    for (int v = 1; v < K; ++v)
      if (keep >> v & 1u) edges += popcount32(pred[v] & keep);
    count += edges <= max_edges;
  }
  block_add(count, out);
}

__global__ void count_unique_kernel(int k, uint64_t num_ops, int max_edges, uint64_t lo, uint64_t hi,
                                    unsigned long long* out) {
  unsigned long long unique = 0, skeletons = 0;
  SmallGraph g;
  for (uint64_t mask = lo + blockIdx.x * uint64_t(blockDim.x) + threadIdx.x; mask < hi;
       mask += uint64_t(gridDim.x) * blockDim.x) {
    uint64_t labelings = 0;
    if (!canonical_class(mask, k, max_edges, num_ops, g, &labelings)) continue;
    unique += labelings;
    ++skeletons;
  }
  block_add(unique, out);
  block_add(skeletons, out + 1);
}

__global__ void network_keys_kernel(int k, int max_edges, uint64_t lo, uint64_t hi, uint64_t* keys,
                                    unsigned long long capacity, unsigned long long* count) {
  SmallGraph g, f;
  for (uint64_t mask = lo + blockIdx.x * uint64_t(blockDim.x) + threadIdx.x; mask < hi;
       mask += uint64_t(gridDim.x) * blockDim.x) {
    uint64_t labelings = 0;
    if (!canonical_class(mask, k, max_edges, 1, g, &labelings)) continue;
    const uint32_t mids = ((1u << (k - 1)) - 1) & ~1u;
    for (uint32_t S = mids;; S = (S - 1) & mids) {
      fold(g, S, f);
      CanonResult r;
      canon_search(f, kNetworkWeightBits, nullptr, r, NoLeaf{});
      const Wide key = network_key(f, r);
      const unsigned long long slot = atomicAdd(count, 1ull);
      if (slot < capacity)
        for (int j = 0; j < 4; ++j) keys[4 * slot + j] = key.w[j];
      if (!S) break;
    }
  }
}

void check_job(int64_t vertices, int64_t lo, int64_t hi) {
  check_arg(vertices >= 2 && vertices <= kMaxNodes, "vertex count must be in [2, 8]");
  const uint64_t total = uint64_t{1} << (vertices * (vertices - 1) / 2);
  check_arg(lo >= 0 && lo <= hi && uint64_t(hi) <= total, "mask range outside the job");
}

}  // namespace

void count_valid_cuda(int64_t K, int64_t max_edges, int64_t lo, int64_t hi, int64_t out, int64_t stream) {
  check_job(K, lo, hi);
  check_ptr(out, "out", 1);
  if (hi == lo) return;
  count_valid_kernel<<<grid_for(hi - lo, kThreads), kThreads, 0, as_stream(stream)>>>(
      int(K), max_edges < 0 ? (1 << 30) : int(max_edges), uint64_t(lo), uint64_t(hi),
      reinterpret_cast<unsigned long long*>(out));
  cuda_check(cudaGetLastError(), "count_valid_kernel launch");
}

void count_unique_cuda(int64_t k, int64_t num_ops, int64_t max_edges, int64_t lo, int64_t hi, int64_t out,
                       int64_t stream) {
  check_job(k, lo, hi);
  check_arg(num_ops >= 1 && num_ops <= 31, "num_ops must be in [1, 31]");
  check_ptr(out, "out", 2);
  if (hi == lo) return;
  count_unique_kernel<<<grid_for(hi - lo, kThreads), kThreads, 0, as_stream(stream)>>>(
      int(k), uint64_t(num_ops), max_edges < 0 ? (1 << 30) : int(max_edges), uint64_t(lo), uint64_t(hi),
      reinterpret_cast<unsigned long long*>(out));
  cuda_check(cudaGetLastError(), "count_unique_kernel launch");
}

void network_keys_cuda(int64_t k, int64_t max_edges, int64_t lo, int64_t hi, int64_t keys, int64_t capacity,
                       int64_t count, int64_t stream) {
  check_job(k, lo, hi);
  check_arg(capacity >= 0, "capacity must be >= 0");
  check_ptr(keys, "keys", capacity);
  check_ptr(count, "count", 1);
  if (hi == lo) return;
  network_keys_kernel<<<grid_for(hi - lo, kThreads), kThreads, 0, as_stream(stream)>>>(
      int(k), max_edges < 0 ? (1 << 30) : int(max_edges), uint64_t(lo), uint64_t(hi),
      reinterpret_cast<uint64_t*>(keys), (unsigned long long)capacity, reinterpret_cast<unsigned long long*>(count));
  cuda_check(cudaGetLastError(), "network_keys_kernel launch");
}
// emulate_count_cuda: end

}  // namespace cgnf
