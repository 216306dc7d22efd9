// The only PYBIND11_MODULE of cgnf_fast. The module is built without libtorch: every kernel
// takes raw pointers, sizes and (for CUDA) a stream as integers. cgnf_fast/ops validates the
// tensors and wraps each entry as a torch.library custom op.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>

#include "cnf/cnf.h"
#include "common/checks.h"
#include "common/parallel.h"
#include "dag/dag.h"
#include "dag/count.h"
#include "gnn/gnn.h"

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
  d["md5_lanes"] = cgnf::md5_lanes();
  d["canonical_simd"] = std::string(cgnf::canonical_simd());
  d["gin_max_nodes"] = cgnf::kGinMaxNodes;
  d["gin_simd"] = std::string(cgnf::gin_simd());
  d["cnf_max_width"] = cgnf::kCnfMaxWidth;
  d["cnf_max_exact_latent"] = cgnf::kCnfMaxExactLatent;
  d["cnf_max_layers"] = cgnf::kCnfMaxLayers;
  d["cnf_simd"] = std::string(cgnf::cnf_simd());
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
  m.def("pool_workers", &cgnf::pool_workers, "Worker threads the CPU kernels' pool holds now (it grows on demand).");
  m.def("dag_prune_cpu", &cgnf::dag_prune_cpu, py::arg("adj"), py::arg("labels"), py::arg("n"), py::arg("out_adj"),
        py::arg("out_labels"), py::arg("out_n"), py::arg("B"), py::arg("N"), py::arg("num_threads"),
        py::call_guard<py::gil_scoped_release>());
  m.def("dag_network_code_cpu", &cgnf::dag_network_code_cpu, py::arg("adj"), py::arg("labels"), py::arg("n"),
        py::arg("out_words"), py::arg("B"), py::arg("N"), py::arg("identity_labels"), py::arg("num_threads"),
        py::call_guard<py::gil_scoped_release>());
  m.def("dag_canonical_code_cpu", &cgnf::dag_canonical_code_cpu, py::arg("adj"), py::arg("labels"), py::arg("n"),
        py::arg("out_code"), py::arg("B"), py::arg("N"), py::arg("num_threads"), py::call_guard<py::gil_scoped_release>());
  m.def("dag_nb101_hash_cpu", &cgnf::dag_nb101_hash_cpu, py::arg("adj"), py::arg("labels"), py::arg("n"),
        py::arg("out_digest"), py::arg("B"), py::arg("N"), py::arg("num_threads"),
        py::call_guard<py::gil_scoped_release>());
  m.def("gin_aggregate_fwd_cpu", &cgnf::gin_aggregate_fwd_cpu, py::arg("adj"), py::arg("h"), py::arg("out"),
        py::arg("B"), py::arg("N"), py::arg("H"), py::arg("eps"), py::arg("float64"), py::arg("num_threads"),
        py::call_guard<py::gil_scoped_release>());
  m.def("gin_aggregate_bwd_cpu", &cgnf::gin_aggregate_bwd_cpu, py::arg("grad_out"), py::arg("adj"), py::arg("h"),
        py::arg("grad_h"), py::arg("grad_adj"), py::arg("B"), py::arg("N"), py::arg("H"), py::arg("eps"),
        py::arg("float64"), py::arg("num_threads"), py::call_guard<py::gil_scoped_release>());
  m.def("cnf_dynamics_fwd_cpu", &cgnf::cnf_dynamics_fwd_cpu, py::arg("t"), py::arg("z"), py::arg("c"),
        py::arg("noise"), py::arg("weights"), py::arg("widths"), py::arg("dz"), py::arg("div"), py::arg("B"),
        py::arg("C"), py::arg("activation"), py::arg("divergence"), py::arg("float64"), py::arg("num_threads"),
        py::call_guard<py::gil_scoped_release>());
  m.def("cnf_solve_dopri5_cpu", &cgnf::cnf_solve_dopri5_cpu, py::arg("state"), py::arg("c"), py::arg("noise"),
        py::arg("weights"), py::arg("widths"), py::arg("B"), py::arg("C"), py::arg("activation"),
        py::arg("divergence"), py::arg("float64"), py::arg("t0"), py::arg("t1"), py::arg("rtol"), py::arg("atol"),
        py::arg("max_steps"), py::arg("num_threads"), py::call_guard<py::gil_scoped_release>(),
        "A whole dopri5 solve of the CNF dynamics (torchdiffeq's algorithm); returns the evaluations made.");
  m.def("cnf_adjoint_cpu", &cgnf::cnf_adjoint_cpu, py::arg("t"), py::arg("z"), py::arg("c"), py::arg("noise"),
        py::arg("weights"), py::arg("widths"), py::arg("a_z"), py::arg("a_div"), py::arg("dz"), py::arg("div"),
        py::arg("g_t"), py::arg("g_z"), py::arg("g_c"), py::arg("g_weights"), py::arg("B"), py::arg("C"),
        py::arg("activation"), py::arg("divergence"), py::arg("float64"), py::arg("num_threads"),
        py::call_guard<py::gil_scoped_release>(),
        "The CNF dynamics with the vector-Jacobian products of (a_z, a_div) (the adjoint's dynamics).");
  m.def("cnf_adjoint_solve_dopri5_cpu", &cgnf::cnf_adjoint_solve_dopri5_cpu, py::arg("state"), py::arg("c"),
        py::arg("noise"), py::arg("weights"), py::arg("widths"), py::arg("params"), py::arg("B"), py::arg("C"),
        py::arg("activation"), py::arg("divergence"), py::arg("float64"), py::arg("t0"), py::arg("t1"),
        py::arg("rtol"), py::arg("atol"), py::arg("max_steps"), py::arg("num_threads"),
        py::call_guard<py::gil_scoped_release>(),
        "The backward solve of odeint_adjoint (dopri5, torchdiffeq's algorithm); returns the evaluations made.");
  m.def("cnf_cuda_workspace", &cgnf::cnf_cuda_workspace, py::arg("B"), py::arg("widths"), py::arg("divergence"),
        "Elements of the workspace cnf_dynamics_fwd_cuda needs (0 unless the divergence is exact).");

  py::class_<cgnf::SpaceCounter>(m, "SpaceCounter",
                                 "Exact counting / enumeration of a cell space in work units (see count_cpu.cpp).")
      .def(py::init([](int max_nodes, int num_ops, int num_identity, int max_edges, bool networks, bool emit) {
             return new cgnf::SpaceCounter({max_nodes, num_ops, num_identity, max_edges}, networks, emit);
           }),
           py::arg("max_nodes"), py::arg("num_ops"), py::arg("num_identity"), py::arg("max_edges"),
           py::arg("networks"), py::arg("emit"))
      .def("units",
           [](const cgnf::SpaceCounter& c) {
             std::vector<std::tuple<int, uint64_t, uint64_t>> out;
             for (const auto& u : c.units()) out.emplace_back(u.k, u.lo, u.hi);
             return out;
           })
      .def("process", &cgnf::SpaceCounter::process, py::arg("unit"), py::arg("num_threads"),
           py::call_guard<py::gil_scoped_release>())
      .def(
          "add_network_keys",
          [](cgnf::SpaceCounter& c, int64_t words, int64_t count, int64_t num_threads) {
            c.add_network_keys(reinterpret_cast<const uint64_t*>(words), count, num_threads);
          },
          py::arg("words"), py::arg("count"), py::arg("num_threads"), py::call_guard<py::gil_scoped_release>())
      .def("finalize", &cgnf::SpaceCounter::finalize, py::arg("num_threads"), py::call_guard<py::gil_scoped_release>())
      .def("totals",
           [](const cgnf::SpaceCounter& c) {
             const auto t = c.totals();
             py::dict d;
             d["valid_matrices"] = t.valid_matrices;
             d["unique"] = t.unique;
             d["skeletons"] = t.skeletons;
             d["unique_networks"] = t.unique_networks;
             d["network_skeletons"] = t.network_skeletons;
             return d;
           })
      .def("take_emitted", [](cgnf::SpaceCounter& c, int64_t K) {
        cgnf::Emitted e = c.take_emitted();
        const auto M = static_cast<py::ssize_t>(e.n.size());
        py::array_t<uint8_t> adj({M, py::ssize_t(K), py::ssize_t(K)});
        py::array_t<int8_t> labels({M, py::ssize_t(K)});
        py::array_t<int8_t> n({M});
        if (M) {
          std::copy(e.adj.begin(), e.adj.end(), adj.mutable_data());
          std::copy(e.labels.begin(), e.labels.end(), labels.mutable_data());
          std::copy(e.n.begin(), e.n.end(), n.mutable_data());
        }
        return py::make_tuple(adj, labels, n);
      }, py::arg("K"));

#ifdef CGNF_WITH_CUDA
  m.def("dag_canonical_code_cuda", &cgnf::dag_canonical_code_cuda, py::arg("adj"), py::arg("labels"), py::arg("n"),
        py::arg("out_code"), py::arg("B"), py::arg("N"), py::arg("stream"), py::call_guard<py::gil_scoped_release>());
  m.def("dag_nb101_hash_cuda", &cgnf::dag_nb101_hash_cuda, py::arg("adj"), py::arg("labels"), py::arg("n"),
        py::arg("out_digest"), py::arg("B"), py::arg("N"), py::arg("stream"), py::call_guard<py::gil_scoped_release>());
  m.def("count_valid_cuda", &cgnf::count_valid_cuda, py::arg("K"), py::arg("max_edges"), py::arg("lo"), py::arg("hi"),
        py::arg("out"), py::arg("stream"), py::call_guard<py::gil_scoped_release>());
  m.def("count_unique_cuda", &cgnf::count_unique_cuda, py::arg("k"), py::arg("num_ops"), py::arg("max_edges"),
        py::arg("lo"), py::arg("hi"), py::arg("out"), py::arg("stream"), py::call_guard<py::gil_scoped_release>());
  m.def("network_keys_cuda", &cgnf::network_keys_cuda, py::arg("k"), py::arg("max_edges"), py::arg("lo"),
        py::arg("hi"), py::arg("keys"), py::arg("capacity"), py::arg("count"), py::arg("stream"),
        py::call_guard<py::gil_scoped_release>());
  m.def("dag_prune_cuda", &cgnf::dag_prune_cuda, py::arg("adj"), py::arg("labels"), py::arg("n"), py::arg("out_adj"),
        py::arg("out_labels"), py::arg("out_n"), py::arg("B"), py::arg("N"), py::arg("stream"),
        py::call_guard<py::gil_scoped_release>());
  m.def("gin_aggregate_fwd_cuda", &cgnf::gin_aggregate_fwd_cuda, py::arg("adj"), py::arg("h"), py::arg("out"),
        py::arg("B"), py::arg("N"), py::arg("H"), py::arg("eps"), py::arg("float64"), py::arg("stream"),
        py::call_guard<py::gil_scoped_release>());
  m.def("gin_aggregate_bwd_cuda", &cgnf::gin_aggregate_bwd_cuda, py::arg("grad_out"), py::arg("adj"), py::arg("h"),
        py::arg("grad_h"), py::arg("grad_adj"), py::arg("B"), py::arg("N"), py::arg("H"), py::arg("eps"),
        py::arg("float64"), py::arg("stream"), py::call_guard<py::gil_scoped_release>());
  m.def("cnf_dynamics_fwd_cuda", &cgnf::cnf_dynamics_fwd_cuda, py::arg("t"), py::arg("z"), py::arg("c"),
        py::arg("noise"), py::arg("weights"), py::arg("widths"), py::arg("dz"), py::arg("div"), py::arg("workspace"),
        py::arg("workspace_size"), py::arg("B"), py::arg("C"), py::arg("activation"), py::arg("divergence"),
        py::arg("float64"), py::arg("stream"), py::call_guard<py::gil_scoped_release>());
  m.def("cnf_adjoint_workspace_cuda", &cgnf::cnf_adjoint_workspace_cuda, py::arg("B"), py::arg("widths"), py::arg("C"),
        py::arg("divergence"), "Elements of the workspace cnf_adjoint_cuda needs.");
  m.def("cnf_adjoint_cuda", &cgnf::cnf_adjoint_cuda, py::arg("t"), py::arg("z"), py::arg("c"), py::arg("noise"),
        py::arg("weights"), py::arg("widths"), py::arg("a_z"), py::arg("a_div"), py::arg("dz"), py::arg("div"),
        py::arg("g_t"), py::arg("g_z"), py::arg("g_c"), py::arg("g_weights"), py::arg("workspace"),
        py::arg("workspace_size"), py::arg("B"), py::arg("C"), py::arg("activation"), py::arg("divergence"),
        py::arg("float64"), py::arg("stream"), py::call_guard<py::gil_scoped_release>());
#endif
}
