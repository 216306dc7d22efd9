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

}  // namespace cgnf
