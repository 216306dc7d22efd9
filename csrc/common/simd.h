// Portable SIMD vectors (GCC/Clang vector extensions) and the run-time choice of instruction
// set, for CPU kernels compiled once per ISA with __attribute__((target(...))).
//
// The project builds with plain -O3 (no -march), so a kernel that wants AVX-512 or AVX2 is
// written over Vec<T, VB> (VB = vector bytes: 64, 32 or 16) and instantiated inside functions
// carrying the matching target attribute; pick_simd() says which copy the CPU can run.
// CGNF_SIMD=avx2|generic (read on every call) caps the choice, so tests can switch it in-process.
// (The GIN and NB101-hash kernels carry their own copies of this choice; new kernels use this.)
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#if defined(__x86_64__) || defined(__i386__)
#define CGNF_SIMD_X86 1
#endif

#define CGNF_INLINE __attribute__((always_inline)) inline
// For lambdas that run inside an ISA-specific kernel: inlined there, so they get its ISA.
#define CGNF_INLINE_LAMBDA __attribute__((always_inline))

namespace cgnf {
namespace simd {

template <typename T, int VB>
struct VecOf {
  typedef T type __attribute__((vector_size(VB)));
};
// A vector of VB / sizeof(T) lanes of T.
template <typename T, int VB>
using Vec = typename VecOf<T, VB>::type;

// The signed integer of the size of T (for bit tricks and comparison masks).
template <typename T>
struct IntOf;
template <>
struct IntOf<float> {
  using type = int32_t;
};
template <>
struct IntOf<double> {
  using type = int64_t;
};
template <typename T, int VB>
using IVec = Vec<typename IntOf<T>::type, VB>;

// Unaligned loads and stores (memcpy compiles to one vmovups).
template <typename V, typename T>
CGNF_INLINE void loadv(V& v, const T* p) {
  std::memcpy(&v, p, sizeof(V));
}
template <typename V, typename T>
CGNF_INLINE void storev(T* p, const V& v) {
  std::memcpy(p, &v, sizeof(V));
}
// All lanes equal to s.
template <typename V, typename T>
CGNF_INLINE V bcast(T s) {
  return V{} + s;
}

enum class Isa { kAvx512, kAvx2, kGeneric };

// The widest instruction set the CPU runs (AVX-512F, AVX2+FMA, else baseline SSE2), capped by
// CGNF_SIMD=avx2|generic.
inline Isa pick_isa() {
#ifdef CGNF_SIMD_X86
  __builtin_cpu_init();
  const char* cap = std::getenv("CGNF_SIMD");
  const std::string want = cap ? cap : "";
  const bool capped_generic = want == "generic" || want == "scalar";
  if (want != "avx2" && !capped_generic && __builtin_cpu_supports("avx512f")) return Isa::kAvx512;
  if (!capped_generic && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::kAvx2;
#endif
  return Isa::kGeneric;
}

inline const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kAvx512:
      return "avx512";
    case Isa::kAvx2:
      return "avx2";
    default:
      return "generic";
  }
}

}  // namespace simd
}  // namespace cgnf
