// One-graph pruning shared by the CPU and CUDA paths (host/device inline).
#pragma once

#include <cstdint>

#include "dag.h"
#include "graph_impl.h"

namespace cgnf {

// Bitmask of the vertices on some input -> output path of an upper-triangular graph given by
// successor masks, or 0 when the output is unreachable. Vertices are in topological order,
// so one forward sweep finds what the input reaches and one backward sweep what reaches the
// output.
CGNF_HD uint32_t keep_mask(const uint32_t* succ, int n) {
  uint32_t fwd = 1u;
  for (int u = 0; u < n; ++u)
    if (fwd >> u & 1u) fwd |= succ[u];
  if (!(fwd >> (n - 1) & 1u)) return 0;
  uint32_t bwd = 1u << (n - 1);
  for (int u = n - 2; u >= 0; --u)
    if (succ[u] & bwd) bwd |= 1u << u;
  return fwd & bwd;
}

CGNF_HD void prune_one(const uint8_t* adj, const int8_t* labels, int8_t n_in, uint8_t* out_adj,
                       int8_t* out_labels, int8_t* out_n, int64_t N) {
  for (int64_t i = 0; i < N * N; ++i) out_adj[i] = 0;
  for (int64_t i = 0; i < N; ++i) out_labels[i] = kPadLabel;
  const int n = n_in;
  if (n < 2 || n > N || N > kMax) {
    *out_n = -1;
    return;
  }
  uint32_t succ[kMax] = {0};
  for (int u = 0; u < n; ++u)
    for (int v = u + 1; v < n; ++v)
      if (adj[u * N + v]) succ[u] |= 1u << v;
  const uint32_t keep = keep_mask(succ, n);
  if (!keep) {
    *out_n = 0;
    return;
  }
  int8_t pos[kMax];
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
