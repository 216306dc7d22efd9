#pragma once
// Memory advice for the CPU kernels' large outputs.

#include <cstddef>
#include <cstdint>
#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace cgnf {

// Asks Linux to back the 2 MiB-aligned interior of a large output buffer with transparent huge
// pages, before the kernel's first write to it. Such buffers are usually fresh mmaps (glibc
// serves allocations above its mmap threshold, at most 32 MiB, that way), so every 4 KiB page
// faults on first touch (~60 ms for 268 MB on the development machine, against ~16 ms with huge
// pages; THP's common "madvise" mode only uses huge pages where asked). Advice only: the values
// are the same, and buffers under 8 MiB, other systems and a refusal change nothing.
inline void advise_huge_pages(void* p, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t(1) << 21;
  if (p == nullptr || bytes < 4 * kHuge) return;
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(p) + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(p) + bytes) & ~(kHuge - 1);
  if (end > begin) (void)madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#else
  (void)p;
  (void)bytes;
#endif
}

}  // namespace cgnf
