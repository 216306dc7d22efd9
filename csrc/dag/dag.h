// DAG ops over batches of small labelled graphs (N <= 8 vertices, vertex 0 = input,
// vertex n-1 = output, strictly upper-triangular adjacency = topological order).
//
// Layout of every batch argument (all contiguous, row-major):
//   adj    [B, N, N] uint8   adj[b][i][j] != 0 means an edge i -> j; entries with i >= j are
//                            ignored (so malformed matrices cannot make the kernels misbehave)
//   labels [B, N]    int8    vertex labels, moved along with their vertices
//   n      [B]       int8    vertices of graph b (2 <= n[b] <= N); graph b uses the top-left
//                            n[b] x n[b] block
#pragma once

#include <cstdint>

namespace cgnf {

// Label written into padding slots of pruned outputs.
constexpr int8_t kPadLabel = -1;

// NB101 pruning (keep vertices on some input -> output path) of every graph in a batch.
//   out_adj    [B, N, N] uint8  pruned graph compacted into the top-left block, zeros elsewhere
//   out_labels [B, N]    int8   labels of kept vertices, kPadLabel elsewhere
//   out_n      [B]       int8   kept vertices; 0 when no input -> output path; -1 when n[b]
//                               is outside [2, N] (the graph is left as all padding)
void dag_prune_cpu(int64_t adj, int64_t labels, int64_t n, int64_t out_adj, int64_t out_labels,
                   int64_t out_n, int64_t B, int64_t N, int64_t num_threads);

#ifdef CGNF_WITH_CUDA
void dag_prune_cuda(int64_t adj, int64_t labels, int64_t n, int64_t out_adj, int64_t out_labels,
                    int64_t out_n, int64_t B, int64_t N, int64_t stream);
#endif

}  // namespace cgnf
