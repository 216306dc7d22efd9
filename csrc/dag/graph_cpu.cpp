// CPU canonical codes: graphs are independent; contiguous chunks of the batch go to threads.
#include "../common/checks.h"
#include "../common/parallel.h"
#include "dag.h"
#include "graph_impl.h"

namespace cgnf {

void dag_canonical_code_cpu(int64_t adj, int64_t labels, int64_t n, int64_t out_code, int64_t B, int64_t N,
                            int64_t num_threads) {
  check_batch("dag_canonical_code", B, N, {{adj, "adj"}, {labels, "labels"}, {n, "n"}, {out_code, "out_code"}});
  auto* a = reinterpret_cast<const uint8_t*>(adj);
  auto* l = reinterpret_cast<const int8_t*>(labels);
  auto* nn = reinterpret_cast<const int8_t*>(n);
  auto* out = reinterpret_cast<int64_t*>(out_code);
  parallel_for(B, num_threads, 1024, [&](int64_t lo, int64_t hi) {
    BitGraph g;
    for (int64_t b = lo; b < hi; ++b)
      out[b] = load_bits(a + b * N * N, l + b * N, nn[b], N, g) ? int64_t(canonical_code_bits(g)) : -1;
  });
}

// dag_nb101_hash_cpu: multi-buffer SIMD MD5, in nb101_hash_cpu.cpp.

}  // namespace cgnf
