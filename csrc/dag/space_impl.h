// Host/device pieces of space counting shared by count_cpu.cpp and count_cuda.cu.
#pragma once

#include <cstdint>

#include "graph_impl.h"

namespace cgnf {

// Column-major bit layout of a k-vertex matrix: the in-edges of vertex v (from 0..v-1) are the
// v bits starting at v(v-1)/2.
CGNF_HD void preds_of(uint64_t mask, int k, uint8_t* pred) {
  pred[0] = 0;
  for (int v = 1; v < k; ++v) pred[v] = uint8_t((mask >> (v * (v - 1) / 2)) & ((1u << v) - 1));
}

// Vertices on some input -> output path (0 when the output is unreachable).
CGNF_HD uint32_t keep_from_preds(const uint8_t* pred, int k) {
  uint32_t fwd = 1u;
  for (int v = 1; v < k; ++v)
    if (pred[v] & fwd) fwd |= 1u << v;
  if (!(fwd >> (k - 1) & 1u)) return 0;
  uint32_t bwd = 1u << (k - 1);
  for (int v = k - 1; v > 0; --v)
    if (bwd >> v & 1u) bwd |= pred[v];
  return fwd & bwd;
}

CGNF_HD bool is_full(const uint8_t* pred, int k) {
  uint32_t has_out = 0;
  for (int v = 1; v < k; ++v) {
    if (!pred[v]) return false;
    has_out |= pred[v];
  }
  const uint32_t need = (1u << (k - 1)) - 1;  // vertices 0..k-2
  return (has_out & need) == need;
}

CGNF_HD void graph_from_preds(const uint8_t* pred, int k, SmallGraph& g) {
  g.n = k;
  for (int u = 0; u < kMax; ++u)
    for (int v = 0; v < kMax; ++v) g.w[u][v] = 0;
  for (int v = 0; v < k; ++v) {
    g.label[v] = 0;
    g.pred[v] = pred[v];
    for (int u = 0; u < v; ++u)
      if (pred[v] >> u & 1u) g.w[u][v] = 1;
  }
}

CGNF_HD uint64_t ipow(uint64_t b, int e) {
  uint64_t r = 1;
  while (e-- > 0) r *= b;
  return r;
}

// Cycles of the permutation position p -> order[p] on positions 1..n-2.
CGNF_HD int cycles(const uint8_t* order, int n) {
  uint32_t seen = 0;
  int c = 0;
  for (int p = 1; p < n - 1; ++p) {
    if (seen >> p & 1u) continue;
    ++c;
    for (int q = p; !(seen >> q & 1u); q = order[q]) seen |= 1u << q;
  }
  return c;
}

// Folds identity vertices (bitmask S of intermediate vertices) of a 0/1 graph into weights and
// returns the weighted graph on the remaining vertices (labels 0).
CGNF_HD void fold(const SmallGraph& g, uint32_t S, SmallGraph& out) {
  const int n = g.n;
  uint32_t w[kMax][kMax];
  for (int u = 0; u < n; ++u)
    for (int v = 0; v < n; ++v) w[u][v] = g.w[u][v];
  for (int s = 1; s < n - 1; ++s) {
    if (!(S >> s & 1u)) continue;
    for (int u = 0; u < s; ++u) {
      if (!w[u][s]) continue;
      for (int v = s + 1; v < n; ++v)
        if (w[s][v]) w[u][v] += w[u][s] * w[s][v];
    }
    for (int x = 0; x < n; ++x) w[x][s] = w[s][x] = 0;
  }
  int idx[kMax], m = 0;
  for (int v = 0; v < n; ++v)
    if (!(S >> v & 1u)) idx[m++] = v;
  out.n = m;
  for (int u = 0; u < kMax; ++u)
    for (int v = 0; v < kMax; ++v) out.w[u][v] = 0;
  for (int a = 0; a < m; ++a) {
    out.label[a] = 0;
    for (int b = a + 1; b < m; ++b) out.w[a][b] = uint8_t(w[idx[a]][idx[b]]);  // <= 2**6 paths
  }
  finish_graph(out);
}

// fold() keeping the labels of the remaining vertices (network codes of labelled cells,
// as reference.dag.fold_identities).
CGNF_HD void fold_labelled(const SmallGraph& g, uint32_t S, SmallGraph& out) {
  fold(g, S, out);
  int m = 0;
  for (int v = 0; v < g.n; ++v)
    if (!(S >> v & 1u)) out.label[m++] = g.label[v];
}

// Set key of a weighted graph: its canonical wide code with n also in the top 4 bits (a code
// has at most 230 bits, so they are free), so that the graph can be decoded back.
CGNF_HD Wide network_key(const SmallGraph& f, const CanonResult& r) {
  Wide key = pack_wide(f.n, r.chunk, kNetworkWeightBits);
  key.w[0] |= uint64_t(f.n) << 60;
  return key;
}

// Burnside count of the labellings (by `base` labels) of an unlabelled graph in canonical form,
// up to its automorphisms; false when g is not in canonical form. `on_aut(order)` is also
// called for every automorphism (the CPU enumeration records them to emit each labelling once).
template <typename OnAut>
struct BurnsideLeaf {
  uint64_t* sum;
  uint64_t base;
  int n;
  OnAut on_aut;
  CGNF_HD void operator()(const uint8_t* order) const {
    *sum += ipow(base, cycles(order, n));
    on_aut(order);
  }
};

template <typename OnAut = NoLeaf>
CGNF_HD bool burnside_if_canonical(const SmallGraph& g, int wbits, uint64_t base, uint64_t* labelings,
                                   OnAut on_aut = OnAut{}) {
  uint64_t target[kMax];
  identity_chunks(g, wbits, target);
  CanonResult r;
  uint64_t sum = 0;
  canon_search(g, wbits, target, r, BurnsideLeaf<OnAut>{&sum, base, g.n, on_aut});
  if (r.aborted) return false;
  *labelings = sum / uint64_t(r.automorphisms);
  return true;
}

// Whether `mask` (a k-vertex matrix, column-major bits) is a pruned ("full") cell within the
// edge limit and in canonical form for unlabelled graphs; if so, g holds it and *labelings its
// Burnside count with `base` labels (on_aut as in burnside_if_canonical).
template <typename OnAut = NoLeaf>
CGNF_HD bool canonical_class(uint64_t mask, int k, int max_edges, uint64_t base, SmallGraph& g, uint64_t* labelings,
                             OnAut on_aut = OnAut{}) {
  if (popcount64(mask) > max_edges) return false;
  uint8_t pred[kMax];
  preds_of(mask, k, pred);
  if (!is_full(pred, k)) return false;
  graph_from_preds(pred, k, g);
  return burnside_if_canonical(g, 1, base, labelings, on_aut);
}

}  // namespace cgnf
