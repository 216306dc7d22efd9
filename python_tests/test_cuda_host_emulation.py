"""The CUDA kernels of gin_aggregate_cuda.cu, cnf_dynamics_cuda.cu, cnf_adjoint_cuda.cu,
canonical_code_cuda.cu, nb101_hash_cuda.cu and prune_cuda.cu without a GPU: their real kernels and launchers compiled as host C++
(scripts/cuda_host_emu.py: block = fibers between __syncthreads, poisoned shared memory) and
called with CPU tensors' pointers by scripts/emulate_cuda_kernels.py, against the references
and the CPU ops (that script says what this does and does not check). The CI subset
(``--quick``): every kernel, both dtypes, ragged last blocks and row groups, lowered grid caps
(grid-stride loops), every NMAX / grad_adj template, every CNF divergence, 0 and 3 hidden layers,
a 512-wide layer, B = 0 and 1; outputs poisoned in one pass and zeroed in another, every output
entry written exactly once, no read outside the buffers or of never-written memory; and the
emulator's own checks on a synthetic kernel section. Skipped without a g++ that builds C++20
(std::atomic_ref) with ucontext. About 13 s on two cores, the four builds (in parallel)
included."""

from __future__ import annotations

import ctypes

import pytest
import torch
from helpers import load_script

MOD = load_script("emulate_cuda_kernels")

pytestmark = pytest.mark.slow  # the builds alone take several seconds (module doc)


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    if MOD is None:
        pytest.skip("scripts/emulate_cuda_kernels.py is not in this checkout")
    d = tmp_path_factory.mktemp("cuda_host_emu")
    (d / "selftest.cu").write_text(SELFTEST_CU)
    rt = MOD.rt
    selftest = rt.Harness([rt.Section(d / "selftest.cu", "selftest")], ["common/checks.h", "common/cuda_utils.h"],
                          {"selftest": [ctypes.c_int, ctypes.c_int64, ctypes.c_int64],
                           "selftest_visits": [ctypes.c_int, ctypes.c_int64, ctypes.c_int64]}, tail=SELFTEST_TAIL)
    try:
        return rt.build_many(MOD.harnesses() | {"selftest": selftest}, d)  # the four in parallel
    except rt.CompilerUnavailable as e:
        pytest.skip(f"cannot compile the emulation: {e}")


def _cases(kind):
    return getattr(MOD, f"{kind}_cases")(quick=True) if MOD else []


def _check(libs, kind, case):
    r = getattr(MOD, f"check_{kind}")(libs[kind], case)
    assert r.ok, r.line()
    if getattr(case, "cap", 0) and case.B > 0:
        assert r.strided > 0, f"no launch got fewer blocks than it asked for: {r.line()}"


@pytest.mark.parametrize("case", _cases("gin"), ids=lambda c: c.name.removeprefix("gin ").replace(" ", ","))
def test_gin_kernels_match_reference(emu, case):
    _check(emu, "gin", case)


@pytest.mark.parametrize("case", _cases("cnf_adjoint"), ids=lambda c: c.name.removeprefix("cnf ").replace(" ", ","))
def test_cnf_adjoint_kernels_match_reference(emu, case):
    """cnf_adjoint_cuda.cu: dz/dt, div and every vector-Jacobian product against autograd over
    the reference; both passes bit for bit (no unwritten output, no thread-order dependence)."""
    _check(emu, "cnf_adjoint", case)


@pytest.mark.parametrize("case", _cases("cnf"), ids=lambda c: c.name.removeprefix("cnf ").replace(" ", ","))
def test_cnf_kernels_match_reference(emu, case):
    _check(emu, "cnf", case)


@pytest.mark.parametrize("case", _cases("dag"), ids=lambda c: c.name.removeprefix("dag ").replace(" ", ","))
def test_dag_kernels_match_cpu(emu, case):
    _check(emu, "dag", case)


def test_emulated_launchers_check_arguments(emu):
    S = MOD.STREAM
    x = torch.zeros(64, dtype=torch.float64)
    p = x.data_ptr()
    gin, cnf, dag = emu["gin"], emu["cnf"], emu["dag"]
    with pytest.raises(ValueError, match=r"N must be in \[1, 16\]"):
        gin.call("gin_aggregate_fwd_cuda", p, p, p, 1, 17, 1, 0.0, 1, S)
    with pytest.raises(ValueError, match="null pointer"):
        gin.call("gin_aggregate_bwd_cuda", p, p, 0, p, p, 1, 2, 1, 0.0, 1, S)  # grad_adj without h
    with pytest.raises(ValueError, match=r"N must be in \[2, 8\]"):
        dag.call("dag_prune_cuda", p, p, p, p, p, p, 1, 9, S)
    w = (ctypes.c_int64 * 5)(*[p] * 5)
    wd = (ctypes.c_int64 * 2)(2, 2)
    with pytest.raises(ValueError, match="workspace"):
        cnf.call("cnf_dynamics_fwd_cuda", p, p, 0, 0, w, 5, wd, 2, p, p, p, 1, 1, 0, 0, 1, 1, S)
    with pytest.raises(MOD.rt.EmulationError, match="stream"):
        dag.call("dag_prune_cuda", p, p, p, p, p, p, 1, 2, S + 1)


# The emulator's own checks, on a synthetic kernel section (each kernel breaks one rule).
SELFTEST_CU = r"""
namespace cgnf {
// selftest: begin
namespace {
constexpr int kBound = 64;
__global__ void __launch_bounds__(kBound) bounded(int* out) { out[threadIdx.x] = 1; }
__global__ void divergent(int* out) {
  if (threadIdx.x == 5) return;
  __syncthreads();
  out[threadIdx.x] = 1;
}
__global__ void smem_rw(float* out, int shift) {
  extern __shared__ __align__(16) unsigned char smem[];
  float* s = reinterpret_cast<float*>(smem);
  s[threadIdx.x + shift] = 1.0f;
  __syncthreads();
  out[threadIdx.x] = s[threadIdx.x];
}
__global__ void half_written(double* out) {
  __shared__ double a[32], b[4];
  if (threadIdx.x < 16) a[threadIdx.x] = blockIdx.x;
  if (threadIdx.x < 4) b[threadIdx.x] = 0.0;
  __syncthreads();
  out[blockIdx.x * 32 + threadIdx.x] = a[threadIdx.x] + b[threadIdx.x % 4];
}
struct Big { double x[520]; };
__global__ void big_params(Big b, double* out) { out[threadIdx.x] = b.x[threadIdx.x]; }
__global__ void visit(int twice) {  // reports its thread's item (and item `twice` once more)
  cuda_emu::visits.visit(threadIdx.x);
  if (int(threadIdx.x) == twice) cuda_emu::visits.visit(threadIdx.x);
}
__global__ void dims(int* out) {
  const unsigned block = blockIdx.y * gridDim.x + blockIdx.x;
  const unsigned t = (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
  out[block * blockDim.x * blockDim.y * blockDim.z + t] += 1;
}
}  // namespace
void selftest(int which, int64_t out, int64_t stream) {
  const cudaStream_t s = as_stream(stream);
  if (which == 0) bounded<<<1, 2 * kBound, 0, s>>>(reinterpret_cast<int*>(out));
  if (which == 1) divergent<<<1, 32, 0, s>>>(reinterpret_cast<int*>(out));
  if (which == 2) smem_rw<<<1, 32, 32 * sizeof(float), s>>>(reinterpret_cast<float*>(out), 0);
  if (which == 3) smem_rw<<<1, 32, 32 * sizeof(float), s>>>(reinterpret_cast<float*>(out), 1);
  if (which == 4) smem_rw<<<1, 32, 64 * 1024, s>>>(reinterpret_cast<float*>(out), 0);
  if (which == 5) half_written<<<2, 32, 0, s>>>(reinterpret_cast<double*>(out));
  if (which == 6) dims<<<dim3(2, 3), dim3(4, 2, 2), 0, s>>>(reinterpret_cast<int*>(out));
  if (which == 7) big_params<<<1, 32, 0, s>>>(Big{}, reinterpret_cast<double*>(out));
  if (which >= 8) visit<<<1, 32, 0, s>>>(which - 9);
  cuda_check(cudaGetLastError(), "selftest launch");
}
// selftest: end
}  // namespace cgnf
"""

SELFTEST_TAIL = r"""
extern "C" int emu_selftest(int which, int64_t out, int64_t stream) {
  return cuda_emu::guarded([&] { cgnf::selftest(which, out, stream); });
}
extern "C" int emu_selftest_visits(int which, int64_t n, int64_t stream) {
  return cuda_emu::guarded_visits(n, "items of [0, " + std::to_string(n) + ")", 0,
                                  [&] { cgnf::selftest(which, 0, stream); });
}
"""


@pytest.mark.parametrize("schedule", ["forward", "reverse", "threads"])
def test_emulator_checks(emu, schedule):
    rt, lib, S = MOD.rt, emu["selftest"], MOD.STREAM
    lib.set_schedule(schedule)
    out = torch.zeros(256, dtype=torch.float64)
    p = out.data_ptr()
    with pytest.raises(rt.EmulationError, match="__launch_bounds__ 64"):
        lib.call("selftest", 0, p, S)
    with pytest.raises(rt.EmulationError, match="divergent __syncthreads"):
        lib.call("selftest", 1, p, S)
    lib.call("selftest", 2, p, S)  # in bounds
    with pytest.raises(rt.EmulationError, match="wrote outside its 128 bytes of dynamic shared memory"):
        lib.call("selftest", 3, p, S)
    with pytest.raises(rt.EmulationError, match="65536 bytes of dynamic shared memory"):
        lib.call("selftest", 4, p, S)
    out.zero_()
    lib.call("selftest", 5, p, S)  # static shared memory: a[16:] never written, on every block
    got = out[:64].reshape(2, 32)
    assert torch.equal(got[:, :16], torch.tensor([[0.0], [1.0]]).expand(2, 16))
    assert bool(got[:, 16:].isnan().all()), "static __shared__ memory was not poisoned before each block"
    cnt = torch.zeros(96, dtype=torch.int32)
    lib.call("selftest", 6, cnt.data_ptr(), S)  # grid 2x3, block 4x2x2: every (block, thread) once
    assert bool((cnt == 1).all()), cnt.tolist()
    with pytest.raises(rt.EmulationError, match="4168 bytes of kernel parameters"):
        lib.call("selftest", 7, p, S)
    with pytest.raises(rt.EmulationError, match="stream"):
        lib.call("selftest", 2, p, S + 1)
    # the visited-exactly-once check (cuda_emu::guarded_visits) behind the DAG and count drivers
    lib.call("selftest_visits", 8, 32, S)  # 32 threads, items 0..31: each once
    for which, n, match in [(12, 32, r"0 never, 1 more than once \(first 3\), 0 visits outside"),
                            (8, 33, r"1 never, 0 more than once \(first 32\), 0 visits outside"),
                            (8, 31, r"0 never, 0 more than once \(first -1\), 1 visits outside")]:
        with pytest.raises(rt.EmulationError, match=r"items of \[0, %d\) visited not exactly once: " % n + match):
            lib.call("selftest_visits", which, n, S)
