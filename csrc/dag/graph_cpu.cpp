// CPU canonical codes: graphs are independent; contiguous chunks of the batch go to threads.
// On x86 with SSE4.1 a level of the search scans its eight candidate keys in one vector
// (PHMINPOSUW finds the smallest); elsewhere, or with CGNF_SIMD=generic|scalar (read per call,
// so tests can check both paths), the portable scan that the CUDA kernel also runs.
#include <cstdlib>
#include <string>

#include "../common/checks.h"
#include "../common/parallel.h"
#include "../common/simd.h"
#include "dag.h"
#include "graph_impl.h"

#ifdef CGNF_SIMD_X86
#include <immintrin.h>
#endif

namespace cgnf {

namespace {

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

void codes_sse41(const uint8_t* a, const int8_t* l, const int8_t* nn, int64_t* out, int64_t lo, int64_t hi, int64_t N) {
  BitGraph g;
  if (N == 8) {
    for (int64_t b = lo; b < hi; ++b)
      out[b] = load_bits8(a + b * 64, l + b * 8, nn[b], g) ? int64_t(sse41::canonical_code_search(g, KeyScanSse41(g))) : -1;
  } else {
    for (int64_t b = lo; b < hi; ++b)
      out[b] = load_bits(a + b * N * N, l + b * N, nn[b], N, g) ? int64_t(sse41::canonical_code_search(g, KeyScanSse41(g))) : -1;
  }
}
#pragma GCC pop_options
#endif

void codes_generic(const uint8_t* a, const int8_t* l, const int8_t* nn, int64_t* out, int64_t lo, int64_t hi, int64_t N) {
  BitGraph g;
  if (N == 8) {
    for (int64_t b = lo; b < hi; ++b)
      out[b] = load_bits8(a + b * 64, l + b * 8, nn[b], g) ? int64_t(canonical_code_bits(g)) : -1;
  } else {
    for (int64_t b = lo; b < hi; ++b)
      out[b] = load_bits(a + b * N * N, l + b * N, nn[b], N, g) ? int64_t(canonical_code_bits(g)) : -1;
  }
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

// dag_nb101_hash_cpu: multi-buffer SIMD MD5, in nb101_hash_cpu.cpp.

}  // namespace cgnf
