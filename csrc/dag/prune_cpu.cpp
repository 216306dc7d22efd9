// CPU pruning: graphs are independent; the batch is split into contiguous chunks over threads.
#include "../common/checks.h"
#include "../common/parallel.h"
#include "dag.h"
#include "prune_impl.h"

namespace cgnf {

void dag_prune_cpu(int64_t adj, int64_t labels, int64_t n, int64_t out_adj, int64_t out_labels,
                   int64_t out_n, int64_t B, int64_t N, int64_t num_threads) {
  check_batch("dag_prune", B, N,
              {{adj, "adj"}, {labels, "labels"}, {n, "n"}, {out_adj, "out_adj"}, {out_labels, "out_labels"}, {out_n, "out_n"}});
  auto* a = reinterpret_cast<const uint8_t*>(adj);
  auto* l = reinterpret_cast<const int8_t*>(labels);
  auto* nn = reinterpret_cast<const int8_t*>(n);
  auto* oa = reinterpret_cast<uint8_t*>(out_adj);
  auto* ol = reinterpret_cast<int8_t*>(out_labels);
  auto* on = reinterpret_cast<int8_t*>(out_n);
  parallel_for(B, num_threads, 4096, [&](int64_t lo, int64_t hi) {
    for (int64_t b = lo; b < hi; ++b)
      prune_one(a + b * N * N, l + b * N, nn[b], oa + b * N * N, ol + b * N, on + b, N);
  });
}

}  // namespace cgnf
