// The CNF dynamics, fused: one evaluation of the flow's ConcatSquash MLP (all layers) and,
// optionally, its divergence, in one kernel (reference: cgnf_fast/reference/cnf.py, the math
// of ODEDynamics in cgnf_fast/models/flow.py).
//
// Layers l = 0 .. L-1, widths D = w_0 -> w_1 -> ... -> w_L = D, ctx = [t, c] (1 + C entries):
//   gate_l = sigmoid(G_l ctx + g_l)                         [w_{l+1}]
//   pre_l  = (W_l h_l + b_l) * gate_l + H_l ctx             [w_{l+1}],  h_0 = z
//   h_{l+1} = act(pre_l) for l < L-1 (tanh or softplus),    dz/dt = pre_{L-1}
// Divergence (forward-mode tangents, s_l = act'(pre_l) * gate_l for the hidden layers):
//   exact:      J_1 = diag(s_0) W_0,  J_{l+1} = diag(s_l) W_l J_l,
//               div = tr(diag(gate_{L-1}) W_{L-1} J_{L-1})        (= sum_i gate_i W_ii if L = 1)
//   hutchinson: the same with the single probe e = noise (u_0 = e, u_{l+1} = s_l * (W_l u_l)),
//               div = e^T (gate_{L-1} * (W_{L-1} u_{L-1}))
// softplus is torch's (threshold 20: x > 20 gives x) and act' is sigmoid(pre) for it.
//
// Layout of every argument (contiguous, row-major; one dtype for all: float32, or float64 when
// `float64` is true):
//   t        [1]          the time, read by the kernel (no host sync on CUDA)
//   z        [B, D]
//   c        [B, C]       C >= 0 (0 may pass a null pointer)
//   noise    [B, D]       divergence == kCnfHutchinson only (else may be 0)
//   weights  5L pointers, per layer W [w_{l+1}, w_l], b [w_{l+1}], G [w_{l+1}, 1 + C],
//            g [w_{l+1}], H [w_{l+1}, 1 + C]
//   widths   L + 1 sizes w_0 .. w_L (w_0 = w_L = D)
//   dz       [B, D]       output
//   div      [B]          output when divergence != kCnfNone (else may be 0)
// Limits: every width in [1, kCnfMaxWidth]; at most kCnfMaxLayers layers; D <= kCnfMaxExactLatent
// for the exact divergence.
// cgnf_fast/ops/cnf.py validates tensors before any pointer gets here; check_cnf below is the
// last line of defence (ValueError in Python).
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "../common/checks.h"

namespace cgnf {

// Widest layer (latent or hidden) the kernels take: CUDA stages a block's activations in
// shared memory, the CPU kernel keeps a tile's in L1/L2.
constexpr int64_t kCnfMaxWidth = 512;
// Largest latent size for the exact divergence (D tangents per batch row).
constexpr int64_t kCnfMaxExactLatent = 64;
// Most layers (the CUDA kernels take the layer table as kernel parameters).
constexpr int64_t kCnfMaxLayers = 32;

enum CnfDivergence : int64_t { kCnfNone = 0, kCnfExact = 1, kCnfHutchinson = 2 };
enum CnfActivation : int64_t { kCnfTanh = 0, kCnfSoftplus = 1 };

inline void check_cnf(const char* op, int64_t B, int64_t C, const std::vector<int64_t>& weights,
                      const std::vector<int64_t>& widths, int64_t activation, int64_t divergence,
                      std::initializer_list<std::pair<int64_t, const char*>> ptrs) {
  const std::string o(op);
  check_arg(B >= 0, o + ": batch size must be >= 0");
  check_arg(C >= 0, o + ": condition size C must be >= 0");
  check_arg(widths.size() >= 2, o + ": widths must list at least 2 sizes (one layer)");
  const size_t L = widths.size() - 1;
  check_arg(weights.size() == 5 * L, o + ": weights must hold 5 pointers (W, b, G, g, H) per layer");
  check_arg(int64_t(L) <= kCnfMaxLayers, o + ": at most " + std::to_string(kCnfMaxLayers) + " layers");
  for (int64_t w : widths)
    check_arg(w >= 1 && w <= kCnfMaxWidth, o + ": every width must be in [1, " + std::to_string(kCnfMaxWidth) + "]");
  check_arg(widths.front() == widths.back(), o + ": the last width must equal the latent size D (the first)");
  check_arg(activation == kCnfTanh || activation == kCnfSoftplus, o + ": activation must be 0 (tanh) or 1 (softplus)");
  check_arg(divergence == kCnfNone || divergence == kCnfExact || divergence == kCnfHutchinson,
            o + ": divergence must be 0 (none), 1 (exact) or 2 (hutchinson)");
  check_arg(divergence != kCnfExact || widths.front() <= kCnfMaxExactLatent,
            o + ": the exact divergence supports latent sizes D <= " + std::to_string(kCnfMaxExactLatent));
  for (size_t i = 0; i < weights.size(); ++i) check_ptr(weights[i], "a weight", 1);
  for (auto [p, name] : ptrs) check_ptr(p, name, B);
}

// The argument checks of the adjoint entry points (CPU and CUDA alike).
inline void check_cnf_adjoint(int64_t B, int64_t C, const std::vector<int64_t>& weights,
                              const std::vector<int64_t>& widths, int64_t activation, int64_t divergence, int64_t t,
                              int64_t z, int64_t c, int64_t noise, int64_t a_z, int64_t a_div,
                              const std::vector<int64_t>& g_weights) {
  check_cnf("cnf_adjoint", B, C, weights, widths, activation, divergence, {{z, "z"}, {a_z, "a_z"}});
  check_ptr(t, "t", 1);
  if (C > 0) check_ptr(c, "c", B);
  if (divergence != kCnfNone) check_ptr(a_div, "a_div", B);
  if (divergence == kCnfHutchinson) check_ptr(noise, "noise", B);
  check_arg(g_weights.empty() || g_weights.size() == weights.size(),
            "cnf_adjoint: g_weights must be empty or hold one pointer (or 0) per weight");
}

void cnf_dynamics_fwd_cpu(int64_t t, int64_t z, int64_t c, int64_t noise, const std::vector<int64_t>& weights,
                          const std::vector<int64_t>& widths, int64_t dz, int64_t div, int64_t B, int64_t C,
                          int64_t activation, int64_t divergence, bool float64, int64_t num_threads);

// cnf_dynamics_fwd_cpu prepared once for fixed weights, condition and noise (unchecked: the
// caller has validated them), for a solve's many evaluations: the kernel copy for the CPU, the
// weights' padded and transposed copies and the work split are made once, not per evaluation.
// plan(t, z, dz, div) evaluates at time t (div: 0 without a divergence).
template <typename T>
using CnfForwardPlan = std::function<void(T, const T*, T*, T*)>;
template <typename T>
CnfForwardPlan<T> cnf_forward_plan_cpu(int64_t c, int64_t noise, const std::vector<int64_t>& weights,
                                       const std::vector<int64_t>& widths, int64_t B, int64_t C, int64_t activation,
                                       int64_t divergence, int64_t num_threads);

// A whole dopri5 solve from t0 to t1 around cnf_dynamics_fwd_cpu (cnf_solve_cpu.cpp: torchdiffeq's
// algorithm step for step). state: [B * D] z, followed by [B] logdet when divergence != kCnfNone
// (d logdet/dt = div); overwritten with the state at t1. Returns the number of dynamics
// evaluations. Throws std::runtime_error on a non-finite state, an underflowing step or more
// than max_steps steps.
int64_t cnf_solve_dopri5_cpu(int64_t state, int64_t c, int64_t noise, const std::vector<int64_t>& weights,
                             const std::vector<int64_t>& widths, int64_t B, int64_t C, int64_t activation,
                             int64_t divergence, bool float64, double t0, double t1, double rtol, double atol,
                             int64_t max_steps, int64_t num_threads);

// The adjoint dynamics (cnf_adjoint_cpu.cpp): one evaluation with the vector-Jacobian products
// of the cotangents a_z [B, D] (of dz/dt) and a_div [B] (of div; divergence != kCnfNone only).
// Outputs, each optional (0: not wanted) and overwritten: dz [B, D], div [B], g_t [1] (summed over
// the batch), g_z [B, D], g_c [B, C], g_weights (empty, or one pointer or 0 per weight, laid out
// as the weights).
void cnf_adjoint_cpu(int64_t t, int64_t z, int64_t c, int64_t noise, const std::vector<int64_t>& weights,
                     const std::vector<int64_t>& widths, int64_t a_z, int64_t a_div, int64_t dz, int64_t div,
                     int64_t g_t, int64_t g_z, int64_t g_c, const std::vector<int64_t>& g_weights, int64_t B,
                     int64_t C, int64_t activation, int64_t divergence, bool float64, int64_t num_threads);

// cnf_adjoint_cpu prepared once for fixed weights, condition and noise (unchecked), for the
// backward solve's many evaluations (as cnf_forward_plan_cpu):
// plan(t, z, a_z, a_div, dz, div, g_t, g_z, g_c, g_weights), each output optional (nullptr).
template <typename T>
using CnfAdjointPlan = std::function<void(T, const T*, const T*, const T*, T*, T*, T*, T*, T*, const std::vector<T*>&)>;
template <typename T>
CnfAdjointPlan<T> cnf_adjoint_plan_cpu(int64_t c, int64_t noise, const std::vector<int64_t>& weights,
                                       const std::vector<int64_t>& widths, int64_t B, int64_t C, int64_t activation,
                                       int64_t divergence, int64_t num_threads);

// The backward solve of torchdiffeq's odeint_adjoint around cnf_adjoint_cpu (cnf_solve_cpu.cpp,
// dopri5 step for step). state: [1 + 2 ny + P] = (a_t, y = (z [B * D], logdet [B] with a
// divergence), a_y, the parameters' adjoints in the order of `params`: a weight's index
// 0 .. 5L - 1, or -1 for c), at t0 on entry, overwritten with the state at t1. Returns the
// number of evaluations.
int64_t cnf_adjoint_solve_dopri5_cpu(int64_t state, int64_t c, int64_t noise, const std::vector<int64_t>& weights,
                                     const std::vector<int64_t>& widths, const std::vector<int64_t>& params,
                                     int64_t B, int64_t C, int64_t activation, int64_t divergence, bool float64,
                                     double t0, double t1, double rtol, double atol, int64_t max_steps,
                                     int64_t num_threads);

// Instruction set the CPU CNF kernel runs with now: "avx512", "avx2" or "generic".
const char* cnf_simd();

// Elements of the workspace the CUDA kernel needs: for the exact divergence the scales s_l of
// the hidden layers and the last gate of every row, B * (w_1 + ... + w_L); 0 otherwise.
inline int64_t cnf_cuda_workspace(int64_t B, const std::vector<int64_t>& widths, int64_t divergence) {
  if (divergence != kCnfExact) return 0;
  int64_t per_row = 0;
  for (size_t i = 1; i < widths.size(); ++i) per_row += widths[i];
  return B * per_row;
}

#ifdef CGNF_WITH_CUDA
// cnf_adjoint_cpu on CUDA (cnf_adjoint_cuda.cu), with a workspace of at least
// cnf_adjoint_workspace_cuda(B, widths, C, divergence) elements of the dtype.
int64_t cnf_adjoint_workspace_cuda(int64_t B, const std::vector<int64_t>& widths, int64_t C, int64_t divergence);
void cnf_adjoint_cuda(int64_t t, int64_t z, int64_t c, int64_t noise, const std::vector<int64_t>& weights,
                      const std::vector<int64_t>& widths, int64_t a_z, int64_t a_div, int64_t dz, int64_t div,
                      int64_t g_t, int64_t g_z, int64_t g_c, const std::vector<int64_t>& g_weights, int64_t workspace,
                      int64_t workspace_size, int64_t B, int64_t C, int64_t activation, int64_t divergence,
                      bool float64, int64_t stream);
void cnf_dynamics_fwd_cuda(int64_t t, int64_t z, int64_t c, int64_t noise, const std::vector<int64_t>& weights,
                           const std::vector<int64_t>& widths, int64_t dz, int64_t div, int64_t workspace,
                           int64_t workspace_size, int64_t B, int64_t C, int64_t activation, int64_t divergence,
                           bool float64, int64_t stream);
#endif

}  // namespace cgnf
