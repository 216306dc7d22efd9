// Exact counts and enumeration of cell spaces (CPU, on the worker pool of common/parallel.h).
//
// Method (prune-then-label, with orbit counting):
//  * Valid matrices: every K-vertex upper-triangular matrix (2**(K(K-1)/2)) is pruned with two
//    bitmask sweeps; it is valid when the output is reachable and the pruned cell has at most
//    max_edges edges. Labels never change validity, so valid labelled graphs = valid matrices
//    x num_ops**(K-2).
//  * Unique cells: every pruned cell with k <= K vertices is a "full" DAG (each vertex but the
//    input has an in-edge, each but the output an out-edge). For each k we visit every k-vertex
//    matrix, keep the full ones within the edge limit, and keep those in canonical form for
//    unlabelled graphs (their identity order gives the minimal code: exactly one matrix per
//    unlabelled class). The search that checks this also yields the automorphism group Aut,
//    and Burnside's lemma counts the labellings up to Aut: (1/|Aut|) sum_g num_ops**cycles(g).
//    The sum over classes and k is the exact number of distinct canonical codes.
//  * Unique networks: for each unlabelled class and each subset S of its vertices labelled by
//    identity ops, folding S gives an unlabelled weighted DAG (edge weight = number of
//    identity-only paths). Distinct weighted DAGs are collected (exact 256-bit canonical codes,
//    hash set); each contributes its labellings by the non-identity ops up to its own
//    automorphisms (Burnside again). Without identity ops the networks are the cells.
//  * Enumeration: for each unlabelled class, each labelling that is lexicographically minimal
//    in its orbit under Aut is emitted once.
#include <algorithm>
#include <iterator>
#include <array>
#include <cstring>
#include <mutex>
#include <stdexcept>

#include "../common/checks.h"
#include "../common/parallel.h"
#include "count.h"
#include "graph_impl.h"
#include "space_impl.h"

namespace cgnf {

namespace {

// Distinct network keys live in 256 sorted, duplicate-free shards (32 bytes a key, no per-node
// overhead); a unit's new keys are sorted and merged shard by shard, so the extra memory of a
// merge is one shard's.
constexpr int kShards = 256;

inline bool wide_less(const Wide& a, const Wide& b) {
  for (int i = 0; i < 4; ++i)
    if (a.w[i] != b.w[i]) return a.w[i] < b.w[i];
  return false;
}
inline bool wide_eq(const Wide& a, const Wide& b) { return std::memcmp(a.w, b.w, sizeof a.w) == 0; }

inline int shard_of(const Wide& x) {
  uint64_t h = x.w[0] * 0x9e3779b97f4a7c15ull ^ x.w[1] * 0xbf58476d1ce4e5b9ull ^ x.w[2] * 0x94d049bb133111ebull ^ x.w[3];
  h ^= h >> 29;
  h *= 0xbf58476d1ce4e5b9ull;
  return int(h >> 56);
}

inline void sort_unique(std::vector<Wide>& v) {
  std::sort(v.begin(), v.end(), wide_less);
  v.erase(std::unique(v.begin(), v.end(), wide_eq), v.end());
}

// Decodes a network_key back into the weighted graph in canonical order.
void unpack_wide(const Wide& x, int wbits, SmallGraph& g) {
  // Read fields from the least significant end: output chunk, then vertex chunks n-2..1.
  Wide y = x;
  auto pop = [&](int bits) {
    const uint64_t v = y.w[3] & ((bits == 64) ? ~0ull : ((1ull << bits) - 1));
    for (int i = 3; i > 0; --i) y.w[i] = (y.w[i] >> bits) | (y.w[i - 1] << (64 - bits));
    y.w[0] >>= bits;
    return v;
  };
  const int n = int(x.w[0] >> 60);  // stored by network_key()
  y.w[0] &= (uint64_t{1} << 60) - 1;
  if (n < 2 || n > kMax) throw std::runtime_error("unpack_wide: corrupt code");
  g.n = n;
  std::memset(g.w, 0, sizeof g.w);
  const uint64_t wmask = (1ull << wbits) - 1;
  const uint64_t out = pop((n - 1) * wbits);
  for (int q = 0; q < n - 1; ++q) g.w[q][n - 1] = uint8_t((out >> (q * wbits)) & wmask);
  for (int p = n - 2; p >= 1; --p) {
    const uint64_t c = pop(kLabelBits + p * wbits);
    for (int q = 0; q < p; ++q) g.w[q][p] = uint8_t((c >> (q * wbits)) & wmask);
    g.label[p] = int8_t((c >> (p * wbits)) & ((1u << kLabelBits) - 1));
  }
  g.label[0] = g.label[n - 1] = 0;
  finish_graph(g);
}

}  // namespace

struct SpaceCounter::Impl {
  SpaceSpec spec;
  bool networks, emit, want_networks;
  std::vector<WorkUnit> units;
  CountTotals totals;
  std::mutex mu;
  std::vector<std::vector<Wide>> shards = std::vector<std::vector<Wide>>(kShards);
  std::vector<std::vector<Wide>> pending = std::vector<std::vector<Wide>>(kShards);
  Emitted emitted;
  bool finalized = false;
};

SpaceCounter::SpaceCounter(SpaceSpec spec, bool networks, bool emit) : impl_(new Impl) {
  check_arg(spec.max_nodes >= 2 && spec.max_nodes <= kMaxNodes, "max_nodes must be in [2, 8]");
  check_arg(spec.num_ops >= 1 && spec.num_ops <= 31, "num_ops must be in [1, 31]");
  check_arg(spec.num_identity >= 0 && spec.num_identity <= spec.num_ops, "num_identity must be in [0, num_ops]");
  impl_->spec = spec;
  impl_->want_networks = networks;
  impl_->networks = networks && spec.num_identity > 0;
  impl_->emit = emit;
  constexpr uint64_t kChunk = uint64_t{1} << 22;
  auto add_job = [&](int k, int vertices) {
    const uint64_t total = uint64_t{1} << (vertices * (vertices - 1) / 2);
    for (uint64_t lo = 0; lo < total; lo += kChunk) impl_->units.push_back({k, lo, std::min(total, lo + kChunk)});
  };
  add_job(0, spec.max_nodes);
  for (int k = 2; k <= spec.max_nodes; ++k) add_job(k, k);
}

SpaceCounter::~SpaceCounter() = default;

const std::vector<WorkUnit>& SpaceCounter::units() const { return impl_->units; }

void SpaceCounter::process(int64_t unit, int64_t num_threads) {
  check_arg(unit >= 0 && unit < int64_t(impl_->units.size()), "unit index out of range");
  check_arg(!impl_->finalized, "the counter is finalized");
  const WorkUnit wu = impl_->units[unit];
  const SpaceSpec spec = impl_->spec;
  const int K = spec.max_nodes;
  const int max_edges = spec.max_edges < 0 ? 1 << 30 : spec.max_edges;

  if (wu.k == 0) {  // valid K-vertex matrices
    std::mutex m;
    uint64_t total = 0;
    parallel_for(int64_t(wu.hi - wu.lo), num_threads, 1 << 14, [&](int64_t lo, int64_t hi) {
      uint64_t count = 0;
      uint8_t pred[kMax];
      for (uint64_t mask = wu.lo + lo; mask < wu.lo + uint64_t(hi); ++mask) {
        preds_of(mask, K, pred);
        const uint32_t keep = keep_from_preds(pred, K);
        if (!keep) continue;
        int edges = 0;
        for (int v = 1; v < K; ++v)
          if (keep >> v & 1u) edges += __builtin_popcount(pred[v] & keep);
        count += edges <= max_edges;
      }
      std::lock_guard<std::mutex> g(m);
      total += count;
    });
    impl_->totals.valid_matrices += total;
    return;
  }

  const int k = wu.k;
  const bool networks = impl_->networks, emit = impl_->emit;
  parallel_for(int64_t(wu.hi - wu.lo), num_threads, 1 << 12, [&](int64_t lo, int64_t hi) {
    uint64_t unique = 0, skeletons = 0;
    std::vector<Wide> local;
    Emitted out;
    std::vector<std::array<uint8_t, kMax>> perms;
    SmallGraph g, f;
    auto record = [&](const uint8_t* order) {  // automorphisms, needed only to emit cells
      if (!emit) return;
      std::array<uint8_t, kMax> a{};
      for (int q = 0; q < k; ++q) a[q] = order[q];
      perms.push_back(a);
    };
    for (uint64_t mask = wu.lo + lo; mask < wu.lo + uint64_t(hi); ++mask) {
      perms.clear();
      uint64_t labelings = 0;
      if (!canonical_class(mask, k, max_edges, uint64_t(spec.num_ops), g, &labelings, record)) continue;
      ++skeletons;
      unique += labelings;
      if (networks) {
        const uint32_t mids = ((1u << (k - 1)) - 1) & ~1u;  // vertices 1..k-2
        for (uint32_t S = mids;; S = (S - 1) & mids) {
          fold(g, S, f);
          CanonResult r;
          canon_search(f, kNetworkWeightBits, nullptr, r, NoLeaf{});
          local.push_back(network_key(f, r));
          if (local.size() >= (size_t{1} << 20)) {  // keep a thread's buffer bounded (32 MB)
            sort_unique(local);
            if (local.size() >= (size_t{1} << 19)) {
              std::lock_guard<std::mutex> lock(impl_->mu);
              for (const Wide& x : local) impl_->pending[shard_of(x)].push_back(x);
              local.clear();
            }
          }
          if (!S) break;
        }
      }
      if (emit) {  // labellings minimal in their Aut-orbit
        const int m = k - 2;
        const uint64_t total = ipow(uint64_t(spec.num_ops), m);
        int8_t lab[kMax];
        for (uint64_t code = 0; code < total; ++code) {
          uint64_t c = code;
          for (int p = m; p >= 1; --p, c /= uint64_t(spec.num_ops)) lab[p] = int8_t(c % uint64_t(spec.num_ops));
          bool minimal = true;
          for (const auto& a : perms) {  // compare lab with lab o a over positions 1..k-2
            for (int p = 1; p <= m; ++p) {
              if (lab[a[p]] != lab[p]) {
                if (lab[a[p]] < lab[p]) minimal = false;
                break;
              }
            }
            if (!minimal) break;
          }
          if (!minimal) continue;
          const size_t base = out.n.size();
          out.n.push_back(int8_t(k));
          out.adj.resize((base + 1) * K * K, 0);
          out.labels.resize((base + 1) * K, -1);
          for (int v = 0; v < k; ++v) {
            if (v >= 1 && v < k - 1) out.labels[base * K + v] = lab[v];
            for (int u = 0; u < v; ++u)
              if (g.pred[v] >> u & 1u) out.adj[base * K * K + u * K + v] = 1;
          }
        }
      }
    }
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->totals.unique += unique;
    impl_->totals.skeletons += skeletons;
    if (networks) {
      sort_unique(local);
      for (const Wide& x : local) impl_->pending[shard_of(x)].push_back(x);
    }
    if (emit && !out.n.empty()) {
      auto& e = impl_->emitted;
      e.adj.insert(e.adj.end(), out.adj.begin(), out.adj.end());
      e.labels.insert(e.labels.end(), out.labels.begin(), out.labels.end());
      e.n.insert(e.n.end(), out.n.begin(), out.n.end());
    }
  });
  if (networks) merge_pending(num_threads);
}

void SpaceCounter::add_network_keys(const uint64_t* words, int64_t count, int64_t num_threads) {
  check_arg(!impl_->finalized, "the counter is finalized");
  check_arg(impl_->networks, "this counter does not collect networks");
  check_arg(count >= 0 && (count == 0 || words != nullptr), "add_network_keys: bad key buffer");
  for (int64_t i = 0; i < count; ++i) {
    Wide x;
    for (int j = 0; j < 4; ++j) x.w[j] = words[4 * i + j];
    impl_->pending[shard_of(x)].push_back(x);
  }
  merge_pending(num_threads);
}

void SpaceCounter::merge_pending(int64_t num_threads) {
  {  // merge pending keys into the shards
    auto& shards = impl_->shards;
    auto& pending = impl_->pending;
    parallel_for(kShards, num_threads, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) {
        if (pending[i].empty()) continue;
        sort_unique(pending[i]);
        std::vector<Wide> merged;
        merged.reserve(shards[i].size() + pending[i].size());
        std::merge(shards[i].begin(), shards[i].end(), pending[i].begin(), pending[i].end(),
                   std::back_inserter(merged), wide_less);
        merged.erase(std::unique(merged.begin(), merged.end(), wide_eq), merged.end());
        shards[i].swap(merged);
        std::vector<Wide>().swap(pending[i]);
      }
    });
  }
}

void SpaceCounter::finalize(int64_t num_threads) {
  if (impl_->finalized) return;
  impl_->finalized = true;
  auto& t = impl_->totals;
  if (!impl_->networks) {
    if (impl_->spec.num_identity == 0 && impl_->want_networks) {  // every cell is its own network
      t.unique_networks = t.unique;
      t.network_skeletons = t.skeletons;
    }
    return;
  }
  const uint64_t base = uint64_t(impl_->spec.num_ops - impl_->spec.num_identity);
  std::mutex m;
  uint64_t total = 0, keys = 0;
  auto& shards = impl_->shards;
  parallel_for(kShards, num_threads, 1, [&](int64_t lo, int64_t hi) {
    uint64_t sum = 0, count = 0;
    SmallGraph g;
    for (int64_t s = lo; s < hi; ++s) {
      for (const Wide& key : shards[s]) {
        unpack_wide(key, kNetworkWeightBits, g);
        uint64_t labelings = 0;
        if (!burnside_if_canonical(g, kNetworkWeightBits, base, &labelings))
          throw std::runtime_error("finalize: a stored network code is not in canonical form");
        sum += labelings;
      }
      count += shards[s].size();
      std::vector<Wide>().swap(shards[s]);
    }
    std::lock_guard<std::mutex> lock(m);
    total += sum;
    keys += count;
  });
  t.unique_networks = total;
  t.network_skeletons = keys;
}

CountTotals SpaceCounter::totals() const { return impl_->totals; }

Emitted SpaceCounter::take_emitted() {
  Emitted e;
  std::swap(e, impl_->emitted);
  return e;
}

}  // namespace cgnf
