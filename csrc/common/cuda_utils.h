// CUDA helpers: error checking that throws (mapped to RuntimeError in Python) and stream casts.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <sstream>
#include <stdexcept>

namespace cgnf {

inline void cuda_check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    std::ostringstream s;
    s << "CUDA error in " << what << ": " << cudaGetErrorString(err);
    throw std::runtime_error(s.str());
  }
}

inline cudaStream_t as_stream(int64_t stream) { return reinterpret_cast<cudaStream_t>(stream); }

// Blocks for `count` items at `threads` per block, capped at 65535 (kernels use grid-stride
// loops, so the cap only limits parallelism, never coverage).
inline int grid_for(int64_t count, int threads) {
  const int64_t blocks = (count + threads - 1) / threads;
  return static_cast<int>(blocks < 1 ? 1 : (blocks > 65535 ? 65535 : blocks));
}

}  // namespace cgnf
