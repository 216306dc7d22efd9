// CPU CNF adjoint dynamics: one evaluation of the ConcatSquash MLP (math and layout in cnf.h)
// with the vector-Jacobian products the adjoint's backward solve needs, fused in one pass:
//
//   given cotangents a_z [B, D] (of dz/dt) and a_div [B] (of the divergence), returns
//   dz/dt, div, and  g_v = a_z^T d(dz/dt)/dv + a_div d(div)/dv  for v = z (per row), c (per
//   row), t (summed over the batch) and every weight (summed over the batch).
//
// The divergence is itself a forward-mode derivative (cnf.h), so its vector-Jacobian products
// are second-order terms: with the hidden layers' scales s_l = act'(pre_l) * gate_l,
//   exact:  J_1 = diag(s_0) W_0, Q_l = W_l J_l, J_{l+1} = diag(s_l) Q_l, div = sum_d gate_d (W_L J_L)_dd.
//           Reverse mode over that (per batch row): Jbar_L[k, d] = a gate_d W_L[d, k],
//           Wbar_L[d, k] += a gate_d J_L[k, d], gatebar_L[d] += a (W_L J_L)_dd; then for l = L-1 .. 0:
//           sbar_l[n] = sum_d Jbar[n, d] Q_l[n, d], Qbar = diag(s_l) Jbar, and Wbar_l += Qbar J_l^T,
//           Jbar <- W_l^T Qbar (l >= 1), or Wbar_0 += Qbar (l = 0, Q_0 = W_0).
//   Hutchinson: u_0 = e, v_l = W_l u_l, u_{l+1} = s_l v_l, div = e^T (gate_L v_L); reverse:
//           vbar_L = a e gate_L, gatebar_L += a e v_L, Wbar_l += vbar_l u_l^T, ubar = W_l^T vbar_l,
//           sbar_{l-1} = ubar v_{l-1}, vbar_{l-1} = ubar s_{l-1}.
//   The scales' cotangents then enter the MLP's backward as
//           prebar_l += sbar_l gate_l act''(pre_l),   gatebar_l += sbar_l act'(pre_l)
//   (tanh: act'' = -2 h act'; softplus: act'' = act' (1 - act'); as torch, the softplus's own
//   backward is 1 above its threshold 20, where act' = sigmoid(pre) is not), and the usual reverse pass
//   of pre_l = (W_l h_l + b_l) * gate_l + H_l ctx, gate_l = sigmoid(G_l ctx + g_l) finishes.
//
// Work split as the forward kernel (cnf_dynamics_cpu.cpp): tiles of MB batch rows, feature-major
// buffers, the same register-blocked GEMMs (cnf_cpu_simd.h). A tile recomputes the forward pass
// keeping every layer's input, gate, W h + b and act', runs the divergence's reverse pass, then
// the MLP's reverse pass. Exact divergence: one row at a time, probe-major: every [width x D]
// tangent and cotangent is held transposed, [D][width], so the three [h x h] x [h x D] products
// per row (Q = W J, Wbar += Qbar J^T, Jbar = W^T Qbar) run with vectors over the width (the
// second as A^T X, broadcasting from Qbar^T's rows), the scales multiply whole vectors, the
// scales' cotangents need no horizontal sums and no tangent is ever transposed (the row-major
// layout spent ~20 % of an evaluation on J^T copies and per-feature sums). Hutchinson: over
// the tile. Weight gradients accumulate per thread (padded [rows][in rounded to vectors]) with
// GEMMs whose K runs over the tile's rows (or a row's D probes); the context weights' and biases'
// as one GEMM each against the tile's [t, c, 1] matrix. They are summed over threads in a fixed
// order at the end, so results do not depend on thread timing. W^T is formed once per call.
// Reference: autograd over cgnf_fast/reference/cnf.py (python_tests/test_cnf_adjoint.py).
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

#include "../common/checks.h"
#include "../common/parallel.h"
#include "../common/simd.h"
#include "cnf.h"
#include "cnf_cpu_simd.h"

namespace cgnf {

namespace {

using namespace cnf_cpu;

template <typename T>
struct ALayer {
  const T *W, *b, *G, *g, *H;  // W [out, in], b [out], G [out, 1 + C], g [out], H [out, 1 + C]
  int64_t in, out;
  std::vector<T> WT;  // [in, out]
  // exact divergence, middle layers: W^T [in][round_up(out, lanes)] and W [out][round_up(in, lanes)], zero-padded
  std::vector<T> WTp, Wp;
};

template <typename T>
struct Acc;

template <typename T>
struct AProblem {
  const T *z, *c, *noise, *az, *adiv;
  T *dz, *div, *gz, *gc;
  int64_t B, C, D;
  bool softplus;
  int64_t divergence;
  T t;
  std::vector<ALayer<T>> layers;
  std::vector<T> gb, hb;  // per layer at ctx_off[l]: g + G[:, 0] t, H[:, 0] t
  std::vector<int64_t> ctx_off;
  int64_t max_width = 0;
  // exact divergence with hidden layers (probe-major, module doc): W_0^T [D][round_up(w_1, lanes)]
  // and the last layer's W [D][round_up(w_{L-1}, lanes)], zero-padded
  std::vector<T> W0T, WLp;
  // set by prepare(): the kernel copy for this CPU, its vector width in bytes, the tiles, the
  // smallest chunk of tiles worth a thread and the cached buffers' layout key
  void (*fn)(const AProblem<T>&, Acc<T>&, std::vector<T>&, int64_t, int64_t) = nullptr;
  int64_t vb = 16, tiles = 0, min_chunk = 1;
  std::vector<int64_t> key;
  bool exact_t() const { return divergence == kCnfExact && layers.size() > 1; }
};

// A thread's weight-gradient sums: per layer W [round_up(out, 12)][round_up(in, lanes)] (padding
// absorbs the GEMMs' ragged blocks); the context weights' as GEMM outputs against the tile's
// [MB][ldx] context matrix (columns t, c_1 .. c_C, 1; module doc): G and g in Gx, H in Hx, b in
// bx, each [round_up(out, 12)][ldx]; and the time's.
template <typename T>
struct Acc {
  std::vector<std::vector<T>> W, Gx, Hx, bx;
  std::vector<int64_t> ldw;
  std::vector<T> W0T;  // exact: the first layer's W sums, transposed [D][ldw0t]
  int64_t ldx = 0, ldw0t = 0;
  T t = T(0);
  Acc(const AProblem<T>& p, int64_t nr_pad, int64_t lanes) {
    ldx = round_up(p.C + 2, lanes);
    if (p.exact_t()) {
      ldw0t = round_up(p.layers.front().out, lanes);
      W0T.assign(size_t(p.D * ldw0t), T(0));
    }
    for (const ALayer<T>& ly : p.layers) {
      const int64_t ld = round_up(ly.in, lanes), rows = round_up(ly.out, nr_pad);
      ldw.push_back(ld);
      W.emplace_back(size_t(rows * ld), T(0));
      Gx.emplace_back(size_t(rows * ldx), T(0));
      Hx.emplace_back(size_t(rows * ldx), T(0));
      bx.emplace_back(size_t(rows * ldx), T(0));
    }
  }
  void zero() {
    for (auto* vs : {&W, &Gx, &Hx, &bx})
      for (std::vector<T>& v : *vs) std::fill(v.begin(), v.end(), T(0));
    std::fill(W0T.begin(), W0T.end(), T(0));
    t = T(0);
  }
};

// Buffers kept between calls by the calling thread, per chunk of tiles: a thread's scratch memory
// and gradient sums. Reused only for the same layout (key), whose writes leave every padding
// value a kernel reads at its initial zero; without this, each call's fresh allocations of a
// few hundred KB came from mmap and paid their page faults (~7 % of an evaluation at B = 256).
template <typename T>
struct ACache {
  std::vector<int64_t> key;
  std::vector<std::vector<T>> mem;
  std::vector<std::unique_ptr<Acc<T>>> acc;
};

template <typename T, int VB, int NR>
struct AScratch {
  static constexpr int L = VB / sizeof(T), MB = 2 * L;
  std::vector<T*> hin, gate, u, da;  // per layer: input [w_l][MB]; gate, W h + b, act' [w_{l+1}][MB]
  std::vector<T*> pre;                // softplus, per layer: pre [w_{l+1}][MB] (torch's threshold in the backward)
  std::vector<T*> hu, hv;             // Hutchinson per layer: probe in [w_l][MB], W u [w_{l+1}][MB]
  std::vector<T*> gateb, sbar;        // per layer: gate's cotangent, scale's cotangent [w_{l+1}][MB]
  // exact, probe-major: per hidden layer its scales s_l for each row of the tile [MB][WP]; one
  // row's tangents J_l^T [RD][WP] (l >= 1) and Q_l^T [RD][WP] (1 <= l < L-1). The middle layers'
  // weight sums Wbar_l += Qbar J_l^T wait for kRows rows (the A^T X GEMM then runs with K = kRows
  // D and loads and stores the sums once: measured 14 % faster at K = 128 than 32, 2026-12-07):
  // for those layers J_l^T and Qbar_l^T have kRows slots of [RD][WP] each (QS: the Qbar_l^T).
  static constexpr int kRows = 4;
  std::vector<T*> sT, JT, QT, QS;
  T *fout, *ct, *hp, *pre_b, *ub, *gp, *hb0, *hb1, *tr, *ctxb, *ctxT, *sbT;
  int64_t WP = 0, RD = 0;

  AScratch(const AProblem<T>& p, std::vector<T>& mem) {
    constexpr int64_t kLine = 64 / sizeof(T);
    const int64_t nl = int64_t(p.layers.size()), D = p.D, cs = 1 + p.C;
    const bool hut = p.divergence == kCnfHutchinson, exact = p.divergence == kCnfExact;
    const int64_t rows = round_up(p.max_width, NR);
    // rows of probe-major buffers: D padded for every GEMM block height used on them (12, 8, 6);
    // their row stride: the widest layer padded for a block of 12 and to whole vectors
    RD = exact ? round_up(D, 24) : 0;
    WP = round_up(round_up(p.max_width, 12), L);
    std::vector<std::pair<T**, int64_t>> want;
    hin.assign(nl, nullptr), gate.assign(nl, nullptr), u.assign(nl, nullptr), da.assign(nl, nullptr);
    pre.assign(nl, nullptr);
    hu.assign(nl, nullptr), hv.assign(nl, nullptr), gateb.assign(nl, nullptr), sbar.assign(nl, nullptr);
    sT.assign(nl, nullptr), JT.assign(nl, nullptr), QT.assign(nl, nullptr), QS.assign(nl, nullptr);
    for (int64_t l = 0; l < nl; ++l) {
      const int64_t in = round_up(p.layers[l].in, NR) * MB, out = round_up(p.layers[l].out, NR) * MB;
      want.push_back({&hin[l], in});
      want.push_back({&gate[l], out});
      want.push_back({&u[l], out});
      want.push_back({&da[l], out});
      want.push_back({&gateb[l], out});
      want.push_back({&sbar[l], out});
      if (p.softplus) want.push_back({&pre[l], out});
      if (hut) {
        want.push_back({&hu[l], in});
        want.push_back({&hv[l], out});
      }
      if (exact && l < nl - 1) want.push_back({&sT[l], MB * WP});
      const bool middle = exact && l >= 1 && l < nl - 1;
      if (exact && l >= 1) want.push_back({&JT[l], (middle ? kRows : 1) * RD * WP});
      if (middle) want.push_back({&QT[l], RD * WP});
      if (middle) want.push_back({&QS[l], kRows * RD * WP});
    }
    want.push_back({&fout, rows * MB});
    want.push_back({&ct, std::max<int64_t>(p.C, 1) * MB});
    want.push_back({&hp, rows * MB});
    want.push_back({&pre_b, rows * MB});
    want.push_back({&ub, rows * MB});
    want.push_back({&gp, rows * MB});
    want.push_back({&hb0, rows * MB});
    want.push_back({&hb1, rows * MB});
    want.push_back({&tr, MB * WP});
    want.push_back({&ctxb, cs * MB});
    want.push_back({&ctxT, MB * round_up(p.C + 2, L)});
    want.push_back({&sbT, exact ? WP : 0});
    int64_t total = kLine;
    for (auto& w : want) total += round_up(w.second, kLine);
    if (mem.size() != size_t(total)) mem.assign(size_t(total), T(0));
    uintptr_t base = reinterpret_cast<uintptr_t>(mem.data());
    T* q = reinterpret_cast<T*>((base + 63) / 64 * 64);
    for (auto& w : want) {
      *w.first = q;
      q += round_up(w.second, kLine);
    }
  }
};

template <typename T, int VB>
CGNF_INLINE T hsum(const Vec<T, VB>& v) {
  constexpr int L = VB / sizeof(T);
  alignas(64) T lanes[L];
  storev(lanes, v);
  for (int w = L / 2; w >= 1; w /= 2)  // a tree: depth log2(L), not a serial chain of L adds
    for (int i = 0; i < w; ++i) lanes[i] += lanes[i + w];
  return lanes[0];
}

// dst [MB][ld] = src [rows][MB]^T for rows < n (columns n .. ld zero).
template <typename T>
CGNF_INLINE void transpose_in(const T* src, int64_t n, int64_t MB, T* dst, int64_t ld) {
  for (int64_t r = 0; r < MB; ++r) {
    T* d = dst + r * ld;
    for (int64_t k = 0; k < n; ++k) d[k] = src[k * MB + r];
    for (int64_t k = n; k < ld; ++k) d[k] = T(0);
  }
}

// The tile's forward pass, keeping what the reverse pass reads.
template <typename T, int VB, int NR>
CGNF_INLINE void tile_forward(const AProblem<T>& p, AScratch<T, VB, NR>& s, int64_t r0, int64_t nr) {
  constexpr int L = VB / sizeof(T), MB = 2 * L;
  using V = Vec<T, VB>;
  const int64_t D = p.D, C = p.C, cs = 1 + C, nl = int64_t(p.layers.size());
  const bool hut = p.divergence == kCnfHutchinson;
  for (int64_t r = 0; r < MB; ++r) {
    const bool in = r < nr;
    for (int64_t k = 0; k < D; ++k) s.hin[0][k * MB + r] = in ? p.z[(r0 + r) * D + k] : T(0);
    for (int64_t j = 0; j < C; ++j) s.ct[j * MB + r] = in ? p.c[(r0 + r) * C + j] : T(0);
    if (hut)
      for (int64_t k = 0; k < D; ++k) s.hu[0][k * MB + r] = in ? p.noise[(r0 + r) * D + k] : T(0);
  }
  for (int64_t l = 0; l < nl; ++l) {
    const ALayer<T>& ly = p.layers[l];
    const bool last = l == nl - 1;
    const T* gb = p.gb.data() + p.ctx_off[l];
    const T* hb = p.hb.data() + p.ctx_off[l];
    T* gate = s.gate[l];
    T* uu = s.u[l];
    T* da = s.da[l];
    T* pr = s.pre[l];
    gemm<T, VB, NR>(ly.G + 1, cs, ly.out, C, s.ct, MB, 2, gate, MB,
                    [&](int64_t n, int, const V& a) CGNF_INLINE_LAMBDA -> V { return vsigmoid<T, VB>(a + gb[n]); });
    gemm<T, VB, NR>(ly.H + 1, cs, ly.out, C, s.ct, MB, 2, s.hp, MB,
                    [&](int64_t n, int, const V& a) CGNF_INLINE_LAMBDA -> V { return a + hb[n]; });
    T* y = last ? s.fout : s.hin[l + 1];
    gemm<T, VB, NR>(ly.W, ly.in, ly.out, ly.in, s.hin[l], MB, 2, y, MB,
                    [&](int64_t n, int v, const V& acc) CGNF_INLINE_LAMBDA -> V {
                      V g, hpv;
                      loadv(g, gate + n * MB + v * L);
                      loadv(hpv, s.hp + n * MB + v * L);
                      const V uv = acc + ly.b[n];
                      storev(uu + n * MB + v * L, uv);
                      const V pre = uv * g + hpv;
                      if (last) return pre;
                      V h, d;
                      if (p.softplus) {
                        h = vsoftplus<T, VB>(pre);
                        d = vsigmoid<T, VB>(pre);
                        storev(pr + n * MB + v * L, pre);
                      } else {
                        h = vtanh<T, VB>(pre);
                        d = T(1) - h * h;
                      }
                      storev(da + n * MB + v * L, d);
                      return h;
                    });
    if (hut) {  // v_l = W_l u_l; u_{l+1} = s_l v_l
      gemm<T, VB, NR>(ly.W, ly.in, ly.out, ly.in, s.hu[l], MB, 2, s.hv[l], MB,
                      [&](int64_t, int, const V& a) CGNF_INLINE_LAMBDA -> V { return a; });
      if (!last)
        for (int64_t n = 0; n < ly.out; ++n)
          for (int v = 0; v < 2; ++v) {
            V a, g, d;
            loadv(a, s.hv[l] + n * MB + v * L);
            loadv(g, gate + n * MB + v * L);
            loadv(d, da + n * MB + v * L);
            storev(s.hu[l + 1] + n * MB + v * L, a * g * d);
          }
    }
  }
}

// Exact divergence of batch row r of the tile, and (a != 0) its reverse pass: adds to the
// thread's W sums, the tile's gate and scale cotangents (column r). Probe-major (module doc):
// every [width x D] tangent is held transposed, [D][width], so the products' vectors run over
// the width, the scales multiply whole vectors and no tangent is ever transposed. The middle
// layers' J_l^T and Qbar_l^T go to slot `slot` (AScratch::kRows); their weight sums wait for
// flush_rows.
template <typename T, int VB, int NR>
CGNF_INLINE T exact_row(const AProblem<T>& p, AScratch<T, VB, NR>& s, Acc<T>& acc, int64_t r, T a, int slot) {
  constexpr int L = VB / sizeof(T);
  constexpr int MB = 2 * L;
  constexpr int NRD = NR == 12 ? 8 : NR;  // block height of the products with D rows (D = 32: no padding)
  using V = Vec<T, VB>;
  const int64_t D = p.D, nl = int64_t(p.layers.size()), WP = s.WP;
  const ALayer<T>& lz = p.layers[nl - 1];
  const T* gz = s.gate[nl - 1];
  if (nl == 1) {  // div = sum_i gate_i W_ii
    T total = T(0);
    for (int64_t i = 0; i < D; ++i) {
      const T wii = lz.W[i * D + i];
      total += gz[i * MB + r] * wii;
      if (a != T(0)) {
        s.gateb[0][i * MB + r] += a * wii;
        acc.W[0][i * acc.ldw[0] + i] += a * gz[i * MB + r];
      }
    }
    return total;
  }
  auto srow = [&](int64_t l) CGNF_INLINE_LAMBDA { return s.sT[l] + r * WP; };  // s_l of row r, zero-padded
  auto vecs = [&](int64_t w) CGNF_INLINE_LAMBDA { return round_up(w, L) / L; };
  const int64_t slot_size = s.RD * WP;
  auto jt = [&](int64_t l) CGNF_INLINE_LAMBDA { return s.JT[l] + (l < nl - 1 ? slot * slot_size : 0); };
  // J_1^T = W_0^T diag(s_0)
  rows_times<T, VB>(p.W0T.data(), acc.ldw0t, srow(0), D, vecs(p.layers[0].out), jt(1), WP);
  for (int64_t l = 1; l < nl - 1; ++l) {  // Q_l^T = J_l^T W_l^T, J_{l+1}^T = Q_l^T diag(s_l)
    const ALayer<T>& ly = p.layers[l];
    const int64_t nvo = vecs(ly.out);
    const T* sl = srow(l);
    T* Ql = s.QT[l];
    gemm_probe<T, VB, NRD, true>(jt(l), WP, D, ly.in, ly.WTp.data(), nvo * L, nvo, jt(l + 1), WP, sl, Ql);
  }
  const T* JL = jt(nl - 1);
  const T* WL = p.WLp.data();  // [D][ld]
  const int64_t nvl = vecs(lz.in), ldl = nvl * L;
  alignas(64) T dg[kCnfMaxExactLatent];  // (W_L J_L)_dd
  // The scales' reverse step of hidden layer l for probe d, vector v, given Jbar^T's vector jb:
  // sbar_l += Jbar^T[d] Q_l^T[d] (Q_0 = W_0), Qbar_l^T[d] = Jbar^T[d] diag(s_l), which for l = 0
  // goes straight into Wbar_0^T (Wbar_0 += Qbar_0) and otherwise to the row's slot.
  auto scale_back = [&](int64_t l, int64_t d, int64_t v, const V& jb) CGNF_INLINE_LAMBDA {
    V qv, sc, sb;
    if (l == 0)
      loadv(qv, p.W0T.data() + d * acc.ldw0t + v * L);
    else
      loadv(qv, s.QT[l] + d * WP + v * L);
    loadv(sc, srow(l) + v * L);
    loadv(sb, s.sbT + v * L);
    storev(s.sbT + v * L, sb + jb * qv);
    if (l == 0) {
      T* wb0 = acc.W0T.data() + d * acc.ldw0t + v * L;
      V x;
      loadv(x, wb0);
      storev(wb0, x + sc * jb);
    } else {
      storev(s.QS[l] + slot * slot_size + d * WP + v * L, sc * jb);
    }
  };
  const int64_t lt = nl - 2;  // the top hidden layer
  if (a != T(0)) std::fill(s.sbT, s.sbT + nvl * L, T(0));
  // One pass over W_L and J_L^T: the diagonal, and (a != 0) Jbar_L^T[d, k] = a gate_d W_L[d, k]
  // (not stored: straight into the top hidden layer's scale_back) and Wbar_L[d, k] += a gate_d J_L^T[d, k].
  T* wbl = acc.W[nl - 1].data();  // ld = ldl
  for (int64_t d = 0; d < D; ++d) {
    const T ag = a * gz[d * MB + r];
    V acc_v{};
    for (int64_t v = 0; v < nvl; ++v) {
      V w, j;
      loadv(w, WL + d * ldl + v * L);
      loadv(j, JL + d * WP + v * L);
      acc_v += w * j;
      if (a != T(0)) {
        V b;
        loadv(b, wbl + d * ldl + v * L);
        storev(wbl + d * ldl + v * L, b + ag * j);
        scale_back(lt, d, v, ag * w);
      }
    }
    dg[d] = hsum<T, VB>(acc_v);
  }
  T total = T(0);
  for (int64_t d = 0; d < D; ++d) {  // tr(diag(gate) W_L J_L)
    total += gz[d * MB + r] * dg[d];
    if (a != T(0)) s.gateb[nl - 1][d * MB + r] += a * dg[d];
  }
  if (a == T(0)) return total;
  for (int64_t l = lt;; --l) {
    T* sb = s.sbar[l];
    for (int64_t n = 0; n < p.layers[l].out; ++n) sb[n * MB + r] += s.sbT[n];
    if (l == 0) break;
    // Jbar_l^T = Qbar_l^T W_l, from the registers into layer l - 1's scale_back (Jbar_l is not
    // stored; Wbar_l += Qbar_l J_l^T waits for flush_rows)
    const ALayer<T>& ly = p.layers[l];
    const int64_t nvi = vecs(ly.in);
    std::fill(s.sbT, s.sbT + nvi * L, T(0));
    gemm_probe_to<T, VB, NRD>(s.QS[l] + slot * slot_size, WP, D, ly.out, ly.Wp.data(), nvi * L, nvi,
                              [&](int64_t d, int64_t v, const V& jb) CGNF_INLINE_LAMBDA {
                                if (d < D) scale_back(l - 1, d, v, jb);
                              });
  }
  return total;
}

// The middle layers' weight sums of the rows waiting in slots 0 .. rows - 1:
// Wbar_l += sum over those rows of Qbar_l J_l^T (A^T X, K = D per row).
template <typename T, int VB, int NR>
CGNF_INLINE void flush_rows(const AProblem<T>& p, AScratch<T, VB, NR>& s, Acc<T>& acc, int rows) {
  constexpr int L = VB / sizeof(T);
  const int64_t nl = int64_t(p.layers.size()), slot_size = s.RD * s.WP;
  for (int64_t l = 1; l < nl - 1; ++l) {
    const ALayer<T>& ly = p.layers[l];
    const T* A[AScratch<T, VB, NR>::kRows];
    const T* X[AScratch<T, VB, NR>::kRows];
    for (int i = 0; i < rows; ++i) A[i] = s.QS[l] + i * slot_size, X[i] = s.JT[l] + i * slot_size;
    gemm_tacc<T, VB, NR>(A, s.WP, X, s.WP, rows, ly.out, p.D, round_up(ly.in, L) / L, acc.W[l].data(), acc.ldw[l]);
  }
}

template <typename T, int VB, int NR>
CGNF_INLINE void run_tile(const AProblem<T>& p, AScratch<T, VB, NR>& s, Acc<T>& acc, int64_t r0) {
  constexpr int L = VB / sizeof(T), MB = 2 * L;
  using V = Vec<T, VB>;
  const int64_t D = p.D, C = p.C, cs = 1 + C, nl = int64_t(p.layers.size());
  const int64_t nr = std::min<int64_t>(MB, p.B - r0);
  const bool exact = p.divergence == kCnfExact, hut = p.divergence == kCnfHutchinson;
  tile_forward<T, VB, NR>(p, s, r0, nr);
  T adiv[MB];
  for (int64_t r = 0; r < MB; ++r) adiv[r] = (r < nr && p.divergence != kCnfNone) ? p.adiv[r0 + r] : T(0);
  for (int64_t l = 0; l < nl; ++l) {
    std::fill(s.gateb[l], s.gateb[l] + p.layers[l].out * MB, T(0));
    std::fill(s.sbar[l], s.sbar[l] + p.layers[l].out * MB, T(0));
  }
  // The divergence and its reverse pass.
  T divr[MB] = {};
  if (exact) {
    if (nl > 1)  // the hidden layers' scales, row-major for the probe-major products (padding stays 0)
      for (int64_t l = 0; l < nl - 1; ++l)
        for (int64_t n = 0; n < p.layers[l].out; ++n)
          for (int64_t r = 0; r < MB; ++r) s.sT[l][r * s.WP + n] = s.da[l][n * MB + r] * s.gate[l][n * MB + r];
    int waiting = 0;  // rows whose middle-layer weight sums wait in slots 0 .. waiting - 1
    for (int64_t r = 0; r < nr; ++r) {
      divr[r] = exact_row<T, VB, NR>(p, s, acc, r, adiv[r], waiting);
      if (adiv[r] != T(0) && nl > 2 && ++waiting == AScratch<T, VB, NR>::kRows)
        flush_rows<T, VB, NR>(p, s, acc, waiting), waiting = 0;
    }
    if (waiting > 0) flush_rows<T, VB, NR>(p, s, acc, waiting);
  }
  if (hut) {
    V hd[2] = {V{}, V{}};
    V av[2];
    loadv(av[0], adiv);
    loadv(av[1], adiv + L);
    T* vbar = s.hb0;
    T* ubar = s.hb1;
    for (int64_t d = 0; d < D; ++d)
      for (int v = 0; v < 2; ++v) {
        V e, g, x, gb;
        loadv(e, s.hu[0] + d * MB + v * L);
        loadv(g, s.gate[nl - 1] + d * MB + v * L);
        loadv(x, s.hv[nl - 1] + d * MB + v * L);
        hd[v] += e * g * x;
        storev(vbar + d * MB + v * L, av[v] * e * g);
        loadv(gb, s.gateb[nl - 1] + d * MB + v * L);
        storev(s.gateb[nl - 1] + d * MB + v * L, gb + av[v] * e * x);
      }
    storev(divr, hd[0]);
    storev(divr + L, hd[1]);
    for (int64_t l = nl - 1; l >= 0; --l) {
      const ALayer<T>& ly = p.layers[l];
      const int64_t ld = acc.ldw[l];
      transpose_in(s.hu[l], ly.in, MB, s.tr, ld);
      gemm_acc<T, VB, NR>(vbar, MB, ly.out, MB, s.tr, ld, ld / L, acc.W[l].data(), ld);
      if (l == 0) break;
      gemm<T, VB, NR>(ly.WT.data(), ly.out, ly.in, ly.out, vbar, MB, 2, ubar, MB,
                      [&](int64_t, int, const V& x) CGNF_INLINE_LAMBDA -> V { return x; });
      for (int64_t n = 0; n < ly.in; ++n)
        for (int v = 0; v < 2; ++v) {
          V ub, x, g, d, sb;
          const int64_t o = n * MB + v * L;
          loadv(ub, ubar + o);
          loadv(x, s.hv[l - 1] + o);
          loadv(g, s.gate[l - 1] + o);
          loadv(d, s.da[l - 1] + o);
          loadv(sb, s.sbar[l - 1] + o);
          storev(s.sbar[l - 1] + o, sb + ub * x);
          storev(vbar + o, ub * g * d);
        }
    }
  }
  // Outputs of the forward pass.
  if (p.dz)
    for (int64_t r = 0; r < nr; ++r)
      for (int64_t k = 0; k < D; ++k) p.dz[(r0 + r) * D + k] = s.fout[k * MB + r];
  if (p.div)
    for (int64_t r = 0; r < nr; ++r) p.div[r0 + r] = divr[r];
  // The MLP's reverse pass: prebar of the last layer is a_z.
  T* prebar = s.pre_b;
  T* hbar = s.hb0;
  T* hbar2 = s.hb1;
  for (int64_t r = 0; r < MB; ++r)
    for (int64_t k = 0; k < D; ++k) prebar[k * MB + r] = r < nr ? p.az[(r0 + r) * D + k] : T(0);
  std::fill(s.ctxb, s.ctxb + cs * MB, T(0));
  const T tv = p.t;
  const int64_t ldx = acc.ldx;
  for (int64_t r = 0; r < MB; ++r) {  // the context matrix [MB][ldx]: t, c_1 .. c_C, 1 (then zeros)
    T* x = s.ctxT + r * ldx;
    x[0] = tv;
    for (int64_t j = 0; j < C; ++j) x[1 + j] = s.ct[j * MB + r];
    x[cs] = T(1);
  }
  for (int64_t l = nl - 1; l >= 0; --l) {
    const ALayer<T>& ly = p.layers[l];
    const bool last = l == nl - 1;
    T* gate = s.gate[l];
    T* gateb = s.gateb[l];
    for (int64_t n = 0; n < ly.out; ++n) {
      V gpv[2], pbv[2];
      for (int v = 0; v < 2; ++v) {
        const int64_t o = n * MB + v * L;
        V pb, g, uu, gb;
        loadv(g, gate + o);
        loadv(uu, s.u[l] + o);
        loadv(gb, gateb + o);
        if (last) {
          loadv(pb, prebar + o);
        } else {
          V hb, d, sb, h;
          loadv(hb, hbar + o);
          loadv(d, s.da[l] + o);
          loadv(sb, s.sbar[l] + o);
          loadv(h, s.hin[l + 1] + o);
          const V act2 = p.softplus ? d * (T(1) - d) : T(-2) * h * d;
          V dm = d;  // d h / d pre: torch's softplus backward is 1 above its threshold (20)
          if (p.softplus) {
            V x;
            loadv(x, s.pre[l] + o);
            dm = x > T(20) ? bcast<V>(T(1)) : d;
          }
          pb = hb * dm + sb * g * act2;
          gb = gb + sb * d;
          storev(prebar + o, pb);
        }
        storev(s.ub + o, pb * g);
        gb = gb + pb * uu;
        gpv[v] = gb * g * (T(1) - g);
        pbv[v] = pb;
        storev(s.gp + o, gpv[v]);
      }
      for (int64_t j = 0; j < cs; ++j) {  // ctxbar += G^T gp + H^T prebar
        const T gj = ly.G[n * cs + j], hj = ly.H[n * cs + j];
        for (int v = 0; v < 2; ++v) {
          V cb;
          loadv(cb, s.ctxb + j * MB + v * L);
          storev(s.ctxb + j * MB + v * L, cb + gj * gpv[v] + hj * pbv[v]);
        }
      }
    }
    // Sums over the tile's rows against the context matrix: [G | g] += gp ctx, H += prebar ctx, b += ubar 1.
    const int64_t nvx = ldx / L;
    gemm_acc<T, VB, NR>(s.gp, MB, ly.out, MB, s.ctxT, ldx, nvx, acc.Gx[l].data(), ldx);
    gemm_acc<T, VB, NR>(prebar, MB, ly.out, MB, s.ctxT, ldx, nvx, acc.Hx[l].data(), ldx);
    gemm_acc<T, VB, NR>(s.ub, MB, ly.out, MB, s.ctxT, ldx, nvx, acc.bx[l].data(), ldx);
    const int64_t ld = acc.ldw[l];
    transpose_in(s.hin[l], ly.in, MB, s.tr, ld);  // Wbar += ubar h^T
    gemm_acc<T, VB, NR>(s.ub, MB, ly.out, MB, s.tr, ld, ld / L, acc.W[l].data(), ld);
    gemm<T, VB, NR>(ly.WT.data(), ly.out, ly.in, ly.out, s.ub, MB, 2, hbar2, MB,  // hbar = W^T ubar
                    [&](int64_t, int, const V& x) CGNF_INLINE_LAMBDA -> V { return x; });
    std::swap(hbar, hbar2);
  }
  if (p.gz)
    for (int64_t r = 0; r < nr; ++r)
      for (int64_t k = 0; k < D; ++k) p.gz[(r0 + r) * D + k] = hbar[k * MB + r];
  if (p.gc)
    for (int64_t r = 0; r < nr; ++r)
      for (int64_t j = 0; j < C; ++j) p.gc[(r0 + r) * C + j] = s.ctxb[(1 + j) * MB + r];
  T st = T(0);
  for (int64_t r = 0; r < nr; ++r) st += s.ctxb[r];
  acc.t += st;
}

template <typename T, int VB, int NR>
CGNF_INLINE void run_range(const AProblem<T>& p, Acc<T>& acc, std::vector<T>& mem, int64_t lo, int64_t hi) {
  constexpr int MB = 2 * int(VB / sizeof(T));
  AScratch<T, VB, NR> s(p, mem);
  for (int64_t tile = lo; tile < hi; ++tile) run_tile<T, VB, NR>(p, s, acc, tile * MB);
}

#ifdef CGNF_SIMD_X86
template <typename T>
__attribute__((target("avx512f"))) void range_avx512(const AProblem<T>& p, Acc<T>& a, std::vector<T>& m, int64_t lo,
                                                     int64_t hi) {
  run_range<T, 64, 12>(p, a, m, lo, hi);
}
template <typename T>
__attribute__((target("avx2,fma"))) void range_avx2(const AProblem<T>& p, Acc<T>& a, std::vector<T>& m, int64_t lo,
                                                   int64_t hi) {
  run_range<T, 32, 6>(p, a, m, lo, hi);
}
#endif
template <typename T>
void range_generic(const AProblem<T>& p, Acc<T>& a, std::vector<T>& m, int64_t lo, int64_t hi) {
  run_range<T, 16, 6>(p, a, m, lo, hi);
}

// What an evaluation needs beyond make_problem's shared fields that does not depend on t, z, the
// cotangents or the outputs: W^T, the kernel copy for this CPU, the padded weight copies and the
// work split (once per solve for the backward solve: cnf_adjoint_plan_cpu).
template <typename T>
void prepare(AProblem<T>& p) {
  for (ALayer<T>& ly : p.layers) ly.WT = padded(ly.W, ly.out, ly.in, ly.out, true);
  const simd::Isa isa = simd::pick_isa();
  p.fn = range_generic<T>, p.vb = 16;
#ifdef CGNF_SIMD_X86
  if (isa == simd::Isa::kAvx512) p.fn = range_avx512<T>, p.vb = 64;
  if (isa == simd::Isa::kAvx2) p.fn = range_avx2<T>, p.vb = 32;
#endif
  const int64_t lanes = p.vb / int64_t(sizeof(T)), MB = 2 * lanes;
  p.tiles = (p.B + MB - 1) / MB;
  const int64_t nl = int64_t(p.layers.size()), D = p.D;
  if (p.exact_t()) {  // the probe-major path's zero-padded weight copies
    const ALayer<T>& l0 = p.layers.front();
    const ALayer<T>& lz = p.layers.back();
    p.W0T = padded(l0.W, l0.out, D, round_up(l0.out, lanes), true);
    p.WLp = padded(lz.W, D, lz.in, round_up(lz.in, lanes), false);
    for (int64_t l = 1; l + 1 < nl; ++l) {
      ALayer<T>& ly = p.layers[l];
      ly.WTp = padded(ly.W, ly.out, ly.in, round_up(ly.out, lanes), true);
      ly.Wp = padded(ly.W, ly.out, ly.in, round_up(ly.in, lanes), false);
    }
  }
  int64_t macs = 0;  // per batch row, as the forward kernel counts them (x3: forward, W^T, W sums)
  for (const ALayer<T>& ly : p.layers) macs += 3 * ly.out * (ly.in + 2 * p.C + 16);
  if (p.divergence == kCnfHutchinson) macs *= 2;
  if (p.divergence == kCnfExact)
    for (size_t l = 1; l + 1 < p.layers.size(); ++l) macs += 3 * p.D * p.layers[l].out * p.layers[l].in;
  p.min_chunk = std::max<int64_t>(1, (int64_t{16} << 20) / std::max<int64_t>(1, macs * MB));
}

// One evaluation of a prepared problem (its t and per-call pointers set).
template <typename T>
void evaluate(AProblem<T>& p, const std::vector<T*>& gw, T* gt, int64_t num_threads) {
  const int64_t nl = int64_t(p.layers.size()), cs = 1 + p.C;
  if (p.B == 0) {  // nothing flows back: zero gradients
    if (gt) *gt = T(0);
    for (int64_t l = 0; l < nl && !gw.empty(); ++l) {
      const int64_t in = p.layers[l].in, out = p.layers[l].out;
      const int64_t sizes[5] = {out * in, out, out * cs, out, out * cs};
      for (int j = 0; j < 5; ++j)
        if (gw[5 * l + j]) std::fill(gw[5 * l + j], gw[5 * l + j] + sizes[j], T(0));
    }
    return;
  }
  fold_time(p, p.t);
  const int64_t lanes = p.vb / int64_t(sizeof(T)), tiles = p.tiles, min_chunk = p.min_chunk;
  const int64_t chunk = parallel_chunk(tiles, num_threads, min_chunk), chunks = (tiles + chunk - 1) / chunk;
  static thread_local ACache<T> tl_cache;
  ACache<T>& cache = tl_cache;  // (the workers must use the caller's, not their own thread-local copy)
  if (p.key != cache.key) cache = ACache<T>{p.key, {}, {}};
  while (int64_t(cache.acc.size()) < chunks) {
    cache.acc.push_back(std::make_unique<Acc<T>>(p, 12, lanes));  // rows padded for NR = 12 and 6
    cache.mem.emplace_back();
  }
  parallel_for(tiles, num_threads, min_chunk, [&](int64_t lo, int64_t hi) {
    Acc<T>& acc = *cache.acc[lo / chunk];
    acc.zero();
    p.fn(p, acc, cache.mem[lo / chunk], lo, hi);
  });
  std::vector<std::pair<int64_t, Acc<T>*>> parts;  // in tile order
  for (int64_t i = 0; i < chunks; ++i) parts.emplace_back(i, cache.acc[i].get());
  // Sum the threads' parts in tile order into the outputs.
  if (gt) {
    T s = T(0);
    for (auto& pa : parts) s += pa.second->t;
    *gt = s;
  }
  for (int64_t l = 0; l < nl; ++l) {
    const ALayer<T>& ly = p.layers[l];
    T* outs[5] = {nullptr, nullptr, nullptr, nullptr, nullptr};
    if (!gw.empty())
      for (int j = 0; j < 5; ++j) outs[j] = gw[5 * l + j];
    if (outs[0]) {
      const bool tr = p.exact_t() && l == 0;  // the exact divergence's part of the first layer, transposed
      for (int64_t n = 0; n < ly.out; ++n)
        for (int64_t k = 0; k < ly.in; ++k) {
          T s = T(0);
          for (auto& pa : parts) {
            s += pa.second->W[l][n * pa.second->ldw[l] + k];
            if (tr) s += pa.second->W0T[k * pa.second->ldw0t + n];
          }
          outs[0][n * ly.in + k] = s;
        }
    }
    // (which, column): b = bx[:, cs]; G = Gx[:, 0:cs]; g = Gx[:, cs]; H = Hx[:, 0:cs]
    auto sum_into = [&](T* out, int which, int64_t col0, int64_t ncol) {
      if (!out) return;
      for (int64_t n = 0; n < ly.out; ++n)
        for (int64_t j = 0; j < ncol; ++j) {
          T s = T(0);
          for (auto& pa : parts) {
            const Acc<T>& a = *pa.second;
            const std::vector<T>& v = which == 0 ? a.bx[l] : which == 1 ? a.Gx[l] : a.Hx[l];
            s += v[n * a.ldx + col0 + j];
          }
          out[n * ncol + j] = s;
        }
    };
    sum_into(outs[1], 0, cs, 1);
    sum_into(outs[2], 1, 0, cs);
    sum_into(outs[3], 1, cs, 1);
    sum_into(outs[4], 2, 0, cs);
  }
}

// One evaluation (the op's per-call path): a plan used once.
template <typename T>
void launch(int64_t t, int64_t z, int64_t c, int64_t noise, const std::vector<int64_t>& weights,
            const std::vector<int64_t>& widths, int64_t a_z, int64_t a_div, int64_t dz, int64_t div, int64_t g_t,
            int64_t g_z, int64_t g_c, const std::vector<int64_t>& g_weights, int64_t B, int64_t C,
            int64_t activation, int64_t divergence, int64_t num_threads) {
  auto P = [](int64_t q) { return reinterpret_cast<T*>(q); };
  std::vector<T*> gw;
  for (int64_t q : g_weights) gw.push_back(P(q));
  cnf_adjoint_plan_cpu<T>(c, noise, weights, widths, B, C, activation, divergence, num_threads)(
      *P(t), P(z), P(a_z), P(a_div), P(dz), P(div), P(g_t), P(g_z), P(g_c), gw);
}

}  // namespace

void cnf_adjoint_cpu(int64_t t, int64_t z, int64_t c, int64_t noise, const std::vector<int64_t>& weights,
                     const std::vector<int64_t>& widths, int64_t a_z, int64_t a_div, int64_t dz, int64_t div,
                     int64_t g_t, int64_t g_z, int64_t g_c, const std::vector<int64_t>& g_weights, int64_t B,
                     int64_t C, int64_t activation, int64_t divergence, bool float64, int64_t num_threads) {
  check_cnf_adjoint(B, C, weights, widths, activation, divergence, t, z, c, noise, a_z, a_div, g_weights);
  if (float64)
    launch<double>(t, z, c, noise, weights, widths, a_z, a_div, dz, div, g_t, g_z, g_c, g_weights, B, C, activation,
                   divergence, num_threads);
  else
    launch<float>(t, z, c, noise, weights, widths, a_z, a_div, dz, div, g_t, g_z, g_c, g_weights, B, C, activation,
                  divergence, num_threads);
}

template <typename T>
CnfAdjointPlan<T> cnf_adjoint_plan_cpu(int64_t c, int64_t noise, const std::vector<int64_t>& weights,
                                       const std::vector<int64_t>& widths, int64_t B, int64_t C, int64_t activation,
                                       int64_t divergence, int64_t num_threads) {
  auto p = cnf_cpu::make_problem<T, AProblem<T>>(c, noise, weights, widths, B, C, activation, divergence, prepare<T>);
  return [p, num_threads](T t, const T* z, const T* az, const T* adiv, T* dz, T* div, T* gt, T* gz, T* gc,
                          const std::vector<T*>& gw) {
    p->t = t, p->z = z, p->az = az, p->adiv = adiv, p->dz = dz, p->div = div, p->gz = gz;
    p->gc = p->C > 0 ? gc : nullptr;
    evaluate(*p, gw, gt, num_threads);
  };
}
template CnfAdjointPlan<float> cnf_adjoint_plan_cpu<float>(int64_t, int64_t, const std::vector<int64_t>&,
                                                           const std::vector<int64_t>&, int64_t, int64_t, int64_t,
                                                           int64_t, int64_t);
template CnfAdjointPlan<double> cnf_adjoint_plan_cpu<double>(int64_t, int64_t, const std::vector<int64_t>&,
                                                             const std::vector<int64_t>&, int64_t, int64_t, int64_t,
                                                             int64_t, int64_t);

}  // namespace cgnf
