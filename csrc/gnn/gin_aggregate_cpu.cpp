// CPU GIN aggregation, forward and backward (math and layout in gnn.h).
//
// Graphs are independent: the batch is split into contiguous chunks over threads
// (common/parallel.h). Per graph, the N x N adjacency is read once into a list of (source row,
// weight) terms for every output row, zero weights dropped; an output row is then a weighted
// sum of a few contiguous rows of h (forward) or of grad_out (backward: grad_h). Output rows
// are produced one after the other, so the stores of a graph are sequential (the forward
// output [N, 2H] is 2N rows of H: predecessor half, successor half); the graph's source rows
// (N x H) stay in L1/L2 while they are reused. Each row is summed in tiles of kTileVecs vector
// accumulators (registers) and every entry is stored once.
//
// Vectorisation: the project builds with plain -O3 (no -march, no OpenMP), so the inner loops
// are written with GCC vector extensions over contiguous rows, and each kernel is compiled for
// AVX-512 (64-byte vectors), AVX2+FMA (32) and baseline x86-64 (SSE2, 16); the widest the CPU
// supports runs, chosen per call (CGNF_SIMD=avx2|generic caps it, as for the NB101 hash). The
// sums over terms keep their order; only independent columns share a vector.
//
// grad_adj (only when asked for) is N^2 pairs of two dot products over H, each summed in two
// vectors of partial sums.
#include <algorithm>

#include "../common/checks.h"
#include "../common/memory.h"
#include "../common/parallel.h"
#include "../common/simd.h"
#include "gnn.h"

namespace cgnf {

namespace {

// Vectors of VB bytes (GCC vector extensions): 64 with AVX-512, 32 with AVX2, 16 with SSE2.
// Written out rather than left to the auto-vectoriser, which versions these loops for
// aliasing and can end up running a scalar fallback.
using simd::Vec;  // csrc/common/simd.h
// Vectors per tile: an output tile is summed in kTileVecs vector registers.
constexpr int kTileVecs = 4;

using simd::loadv;
using simd::storev;

// One output row: sum over terms of w[t] * src[t][k] (k over the row).
template <typename T>
struct Terms {
  int n = 0;
  const T* src[2 * kGinMaxNodes + 1];
  T w[2 * kGinMaxNodes + 1];
  CGNF_INLINE void add(const T* s, T weight) {
    if (weight != T(0)) {
      src[n] = s;
      w[n] = weight;
      ++n;
    }
  }
};

// dst[0, V * L) = sum_t w[t] * src[t][k0, k0 + V * L) with L = VB / sizeof(T) lanes: the
// accumulator is V vector registers, every column is stored once.
template <typename T, int VB, int V>
CGNF_INLINE void combine_vecs(T* dst, const Terms<T>& t, int64_t k0) {
  constexpr int L = VB / sizeof(T);
  Vec<T, VB> acc[V];
  for (int v = 0; v < V; ++v) acc[v] = Vec<T, VB>{};
  for (int p = 0; p < t.n; ++p) {
    const T* s = t.src[p] + k0;
    const T w = t.w[p];
    for (int v = 0; v < V; ++v) {
      Vec<T, VB> x;
      loadv(x, s + v * L);
      acc[v] += w * x;
    }
  }
  for (int v = 0; v < V; ++v) storev(dst + v * L, acc[v]);
}

// The same for columns [k0, k1), fewer than one vector of them.
template <typename T>
CGNF_INLINE void combine_scalar(T* dst, const Terms<T>& t, int64_t k0, int64_t k1) {
  for (int64_t k = k0; k < k1; ++k) {
    T acc = T(0);
    for (int p = 0; p < t.n; ++p) acc += t.w[p] * t.src[p][k];
    dst[k - k0] = acc;
  }
}

// rows[r] holds the terms of the output row at dst + r * dst_stride; rows are written one
// after the other (sequential stores), each in 256-byte tiles, then single vectors, then
// scalars for the last H % L columns.
template <typename T, int VB>
CGNF_INLINE void combine_rows(const Terms<T>* rows, int nrows, T* dst, int64_t dst_stride, int64_t H) {
  constexpr int L = VB / sizeof(T), TILE = kTileVecs * L;
  const int64_t tiles_end = H - H % TILE, vecs_end = H - H % L;
  for (int r = 0; r < nrows; ++r) {
    T* d = dst + r * dst_stride;
    int64_t k = 0;
    for (; k < tiles_end; k += TILE) combine_vecs<T, VB, kTileVecs>(d + k, rows[r], k);
    for (; k < vecs_end; k += L) combine_vecs<T, VB, 1>(d + k, rows[r], k);
    if (k < H) combine_scalar(d + k, rows[r], k, H);
  }
}

// <x, y> + <u, v> over H entries, in two vectors of partial sums.
template <typename T, int VB>
CGNF_INLINE T dot2(const T* x, const T* y, const T* u, const T* v, int64_t H) {
  constexpr int L = VB / sizeof(T);
  Vec<T, VB> acc0 = Vec<T, VB>{}, acc1 = Vec<T, VB>{}, a, b, c, d;
  int64_t k = 0;
  for (; k + 2 * L <= H; k += 2 * L) {
    loadv(a, x + k), loadv(b, y + k), loadv(c, u + k), loadv(d, v + k);
    acc0 += a * b + c * d;
    loadv(a, x + k + L), loadv(b, y + k + L), loadv(c, u + k + L), loadv(d, v + k + L);
    acc1 += a * b + c * d;
  }
  for (; k + L <= H; k += L) {
    loadv(a, x + k), loadv(b, y + k), loadv(c, u + k), loadv(d, v + k);
    acc0 += a * b + c * d;
  }
  acc0 += acc1;
  T s = T(0);
  for (int l = 0; l < L; ++l) s += acc0[l];
  for (; k < H; ++k) s += x[k] * y[k] + u[k] * v[k];
  return s;
}

template <typename T>
struct Args {
  const T* adj;       // [B, N, N]
  const T* h;         // [B, N, H]   (may be null in backward without grad_adj)
  const T* grad_out;  // [B, N, 2H]  (backward)
  T* out;             // [B, N, 2H]  forward: out; backward: grad_h [B, N, H]
  T* grad_adj;        // [B, N, N]   (backward, optional)
  int64_t N, H;
  T self;             // 1 + eps
};

// Forward of graphs [lo, hi): rows 0..N-1 of `out` are the predecessor halves (stride 2H, at
// column 0) and the successor halves (at column H).
template <typename T, int VB>
CGNF_INLINE void fwd_range(const Args<T>& p, int64_t lo, int64_t hi) {
  const int64_t N = p.N, H = p.H;
  Terms<T> rows[2 * kGinMaxNodes];  // out[b] as 2N rows of H: predecessor half, successor half
  for (int64_t b = lo; b < hi; ++b) {
    const T* a = p.adj + b * N * N;
    const T* h = p.h + b * N * H;
    for (int64_t i = 0; i < N; ++i) {
      Terms<T>& pred = rows[2 * i];
      Terms<T>& succ = rows[2 * i + 1];
      pred.n = succ.n = 0;
      pred.add(h + i * H, p.self);
      for (int64_t j = 0; j < N; ++j) {
        pred.add(h + j * H, a[j * N + i]);
        succ.add(h + j * H, a[i * N + j]);
      }
    }
    combine_rows<T, VB>(rows, int(2 * N), p.out + b * N * 2 * H, H, H);
  }
}

// Backward of graphs [lo, hi): grad_h row j from g1 rows (own and successors) and g2 rows
// (predecessors); then grad_adj when asked for.
template <typename T, int VB>
CGNF_INLINE void bwd_range(const Args<T>& p, int64_t lo, int64_t hi) {
  const int64_t N = p.N, H = p.H;
  Terms<T> rows[kGinMaxNodes];
  for (int64_t b = lo; b < hi; ++b) {
    const T* a = p.adj + b * N * N;
    const T* g = p.grad_out + b * N * 2 * H;
    for (int64_t j = 0; j < N; ++j) {
      rows[j].n = 0;
      rows[j].add(g + j * 2 * H, p.self);
      for (int64_t i = 0; i < N; ++i) {
        rows[j].add(g + i * 2 * H, a[j * N + i]);
        rows[j].add(g + i * 2 * H + H, a[i * N + j]);
      }
    }
    combine_rows<T, VB>(rows, int(N), p.out + b * N * H, H, H);
    if (p.grad_adj) {
      const T* h = p.h + b * N * H;
      T* ga = p.grad_adj + b * N * N;
      for (int64_t x = 0; x < N; ++x)
        for (int64_t c = 0; c < N; ++c)
          ga[x * N + c] = dot2<T, VB>(h + x * H, g + c * 2 * H, g + x * 2 * H + H, h + c * H, H);
    }
  }
}

// One copy of each kernel per instruction set, each with its vector width (the always-inline
// bodies compile into each).
#ifdef CGNF_SIMD_X86
template <typename T>
__attribute__((target("avx512f"))) void fwd_avx512(const Args<T>& p, int64_t lo, int64_t hi) {
  fwd_range<T, 64>(p, lo, hi);
}
template <typename T>
__attribute__((target("avx512f"))) void bwd_avx512(const Args<T>& p, int64_t lo, int64_t hi) {
  bwd_range<T, 64>(p, lo, hi);
}
template <typename T>
__attribute__((target("avx2,fma"))) void fwd_avx2(const Args<T>& p, int64_t lo, int64_t hi) {
  fwd_range<T, 32>(p, lo, hi);
}
template <typename T>
__attribute__((target("avx2,fma"))) void bwd_avx2(const Args<T>& p, int64_t lo, int64_t hi) {
  bwd_range<T, 32>(p, lo, hi);
}
#endif
template <typename T>
void fwd_generic(const Args<T>& p, int64_t lo, int64_t hi) {
  fwd_range<T, 16>(p, lo, hi);
}
template <typename T>
void bwd_generic(const Args<T>& p, int64_t lo, int64_t hi) {
  bwd_range<T, 16>(p, lo, hi);
}

template <typename T>
using Kernel = void (*)(const Args<T>&, int64_t, int64_t);

template <typename T>
Kernel<T> pick_kernel(bool backward) {
  switch (simd::pick_isa()) {
#ifdef CGNF_SIMD_X86
    case simd::Isa::kAvx512:
      return backward ? bwd_avx512<T> : fwd_avx512<T>;
    case simd::Isa::kAvx2:
      return backward ? bwd_avx2<T> : fwd_avx2<T>;
#endif
    default:
      return backward ? bwd_generic<T> : fwd_generic<T>;
  }
}

template <typename T>
void run(const Args<T>& p, int64_t B, bool backward, int64_t num_threads) {
  const Kernel<T> fn = pick_kernel<T>(backward);
  // Chunks of at least ~64K feature entries, so a thread's start-up cost stays small.
  const int64_t min_chunk = std::max<int64_t>(1, (int64_t{1} << 16) / (p.N * p.H));
  parallel_for(B, num_threads, min_chunk, [&](int64_t lo, int64_t hi) { fn(p, lo, hi); });
}

}  // namespace

const char* gin_simd() { return simd::isa_name(simd::pick_isa()); }

void gin_aggregate_fwd_cpu(int64_t adj, int64_t h, int64_t out, int64_t B, int64_t N, int64_t H, double eps,
                           bool float64, int64_t num_threads) {
  check_gin("gin_aggregate_fwd", B, N, H, {{adj, "adj"}, {h, "h"}, {out, "out"}});
  advise_huge_pages(reinterpret_cast<void*>(out), size_t(B * N * 2 * H) * (float64 ? 8 : 4));
  if (float64) {
    const Args<double> p{reinterpret_cast<const double*>(adj), reinterpret_cast<const double*>(h), nullptr,
                         reinterpret_cast<double*>(out), nullptr, N, H, 1.0 + eps};
    run(p, B, false, num_threads);
  } else {
    const Args<float> p{reinterpret_cast<const float*>(adj), reinterpret_cast<const float*>(h), nullptr,
                        reinterpret_cast<float*>(out), nullptr, N, H, static_cast<float>(1.0 + eps)};
    run(p, B, false, num_threads);
  }
}

void gin_aggregate_bwd_cpu(int64_t grad_out, int64_t adj, int64_t h, int64_t grad_h, int64_t grad_adj, int64_t B,
                           int64_t N, int64_t H, double eps, bool float64, int64_t num_threads) {
  check_gin("gin_aggregate_bwd", B, N, H, {{grad_out, "grad_out"}, {adj, "adj"}, {grad_h, "grad_h"}});
  if (grad_adj) check_ptr(h, "h (needed for grad_adj)", B);
  advise_huge_pages(reinterpret_cast<void*>(grad_h), size_t(B * N * H) * (float64 ? 8 : 4));
  if (float64) {
    const Args<double> p{reinterpret_cast<const double*>(adj), reinterpret_cast<const double*>(h),
                         reinterpret_cast<const double*>(grad_out), reinterpret_cast<double*>(grad_h),
                         reinterpret_cast<double*>(grad_adj), N, H, 1.0 + eps};
    run(p, B, true, num_threads);
  } else {
    const Args<float> p{reinterpret_cast<const float*>(adj), reinterpret_cast<const float*>(h),
                        reinterpret_cast<const float*>(grad_out), reinterpret_cast<float*>(grad_h),
                        reinterpret_cast<float*>(grad_adj), N, H, static_cast<float>(1.0 + eps)};
    run(p, B, true, num_threads);
  }
}

}  // namespace cgnf
