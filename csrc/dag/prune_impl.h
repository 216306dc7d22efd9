// One-graph pruning shared by the CPU and CUDA paths (host/device inline).
#pragma once

#include <cstdint>

#include "dag.h"

#ifdef __CUDACC__
#define CGNF_HD __host__ __device__ __forceinline__
#else
#define CGNF_HD inline
#endif

namespace cgnf {

// Prunes graph b. Vertices are in topological order, so one forward sweep computes what the
// input reaches and one backward sweep what reaches the output.
CGNF_HD void prune_one(const uint8_t* adj, const int8_t* labels, int8_t n_in, uint8_t* out_adj,
                       int8_t* out_labels, int8_t* out_n, int64_t N) {
  for (int64_t i = 0; i < N * N; ++i) out_adj[i] = 0;
  for (int64_t i = 0; i < N; ++i) out_labels[i] = kPadLabel;
  const int n = n_in;
  if (n < 2 || n > N) {
    *out_n = -1;
    return;
  }
  uint32_t succ[kMaxNodes] = {0};
  for (int u = 0; u < n; ++u)
    for (int v = u + 1; v < n; ++v)
      if (adj[u * N + v]) succ[u] |= 1u << v;
  uint32_t fwd = 1u;
  for (int u = 0; u < n; ++u)
    if (fwd >> u & 1u) fwd |= succ[u];
  if (!(fwd >> (n - 1) & 1u)) {
    *out_n = 0;
    return;
  }
  uint32_t bwd = 1u << (n - 1);
  for (int u = n - 2; u >= 0; --u)
    if (succ[u] & bwd) bwd |= 1u << u;
  const uint32_t keep = fwd & bwd;
  int8_t pos[kMaxNodes];
  int k = 0;
  for (int v = 0; v < n; ++v) pos[v] = (keep >> v & 1u) ? static_cast<int8_t>(k++) : int8_t{-1};
  for (int u = 0; u < n; ++u) {
    if (pos[u] < 0) continue;
    out_labels[pos[u]] = labels[u];
    for (int v = u + 1; v < n; ++v)
      if (pos[v] >= 0 && (succ[u] >> v & 1u)) out_adj[pos[u] * N + pos[v]] = 1;
  }
  *out_n = static_cast<int8_t>(k);
}

}  // namespace cgnf
