// Argument checks at the C++ boundary. The Python layer (cgnf_fast/ops) validates dtypes,
// shapes, devices and contiguity before any pointer gets here; these checks are the last line
// of defence against misuse of _C directly, and raise ValueError in Python (never abort).
#pragma once

#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>

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

}  // namespace cgnf
