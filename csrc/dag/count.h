// Exact counting and enumeration of a design space of cells (see count_cpu.cpp for the
// method). A space: at most K vertices (input and output included), `num_ops` op labels of
// which `num_identity` are identity ops (folded away by network codes), an optional limit on
// the edges of the pruned cell.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

namespace cgnf {

struct SpaceSpec {
  int max_nodes;     // K, 2..8
  int num_ops;       // labels 0..num_ops-1
  int num_identity;  // labels 0..num_identity-1 are identity ops
  int max_edges;     // < 0: no limit
};

struct CountTotals {
  uint64_t valid_matrices = 0;      // K-vertex adjacency matrices whose pruned cell is a member
  uint64_t unique = 0;              // distinct labelled pruned cells (structural classes)
  uint64_t skeletons = 0;           // distinct unlabelled pruned cells
  uint64_t unique_networks = 0;     // distinct networks (after finalize())
  uint64_t network_skeletons = 0;   // distinct unlabelled weighted networks (after finalize())
};

// A work unit: a range of masks of one job. Job 0 counts valid K-vertex matrices; job k >= 2
// visits the k-vertex matrices for the pruned classes with k vertices.
struct WorkUnit {
  int k;  // 0: valid-matrix job (on K vertices); else the vertex count
  uint64_t lo, hi;
};

struct Emitted {
  std::vector<uint8_t> adj;    // [M, K, K]
  std::vector<int8_t> labels;  // [M, K], op index per vertex, -1 for input/output/padding
  std::vector<int8_t> n;       // [M]
};

class SpaceCounter {
 public:
  SpaceCounter(SpaceSpec spec, bool networks, bool emit);
  ~SpaceCounter();
  const std::vector<WorkUnit>& units() const;
  void process(int64_t unit, int64_t num_threads);
  void finalize(int64_t num_threads);
  // Adds exact network keys computed elsewhere (the CUDA path): [count, 4] uint64 words, each
  // a canonical wide code with the vertex count in the top 4 bits.
  void add_network_keys(const uint64_t* words, int64_t count, int64_t num_threads);
  CountTotals totals() const;
  Emitted take_emitted();

 private:
  void merge_pending(int64_t num_threads);
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

#ifdef CGNF_WITH_CUDA
// CUDA counting (count_cuda.cu): each call covers masks [lo, hi) of one job and accumulates
// into device counters; `out` points to uint64 device memory.
void count_valid_cuda(int64_t K, int64_t max_edges, int64_t lo, int64_t hi, int64_t out, int64_t stream);
//   out[0] += unique labelled cells, out[1] += unlabelled classes (k-vertex pruned cells)
void count_unique_cuda(int64_t k, int64_t num_ops, int64_t max_edges, int64_t lo, int64_t hi, int64_t out,
                       int64_t stream);
//   writes network keys ([capacity, 4] uint64) and the number produced into *count (may exceed
//   capacity: then nothing past capacity is written and the caller retries with more room)
void network_keys_cuda(int64_t k, int64_t max_edges, int64_t lo, int64_t hi, int64_t keys, int64_t capacity,
                       int64_t count, int64_t stream);
#endif

}  // namespace cgnf
