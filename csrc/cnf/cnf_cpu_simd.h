// Vector math and the register-blocked GEMM over feature-major buffers shared by the CPU CNF
// kernels (cnf_dynamics_cpu.cpp: the forward; cnf_adjoint_cpu.cpp: the adjoint's vector-Jacobian
// products). Header-only and always inlined, so each ISA-specific copy of a kernel
// (target("avx512f") / target("avx2,fma") / baseline) compiles its own vector width.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

#include "../common/simd.h"
#include "cnf.h"

namespace cgnf {
namespace cnf_cpu {

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
// The NR x V register block of W X (kAcc: plus Y's block, [NR][V vectors] at row stride ys),
// handed to store(i, v, acc[i][v]) from the registers.
template <typename T, int VB, int NR, int V, bool kAcc, typename St>
CGNF_INLINE void block_to(const T* const* w, int64_t K, const T* X, int64_t xs, const T* Y, int64_t ys, St&& store) {
  constexpr int L = VB / sizeof(T);
  using Vt = Vec<T, VB>;
  Vt acc[NR][V];
  for (int i = 0; i < NR; ++i)
    for (int v = 0; v < V; ++v) {
      if constexpr (kAcc)
        loadv(acc[i][v], Y + i * ys + v * L);
      else
        acc[i][v] = Vt{};
    }
  for (int64_t k = 0; k < K; ++k) {
    Vt x[V];
    for (int v = 0; v < V; ++v) loadv(x[v], X + k * xs + v * L);
    for (int i = 0; i < NR; ++i) {
      const T wk = w[i][k];
      for (int v = 0; v < V; ++v) acc[i][v] += wk * x[v];
    }
  }
  for (int i = 0; i < NR; ++i)
    for (int v = 0; v < V; ++v) store(i, v, acc[i][v]);
}

// The NR x V register block of Y = W X (kAcc: Y += W X), stored into Y's rows (NR rows, also
// past N: the callers' buffers have the padding).
template <typename T, int VB, int NR, int V, bool kAcc>
CGNF_INLINE void block(const T* const* w, int64_t K, const T* X, int64_t xs, T* Y, int64_t ys) {
  constexpr int L = VB / sizeof(T);
  block_to<T, VB, NR, V, kAcc>(w, K, X, xs, Y, ys, [&](int i, int v, const Vec<T, VB>& a) CGNF_INLINE_LAMBDA {
    storev(Y + i * ys + v * L, a);
  });
}

// The probe-major products: each NR x V register block of W [N, K] X [K][nv vectors] handed
// straight from the registers to st(row, vector, acc), with no store, reload and store again
// of an epilogue pass. Blocks past N hand rows up to round_up(N, NR) - 1 (W's last row again).
template <typename T, int VB, int NR, typename St>
CGNF_INLINE void gemm_probe_to(const T* W, int64_t ldw, int64_t N, int64_t K, const T* X, int64_t xs, int64_t nv,
                               St&& st) {
  constexpr int L = VB / sizeof(T);
  auto run = [&](auto vcount, const T* const* w, int64_t n0, int64_t v0) CGNF_INLINE_LAMBDA {
    constexpr int V = decltype(vcount)::value;
    auto to_st = [&](int i, int v, const Vec<T, VB>& a) CGNF_INLINE_LAMBDA { st(n0 + i, v0 + v, a); };
    block_to<T, VB, NR, V, false>(w, K, X + v0 * L, xs, nullptr, 0, to_st);  // (no Y to add: kAcc is false)
  };
  for (int64_t n0 = 0; n0 < N; n0 += NR) {
    const T* w[NR];
    for (int i = 0; i < NR; ++i) w[i] = W + std::min<int64_t>(n0 + i, N - 1) * ldw;
    int64_t v = 0;
    for (; v + 2 <= nv; v += 2) run(std::integral_constant<int, 2>{}, w, n0, v);
    if (v < nv) run(std::integral_constant<int, 1>{}, w, n0, v);
  }
}

// Y [N][nv vectors] = W X times scale[column] (one value per column of Y), and the unscaled W X
// into Q [N][nv vectors] (row stride ys too) when kQ: tangents times a layer's scales. Blocks
// past N write Y's (and Q's) padding rows (round_up(N, NR) rows).
template <typename T, int VB, int NR, bool kQ>
CGNF_INLINE void gemm_probe(const T* W, int64_t ldw, int64_t N, int64_t K, const T* X, int64_t xs, int64_t nv, T* Y,
                            int64_t ys, const T* scale, T* Q) {
  constexpr int L = VB / sizeof(T);
  using Vt = Vec<T, VB>;
  gemm_probe_to<T, VB, NR>(W, ldw, N, K, X, xs, nv, [&](int64_t n, int64_t v, const Vt& a) CGNF_INLINE_LAMBDA {
    const int64_t o = n * ys + v * L;
    if constexpr (kQ) storev(Q + o, a);
    Vt sc;  // (loaded here, not held over the K loop: AVX2 has 16 registers)
    loadv(sc, scale + v * L);
    storev(Y + o, a * sc);
  });
}

// Y[n0 + i][v-th vector] = epi(n0 + i, v, sum_k w[i][k] * X[k][v-th vector]) for i < NR, v < V:
// the block, then the epilogue over it while it is in L1 (rows n0 + i < N only). (Running it on
// the registers directly measured no faster and unrolls the epilogue NR x V times.)
template <typename T, int VB, int NR, int V, typename Epi>
CGNF_INLINE void micro(const T* const* w, int64_t K, const T* X, int64_t xs, T* Y, int64_t ys, int64_t n0,
                       int64_t N, int v0, Epi& epi) {
  constexpr int L = VB / sizeof(T);
  using Vt = Vec<T, VB>;
  block<T, VB, NR, V, false>(w, K, X, xs, Y, ys);
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

// Y [N][nv vectors] += W [N, K] X [K][nv vectors]: gemm without an epilogue, accumulating into
// Y (Y must have round_up(N, NR) rows: a block past N accumulates into Y's padding rows).
template <typename T, int VB, int NR>
CGNF_INLINE void gemm_acc(const T* W, int64_t ldw, int64_t N, int64_t K, const T* X, int64_t xs, int64_t nv, T* Y,
                          int64_t ys) {
  constexpr int L = VB / sizeof(T);
  for (int64_t n0 = 0; n0 < N; n0 += NR) {
    const T* w[NR];
    for (int i = 0; i < NR; ++i) w[i] = W + std::min<int64_t>(n0 + i, N - 1) * ldw;
    int64_t v = 0;
    for (; v + 2 <= nv; v += 2) block<T, VB, NR, 2, true>(w, K, X + v * L, xs, Y + n0 * ys + v * L, ys);
    if (v < nv) block<T, VB, NR, 1, true>(w, K, X + v * L, xs, Y + n0 * ys + v * L, ys);
  }
}

// Y [N][nv vectors] += sum_s A_s^T X_s over R pairs, each A_s stored transposed, [K][lda]
// (A_s^T[n][k] = A_s[k * lda + n]), X_s [K][nv vectors] (row stride xs): the register block
// broadcasts NR consecutive scalars of one row of A_s (immediate offsets from one pointer) and
// stays in registers over all R pairs, so Y is loaded and stored once per R K-long sums. A_s's
// rows must hold round_up(N, NR) readable values and Y round_up(N, NR) rows (blocks past N
// compute into Y's padding rows).
template <typename T, int VB, int NR, int V>
CGNF_INLINE void block_t(const T* const* A, int64_t lda, const T* const* X, int64_t xs, int R, int64_t K,
                         int64_t n0, int64_t v0, T* Y, int64_t ys) {
  constexpr int L = VB / sizeof(T);
  using Vt = Vec<T, VB>;
  Vt acc[NR][V];
  for (int i = 0; i < NR; ++i)
    for (int v = 0; v < V; ++v) loadv(acc[i][v], Y + i * ys + v * L);
  for (int s = 0; s < R; ++s) {
    const T* a0 = A[s] + n0;
    const T* x0 = X[s] + v0 * L;
    for (int64_t k = 0; k < K; ++k) {
      Vt x[V];
      for (int v = 0; v < V; ++v) loadv(x[v], x0 + k * xs + v * L);
      const T* a = a0 + k * lda;
      for (int i = 0; i < NR; ++i) {
        const T ak = a[i];
        for (int v = 0; v < V; ++v) acc[i][v] += ak * x[v];
      }
    }
  }
  for (int i = 0; i < NR; ++i)
    for (int v = 0; v < V; ++v) storev(Y + i * ys + v * L, acc[i][v]);
}

template <typename T, int VB, int NR>
CGNF_INLINE void gemm_tacc(const T* const* A, int64_t lda, const T* const* X, int64_t xs, int R, int64_t N,
                           int64_t K, int64_t nv, T* Y, int64_t ys) {
  constexpr int L = VB / sizeof(T);
  for (int64_t n0 = 0; n0 < N; n0 += NR) {
    int64_t v = 0;
    for (; v + 2 <= nv; v += 2) block_t<T, VB, NR, 2>(A, lda, X, xs, R, K, n0, v, Y + n0 * ys + v * L, ys);
    if (v < nv) block_t<T, VB, NR, 1>(A, lda, X, xs, R, K, n0, v, Y + n0 * ys + v * L, ys);
  }
}

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// A zero-padded copy of a row-major [rows, cols] matrix W with row stride ld >= the copy's
// width: W itself [rows][ld], or (transpose) W^T [cols][ld] (the probe-major paths' layouts).
template <typename T>
std::vector<T> padded(const T* W, int64_t rows, int64_t cols, int64_t ld, bool transpose) {
  std::vector<T> out(size_t((transpose ? cols : rows) * ld), T(0));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) out[transpose ? c * ld + r : r * ld + c] = W[r * cols + c];
  return out;
}

// Y[d][:] = A[d][:] * s for d < rows, over nv vectors (row strides lda, ys): the first
// tangents J_1^T = W_0^T diag(s_0) of the probe-major exact divergence.
template <typename T, int VB>
CGNF_INLINE void rows_times(const T* A, int64_t lda, const T* s, int64_t rows, int64_t nv, T* Y, int64_t ys) {
  constexpr int L = VB / sizeof(T);
  for (int64_t d = 0; d < rows; ++d)
    for (int64_t v = 0; v < nv; ++v) {
      Vec<T, VB> a, sc;
      loadv(a, A + d * lda + v * L);
      loadv(sc, s + v * L);
      storev(Y + d * ys + v * L, a * sc);
    }
}

// A layer table from the flat weight pointers (W, b, G, g, H per layer; cnf.h's layout): each
// entry's W, b, G, g, H, in and out set (the kernel's own fields are left to its prepare).
template <typename T, typename Layer>
void layer_table(const std::vector<int64_t>& weights, const std::vector<int64_t>& widths, std::vector<Layer>& out) {
  const size_t nl = widths.size() - 1;
  for (size_t l = 0; l < nl; ++l) {
    Layer ly{};
    ly.W = reinterpret_cast<const T*>(weights[5 * l]);
    ly.b = reinterpret_cast<const T*>(weights[5 * l + 1]);
    ly.G = reinterpret_cast<const T*>(weights[5 * l + 2]);
    ly.g = reinterpret_cast<const T*>(weights[5 * l + 3]);
    ly.H = reinterpret_cast<const T*>(weights[5 * l + 4]);
    ly.in = widths[l], ly.out = widths[l + 1];
    out.push_back(std::move(ly));
  }
}

// A CPU kernel's problem (Problem or AProblem) for fixed weights, condition and noise: the shared
// fields from the flat arguments, the layer table and the per-layer context biases' offsets,
// then prepare(problem) (the kernel's own: its copy for this CPU and vector width vb, padded
// copies, work split), then the key of its cached buffers' layout. Per-call pointers and the
// time (fold_time) are set by the caller.
template <typename T, typename P, typename Prepare>
std::shared_ptr<P> make_problem(int64_t c, int64_t noise, const std::vector<int64_t>& weights,
                                const std::vector<int64_t>& widths, int64_t B, int64_t C, int64_t activation,
                                int64_t divergence, Prepare&& prepare) {
  auto p = std::make_shared<P>();
  p->c = reinterpret_cast<const T*>(c);
  p->noise = reinterpret_cast<const T*>(noise);
  p->B = B, p->C = C, p->D = widths.front();
  p->softplus = activation == kCnfSoftplus;
  p->divergence = divergence;
  layer_table<T>(weights, widths, p->layers);
  int64_t off = 0;
  for (const auto& ly : p->layers) p->ctx_off.push_back(off), off += ly.out;
  p->gb.assign(size_t(off), T(0));
  p->hb.assign(size_t(off), T(0));
  for (int64_t w : widths) p->max_width = std::max(p->max_width, w);
  prepare(*p);
  p->key = {p->vb, p->C, p->D, p->divergence, p->softplus};
  for (const auto& ly : p->layers) p->key.push_back(ly.out);
  return p;
}

// Folds the time column of the context into the biases of a problem made by make_problem:
// gb = g + G[:, 0] t and hb = H[:, 0] t per layer (once per evaluation).
template <typename T, typename P>
void fold_time(P& p, T t) {
  const int64_t cs = 1 + p.C;
  for (size_t l = 0; l < p.layers.size(); ++l) {
    const auto& ly = p.layers[l];
    T* gb = p.gb.data() + p.ctx_off[l];
    T* hb = p.hb.data() + p.ctx_off[l];
    for (int64_t n = 0; n < ly.out; ++n) {
      gb[n] = ly.g[n] + ly.G[n * cs] * t;
      hb[n] = ly.H[n * cs] * t;
    }
  }
}

}  // namespace cnf_cpu
}  // namespace cgnf
