// Argument checks at the C++ boundary. The Python layer (cgnf_fast/ops) validates dtypes,
// shapes, devices and contiguity before any pointer gets here; these checks are the last line
// of defence against misuse of _C directly, and raise ValueError in Python (never abort).
#pragma once

#include <cstdint>
#include <initializer_list>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace cgnf {

// Largest number of vertices per graph the DAG kernels support (bitmasks are uint8_t rows).
constexpr int64_t kMaxNodes = 8;

inline void check_arg(bool ok, const std::string& msg) {
  if (!ok) throw std::invalid_argument(msg);
}

inline void check_ptr(int64_t ptr, const char* name, int64_t count) {
  if (count > 0 && ptr == 0) {
    std::ostringstream s;
    s << name << " is a null pointer but " << count << " elements were promised";
    throw std::invalid_argument(s.str());
  }
}

// Checks shared by the batched DAG ops: batch size, vertex count, non-null pointers.
inline void check_batch(const char* op, int64_t B, int64_t N,
                        std::initializer_list<std::pair<int64_t, const char*>> ptrs) {
  check_arg(B >= 0, std::string(op) + ": batch size must be >= 0");
  check_arg(N >= 2 && N <= kMaxNodes, std::string(op) + ": N must be in [2, 8]");
  for (auto [p, name] : ptrs) check_ptr(p, name, B);
}

}  // namespace cgnf
