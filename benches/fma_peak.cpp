// One core's fp32 fused multiply-add peak: 12 independent accumulator chains of FMAs on
// registers only (no memory traffic), AVX-512 and AVX2 in turn. The bound that the CNF kernels'
// figures are set against (benches/RESULTS.md, docs/native.md).
//
//     g++ -O3 -mavx512f -mfma benches/fma_peak.cpp -o /tmp/fma_peak && /tmp/fma_peak
//
// (AVX2 alone: -mavx2 -mfma -DNO_AVX512.) Prints G multiply-adds a second per core.
#include <immintrin.h>

#include <chrono>
#include <cstdio>

template <typename V, typename Fma, typename Set, typename Sum>
double peak(int lanes, Fma fma, Set set, Sum sum) {
  constexpr int kChains = 12;  // > FMA latency x pipes, so the chains never wait on each other
  constexpr long kIters = 100000000;
  V acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = set(float(i));
  const V a = set(1.0000001f), b = set(1e-7f);
  const auto t0 = std::chrono::steady_clock::now();
  for (long n = 0; n < kIters; ++n) {
#pragma GCC unroll 12
    for (int i = 0; i < kChains; ++i) acc[i] = fma(acc[i], a, b);  // unrolled: acc stays in registers
  }
  const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  float total = 0;
  for (int i = 0; i < kChains; ++i) total += sum(acc[i]);
  std::printf("  (checksum %g)\n", total);  // keeps the loop
  return double(kIters) * kChains * lanes / dt / 1e9;
}

int main() {
#ifndef NO_AVX512
  const double g512 = peak<__m512>(
      16, [](__m512 x, __m512 y, __m512 z) { return _mm512_fmadd_ps(x, y, z); },
      [](float s) { return _mm512_set1_ps(s); }, [](__m512 x) { return _mm512_reduce_add_ps(x); });
  std::printf("avx512 fp32: %.1f G multiply-adds a second per core\n", g512);
#endif
  const double g256 = peak<__m256>(
      8, [](__m256 x, __m256 y, __m256 z) { return _mm256_fmadd_ps(x, y, z); },
      [](float s) { return _mm256_set1_ps(s); },
      [](__m256 x) {
        alignas(32) float v[8];
        _mm256_store_ps(v, x);
        float s = 0;
        for (float f : v) s += f;
        return s;
      });
  std::printf("avx2 fp32: %.1f G multiply-adds a second per core\n", g256);
  return 0;
}
