// CPU canonical codes: graphs are independent; contiguous chunks of the batch go to threads.
// On x86 with SSE4.1: batches of 8x8 matrices run code_sse41_lanes (the forced prefix with its
// state in vector lanes; a tie goes to the branching search), other N the branching search with
// a level's eight candidate keys scanned in one vector (PHMINPOSUW finds the smallest).
// Elsewhere, or with CGNF_SIMD=generic|scalar (read per call, so tests check both paths), the
// branching search with the portable scan that the CUDA kernel also runs.
#include <cstdlib>
#include <string>

#include "../common/checks.h"
#include "../common/parallel.h"
#include "../common/simd.h"
#include "dag.h"
#include "graph_impl.h"
#include "space_impl.h"

#ifdef CGNF_SIMD_X86
#include <immintrin.h>
#endif

namespace cgnf {

namespace {

// Codes of graphs [lo, hi) into out (-1 where a graph does not load): 8x8 matrices through
// load_bits8 and code8, other N row by row through codeN. Inlined into each caller, so the
// per-graph functions run with the caller's instruction set.
template <typename Code8, typename CodeN>
CGNF_INLINE void codes_range(const uint8_t* a, const int8_t* l, const int8_t* nn, int64_t* out, int64_t lo, int64_t hi,
                             int64_t N, Code8 code8, CodeN codeN) {
  BitGraph g;
  if (N == 8) {
    for (int64_t b = lo; b < hi; ++b) out[b] = load_bits8(a + b * 64, l + b * 8, nn[b], g) ? int64_t(code8(g)) : -1;
  } else {
    for (int64_t b = lo; b < hi; ++b)
      out[b] = load_bits(a + b * N * N, l + b * N, nn[b], N, g) ? int64_t(codeN(g)) : -1;
  }
}

#ifdef CGNF_SIMD_X86
#pragma GCC push_options
#pragma GCC target("sse4.1")
namespace sse41 {
#include "canonical_search.inc"
}  // namespace sse41

// KeyScanScalar's contract with 16-bit lanes: key = label << 8 | in-bits, 0xffff where blocked.
struct KeyScanSse41 {
  __m128i lab16;
  uint64_t pred64;
  explicit KeyScanSse41(const BitGraph& g) {
    uint64_t lab64;
    std::memcpy(&lab64, g.label, 8);
    std::memcpy(&pred64, g.pred, 8);
    lab16 = _mm_slli_epi16(_mm_cvtepu8_epi16(_mm_cvtsi64_si128(static_cast<long long>(lab64))), 8);
  }
  CGNF_INLINE uint32_t operator()(uint32_t avail, uint32_t placed, uint64_t inb, uint32_t* keep) const {
    // Non-zero byte v: v waits for a predecessor, or is not available.
    const uint64_t blocked = (pred64 & (uint64_t(~placed & 0xffu) * 0x0101010101010101ull)) | (spread_bytes(~avail) * 0xffu);
    const __m128i zero = _mm_setzero_si128();
    const __m128i bad = _mm_cmpeq_epi16(_mm_cvtepu8_epi16(_mm_cvtsi64_si128(static_cast<long long>(blocked))), zero);
    const __m128i key = _mm_or_si128(_mm_or_si128(lab16, _mm_cvtepu8_epi16(_mm_cvtsi64_si128(static_cast<long long>(inb)))),
                                     _mm_xor_si128(bad, _mm_set1_epi16(-1)));
    const uint32_t mn = uint32_t(_mm_cvtsi128_si32(_mm_minpos_epu16(key))) & 0xffffu;
    const __m128i eq = _mm_cmpeq_epi16(key, _mm_set1_epi16(static_cast<short>(mn)));
    *keep = uint32_t(_mm_movemask_epi8(_mm_packs_epi16(eq, zero)));
    return mn;
  }
};

// Constant 16-bit lane vectors, as data (no code runs at load time: this file's functions may
// use instructions the CPU lacks until use_sse41() says otherwise).
struct LaneTables {
  alignas(16) uint16_t clear[kMax][kMax];        // [v]: all lanes ~(1 << v)
  alignas(16) uint16_t bit[kMax][kMax];          // [p]: all lanes 1 << p
  alignas(16) uint16_t not_mid[kMax + 1][kMax];  // [n]: 0x100 in lanes 0 and >= n - 1 (never candidates)
  alignas(16) uint16_t lane_bit[kMax];           // lane x = 1 << x
};

constexpr LaneTables make_lane_tables() {
  LaneTables t{};
  for (int v = 0; v < kMax; ++v) {
    for (int x = 0; x < kMax; ++x) {
      t.clear[v][x] = uint16_t(~(1u << v));
      t.bit[v][x] = uint16_t(1u << v);
    }
    t.lane_bit[v] = uint16_t(1u << v);
  }
  for (int n = 0; n <= kMax; ++n)
    for (int x = 0; x < kMax; ++x) t.not_mid[n][x] = (x == 0 || x >= n - 1) ? 0x100 : 0;
  return t;
}

constexpr LaneTables kLanes = make_lane_tables();

inline __m128i lanes(const uint16_t* row) { return _mm_load_si128(reinterpret_cast<const __m128i*>(row)); }

// The canonical code of one graph with the forced prefix's state in vector lanes, one lane per
// vertex: `wait` holds each vertex's unplaced predecessors (0x100 once placed, or if it is not
// intermediate), `inb` its in-edge bits by position, keys as in KeyScanScalar. A level finds
// the smallest key (PHMINPOSUW), the lane(s) holding it, and from that lane alone (no trip
// through general registers or memory) the vertex's bit, its out-edges and the new state; the
// per-graph search above spends about twice as long a level on its chain of dependent steps.
// A tie hands the graph to that search.
uint64_t code_sse41_lanes(const BitGraph& g) {
  const int n = g.n;
  if (n == 2) return pack_structural(2, nullptr) | uint64_t(g.pred[1] & 1u);
  uint64_t lab64, pred64;
  std::memcpy(&lab64, g.label, 8);
  std::memcpy(&pred64, g.pred, 8);
  const __m128i zero = _mm_setzero_si128();
  const __m128i ones = _mm_set1_epi16(-1);
  const __m128i word0 = _mm_set1_epi16(0x0100);  // PSHUFB: every lane <- lane 0
  const __m128i placed_flag = _mm_set1_epi16(0x100);
  const __m128i lab = _mm_slli_epi16(_mm_cvtepu8_epi16(_mm_cvtsi64_si128(static_cast<long long>(lab64))), 8);
  const __m128i pred = _mm_cvtepu8_epi16(_mm_cvtsi64_si128(static_cast<long long>(pred64)));
  __m128i wait = _mm_or_si128(_mm_and_si128(pred, lanes(kLanes.clear[0])), lanes(kLanes.not_mid[n]));
  // lane x: bit 0 where 0 -> x
  __m128i inb = _mm_and_si128(_mm_cmpeq_epi16(_mm_and_si128(pred, lanes(kLanes.bit[0])), lanes(kLanes.bit[0])), lanes(kLanes.bit[0]));
  uint64_t code = uint64_t(n);
  uint32_t placed = 1u;  // as a bitmask too, for the branching search
  for (int p = 1; p < n - 1; ++p) {
    const __m128i key = _mm_or_si128(_mm_or_si128(lab, inb), _mm_xor_si128(_mm_cmpeq_epi16(wait, zero), ones));
    const __m128i mp = _mm_minpos_epu16(key);
    __m128i sel = _mm_cmpeq_epi16(key, _mm_shuffle_epi8(mp, word0));  // lanes holding the minimum
    // The bits of those vertices in every lane (one bit without a tie): PSADBW sums each
    // half's bytes.
    __m128i vb = _mm_sad_epu8(_mm_and_si128(sel, lanes(kLanes.lane_bit)), zero);
    vb = _mm_shuffle_epi8(_mm_or_si128(vb, _mm_shuffle_epi32(vb, 0x4e)), word0);
    const uint32_t eq = uint32_t(_mm_movemask_epi8(sel)) & 0x5555u;
    const uint32_t r = uint32_t(_mm_cvtsi128_si32(mp));
    if (eq & (eq - 1)) {
      // A tie between vertices with equal keys (same label, same predecessors). If they also
      // have the same successors (twins: every vertex has all of them or none as
      // predecessors), swapping them is an automorphism and either may go first: take the
      // lowest. Otherwise the branching search decides.
      const __m128i t = _mm_and_si128(pred, vb);
      if (_mm_movemask_epi8(_mm_or_si128(_mm_cmpeq_epi16(t, zero), _mm_cmpeq_epi16(t, vb))) != 0xffff) {
        const uint64_t inb64 = uint64_t(_mm_cvtsi128_si64(_mm_packus_epi16(inb, zero)));
        return sse41::canonical_code_branch(g, KeyScanSse41(g), p, placed, inb64, code,
                                            uint32_t(_mm_cvtsi128_si32(vb)) & 0xffu, r & 0xffffu);
      }
      vb = lanes(kLanes.bit[(r >> 16) & 7]);
      sel = _mm_cmpeq_epi16(lanes(kLanes.lane_bit), vb);
    }
    const uint32_t mn = r & 0xffffu;
    code = (((code << kLabelBits) | (mn >> 8)) << p) | (mn & 0xffu);
    placed |= 1u << ((r >> 16) & 7);
    const __m128i succ = _mm_cmpeq_epi16(_mm_and_si128(pred, vb), vb);  // lanes x with v -> x
    inb = _mm_or_si128(inb, _mm_and_si128(succ, lanes(kLanes.bit[p])));
    wait = _mm_or_si128(_mm_andnot_si128(vb, wait), _mm_and_si128(sel, placed_flag));
  }
  alignas(16) uint16_t last[kMax];
  _mm_store_si128(reinterpret_cast<__m128i*>(last), inb);
  return (code << (n - 1)) | last[n - 1];
}

void codes_sse41(const uint8_t* a, const int8_t* l, const int8_t* nn, int64_t* out, int64_t lo, int64_t hi, int64_t N) {
  codes_range(a, l, nn, out, lo, hi, N, [](const BitGraph& g) { return code_sse41_lanes(g); },
              [](const BitGraph& g) { return sse41::canonical_code_search(g, KeyScanSse41(g)); });
}
#pragma GCC pop_options
#endif

void codes_generic(const uint8_t* a, const int8_t* l, const int8_t* nn, int64_t* out, int64_t lo, int64_t hi, int64_t N) {
  codes_range(a, l, nn, out, lo, hi, N, canonical_code_bits, canonical_code_bits);
}

bool use_sse41() {
#ifdef CGNF_SIMD_X86
  __builtin_cpu_init();
  const char* cap = std::getenv("CGNF_SIMD");
  const std::string want = cap ? cap : "";
  return want != "generic" && want != "scalar" && __builtin_cpu_supports("sse4.1");
#else
  return false;
#endif
}

}  // namespace

const char* canonical_simd() { return use_sse41() ? "sse4.1" : "generic"; }

void dag_canonical_code_cpu(int64_t adj, int64_t labels, int64_t n, int64_t out_code, int64_t B, int64_t N,
                            int64_t num_threads) {
  check_batch("dag_canonical_code", B, N, {{adj, "adj"}, {labels, "labels"}, {n, "n"}, {out_code, "out_code"}});
  auto* a = reinterpret_cast<const uint8_t*>(adj);
  auto* l = reinterpret_cast<const int8_t*>(labels);
  auto* nn = reinterpret_cast<const int8_t*>(n);
  auto* out = reinterpret_cast<int64_t*>(out_code);
  auto* codes = codes_generic;
#ifdef CGNF_SIMD_X86
  if (use_sse41()) codes = codes_sse41;
#endif
  parallel_for(B, num_threads, 1024, [&](int64_t lo, int64_t hi) { codes(a, l, nn, out, lo, hi, N); });
}

void dag_network_code_cpu(int64_t adj, int64_t labels, int64_t n, int64_t out_words, int64_t B, int64_t N,
                          int64_t identity_labels, int64_t num_threads) {
  check_batch("dag_network_code", B, N, {{adj, "adj"}, {labels, "labels"}, {n, "n"}, {out_words, "out_words"}});
  auto* a = reinterpret_cast<const uint8_t*>(adj);
  auto* l = reinterpret_cast<const int8_t*>(labels);
  auto* nn = reinterpret_cast<const int8_t*>(n);
  auto* out = reinterpret_cast<uint64_t*>(out_words);
  const uint32_t identity = uint32_t(identity_labels);
  parallel_for(B, num_threads, 256, [&](int64_t lo, int64_t hi) {
    SmallGraph g, f;
    CanonResult r;
    for (int64_t b = lo; b < hi; ++b) {
      uint64_t* w = out + 4 * b;
      if (!load_graph(a + b * N * N, l + b * N, nn[b], N, g)) {
        w[0] = w[1] = w[2] = w[3] = 0;  // flagged: no code has a zero top word (it holds n)
        continue;
      }
      uint32_t S = 0;  // identity vertices
      for (int v = 1; v < g.n - 1; ++v)
        if (g.label[v] >= 0 && g.label[v] < 32 && (identity >> g.label[v] & 1u)) S |= 1u << v;
      fold_labelled(g, S, f);
      canon_search(f, kNetworkWeightBits, nullptr, r, NoLeaf{});
      const Wide x = pack_wide(f.n, r.chunk, kNetworkWeightBits);
      for (int i = 0; i < 4; ++i) w[i] = x.w[i];
    }
  });
}

// dag_nb101_hash_cpu: multi-buffer SIMD MD5, in nb101_hash_cpu.cpp.

}  // namespace cgnf
