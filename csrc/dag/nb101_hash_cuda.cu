// CUDA NB101 hashes. Work split: one thread per graph. A graph is tiny (<= 8 vertices) and its
// hash is a chain of dependent MD5 blocks, so sharing a graph between threads would cost more in
// synchronisation than it saves; 128 threads per block keep register pressure (SmallGraph + MD5
// state ~ 1 KB of locals, mostly in local memory) from limiting occupancy. Grid-stride loops
// cover any batch; launches use the caller's stream.
#include <cuda_runtime.h>

#include "../common/checks.h"
#include "../common/cuda_utils.h"
#include "dag.h"
#include "graph_impl.h"

namespace cgnf {

// cuda_host_emu: begin (scripts/emulate_cuda_kernels.py compiles from here to the end marker as host C++)
__global__ void nb101_hash_kernel(const uint8_t* __restrict__ adj, const int8_t* __restrict__ labels,
                                  const int8_t* __restrict__ n, uint8_t* __restrict__ out, int64_t B, int64_t N) {
  for (int64_t b = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; b < B; b += int64_t(gridDim.x) * blockDim.x) {
    SmallGraph g;
    if (load_graph(adj + b * N * N, labels + b * N, n[b], N, g))
      nb101_hash_one(g, out + 16 * b);
    else
      for (int i = 0; i < 16; ++i) out[16 * b + i] = 0;
  }
}

void dag_nb101_hash_cuda(int64_t adj, int64_t labels, int64_t n, int64_t out_digest, int64_t B, int64_t N,
                         int64_t stream) {
  check_batch("dag_nb101_hash", B, N, {{adj, "adj"}, {labels, "labels"}, {n, "n"}, {out_digest, "out_digest"}});
  if (B == 0) return;
  constexpr int threads = 128;
  nb101_hash_kernel<<<grid_for(B, threads), threads, 0, as_stream(stream)>>>(
      reinterpret_cast<const uint8_t*>(adj), reinterpret_cast<const int8_t*>(labels),
      reinterpret_cast<const int8_t*>(n), reinterpret_cast<uint8_t*>(out_digest), B, N);
  cuda_check(cudaGetLastError(), "nb101_hash_kernel launch");
}
// cuda_host_emu: end

}  // namespace cgnf
