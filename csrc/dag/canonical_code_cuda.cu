// CUDA canonical codes. Work split: one thread per graph. A graph is tiny (<= 8 vertices) and
// its canonical search is a short sequential branch-and-bound, so sharing a graph between
// threads would cost more in synchronisation than it saves; 128 threads per block keep register
// pressure (the BitGraph and the search state live mostly in local memory) from limiting
// occupancy. Grid-stride loops cover any batch; launches use the caller's stream.
#include <cuda_runtime.h>

#include "../common/checks.h"
#include "../common/cuda_utils.h"
#include "dag.h"
#include "graph_impl.h"

namespace cgnf {

// cuda_host_emu: begin (scripts/emulate_cuda_kernels.py compiles from here to the end marker as host C++)
__global__ void canonical_code_kernel(const uint8_t* __restrict__ adj, const int8_t* __restrict__ labels,
                                      const int8_t* __restrict__ n, int64_t* __restrict__ out, int64_t B, int64_t N) {
  for (int64_t b = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; b < B; b += int64_t(gridDim.x) * blockDim.x) {
    BitGraph g;
    out[b] = load_bits(adj + b * N * N, labels + b * N, n[b], N, g) ? int64_t(canonical_code_bits(g)) : -1;
  }
}

void dag_canonical_code_cuda(int64_t adj, int64_t labels, int64_t n, int64_t out_code, int64_t B, int64_t N,
                             int64_t stream) {
  check_batch("dag_canonical_code", B, N, {{adj, "adj"}, {labels, "labels"}, {n, "n"}, {out_code, "out_code"}});
  if (B == 0) return;
  constexpr int threads = 128;
  canonical_code_kernel<<<grid_for(B, threads), threads, 0, as_stream(stream)>>>(
      reinterpret_cast<const uint8_t*>(adj), reinterpret_cast<const int8_t*>(labels),
      reinterpret_cast<const int8_t*>(n), reinterpret_cast<int64_t*>(out_code), B, N);
  cuda_check(cudaGetLastError(), "canonical_code_kernel launch");
}
// cuda_host_emu: end

}  // namespace cgnf
