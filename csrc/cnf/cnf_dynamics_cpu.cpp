// CPU CNF dynamics: the whole ConcatSquash MLP and its divergence in one pass (math and layout
// in cnf.h).
//
// Work split. The batch is cut into tiles of MB = 2 vectors of rows (32 float / 16 double rows
// with AVX-512); tiles are independent and split into contiguous chunks over threads
// (common/parallel.h). A tile runs every layer before the next tile starts, with its
// activations stored feature-major, [width][MB] (a row of the buffer holds one feature for the
// tile's MB batch rows), in two ping-pong buffers that stay in L1/L2; the weights (a few hundred
// KB) stay in L2 across tiles. Feature-major makes each layer a GEMM whose vectors run over
// batch rows: a register block of NR output features x V vectors of rows accumulates
// W[n, k] (a broadcast scalar, read from W in its own [out, in] layout, so nothing is packed or
// transposed per call) times the vector of feature k, for k over the layer's input. Per layer,
// the context terms come first, as two GEMMs with K = C over the tile's condition (the time
// column of ctx is folded into the biases once per call): the gate sigmoid(G ctx + g) and the
// bias H ctx. The main GEMM's epilogue then runs on each register block while it is in L1:
// bias, gate, context bias and activation, all vectorised (exp/tanh/log1p written below over the
// same vectors). (Splitting the gate out shortened the epilogue's dependency chains: 10-18 %
// faster for B >= 256 than computing it inside.)
//   * exact divergence: the tile's forward pass keeps the scales s_l = act' * gate of every
//     hidden layer; then, one batch row at a time, the D tangents are propagated as a
//     [width][D] matrix (D padded to whole vectors) with the same GEMM kernel (vectors over the
//     D probes), scaled row by row, and the trace of the last layer is read off without forming
//     its matrix (sum_i gate_i <W_L[i, :], T[:, i]>).
//   * Hutchinson: the single probe per row is carried through the tile like a second
//     activation buffer (one more GEMM per layer over the same weights).
// Ragged edges: the last tile's missing rows are zeros (computed, never stored); an output block
// past the layer width repeats its last weight row and drops those results.
//
// Vectorisation: plain -O3 build (no -march), so the kernel is written over GCC vector
// extensions (common/simd.h) and compiled for AVX-512 (NR = 12 features x 2 vectors = 24
// accumulators of 32 registers), AVX2+FMA and baseline SSE2 (NR = 6, 12 accumulators of 16);
// the widest the CPU runs is chosen per call (CGNF_SIMD=avx2|generic caps it).
// Why not ATen/MKL GEMMs: the module is built without libtorch, and on the dev CPU this GEMM
// alone measured ~50 GMAC/s (float32, one thread, [4096 x 256] x [256 x 256]) against ~49 for
// torch.mm there, while a library GEMM would write each layer out and read it back for the
// epilogue, which is what the fusion saves.
#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "../common/checks.h"
#include "../common/parallel.h"
#include "../common/simd.h"
#include "cnf.h"

namespace cgnf {

namespace {

using simd::bcast;
using simd::IVec;
using simd::loadv;
using simd::storev;
using simd::Vec;

// ---- vector math (float and double; a few ulp from the C library) ---------------------------

// exp: Cody-Waite reduction x = n ln2 + r (|r| <= ln2 / 2), a polynomial for exp(r) (Cephes'
// for float, Taylor to degree 13 for double), 2^n built in the exponent bits. Inputs are
// clamped to the range where 2^n is a normal number (the results there are ~1e-38 / ~1e38 for
// float: every caller only needs them to saturate).
template <typename T, int VB>
CGNF_INLINE Vec<T, VB> vexp(Vec<T, VB> x) {
  using V = Vec<T, VB>;
  using I = IVec<T, VB>;
  constexpr bool kF = std::is_same<T, float>::value;
  const V hi = bcast<V>(T(kF ? 88.3 : 709.0)), lo = bcast<V>(T(kF ? -87.3 : -708.0));
  x = x > hi ? hi : x;
  x = x < lo ? lo : x;
  // y = x log2(e) rounded to an integer in the low mantissa bits of y (the magic 1.5 * 2^23 or 1.5 * 2^52)
  const V magic = bcast<V>(T(kF ? 12582912.0 : 6755399441055744.0));
  const V y = x * T(1.44269504088896340736) + magic;
  const V n = y - magic;
  V p;
  if constexpr (kF) {
    V r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    p = bcast<V>(1.9875691500E-4f);
    p = p * r + 1.3981999507E-3f;
    p = p * r + 8.3334519073E-3f;
    p = p * r + 4.1665795894E-2f;
    p = p * r + 1.6666665459E-1f;
    p = p * r + 5.0000001201E-1f;
    p = p * (r * r) + r + 1.0f;
  } else {
    V r = x - n * 6.93145751953125E-1;
    r = r - n * 1.42860682030941723212E-6;
    // 1 / k!, k = 13 .. 2
    p = bcast<V>(1.0 / 6227020800.0);
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * (r * r) + r + 1.0;
  }
  const I scale = ((I)y - (I)magic + (kF ? 127 : 1023)) << (kF ? 23 : 52);
  return p * (V)scale;
}

// tanh. float: Eigen's rational minimax approximation (odd degree 13 over even degree 6, x
// clamped to +-7.9053, where it rounds to +-1; x itself below 4e-4): no exp, one division;
// measured over a dense grid of [-9, 9] and 1e-8..10: at most 6.5 ulp (3.9e-7 relative, near
// |x| = 5.8) from tanh in double, against 1.4 ulp for the C library's float tanh.
// double: Cephes' rational function for |x| < 0.625, where 1 - 2 / (exp(2|x|) + 1) would
// cancel, and that formula (with the sign of x) elsewhere.
template <typename T, int VB>
CGNF_INLINE Vec<T, VB> vtanh(Vec<T, VB> x) {
  using V = Vec<T, VB>;
  if constexpr (std::is_same<T, float>::value) {
    const V lim = bcast<V>(7.90531110763549805f);
    V xc = x > lim ? lim : x;
    xc = xc < -lim ? -lim : xc;
    const V x2 = xc * xc;
    V p = x2 * -2.76076847742355e-16f + 2.00018790482477e-13f;
    p = p * x2 - 8.60467152213735e-11f;
    p = p * x2 + 5.12229709037114e-08f;
    p = p * x2 + 1.48572235717979e-05f;
    p = p * x2 + 6.37261928875436e-04f;
    p = p * x2 + 4.89352455891786e-03f;
    V q = x2 * 1.19825839466702e-06f + 1.18534705686654e-04f;
    q = q * x2 + 2.26843463243900e-03f;
    q = q * x2 + 4.89352518554385e-03f;
    const V r = xc * p / q;
    const V a = x < V{} ? -x : x;
    return a < 0.0004f ? x : r;
  } else {
    const V zero = V{};
    const V a = x < zero ? -x : x;
    const V e = vexp<T, VB>(a + a);
    V big = T(1) - T(2) / (e + T(1));
    big = x < zero ? -big : big;
    const V s = x * x;
    V P = bcast<V>(-9.64399179425052238628E-1);
    P = P * s - 9.92877231001918586564E1;
    P = P * s - 1.61468768441708447952E3;
    V Q = s + 1.12811678491632931402E2;
    Q = Q * s + 2.23548839060100448583E3;
    Q = Q * s + 4.84406305325125486048E3;
    const V small = x + x * s * (P / Q);
    return a < T(0.625) ? small : big;
  }
}

template <typename T, int VB>
CGNF_INLINE Vec<T, VB> vsigmoid(Vec<T, VB> x) {
  return T(1) / (T(1) + vexp<T, VB>(-x));
}

// log1p(u) for u in [0, 1]: 2 atanh(s) with s = u / (u + 2), or ln 2 + 2 atanh(s) with
// s = (u - 1) / (u + 3) for u > sqrt(2) - 1; |s| <= 0.172, so the atanh series converges fast
// (s^2 <= 0.0295: 6 terms for float, 11 for double).
template <typename T, int VB>
CGNF_INLINE Vec<T, VB> vlog1p_unit(Vec<T, VB> u) {
  using V = Vec<T, VB>;
  constexpr bool kF = std::is_same<T, float>::value;
  const auto big = u > T(0.41421356237309504880);
  const V s = (big ? u - T(1) : u) / (u + (big ? bcast<V>(T(3)) : bcast<V>(T(2))));  // one division
  const V s2 = s * s;
  constexpr int kTerms = kF ? 6 : 11;  // 1, 1/3, ..., 1/(2 kTerms - 1)
  V p = bcast<V>(T(1) / T(2 * kTerms - 1));
  for (int k = kTerms - 2; k >= 0; --k) p = p * s2 + T(1) / T(2 * k + 1);
  const V r = T(2) * s * p;
  return big ? r + T(0.693147180559945309417) : r;
}

// torch's softplus (beta 1, threshold 20): x for x > 20, else log(1 + exp(x)) computed as
// max(x, 0) + log1p(exp(-|x|)).
template <typename T, int VB>
CGNF_INLINE Vec<T, VB> vsoftplus(Vec<T, VB> x) {
  using V = Vec<T, VB>;
  const V zero = V{};
  const V a = x < zero ? -x : x;
  const V sp = (x > zero ? x : zero) + vlog1p_unit<T, VB>(vexp<T, VB>(-a));
  return x > T(20) ? x : sp;
}

// ---- GEMM over feature-major buffers ---------------------------------------------------------

// Y[n0 + i][v-th vector] = epi(n0 + i, v, sum_k w[i][k] * X[k][v-th vector]) for i < NR, v < V:
// NR x V accumulators, stored, then the epilogue runs over the block while it is in L1 (rows
// n0 + i < N only). (Running it on the registers directly measured no faster and unrolls the
// epilogue NR x V times.)
template <typename T, int VB, int NR, int V, typename Epi>
CGNF_INLINE void micro(const T* const* w, int64_t K, const T* X, int64_t xs, T* Y, int64_t ys, int64_t n0,
                       int64_t N, int v0, Epi& epi) {
  constexpr int L = VB / sizeof(T);
  using Vt = Vec<T, VB>;
  Vt acc[NR][V];
  for (int i = 0; i < NR; ++i)
    for (int v = 0; v < V; ++v) acc[i][v] = Vt{};
  for (int64_t k = 0; k < K; ++k) {
    Vt x[V];
    for (int v = 0; v < V; ++v) loadv(x[v], X + k * xs + v * L);
    for (int i = 0; i < NR; ++i) {
      const T wk = w[i][k];
      for (int v = 0; v < V; ++v) acc[i][v] += wk * x[v];
    }
  }
  for (int i = 0; i < NR; ++i)
    for (int v = 0; v < V; ++v) storev(Y + i * ys + v * L, acc[i][v]);
  const int nr = int(std::min<int64_t>(NR, N - n0));
#pragma GCC unroll 1
  for (int i = 0; i < nr; ++i)
    for (int v = 0; v < V; ++v) {
      Vt a;
      loadv(a, Y + i * ys + v * L);
      storev(Y + i * ys + v * L, epi(n0 + i, v0 + v, a));
    }
}

// Y [N][nv vectors] = epi(W [N, K] X [K][nv vectors]) (row strides: ldw of W, xs of X, ys of Y).
// A block of rows past N repeats row N - 1 of W and drops the results.
template <typename T, int VB, int NR, typename Epi>
CGNF_INLINE void gemm(const T* W, int64_t ldw, int64_t N, int64_t K, const T* X, int64_t xs, int64_t nv, T* Y,
                      int64_t ys, Epi&& epi) {
  constexpr int L = VB / sizeof(T);
  for (int64_t n0 = 0; n0 < N; n0 += NR) {
    const T* w[NR];
    for (int i = 0; i < NR; ++i) w[i] = W + std::min<int64_t>(n0 + i, N - 1) * ldw;
    int64_t v = 0;
    for (; v + 2 <= nv; v += 2)
      micro<T, VB, NR, 2>(w, K, X + v * L, xs, Y + n0 * ys + v * L, ys, n0, N, int(v), epi);
    if (v < nv) micro<T, VB, NR, 1>(w, K, X + v * L, xs, Y + n0 * ys + v * L, ys, n0, N, int(v), epi);
  }
}

// ---- the problem and a thread's scratch ------------------------------------------------------

template <typename T>
struct Layer {
  const T* W;  // [out, in]
  const T* b;  // [out]
  const T* G;  // [out, 1 + C]
  const T* g;  // [out]
  const T* H;  // [out, 1 + C]
  int64_t in, out;
  int64_t s_off;  // first row of this layer's scales in Scratch::sc (hidden layers, exact divergence)
};

template <typename T>
struct Problem {
  const T* z;      // [B, D]
  const T* c;      // [B, C]
  const T* noise;  // [B, D] (Hutchinson)
  T* dz;           // [B, D]
  T* div;          // [B]
  int64_t B, C, D;
  bool softplus;
  int64_t divergence;
  std::vector<Layer<T>> layers;
  std::vector<T> gb, hb;  // per layer (at layers[l].s_off-independent offsets ctx_off[l]): g + G[:, 0] t, H[:, 0] t
  std::vector<int64_t> ctx_off;
  int64_t max_width = 0, hidden_sum = 0;
};

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// A thread's buffers, 64-byte aligned, every one a whole number of 64-byte lines.
template <typename T, int VB, int NR>
struct Scratch {
  static constexpr int L = VB / sizeof(T), MB = 2 * L;
  std::vector<T> mem;
  T *x, *y;    // [rows][MB] activations (ping-pong)
  T *tx, *ty;  // [rows][MB] Hutchinson tangents (ping-pong)
  T* nz;       // [D][MB] Hutchinson probe (noise^T)
  T* ct;       // [C][MB] condition^T
  T *gt, *hp;  // [rows][MB] the current layer's gate sigmoid(G ctx + g) and context bias H ctx
  T* sv;       // [rows][MB] Hutchinson: scales s_l of the current layer
  T* sc;       // [hidden_sum][MB] exact: scales s_l of every hidden layer
  T* gl;       // [D][MB] gate of the last layer (divergences)
  T *TA, *TB;  // [rows][DP] exact: one batch row's tangents (ping-pong)
  int64_t DP = 0;

  explicit Scratch(const Problem<T>& p) {
    constexpr int64_t kLine = 64 / sizeof(T);
    const int64_t rows = round_up(p.max_width, NR);
    const bool hut = p.divergence == kCnfHutchinson, exact = p.divergence == kCnfExact;
    DP = exact ? round_up(p.D, L) : 0;
    const int64_t sizes[] = {rows * MB,
                             rows * MB,
                             hut ? rows * MB : 0,
                             hut ? rows * MB : 0,
                             hut ? p.D * MB : 0,
                             p.C * MB,
                             rows * MB,
                             rows * MB,
                             hut ? rows * MB : 0,
                             exact ? p.hidden_sum * MB : 0,
                             (hut || exact) ? p.D * MB : 0,
                             rows * DP,
                             rows * DP};
    int64_t total = kLine;
    for (int64_t s : sizes) total += round_up(s, kLine);
    mem.assign(total, T(0));
    uintptr_t base = reinterpret_cast<uintptr_t>(mem.data());
    T* q = reinterpret_cast<T*>((base + 63) / 64 * 64);
    T** slots[] = {&x, &y, &tx, &ty, &nz, &ct, &gt, &hp, &sv, &sc, &gl, &TA, &TB};
    for (int i = 0; i < 13; ++i) {
      *slots[i] = q;
      q += round_up(sizes[i], kLine);
    }
  }
};

// ---- one tile of batch rows ------------------------------------------------------------------

template <typename T, int VB, int NR>
CGNF_INLINE T exact_row(const Problem<T>& p, Scratch<T, VB, NR>& s, int64_t r) {
  constexpr int L = VB / sizeof(T), MB = 2 * L;
  using V = Vec<T, VB>;
  const int64_t D = p.D, nl = int64_t(p.layers.size());
  if (nl == 1) {  // J = diag(gate) W
    T acc = T(0);
    for (int64_t i = 0; i < D; ++i) acc += s.gl[i * MB + r] * p.layers[0].W[i * D + i];
    return acc;
  }
  const int64_t DP = s.DP, nvd = DP / L;
  T* ta = s.TA;
  T* tb = s.TB;
  const Layer<T>& l0 = p.layers[0];
  for (int64_t n = 0; n < l0.out; ++n) {  // J_1 = diag(s_0) W_0: T[n][d] = s_0[n] W_0[n, d]
    const T sc = s.sc[(l0.s_off + n) * MB + r];
    for (int64_t d = 0; d < D; ++d) ta[n * DP + d] = sc * l0.W[n * D + d];
    for (int64_t d = D; d < DP; ++d) ta[n * DP + d] = T(0);
  }
  for (int64_t l = 1; l < nl - 1; ++l) {  // J_{l+1} = diag(s_l) W_l J_l
    const Layer<T>& ly = p.layers[l];
    const T* sc = s.sc + ly.s_off * MB + r;  // s_l[n] at sc[n * MB]
    gemm<T, VB, NR>(ly.W, ly.in, ly.out, ly.in, ta, DP, nvd, tb, DP,
                    [&](int64_t n, int, const V& u) CGNF_INLINE_LAMBDA -> V { return sc[n * MB] * u; });
    std::swap(ta, tb);
  }
  const Layer<T>& lz = p.layers[nl - 1];  // tr(diag(gate) W_L J) = sum_i gate_i <W_L[i, :], J[:, i]>
  T total = T(0);
  for (int64_t i = 0; i < D; ++i) {
    const T* wi = lz.W + i * lz.in;
    T dot = T(0);
    for (int64_t k = 0; k < lz.in; ++k) dot += wi[k] * ta[k * DP + i];
    total += s.gl[i * MB + r] * dot;
  }
  return total;
}

template <typename T, int VB, int NR>
CGNF_INLINE void run_tile(const Problem<T>& p, Scratch<T, VB, NR>& s, int64_t r0) {
  constexpr int L = VB / sizeof(T), MB = 2 * L;
  using V = Vec<T, VB>;
  const int64_t D = p.D, C = p.C, cs = 1 + C, nl = int64_t(p.layers.size());
  const int64_t nr = std::min<int64_t>(MB, p.B - r0);
  const bool exact = p.divergence == kCnfExact, hut = p.divergence == kCnfHutchinson;
  T* x = s.x;
  T* y = s.y;
  T* tx = s.tx;
  T* ty = s.ty;
  for (int64_t r = 0; r < MB; ++r) {  // transpose the tile's inputs (zero rows past the batch)
    const bool in = r < nr;
    for (int64_t k = 0; k < D; ++k) x[k * MB + r] = in ? p.z[(r0 + r) * D + k] : T(0);
    for (int64_t j = 0; j < C; ++j) s.ct[j * MB + r] = in ? p.c[(r0 + r) * C + j] : T(0);
    if (hut)
      for (int64_t k = 0; k < D; ++k) s.nz[k * MB + r] = in ? p.noise[(r0 + r) * D + k] : T(0);
  }
  V hdiv[2] = {V{}, V{}};
  for (int64_t l = 0; l < nl; ++l) {
    const Layer<T>& ly = p.layers[l];
    const bool last = l == nl - 1;
    const T* gb = p.gb.data() + p.ctx_off[l];
    const T* hb = p.hb.data() + p.ctx_off[l];
    // pre = (W h + b) * gate + H ctx, then the activation (none after the last layer); keeps
    // gate (last layer) and s = act' * gate (hidden layers) for the divergence.
    // The context terms first (GEMMs with K = C over the tile's condition^T): the gate
    // sigmoid(G ctx + g) and the bias H ctx, the time column folded into gb / hb.
    gemm<T, VB, NR>(ly.G + 1, cs, ly.out, C, s.ct, MB, 2, s.gt, MB,
                    [&](int64_t n, int, const V& a) CGNF_INLINE_LAMBDA -> V { return vsigmoid<T, VB>(a + gb[n]); });
    gemm<T, VB, NR>(ly.H + 1, cs, ly.out, C, s.ct, MB, 2, s.hp, MB,
                    [&](int64_t n, int, const V& a) CGNF_INLINE_LAMBDA -> V { return a + hb[n]; });
    auto forward = [&](int64_t n, int v, const V& acc) CGNF_INLINE_LAMBDA -> V {
      V gate, hpv;
      loadv(gate, s.gt + n * MB + v * L);
      loadv(hpv, s.hp + n * MB + v * L);
      const V pre = (acc + ly.b[n]) * gate + hpv;
      if (last) {
        if (exact || hut) storev(s.gl + n * MB + v * L, gate);
        return pre;
      }
      V h, dact;
      if (p.softplus) {
        h = vsoftplus<T, VB>(pre);
        dact = vsigmoid<T, VB>(pre);
      } else {
        h = vtanh<T, VB>(pre);
        dact = T(1) - h * h;
      }
      if (exact) storev(s.sc + (ly.s_off + n) * MB + v * L, dact * gate);
      if (hut) storev(s.sv + n * MB + v * L, dact * gate);
      return h;
    };
    gemm<T, VB, NR>(ly.W, ly.in, ly.out, ly.in, x, MB, 2, y, MB, forward);
    if (hut) {  // the probe: u <- s * (W u); last layer: div += e * gate * (W u)
      const T* u_in = l == 0 ? s.nz : tx;
      if (last)
        gemm<T, VB, NR>(ly.W, ly.in, ly.out, ly.in, u_in, MB, 2, ty, MB, [&](int64_t n, int v, const V& u) CGNF_INLINE_LAMBDA -> V {
          V e, g;
          loadv(e, s.nz + n * MB + v * L);
          loadv(g, s.gl + n * MB + v * L);
          hdiv[v] += e * g * u;
          return u;
        });
      else
        gemm<T, VB, NR>(ly.W, ly.in, ly.out, ly.in, u_in, MB, 2, ty, MB, [&](int64_t n, int v, const V& u) CGNF_INLINE_LAMBDA -> V {
          V sc;
          loadv(sc, s.sv + n * MB + v * L);
          return sc * u;
        });
    }
    std::swap(x, y);
    std::swap(tx, ty);
  }
  for (int64_t r = 0; r < nr; ++r)  // x holds dz/dt^T [D][MB]
    for (int64_t k = 0; k < D; ++k) p.dz[(r0 + r) * D + k] = x[k * MB + r];
  if (hut) {
    T lanes[MB];
    storev(lanes, hdiv[0]);
    storev(lanes + L, hdiv[1]);
    for (int64_t r = 0; r < nr; ++r) p.div[r0 + r] = lanes[r];
  }
  if (exact)
    for (int64_t r = 0; r < nr; ++r) p.div[r0 + r] = exact_row<T, VB, NR>(p, s, r);
}

template <typename T, int VB, int NR>
CGNF_INLINE void run_range(const Problem<T>& p, int64_t lo, int64_t hi) {
  constexpr int MB = 2 * int(VB / sizeof(T));
  Scratch<T, VB, NR> s(p);
  for (int64_t tile = lo; tile < hi; ++tile) run_tile<T, VB, NR>(p, s, tile * MB);
}

// One copy per instruction set, each with its vector width and register block.
#ifdef CGNF_SIMD_X86
template <typename T>
__attribute__((target("avx512f"))) void range_avx512(const Problem<T>& p, int64_t lo, int64_t hi) {
  run_range<T, 64, 12>(p, lo, hi);
}
template <typename T>
__attribute__((target("avx2,fma"))) void range_avx2(const Problem<T>& p, int64_t lo, int64_t hi) {
  run_range<T, 32, 6>(p, lo, hi);
}
#endif
template <typename T>
void range_generic(const Problem<T>& p, int64_t lo, int64_t hi) {
  run_range<T, 16, 6>(p, lo, hi);
}

template <typename T>
void run(Problem<T>& p, const T* t, int64_t num_threads) {
  // Fold the time column of ctx into the biases once per call.
  const T tv = *t;
  const int64_t cs = 1 + p.C;
  int64_t off = 0;
  for (const Layer<T>& ly : p.layers) {
    p.ctx_off.push_back(off);
    for (int64_t n = 0; n < ly.out; ++n) {
      p.gb.push_back(ly.g[n] + ly.G[n * cs] * tv);
      p.hb.push_back(ly.H[n * cs] * tv);
    }
    off += ly.out;
  }
  simd::Isa isa = simd::pick_isa();
  int vb = 16;
  void (*fn)(const Problem<T>&, int64_t, int64_t) = range_generic<T>;
#ifdef CGNF_SIMD_X86
  if (isa == simd::Isa::kAvx512) fn = range_avx512<T>, vb = 64;
  if (isa == simd::Isa::kAvx2) fn = range_avx2<T>, vb = 32;
#endif
  const int64_t MB = 2 * vb / int64_t(sizeof(T));
  const int64_t tiles = (p.B + MB - 1) / MB;
  // Multiply-adds per batch row, to give each thread >= ~16M of them: a thread costs ~50 us to
  // start, and a solve makes dozens of evaluations (4M left small batches slower on 2 threads).
  int64_t macs = 0;
  for (const Layer<T>& ly : p.layers) macs += ly.out * (ly.in + 2 * p.C + 16);
  if (p.divergence == kCnfHutchinson) macs *= 2;
  if (p.divergence == kCnfExact)
    for (size_t l = 1; l + 1 < p.layers.size(); ++l) macs += p.D * p.layers[l].out * p.layers[l].in;
  const int64_t min_chunk = std::max<int64_t>(1, (int64_t{16} << 20) / std::max<int64_t>(1, macs * MB));
  parallel_for(tiles, num_threads, min_chunk, [&](int64_t lo, int64_t hi) { fn(p, lo, hi); });
}

template <typename T>
void launch(int64_t t, int64_t z, int64_t c, int64_t noise, const std::vector<int64_t>& weights,
            const std::vector<int64_t>& widths, int64_t dz, int64_t div, int64_t B, int64_t C, int64_t activation,
            int64_t divergence, int64_t num_threads) {
  Problem<T> p;
  p.z = reinterpret_cast<const T*>(z);
  p.c = reinterpret_cast<const T*>(c);
  p.noise = reinterpret_cast<const T*>(noise);
  p.dz = reinterpret_cast<T*>(dz);
  p.div = reinterpret_cast<T*>(div);
  p.B = B, p.C = C, p.D = widths.front();
  p.softplus = activation == kCnfSoftplus;
  p.divergence = divergence;
  const size_t nl = widths.size() - 1;
  for (size_t l = 0; l < nl; ++l) {
    Layer<T> ly;
    ly.W = reinterpret_cast<const T*>(weights[5 * l]);
    ly.b = reinterpret_cast<const T*>(weights[5 * l + 1]);
    ly.G = reinterpret_cast<const T*>(weights[5 * l + 2]);
    ly.g = reinterpret_cast<const T*>(weights[5 * l + 3]);
    ly.H = reinterpret_cast<const T*>(weights[5 * l + 4]);
    ly.in = widths[l], ly.out = widths[l + 1];
    ly.s_off = p.hidden_sum;
    if (l + 1 < nl) p.hidden_sum += ly.out;
    p.layers.push_back(ly);
  }
  for (int64_t w : widths) p.max_width = std::max(p.max_width, w);
  if (B == 0) return;
  run(p, reinterpret_cast<const T*>(t), num_threads);
}

}  // namespace

const char* cnf_simd() { return simd::isa_name(simd::pick_isa()); }

void cnf_dynamics_fwd_cpu(int64_t t, int64_t z, int64_t c, int64_t noise, const std::vector<int64_t>& weights,
                          const std::vector<int64_t>& widths, int64_t dz, int64_t div, int64_t B, int64_t C,
                          int64_t activation, int64_t divergence, bool float64, int64_t num_threads) {
  check_cnf("cnf_dynamics_fwd", B, C, weights, widths, activation, divergence, {{z, "z"}, {dz, "dz"}});
  check_ptr(t, "t", 1);
  if (C > 0) check_ptr(c, "c", B);
  if (divergence != kCnfNone) check_ptr(div, "div", B);
  if (divergence == kCnfHutchinson) check_ptr(noise, "noise", B);
  if (float64)
    launch<double>(t, z, c, noise, weights, widths, dz, div, B, C, activation, divergence, num_threads);
  else
    launch<float>(t, z, c, noise, weights, widths, dz, div, B, C, activation, divergence, num_threads);
}

}  // namespace cgnf
