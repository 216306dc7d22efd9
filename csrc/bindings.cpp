// The only PYBIND11_MODULE of cgnf_fast. The module is built without libtorch: every kernel
// takes raw pointers, sizes and (for CUDA) a stream as integers. cgnf_fast/ops validates the
// tensors and wraps each entry as a torch.library custom op.
#include <pybind11/pybind11.h>

#include <string>

#include "common/checks.h"
#include "dag/dag.h"

#ifdef CGNF_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace py = pybind11;

namespace {

py::dict build_config() {
  py::dict d;
#ifdef CGNF_WITH_CUDA
  d["cuda"] = true;
  d["cuda_version"] = CUDART_VERSION;
  d["cuda_architectures"] = std::string(CGNF_CUDA_ARCHITECTURES);
#else
  d["cuda"] = false;
  d["cuda_version"] = py::none();
  d["cuda_architectures"] = py::none();
#endif
  d["max_nodes"] = cgnf::kMaxNodes;
  d["compiler"] = std::string(CGNF_COMPILER);
  d["build_type"] = std::string(CGNF_BUILD_TYPE);
  d["version"] = std::string(CGNF_VERSION);
  return d;
}

// Number of CUDA devices the runtime sees (0 without a driver or without CUDA support).
int cuda_device_count() {
#ifdef CGNF_WITH_CUDA
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" error
    return 0;
  }
  return count;
#else
  return 0;
#endif
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "cgnf_fast native core (pointer-level kernels; use cgnf_fast.ops, not this module)";
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const std::invalid_argument& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });
  m.def("build_config", &build_config, "How this module was built (CUDA, architectures, compiler).");
  m.def("cuda_device_count", &cuda_device_count, "CUDA devices visible to the native runtime.");
  m.def("dag_prune_cpu", &cgnf::dag_prune_cpu, py::arg("adj"), py::arg("labels"), py::arg("n"), py::arg("out_adj"),
        py::arg("out_labels"), py::arg("out_n"), py::arg("B"), py::arg("N"), py::arg("num_threads"),
        py::call_guard<py::gil_scoped_release>());
#ifdef CGNF_WITH_CUDA
  m.def("dag_prune_cuda", &cgnf::dag_prune_cuda, py::arg("adj"), py::arg("labels"), py::arg("n"), py::arg("out_adj"),
        py::arg("out_labels"), py::arg("out_n"), py::arg("B"), py::arg("N"), py::arg("stream"),
        py::call_guard<py::gil_scoped_release>());
#endif
}
