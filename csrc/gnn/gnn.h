// Fused message passing over batches of tiny dense graphs (the GNN encoder's aggregation).
//
// GIN aggregation, messages along and against the edges (one step):
//   out[b, i, :H] = (1 + eps) * h[b, i] + sum_j adj[b, j, i] * h[b, j]   (from predecessors)
//   out[b, i, H:] =                       sum_j adj[b, i, j] * h[b, j]   (from successors)
// Backward, with g1 = grad_out[..., :H] and g2 = grad_out[..., H:]:
//   grad_h[b, j]      = (1 + eps) * g1[b, j] + sum_i adj[b, j, i] * g1[b, i] + sum_i adj[b, i, j] * g2[b, i]
//   grad_adj[b, a, c] = <h[b, a], g1[b, c]> + <g2[b, a], h[b, c]>
//
// Layout of every argument (contiguous, row-major; one dtype for all: float32, or float64 when
// `float64` is true):
//   adj      [B, N, N]   adj[b][j][i] = weight of the edge j -> i (any real, usually 0/1);
//                        zero weights are skipped, so they add nothing even where h is not finite
//   h        [B, N, H]
//   out      [B, N, 2H]
//   grad_out [B, N, 2H]
//   grad_h   [B, N, H]
//   grad_adj [B, N, N]   optional: 0 skips it (then h may be 0 too)
// 1 <= N <= kGinMaxNodes, H >= 1, B >= 0. cgnf_fast/ops/gnn.py validates tensors before any
// pointer gets here; check_gin below is the last line of defence (ValueError in Python).
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <utility>

#include "../common/checks.h"

namespace cgnf {

// Largest number of vertices per graph the GIN kernels support (registers / shared memory are
// sized for it).
constexpr int64_t kGinMaxNodes = 16;

inline void check_gin(const char* op, int64_t B, int64_t N, int64_t H,
                      std::initializer_list<std::pair<int64_t, const char*>> ptrs) {
  check_arg(B >= 0, std::string(op) + ": batch size must be >= 0");
  check_arg(N >= 1 && N <= kGinMaxNodes, std::string(op) + ": N must be in [1, 16]");
  check_arg(H >= 1, std::string(op) + ": H must be >= 1");
  for (auto [p, name] : ptrs) check_ptr(p, name, B);
}

void gin_aggregate_fwd_cpu(int64_t adj, int64_t h, int64_t out, int64_t B, int64_t N, int64_t H, double eps,
                           bool float64, int64_t num_threads);
void gin_aggregate_bwd_cpu(int64_t grad_out, int64_t adj, int64_t h, int64_t grad_h, int64_t grad_adj, int64_t B,
                           int64_t N, int64_t H, double eps, bool float64, int64_t num_threads);

// Instruction set the CPU GIN kernels run with on this machine now: "avx512", "avx2" or
// "generic" (CGNF_SIMD=avx2|generic caps it; read on every call, so tests can switch it).
const char* gin_simd();

#ifdef CGNF_WITH_CUDA
void gin_aggregate_fwd_cuda(int64_t adj, int64_t h, int64_t out, int64_t B, int64_t N, int64_t H, double eps,
                            bool float64, int64_t stream);
void gin_aggregate_bwd_cuda(int64_t grad_out, int64_t adj, int64_t h, int64_t grad_h, int64_t grad_adj, int64_t B,
                            int64_t N, int64_t H, double eps, bool float64, int64_t stream);
#endif

}  // namespace cgnf
