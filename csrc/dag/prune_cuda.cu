// CUDA pruning. Work split: one thread per graph (a graph is <= 64 bytes of adjacency and a
// handful of bitmask operations, far too little to share between threads); 256 threads per
// block, a grid-stride loop covers any batch size. Launched on the caller's stream.
#include <cuda_runtime.h>

#include "../common/checks.h"
#include "../common/cuda_utils.h"
#include "dag.h"
#include "prune_impl.h"

namespace cgnf {

// cuda_host_emu: begin (scripts/emulate_cuda_kernels.py compiles from here to the end marker as host C++)
__global__ void dag_prune_kernel(const uint8_t* __restrict__ adj, const int8_t* __restrict__ labels,
                                 const int8_t* __restrict__ n, uint8_t* __restrict__ out_adj,
                                 int8_t* __restrict__ out_labels, int8_t* __restrict__ out_n, int64_t B,
                                 int64_t N) {
  for (int64_t b = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; b < B; b += int64_t(gridDim.x) * blockDim.x)
    prune_one(adj + b * N * N, labels + b * N, n[b], out_adj + b * N * N, out_labels + b * N, out_n + b, N);
}

void dag_prune_cuda(int64_t adj, int64_t labels, int64_t n, int64_t out_adj, int64_t out_labels,
                    int64_t out_n, int64_t B, int64_t N, int64_t stream) {
  check_batch("dag_prune", B, N,
              {{adj, "adj"}, {labels, "labels"}, {n, "n"}, {out_adj, "out_adj"}, {out_labels, "out_labels"}, {out_n, "out_n"}});
  if (B == 0) return;
  constexpr int threads = 256;
  dag_prune_kernel<<<grid_for(B, threads), threads, 0, as_stream(stream)>>>(
      reinterpret_cast<const uint8_t*>(adj), reinterpret_cast<const int8_t*>(labels),
      reinterpret_cast<const int8_t*>(n), reinterpret_cast<uint8_t*>(out_adj), reinterpret_cast<int8_t*>(out_labels),
      reinterpret_cast<int8_t*>(out_n), B, N);
  cuda_check(cudaGetLastError(), "dag_prune_kernel launch");
}
// cuda_host_emu: end

}  // namespace cgnf
