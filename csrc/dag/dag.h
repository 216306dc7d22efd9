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

// Exact structural canonical code of every graph (as given: prune first to compare what cells
// compute). Intermediate labels must be in [0, 31].
//   out_code [B] int64  the code (< 2**62), or -1 when n[b] is outside [2, N] or a label of
//                       an intermediate vertex is outside [0, 31]
void dag_canonical_code_cpu(int64_t adj, int64_t labels, int64_t n, int64_t out_code, int64_t B, int64_t N,
                            int64_t num_threads);

// NB101's hash_module fingerprint of every graph (as given; NB101 hashes pruned specs).
// Labels are NB101's: -1 input, -2 output, 0/1/2 conv3x3/conv1x1/maxpool3x3.
//   out_digest [B, 16] uint8  the MD5 digest (its hex is NB101's key); zeros when n is invalid
void dag_nb101_hash_cpu(int64_t adj, int64_t labels, int64_t n, int64_t out_digest, int64_t B, int64_t N,
                        int64_t num_threads);

// Network codes (reference.dag: fold_identities, then canonical_code with 7-bit weights) of
// graphs as given (prune first): vertices whose label has its bit set in identity_labels are
// folded into edge multiplicities. out_words [B, 4] uint64, the code's 256-bit big-endian words
// (word 0 most significant); all zero when n is invalid. CPU only.
void dag_network_code_cpu(int64_t adj, int64_t labels, int64_t n, int64_t out_words, int64_t B, int64_t N,
                          int64_t identity_labels, int64_t num_threads);

// SIMD lanes of the CPU NB101 hash on this machine (16 AVX-512, 8 AVX2 or SSE2; 1 for the
// scalar path selected with CGNF_SIMD=scalar).
int md5_lanes();
// The canonical-code scan this CPU runs now: "sse4.1" or "generic" (CGNF_SIMD caps it).
const char* canonical_simd();

#ifdef CGNF_WITH_CUDA
void dag_canonical_code_cuda(int64_t adj, int64_t labels, int64_t n, int64_t out_code, int64_t B, int64_t N,
                             int64_t stream);
void dag_nb101_hash_cuda(int64_t adj, int64_t labels, int64_t n, int64_t out_digest, int64_t B, int64_t N,
                         int64_t stream);
void dag_prune_cuda(int64_t adj, int64_t labels, int64_t n, int64_t out_adj, int64_t out_labels,
                    int64_t out_n, int64_t B, int64_t N, int64_t stream);
#endif

}  // namespace cgnf
