// CUDA CNF dynamics: the whole ConcatSquash MLP and its divergence (math and layout in cnf.h).
//
// Work split.
//  * cnf_fwd_kernel: a block of 256 threads owns MB consecutive batch rows (a grid-stride loop
//    over row groups covers any batch with at most 65535 blocks) and runs every layer for them,
//    with the rows' activations in shared memory ([MB][wmax] ping-pong buffers; MB is as large
//    as fits in 48 KB, at most 16). In a layer each thread computes output units (n, 4 rows):
//    threads next to each other take neighbouring n, so a warp reads one activation entry as a
//    broadcast and the weight rows through L1 (W stays in L2 across blocks), and keeps 4
//    accumulators; the epilogue (bias, gate, context bias, activation) follows in registers.
//    Hutchinson carries the probe as a second set of buffers through the same loop (one weight
//    load feeds both products) and sums e * gate * (W u) over the last layer per row in a fixed
//    order. The exact divergence keeps the scales s_l = act' * gate and the last gate of each
//    row in a global workspace for:
//  * cnf_exact_div_kernel: one block per batch row (grid-stride). The D probe tangents are
//    propagated in chunks of DC columns (a [width][DC] matrix in shared memory, ping-pong, sized
//    to stay within 48 KB): threads own (unit n, column j) entries, the last layer's trace
//    terms are reduced over the block in a fixed tree (deterministic), chunk after chunk.
// Every launch uses the caller's stream and is checked for launch errors. The time is read from
// device memory (t), so nothing synchronises with the host.
#include <cuda_runtime.h>

#include <algorithm>
#include <vector>

#include "../common/checks.h"
#include "../common/cuda_utils.h"
#include "cnf.h"

namespace cgnf {

// cuda_host_emu: begin (scripts/emulate_cuda_kernels.py compiles from here to the end marker as host C++)
namespace {

constexpr int kThreads = 256;
constexpr int kRows = 4;                   // rows per thread in cnf_fwd_kernel
constexpr int kMaxLayers = int(kCnfMaxLayers);  // layer table passed as kernel parameters
constexpr size_t kSmemBytes = 48 * 1024;  // shared memory per block without opting in

template <typename T>
struct Net {
  const T* W[kMaxLayers];  // [out, in]
  const T* b[kMaxLayers];  // [out]
  const T* G[kMaxLayers];  // [out, 1 + C]
  const T* g[kMaxLayers];  // [out]
  const T* H[kMaxLayers];  // [out, 1 + C]
  int in[kMaxLayers], out[kMaxLayers];
  int off[kMaxLayers];  // first entry of layer l's scales (or last gate) in a workspace row
  int L, D, C;
  int wmax;  // widest layer (shared-memory row stride)
  int wsum;  // entries per workspace row: w_1 + ... + w_L
};

template <typename T>
__device__ __forceinline__ T sigmoid(T x) {
  return T(1) / (T(1) + exp(-x));
}
template <typename T>
__device__ __forceinline__ T softplus(T x) {  // torch's threshold: x for x > 20
  return x > T(20) ? x : log1p(exp(x));
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    cnf_fwd_kernel(Net<T> net, const T* __restrict__ tp, const T* __restrict__ z, const T* __restrict__ c,
                   const T* __restrict__ noise, T* __restrict__ dz, T* __restrict__ div, T* __restrict__ work,
                   int64_t B, int MB, bool softplus_act, int divergence) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int wmax = net.wmax, D = net.D, C = net.C, cs = 1 + C;
  const bool hut = divergence == kCnfHutchinson, exact = divergence == kCnfExact;
  T* hA = reinterpret_cast<T*>(smem);  // [MB][wmax]
  T* hB = hA + MB * wmax;
  T* uA = hB + MB * wmax;  // Hutchinson only
  T* uB = uA + (hut ? MB * wmax : 0);
  const T t = *tp;
  const int tid = threadIdx.x;
  const int chunks = (MB + kRows - 1) / kRows;
  for (int64_t r0 = int64_t(blockIdx.x) * MB; r0 < B; r0 += int64_t(gridDim.x) * MB) {
    const int nr = int(min(int64_t(MB), B - r0));
    __syncthreads();  // the previous group is done with the buffers
    for (int e = tid; e < MB * D; e += kThreads) {
      const int r = e / D, k = e % D;
      hA[r * wmax + k] = r < nr ? z[(r0 + r) * D + k] : T(0);
      if (hut) uA[r * wmax + k] = r < nr ? noise[(r0 + r) * D + k] : T(0);
    }
    __syncthreads();
    T* x = hA;
    T* y = hB;
    T* ux = uA;
    T* uy = uB;
    for (int l = 0; l < net.L; ++l) {
      const int in = net.in[l], out = net.out[l];
      const bool last = l == net.L - 1;
      const T* W = net.W[l];
      for (int item = tid; item < out * chunks; item += kThreads) {
        const int n = item % out, rc = item / out;
        T acc[kRows], uacc[kRows];
#pragma unroll
        for (int q = 0; q < kRows; ++q) acc[q] = uacc[q] = T(0);
        const T* wn = W + int64_t(n) * in;
        for (int k = 0; k < in; ++k) {
          const T w = __ldg(wn + k);
#pragma unroll
          for (int q = 0; q < kRows; ++q) {
            const int r = rc * kRows + q;
            if (r < nr) {
              acc[q] += w * x[r * wmax + k];
              if (hut) uacc[q] += w * ux[r * wmax + k];
            }
          }
        }
        const T* Gn = net.G[l] + int64_t(n) * cs;
        const T* Hn = net.H[l] + int64_t(n) * cs;
        const T gb = net.g[l][n] + Gn[0] * t, hb = Hn[0] * t, bn = net.b[l][n];
#pragma unroll
        for (int q = 0; q < kRows; ++q) {
          const int r = rc * kRows + q;
          if (r >= nr) continue;
          const int64_t b = r0 + r;
          T gp = gb, hp = hb;
          for (int j = 0; j < C; ++j) {
            const T cv = c[b * C + j];
            gp += Gn[1 + j] * cv;
            hp += Hn[1 + j] * cv;
          }
          const T gate = sigmoid(gp);
          const T pre = (acc[q] + bn) * gate + hp;
          if (last) {
            dz[b * D + n] = pre;
            if (exact) work[b * net.wsum + net.off[l] + n] = gate;
            if (hut) y[r * wmax + n] = noise[b * D + n] * gate * uacc[q];  // summed per row below
            continue;
          }
          T h, dact;
          if (softplus_act) {
            h = softplus(pre);
            dact = sigmoid(pre);
          } else {
            h = tanh(pre);
            dact = T(1) - h * h;
          }
          y[r * wmax + n] = h;
          if (exact) work[b * net.wsum + net.off[l] + n] = dact * gate;
          if (hut) uy[r * wmax + n] = dact * gate * uacc[q];
        }
      }
      __syncthreads();
      T* sw = x;
      x = y;
      y = sw;
      sw = ux;
      ux = uy;
      uy = sw;
    }
    if (hut)  // x now holds the products of the last layer
      for (int r = tid; r < nr; r += kThreads) {
        T s = T(0);
        for (int n = 0; n < D; ++n) s += x[r * wmax + n];
        div[r0 + r] = s;
      }
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    cnf_exact_div_kernel(Net<T> net, const T* __restrict__ work, T* __restrict__ div, int64_t B, int DC, int whid) {
  extern __shared__ __align__(16) unsigned char smem[];
  T* red = reinterpret_cast<T*>(smem);  // [kThreads]
  T* TA = red + kThreads;               // [whid][DC]
  T* TB = TA + int64_t(whid) * DC;
  const int tid = threadIdx.x, D = net.D, L = net.L;
  for (int64_t b = blockIdx.x; b < B; b += gridDim.x) {
    const T* wrow = work + b * net.wsum;
    const T* gl = wrow + net.off[L - 1];  // last gate [D]
    T total = T(0);                       // meaningful in thread 0
    if (L == 1) {                         // J = diag(gate) W
      if (tid == 0)
        for (int i = 0; i < D; ++i) total += gl[i] * net.W[0][int64_t(i) * D + i];
    } else {
      for (int d0 = 0; d0 < D; d0 += DC) {
        const int dc = min(DC, D - d0);
        __syncthreads();  // the previous chunk is done with TA / red
        const int n1 = net.out[0];
        for (int e = tid; e < n1 * dc; e += kThreads) {  // J_1 = diag(s_0) W_0 (columns d0 ..)
          const int n = e / dc, j = e % dc;
          TA[n * DC + j] = wrow[net.off[0] + n] * net.W[0][int64_t(n) * D + d0 + j];
        }
        __syncthreads();
        T* ta = TA;
        T* tb = TB;
        for (int l = 1; l < L - 1; ++l) {  // J_{l+1} = diag(s_l) W_l J_l
          const int in = net.in[l], out = net.out[l];
          const T* W = net.W[l];
          for (int e = tid; e < out * dc; e += kThreads) {
            const int n = e / dc, j = e % dc;
            const T* wn = W + int64_t(n) * in;
            T acc = T(0);
            for (int k = 0; k < in; ++k) acc += __ldg(wn + k) * ta[k * DC + j];
            tb[n * DC + j] = wrow[net.off[l] + n] * acc;
          }
          __syncthreads();
          T* sw = ta;
          ta = tb;
          tb = sw;
        }
        // tr(diag(gate) W_L J) over the chunk's columns: sum_j gate_{d0+j} <W_L[d0+j, :], J[:, j]>
        const int in = net.in[L - 1];
        const T* WL = net.W[L - 1];
        T part = T(0);
        for (int e = tid; e < dc * in; e += kThreads) {
          const int j = e / in, k = e % in;
          part += gl[d0 + j] * __ldg(WL + int64_t(d0 + j) * in + k) * ta[k * DC + j];
        }
        red[tid] = part;
        __syncthreads();
        for (int s = kThreads / 2; s > 0; s >>= 1) {
          if (tid < s) red[tid] += red[tid + s];
          __syncthreads();
        }
        if (tid == 0) total += red[0];
      }
    }
    if (tid == 0) div[b] = total;
    __syncthreads();
  }
}

template <typename T>
void launch(const T* t, const T* z, const T* c, const T* noise, const std::vector<int64_t>& weights,
            const std::vector<int64_t>& widths, T* dz, T* div, T* work, int64_t B, int64_t C, bool softplus_act,
            int divergence, cudaStream_t stream) {
  Net<T> net{};
  const int L = int(widths.size()) - 1;
  net.L = L, net.D = int(widths.front()), net.C = int(C);
  int whid = 1;
  for (int l = 0; l < L; ++l) {
    net.W[l] = reinterpret_cast<const T*>(weights[5 * l]);
    net.b[l] = reinterpret_cast<const T*>(weights[5 * l + 1]);
    net.G[l] = reinterpret_cast<const T*>(weights[5 * l + 2]);
    net.g[l] = reinterpret_cast<const T*>(weights[5 * l + 3]);
    net.H[l] = reinterpret_cast<const T*>(weights[5 * l + 4]);
    net.in[l] = int(widths[l]), net.out[l] = int(widths[l + 1]);
    net.off[l] = net.wsum;
    net.wsum += net.out[l];
    if (l + 1 < L) whid = std::max(whid, net.out[l]);
  }
  for (int64_t w : widths) net.wmax = std::max<int>(net.wmax, int(w));
  const bool hut = divergence == kCnfHutchinson;
  const size_t per_row = size_t(hut ? 4 : 2) * net.wmax * sizeof(T);
  const int MB = int(std::max<size_t>(1, std::min<size_t>(16, kSmemBytes / per_row)));
  cnf_fwd_kernel<T><<<grid_for(B, MB), kThreads, MB * per_row, stream>>>(net, t, z, c, noise, dz, div, work, B, MB,
                                                                          softplus_act, divergence);
  cuda_check(cudaGetLastError(), "cnf_fwd_kernel launch");
  if (divergence != kCnfExact) return;
  const size_t per_col = 2 * size_t(whid) * sizeof(T), fixed = kThreads * sizeof(T);
  const int DC = int(std::max<size_t>(1, std::min<size_t>({size_t(net.D), size_t(16), (kSmemBytes - fixed) / per_col})));
  cnf_exact_div_kernel<T><<<int(std::min<int64_t>(B, 65535)), kThreads, fixed + DC * per_col, stream>>>(
      net, work, div, B, DC, whid);
  cuda_check(cudaGetLastError(), "cnf_exact_div_kernel launch");
}

}  // namespace

void cnf_dynamics_fwd_cuda(int64_t t, int64_t z, int64_t c, int64_t noise, const std::vector<int64_t>& weights,
                           const std::vector<int64_t>& widths, int64_t dz, int64_t div, int64_t workspace,
                           int64_t workspace_size, int64_t B, int64_t C, int64_t activation, int64_t divergence,
                           bool float64, int64_t stream) {
  check_cnf("cnf_dynamics_fwd", B, C, weights, widths, activation, divergence, {{z, "z"}, {dz, "dz"}});
  check_ptr(t, "t", 1);
  if (C > 0) check_ptr(c, "c", B);
  if (divergence != kCnfNone) check_ptr(div, "div", B);
  if (divergence == kCnfHutchinson) check_ptr(noise, "noise", B);
  const int64_t need = cnf_cuda_workspace(B, widths, divergence);
  check_arg(workspace_size >= need, "cnf_dynamics_fwd: the workspace is smaller than cnf_cuda_workspace()");
  if (need > 0) check_ptr(workspace, "workspace", need);
  if (B == 0) return;
  const bool sp = activation == kCnfSoftplus;
  const int dv = int(divergence);
  if (float64)
    launch(reinterpret_cast<const double*>(t), reinterpret_cast<const double*>(z), reinterpret_cast<const double*>(c),
           reinterpret_cast<const double*>(noise), weights, widths, reinterpret_cast<double*>(dz),
           reinterpret_cast<double*>(div), reinterpret_cast<double*>(workspace), B, C, sp, dv, as_stream(stream));
  else
    launch(reinterpret_cast<const float*>(t), reinterpret_cast<const float*>(z), reinterpret_cast<const float*>(c),
           reinterpret_cast<const float*>(noise), weights, widths, reinterpret_cast<float*>(dz),
           reinterpret_cast<float*>(div), reinterpret_cast<float*>(workspace), B, C, sp, dv, as_stream(stream));
}
// cuda_host_emu: end

}  // namespace cgnf
