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
//     hidden layer; then, one batch row at a time, the D tangents are propagated probe-major,
//     as a [D][width] matrix J^T (J_1^T = W_0^T diag(s_0), J_{l+1}^T = J_l^T W_l^T diag(s_l)),
//     with the same GEMM kernel (vectors over the width, blocks of 8 of the D rows), and the
//     trace of the last layer is read off without forming its matrix
//     (sum_d gate_d <W_L[d, :], J^T[d, :]>, one vector sum). (Feature-major [width][D]
//     tangents, with a strided dot product per probe for the trace, measured 14.0 us per row on
//     one thread against 11.4 us, float32, widths 32-128-128-32, 2026-12-07.)
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
#include <memory>
#include <type_traits>
#include <vector>

#include "../common/checks.h"
#include "../common/parallel.h"
#include "../common/simd.h"
#include "cnf.h"
#include "cnf_cpu_simd.h"

namespace cgnf {

namespace {

using namespace cnf_cpu;  // vector math, gemm (cnf_cpu_simd.h)

// ---- the problem and a thread's scratch ------------------------------------------------------

template <typename T>
struct Layer {
  const T* W;  // [out, in]
  const T* b;  // [out]
  const T* G;  // [out, 1 + C]
  const T* g;  // [out]
  const T* H;  // [out, 1 + C]
  int64_t in, out;
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
  std::vector<T> gb, hb;  // per layer (at offsets ctx_off[l]): g + G[:, 0] t, H[:, 0] t
  std::vector<int64_t> ctx_off;
  int64_t max_width = 0;
  // exact divergence with hidden layers, probe-major (module doc): W_0^T [D][ld(w_1)], the last
  // layer's W [D][ld(w_{L-1})] and the middle layers' W^T [in][ld(out)] (ld: rounded up to whole
  // vectors), zero-padded
  std::vector<T> W0T, WLp;
  std::vector<std::vector<T>> WTp;
  // set by prepare(): the kernel copy for this CPU, its vector width in bytes, the tiles and the
  // smallest chunk of tiles worth a thread, and the scratch layout's key
  void (*fn)(const Problem<T>&, std::vector<T>&, int64_t, int64_t) = nullptr;
  int64_t vb = 16, tiles = 0, min_chunk = 1;
  std::vector<int64_t> key;
};

// A thread's buffers, 64-byte aligned, every one a whole number of 64-byte lines.
template <typename T, int VB, int NR>
struct Scratch {
  static constexpr int L = VB / sizeof(T), MB = 2 * L;
  T *x, *y;    // [rows][MB] activations (ping-pong)
  T *tx, *ty;  // [rows][MB] Hutchinson tangents (ping-pong)
  T* nz;       // [D][MB] Hutchinson probe (noise^T)
  T* ct;       // [C][MB] condition^T
  T *gt, *hp;  // [rows][MB] the current layer's gate sigmoid(G ctx + g) and context bias H ctx
  T* sv;       // [rows][MB] Hutchinson: scales s_l of the current layer
  T* gl;       // [D][MB] gate of the last layer (divergences)
  T* sT;       // exact: per hidden layer, the scales s_l of the tile's rows, row-major [MB][WP]
  T *TA, *TB;  // [RD][WP] exact: one batch row's tangents, probe-major (ping-pong)
  int64_t WP = 0, RD = 0;

  Scratch(const Problem<T>& p, std::vector<T>& mem) {
    constexpr int64_t kLine = 64 / sizeof(T);
    const int64_t rows = round_up(p.max_width, NR);
    const bool hut = p.divergence == kCnfHutchinson, exact = p.divergence == kCnfExact;
    // probe-major buffers: rows D padded for the block heights used on them (8, 6), rows of the
    // widest layer in whole vectors
    RD = exact ? round_up(p.D, 24) : 0;
    WP = round_up(p.max_width, L);
    const int64_t hidden = int64_t(p.layers.size()) - 1;
    const int64_t sizes[] = {rows * MB,
                             rows * MB,
                             hut ? rows * MB : 0,
                             hut ? rows * MB : 0,
                             hut ? p.D * MB : 0,
                             p.C * MB,
                             rows * MB,
                             rows * MB,
                             hut ? rows * MB : 0,
                             (hut || exact) ? p.D * MB : 0,
                             exact ? hidden * MB * WP : 0,
                             RD * WP,
                             RD * WP};
    int64_t total = kLine;
    for (int64_t s : sizes) total += round_up(s, kLine);
    if (mem.size() != size_t(total)) mem.assign(size_t(total), T(0));
    uintptr_t base = reinterpret_cast<uintptr_t>(mem.data());
    T* q = reinterpret_cast<T*>((base + 63) / 64 * 64);
    T** slots[] = {&x, &y, &tx, &ty, &nz, &ct, &gt, &hp, &sv, &gl, &sT, &TA, &TB};
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
  constexpr int NRD = NR == 12 ? 8 : NR;  // block height of the products with D rows (D = 32: no padding)
  const int64_t WP = s.WP;
  auto vecs = [&](int64_t w) CGNF_INLINE_LAMBDA { return round_up(w, L) / L; };
  auto srow = [&](int64_t l) CGNF_INLINE_LAMBDA { return s.sT + (l * MB + r) * WP; };  // s_l of row r, zero-padded
  T* ta = s.TA;
  T* tb = s.TB;
  const int64_t nv0 = vecs(p.layers[0].out);  // J_1^T = W_0^T diag(s_0)
  rows_times<T, VB>(p.W0T.data(), nv0 * L, srow(0), D, nv0, ta, WP);
  for (int64_t l = 1; l < nl - 1; ++l) {  // J_{l+1}^T = J_l^T W_l^T diag(s_l)
    const Layer<T>& ly = p.layers[l];
    const int64_t nvo = vecs(ly.out);
    const T* sl = srow(l);
    gemm_probe<T, VB, NRD, false>(ta, WP, D, ly.in, p.WTp[l].data(), nvo * L, nvo, tb, WP, sl, nullptr);
    std::swap(ta, tb);
  }
  // tr(diag(gate) W_L J) = sum_d gate_d <W_L[d, :], J^T[d, :]>, one vector sum over d and k
  const int64_t nvl = vecs(p.layers[nl - 1].in), ldl = nvl * L;
  V acc{};
  for (int64_t d = 0; d < D; ++d) {
    const T g = s.gl[d * MB + r];
    V part{};
    for (int64_t v = 0; v < nvl; ++v) {
      V w, j;
      loadv(w, p.WLp.data() + d * ldl + v * L);
      loadv(j, ta + d * WP + v * L);
      part += w * j;
    }
    acc += g * part;
  }
  alignas(64) T lanes[L];
  storev(lanes, acc);
  T total = T(0);
  for (int i = 0; i < L; ++i) total += lanes[i];
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
      if (exact) {  // s_l row-major for the probe-major tangents (zero padding past the width stays)
        alignas(64) T lanes[L];
        storev(lanes, dact * gate);
        T* col = s.sT + (l * MB + v * L) * s.WP + n;
        for (int i = 0; i < L; ++i) col[i * s.WP] = lanes[i];
      }
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
CGNF_INLINE void run_range(const Problem<T>& p, std::vector<T>& mem, int64_t lo, int64_t hi) {
  constexpr int MB = 2 * int(VB / sizeof(T));
  Scratch<T, VB, NR> s(p, mem);
  for (int64_t tile = lo; tile < hi; ++tile) run_tile<T, VB, NR>(p, s, tile * MB);
}

// One copy per instruction set, each with its vector width and register block.
#ifdef CGNF_SIMD_X86
template <typename T>
__attribute__((target("avx512f"))) void range_avx512(const Problem<T>& p, std::vector<T>& m, int64_t lo, int64_t hi) {
  run_range<T, 64, 12>(p, m, lo, hi);
}
template <typename T>
__attribute__((target("avx2,fma"))) void range_avx2(const Problem<T>& p, std::vector<T>& m, int64_t lo, int64_t hi) {
  run_range<T, 32, 6>(p, m, lo, hi);
}
#endif
template <typename T>
void range_generic(const Problem<T>& p, std::vector<T>& m, int64_t lo, int64_t hi) {
  run_range<T, 16, 6>(p, m, lo, hi);
}

// What an evaluation needs beyond make_problem's shared fields that does not depend on t, z or
// the outputs: the kernel copy for this CPU, the weights' padded copies and the work split (once
// per solve: cnf_forward_plan_cpu).
template <typename T>
void prepare(Problem<T>& p) {
  simd::Isa isa = simd::pick_isa();
  p.fn = range_generic<T>, p.vb = 16;
#ifdef CGNF_SIMD_X86
  if (isa == simd::Isa::kAvx512) p.fn = range_avx512<T>, p.vb = 64;
  if (isa == simd::Isa::kAvx2) p.fn = range_avx2<T>, p.vb = 32;
#endif
  const int64_t MB = 2 * p.vb / int64_t(sizeof(T));
  p.tiles = (p.B + MB - 1) / MB;
  if (p.divergence == kCnfExact && p.layers.size() > 1) {  // the probe-major path's padded weight copies
    const int64_t lanes = p.vb / int64_t(sizeof(T));
    const Layer<T>& l0 = p.layers.front();
    const Layer<T>& lz = p.layers.back();
    p.W0T = padded(l0.W, l0.out, p.D, round_up(l0.out, lanes), true);
    p.WLp = padded(lz.W, p.D, lz.in, round_up(lz.in, lanes), false);
    p.WTp.resize(p.layers.size());
    for (size_t l = 1; l + 1 < p.layers.size(); ++l) {
      const Layer<T>& ly = p.layers[l];
      p.WTp[l] = padded(ly.W, ly.out, ly.in, round_up(ly.out, lanes), true);
    }
  }
  // Multiply-adds per batch row, to give each thread >= ~16M of them (4M left small batches
  // slower on 2 threads when each call started its threads; kept with the pool).
  int64_t macs = 0;
  for (const Layer<T>& ly : p.layers) macs += ly.out * (ly.in + 2 * p.C + 16);
  if (p.divergence == kCnfHutchinson) macs *= 2;
  if (p.divergence == kCnfExact)
    for (size_t l = 1; l + 1 < p.layers.size(); ++l) macs += p.D * p.layers[l].out * p.layers[l].in;
  p.min_chunk = std::max<int64_t>(1, (int64_t{16} << 20) / std::max<int64_t>(1, macs * MB));
}

// One evaluation at time t of a prepared problem (its z, dz and div pointers set).
template <typename T>
void evaluate(Problem<T>& p, T t, int64_t num_threads) {
  if (p.B == 0) return;
  fold_time(p, t);
  // Each chunk's scratch is kept between calls by the calling thread and reused for the same
  // layout (its writes leave every padding value read at its initial zero): fresh allocations of
  // this size come from mmap and pay their page faults on every call.
  static thread_local std::vector<int64_t> tl_key;
  static thread_local std::vector<std::vector<T>> tl_mem;
  std::vector<std::vector<T>>& mem = tl_mem;  // (the workers must use the caller's thread-local copy)
  if (p.key != tl_key) tl_key = p.key, mem.clear();
  const int64_t chunk = parallel_chunk(p.tiles, num_threads, p.min_chunk);
  if (int64_t(mem.size()) < (p.tiles + chunk - 1) / chunk) mem.resize(size_t((p.tiles + chunk - 1) / chunk));
  parallel_for(p.tiles, num_threads, p.min_chunk, [&](int64_t lo, int64_t hi) { p.fn(p, mem[lo / chunk], lo, hi); });
}

// One evaluation (the op's per-call path): a plan used once.
template <typename T>
void launch(int64_t t, int64_t z, int64_t c, int64_t noise, const std::vector<int64_t>& weights,
            const std::vector<int64_t>& widths, int64_t dz, int64_t div, int64_t B, int64_t C, int64_t activation,
            int64_t divergence, int64_t num_threads) {
  cnf_forward_plan_cpu<T>(c, noise, weights, widths, B, C, activation, divergence, num_threads)(
      *reinterpret_cast<const T*>(t), reinterpret_cast<const T*>(z), reinterpret_cast<T*>(dz),
      reinterpret_cast<T*>(div));
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

template <typename T>
CnfForwardPlan<T> cnf_forward_plan_cpu(int64_t c, int64_t noise, const std::vector<int64_t>& weights,
                                       const std::vector<int64_t>& widths, int64_t B, int64_t C, int64_t activation,
                                       int64_t divergence, int64_t num_threads) {
  auto p = cnf_cpu::make_problem<T, Problem<T>>(c, noise, weights, widths, B, C, activation, divergence, prepare<T>);
  return [p, num_threads](T t, const T* z, T* dz, T* div) {
    p->z = z, p->dz = dz, p->div = div;
    evaluate(*p, t, num_threads);
  };
}
template CnfForwardPlan<float> cnf_forward_plan_cpu<float>(int64_t, int64_t, const std::vector<int64_t>&,
                                                           const std::vector<int64_t>&, int64_t, int64_t, int64_t,
                                                           int64_t, int64_t);
template CnfForwardPlan<double> cnf_forward_plan_cpu<double>(int64_t, int64_t, const std::vector<int64_t>&,
                                                             const std::vector<int64_t>&, int64_t, int64_t, int64_t,
                                                             int64_t, int64_t);

}  // namespace cgnf
