// CUDA CNF adjoint dynamics: the MLP, its divergence and the vector-Jacobian products of the
// cotangents (a_z, a_div) (math in cnf_adjoint_cpu.cpp's header comment, layout in cnf.h).
//
// Work split (a first, simple design: correctness checked by the host emulation of
// scripts/emulate_cuda_kernels.py; its speed has not been measured on a GPU).
//  * cnf_adj_row_kernel: a block of 256 threads per batch row (grid-stride over rows, at most
//    kAdjBlocks blocks). The block runs the row's forward pass (threads over a layer's output
//    units), the divergence's forward and reverse passes (exact: [width][D] tangent matrices,
//    threads over their entries; Hutchinson: vectors), then the MLP's reverse pass, with every
//    intermediate of the row in the block's slice of a global workspace (cached in L1/L2). The
//    weight gradients of the block's rows accumulate in the block's own slice of the workspace
//    (each entry owned by one thread at a time: no atomics); per-row outputs (dz/dt, div, g_z,
//    g_c) are written directly. Sums over a layer (the divergence, the time's and condition's
//    cotangents) run in a fixed order, so results are deterministic.
//  * cnf_adj_reduce_kernel: every weight gradient entry (and the time's) summed over the blocks'
//    slices in block order.
// Every launch uses the caller's stream; the time is read from device memory.
#include <cuda_runtime.h>

#include <algorithm>
#include <vector>

#include "../common/checks.h"
#include "../common/cuda_utils.h"
#include "cnf.h"

namespace cgnf {

// cuda_host_emu: begin (scripts/emulate_cuda_kernels.py compiles from here to the end marker as host C++)
namespace {

constexpr int kAdjThreads = 256;
constexpr int kAdjMaxLayers = int(kCnfMaxLayers);

// Where a block keeps a row's state and its gradient sums (entries of T): the same for every
// dtype, computed on the host (adj_layout) for the workspace size and the kernels.
struct AdjLayout {
  int gw[kAdjMaxLayers];   // layer l's gradients (W, b, G, g, H one after the other) in the partials
  int hin[kAdjMaxLayers];  // the row's state: layer input [in]
  int gate[kAdjMaxLayers], u[kAdjMaxLayers], da[kAdjMaxLayers], pre[kAdjMaxLayers];  // [out] each
  int gateb[kAdjMaxLayers], sbar[kAdjMaxLayers];                                       // [out] each
  int hu[kAdjMaxLayers], hv[kAdjMaxLayers];                                            // Hutchinson
  int J[kAdjMaxLayers], Q[kAdjMaxLayers];                                              // exact: [w][D]
  int fout, pb, ub, gp, hb0, hb1, ctxb, jb0, jb1, qb, red;
  int row_size;   // entries of the row state
  int n_partial;  // weight-gradient entries + 1 (the time's)
  int in[kAdjMaxLayers], out[kAdjMaxLayers];
  int L, D, C, wmax;
};

inline AdjLayout adj_layout(const std::vector<int64_t>& widths, int64_t C, int64_t divergence) {
  AdjLayout y{};
  const int L = int(widths.size()) - 1, D = int(widths.front()), cs = int(1 + C);
  const bool hut = divergence == kCnfHutchinson, exact = divergence == kCnfExact;
  y.L = L, y.D = D, y.C = int(C);
  int off = 0, gw = 0;
  auto take = [&](int n) {
    const int o = off;
    off += n;
    return o;
  };
  for (int l = 0; l < L; ++l) {
    const int in = int(widths[l]), out = int(widths[l + 1]);
    y.in[l] = in, y.out[l] = out;
    y.wmax = std::max({y.wmax, in, out});
    y.gw[l] = gw;
    gw += out * in + out + out * cs + out + out * cs;
    y.hin[l] = take(in);
    y.gate[l] = take(out), y.u[l] = take(out), y.da[l] = take(out), y.pre[l] = take(out);
    y.gateb[l] = take(out), y.sbar[l] = take(out);
    y.hu[l] = take(hut ? in : 0), y.hv[l] = take(hut ? out : 0);
    y.J[l] = take(exact && l >= 1 ? in * D : 0);
    y.Q[l] = take(exact && l >= 1 && l < L - 1 ? out * D : 0);
  }
  y.fout = take(D), y.pb = take(y.wmax), y.ub = take(y.wmax), y.gp = take(y.wmax);
  y.hb0 = take(y.wmax), y.hb1 = take(y.wmax), y.ctxb = take(cs), y.red = take(kAdjThreads);
  y.jb0 = take(exact ? y.wmax * D : 0), y.jb1 = take(exact ? y.wmax * D : 0), y.qb = take(exact ? y.wmax * D : 0);
  y.row_size = off;
  y.n_partial = gw + 1;
  return y;
}

constexpr int64_t kAdjBlocks = 1024;  // most blocks of cnf_adj_row_kernel (each owns a workspace slice)

inline int64_t adj_blocks(int64_t B) { return std::max<int64_t>(1, std::min(B, kAdjBlocks)); }

template <typename T>
struct AdjNet {
  const T* W[kAdjMaxLayers];
  const T* b[kAdjMaxLayers];
  const T* G[kAdjMaxLayers];
  const T* g[kAdjMaxLayers];
  const T* H[kAdjMaxLayers];
};

template <typename T>
struct GradPtrs {
  T* p[5 * kAdjMaxLayers];
};

template <typename T>
__device__ __forceinline__ T adj_sigmoid(T x) {
  return T(1) / (T(1) + exp(-x));
}

// Sum of v[0 .. n) by the block in a fixed order (per-thread strided sums, then a fixed tree),
// returned to every thread. red: kAdjThreads entries of workspace.
template <typename T>
__device__ T block_sum(const T* v, int n, T* red) {
  const int tid = threadIdx.x;
  T s = T(0);
  for (int i = tid; i < n; i += kAdjThreads) s += v[i];
  red[tid] = s;
  __syncthreads();
  for (int w = kAdjThreads / 2; w > 0; w >>= 1) {
    if (tid < w) red[tid] += red[tid + w];
    __syncthreads();
  }
  const T total = red[0];
  __syncthreads();
  return total;
}

template <typename T>
__global__ void __launch_bounds__(kAdjThreads)
    cnf_adj_row_kernel(AdjNet<T> wts, AdjLayout net, const T* __restrict__ tp, const T* __restrict__ z, const T* __restrict__ c,
                       const T* __restrict__ noise, const T* __restrict__ az, const T* __restrict__ adiv,
                       T* __restrict__ dz, T* __restrict__ div, T* __restrict__ gz, T* __restrict__ gc,
                       T* __restrict__ work, int64_t B, bool softplus_act, int divergence) {
  const int tid = threadIdx.x, L = net.L, D = net.D, C = net.C, cs = 1 + C;
  const bool hut = divergence == kCnfHutchinson, exact = divergence == kCnfExact;
  // work[0]: the number of blocks that ran (read by the reduction); then one slice per block
  if (blockIdx.x == 0 && tid == 0) work[0] = T(gridDim.x);
  T* ws = work + 1 + int64_t(blockIdx.x) * (int64_t(net.row_size) + net.n_partial);
  T* part = ws + net.row_size;  // this block's gradient sums
  const T t = *tp;
  for (int64_t i = tid; i < net.n_partial; i += kAdjThreads) part[i] = T(0);
  for (int64_t b = blockIdx.x; b < B; b += gridDim.x) {
    const T a = divergence != kCnfNone ? adiv[b] : T(0);
    const T* cb = c + b * C;
    __syncthreads();
    for (int k = tid; k < D; k += kAdjThreads) {
      ws[net.hin[0] + k] = z[b * D + k];
      if (hut) ws[net.hu[0] + k] = noise[b * D + k];
    }
    for (int l = 0; l < L; ++l) {
      for (int n = tid; n < net.out[l]; n += kAdjThreads) ws[net.gateb[l] + n] = ws[net.sbar[l] + n] = T(0);
    }
    __syncthreads();
    // forward pass
    for (int l = 0; l < L; ++l) {
      const int in = net.in[l], out = net.out[l];
      const bool last = l == L - 1;
      for (int n = tid; n < out; n += kAdjThreads) {
        const T* Gn = wts.G[l] + int64_t(n) * cs;
        const T* Hn = wts.H[l] + int64_t(n) * cs;
        T gpre = wts.g[l][n] + Gn[0] * t, hp = Hn[0] * t;
        for (int j = 0; j < C; ++j) {
          gpre += Gn[1 + j] * cb[j];
          hp += Hn[1 + j] * cb[j];
        }
        const T gate = adj_sigmoid(gpre);
        const T* wn = wts.W[l] + int64_t(n) * in;
        T acc = T(0), uacc = T(0);
        for (int k = 0; k < in; ++k) {
          acc += wn[k] * ws[net.hin[l] + k];
          if (hut) uacc += wn[k] * ws[net.hu[l] + k];
        }
        const T uu = acc + wts.b[l][n];
        const T pre = uu * gate + hp;
        ws[net.gate[l] + n] = gate;
        ws[net.u[l] + n] = uu;
        if (hut) ws[net.hv[l] + n] = uacc;
        if (last) {
          ws[net.fout + n] = pre;
          continue;
        }
        T h, d;
        if (softplus_act) {
          h = pre > T(20) ? pre : log1p(exp(pre));
          d = adj_sigmoid(pre);
          ws[net.pre[l] + n] = pre;
        } else {
          h = tanh(pre);
          d = T(1) - h * h;
        }
        ws[net.da[l] + n] = d;
        ws[net.hin[l + 1] + n] = h;
        if (hut) ws[net.hu[l + 1] + n] = d * gate * uacc;
      }
      __syncthreads();
    }
    const int lz = L - 1;
    const T* gz_last = ws + net.gate[lz];
    T divr = T(0);
    if (hut) {  // div = sum_d e_d gate_d v_d; reverse: vbar = a e gate, gatebar += a e v
      for (int d = tid; d < D; d += kAdjThreads) {
        const T e = ws[net.hu[0] + d], v = ws[net.hv[lz] + d];
        ws[net.pb + d] = e * gz_last[d] * v;
        ws[net.hb0 + d] = a * e * gz_last[d];
        ws[net.gateb[lz] + d] += a * e * v;
      }
      __syncthreads();
      divr = block_sum(ws + net.pb, D, ws + net.red);
      int vb = net.hb0, ubo = net.hb1;
      for (int l = lz; l >= 0; --l) {
        const int in = net.in[l], out = net.out[l];
        T* pw = part + net.gw[l];
        for (int e = tid; e < out * in; e += kAdjThreads) {
          const int n = e / in, k = e % in;
          pw[e] += ws[vb + n] * ws[net.hu[l] + k];
        }
        if (l == 0) break;
        for (int k = tid; k < in; k += kAdjThreads) {
          T s = T(0);
          for (int n = 0; n < out; ++n) s += wts.W[l][int64_t(n) * in + k] * ws[vb + n];
          ws[net.sbar[l - 1] + k] += s * ws[net.hv[l - 1] + k];
          ws[ubo + k] = s * ws[net.gate[l - 1] + k] * ws[net.da[l - 1] + k];
        }
        __syncthreads();
        const int sw = vb;
        vb = ubo;
        ubo = sw;
      }
      __syncthreads();
    }
    if (exact) {
      if (L == 1) {  // div = sum_i gate_i W_ii
        for (int i = tid; i < D; i += kAdjThreads) {
          const T wii = wts.W[0][int64_t(i) * D + i];
          ws[net.pb + i] = gz_last[i] * wii;
          ws[net.gateb[0] + i] += a * wii;
          part[net.gw[0] + int64_t(i) * D + i] += a * gz_last[i];
        }
        __syncthreads();
        divr = block_sum(ws + net.pb, D, ws + net.red);
      } else {
        const int n1 = net.out[0];
        for (int e = tid; e < n1 * D; e += kAdjThreads) {  // J_1 = diag(s_0) W_0
          const int n = e / D;
          ws[net.J[1] + e] = ws[net.da[0] + n] * ws[net.gate[0] + n] * wts.W[0][e];
        }
        __syncthreads();
        for (int l = 1; l < L - 1; ++l) {  // Q_l = W_l J_l, J_{l+1} = diag(s_l) Q_l
          const int in = net.in[l], out = net.out[l];
          for (int e = tid; e < out * D; e += kAdjThreads) {
            const int n = e / D, d = e % D;
            const T* wn = wts.W[l] + int64_t(n) * in;
            T s = T(0);
            for (int k = 0; k < in; ++k) s += wn[k] * ws[net.J[l] + int64_t(k) * D + d];
            ws[net.Q[l] + e] = s;
            ws[net.J[l + 1] + e] = ws[net.da[l] + n] * ws[net.gate[l] + n] * s;
          }
          __syncthreads();
        }
        const int inL = net.in[lz];
        const T* WL = wts.W[lz];
        const T* JL = ws + net.J[lz];
        for (int d = tid; d < D; d += kAdjThreads) {  // (W_L J_L)_dd
          T s = T(0);
          for (int k = 0; k < inL; ++k) s += WL[int64_t(d) * inL + k] * JL[int64_t(k) * D + d];
          ws[net.pb + d] = gz_last[d] * s;
          ws[net.gateb[lz] + d] += a * s;
        }
        __syncthreads();
        divr = block_sum(ws + net.pb, D, ws + net.red);
        if (a != T(0)) {
          int jb = net.jb0, jb2 = net.jb1;
          for (int e = tid; e < inL * D; e += kAdjThreads) {  // Jbar_L[k, d] = a gate_d W_L[d, k]; Wbar_L
            const int k = e / D, d = e % D;
            ws[jb + e] = a * gz_last[d] * WL[int64_t(d) * inL + k];
          }
          for (int e = tid; e < D * inL; e += kAdjThreads) {
            const int d = e / inL, k = e % inL;
            part[net.gw[lz] + e] += a * gz_last[d] * JL[int64_t(k) * D + d];
          }
          __syncthreads();
          for (int l = L - 2; l >= 0; --l) {
            const int in = net.in[l], out = net.out[l];
            for (int n = tid; n < out; n += kAdjThreads) {  // sbar_l, Qbar = diag(s_l) Jbar
              const T sc = ws[net.da[l] + n] * ws[net.gate[l] + n];
              T s = T(0);
              for (int d = 0; d < D; ++d) {
                const T q = l == 0 ? wts.W[0][int64_t(n) * D + d] : ws[net.Q[l] + int64_t(n) * D + d];
                const T jv = ws[jb + int64_t(n) * D + d];
                s += jv * q;
                ws[net.qb + int64_t(n) * D + d] = sc * jv;
              }
              ws[net.sbar[l] + n] += s;
            }
            __syncthreads();
            T* pw = part + net.gw[l];
            if (l == 0) {
              for (int e = tid; e < out * D; e += kAdjThreads) pw[e] += ws[net.qb + e];
            } else {
              for (int e = tid; e < out * in; e += kAdjThreads) {  // Wbar_l += Qbar J_l^T
                const int m = e / in, k = e % in;
                T s = T(0);
                for (int d = 0; d < D; ++d) s += ws[net.qb + int64_t(m) * D + d] * ws[net.J[l] + int64_t(k) * D + d];
                pw[e] += s;
              }
              for (int e = tid; e < in * D; e += kAdjThreads) {  // Jbar <- W_l^T Qbar
                const int k = e / D, d = e % D;
                T s = T(0);
                for (int m = 0; m < out; ++m) s += wts.W[l][int64_t(m) * in + k] * ws[net.qb + int64_t(m) * D + d];
                ws[jb2 + e] = s;
              }
            }
            __syncthreads();
            const int sw = jb;
            jb = jb2;
            jb2 = sw;
          }
        }
      }
    }
    for (int k = tid; k < D; k += kAdjThreads) {
      if (dz) dz[b * D + k] = ws[net.fout + k];
      ws[net.pb + k] = az[b * D + k];  // prebar of the last layer
    }
    if (tid == 0 && div) div[b] = divr;
    for (int j = tid; j < cs; j += kAdjThreads) ws[net.ctxb + j] = T(0);
    __syncthreads();
    // the MLP's reverse pass
    int hb = net.hb0, hb2 = net.hb1;
    for (int l = L - 1; l >= 0; --l) {
      const int in = net.in[l], out = net.out[l];
      const bool last = l == L - 1;
      T* pw = part + net.gw[l];
      T* pbias = pw + int64_t(out) * in;
      T* pG = pbias + out;
      T* pg = pG + int64_t(out) * cs;
      T* pH = pg + out;
      for (int n = tid; n < out; n += kAdjThreads) {
        const T g = ws[net.gate[l] + n];
        T gb = ws[net.gateb[l] + n];
        T pb;
        if (last) {
          pb = ws[net.pb + n];
        } else {
          const T d = ws[net.da[l] + n], sb = ws[net.sbar[l] + n], h = ws[net.hin[l + 1] + n];
          const T act2 = softplus_act ? d * (T(1) - d) : T(-2) * h * d;
          const T dm = softplus_act && ws[net.pre[l] + n] > T(20) ? T(1) : d;
          pb = ws[hb + n] * dm + sb * g * act2;
          gb += sb * d;
        }
        const T ub = pb * g;
        gb += pb * ws[net.u[l] + n];
        const T gpv = gb * g * (T(1) - g);
        ws[net.ub + n] = ub;
        ws[net.gp + n] = gpv;
        ws[net.pb + n] = pb;
        pbias[n] += ub;
        pg[n] += gpv;
        pG[int64_t(n) * cs] += t * gpv;
        pH[int64_t(n) * cs] += t * pb;
        for (int j = 0; j < C; ++j) {
          pG[int64_t(n) * cs + 1 + j] += gpv * cb[j];
          pH[int64_t(n) * cs + 1 + j] += pb * cb[j];
        }
      }
      __syncthreads();
      for (int e = tid; e < out * in; e += kAdjThreads) {  // Wbar += ubar h^T
        const int n = e / in, k = e % in;
        pw[e] += ws[net.ub + n] * ws[net.hin[l] + k];
      }
      for (int j = tid; j < cs; j += kAdjThreads) {  // ctxbar += G^T gp + H^T prebar (fixed order)
        T s = T(0);
        for (int n = 0; n < out; ++n)
          s += wts.G[l][int64_t(n) * cs + j] * ws[net.gp + n] + wts.H[l][int64_t(n) * cs + j] * ws[net.pb + n];
        ws[net.ctxb + j] += s;
      }
      for (int k = tid; k < in; k += kAdjThreads) {  // hbar = W^T ubar
        T s = T(0);
        for (int n = 0; n < out; ++n) s += wts.W[l][int64_t(n) * in + k] * ws[net.ub + n];
        ws[hb2 + k] = s;
      }
      __syncthreads();
      const int sw = hb;
      hb = hb2;
      hb2 = sw;
    }
    for (int k = tid; k < D; k += kAdjThreads)
      if (gz) gz[b * D + k] = ws[hb + k];
    for (int j = tid; j < C; j += kAdjThreads)
      if (gc) gc[b * C + j] = ws[net.ctxb + 1 + j];
    if (tid == 0) part[net.n_partial - 1] += ws[net.ctxb];
  }
}

template <typename T>
__global__ void __launch_bounds__(kAdjThreads)
    cnf_adj_reduce_kernel(AdjLayout net, const T* __restrict__ work, T* __restrict__ gt, GradPtrs<T> out) {
  const int64_t stride = int64_t(net.row_size) + net.n_partial;
  const int blocks = int(work[0]);
  for (int64_t i = int64_t(blockIdx.x) * kAdjThreads + threadIdx.x; i < net.n_partial;
       i += int64_t(gridDim.x) * kAdjThreads) {
    T s = T(0);
    for (int k = 0; k < blocks; ++k) s += work[1 + int64_t(k) * stride + net.row_size + i];
    if (i == net.n_partial - 1) {
      if (gt) *gt = s;
      continue;
    }
    int l = 0;  // the layer and part of entry i
    while (l + 1 < net.L && i >= net.gw[l + 1]) ++l;
    int64_t r = i - net.gw[l];
    const int64_t sizes[5] = {int64_t(net.out[l]) * net.in[l], net.out[l], int64_t(net.out[l]) * (1 + net.C),
                              net.out[l], int64_t(net.out[l]) * (1 + net.C)};
    int p = 0;
    while (r >= sizes[p]) r -= sizes[p++];
    T* dst = out.p[5 * l + p];
    if (dst) dst[r] = s;
  }
}


template <typename T>
void launch_adjoint(const T* t, const T* z, const T* c, const T* noise, const std::vector<int64_t>& weights,
                    const std::vector<int64_t>& widths, const T* az, const T* adiv, T* dz, T* div, T* gt, T* gz, T* gc,
                    const std::vector<int64_t>& g_weights, T* work, int64_t B, int64_t C, bool softplus_act,
                    int divergence, cudaStream_t stream) {
  const AdjLayout net = adj_layout(widths, C, divergence);
  AdjNet<T> wts{};
  GradPtrs<T> out{};
  for (int l = 0; l < net.L; ++l) {
    wts.W[l] = reinterpret_cast<const T*>(weights[5 * l]);
    wts.b[l] = reinterpret_cast<const T*>(weights[5 * l + 1]);
    wts.G[l] = reinterpret_cast<const T*>(weights[5 * l + 2]);
    wts.g[l] = reinterpret_cast<const T*>(weights[5 * l + 3]);
    wts.H[l] = reinterpret_cast<const T*>(weights[5 * l + 4]);
  }
  for (size_t i = 0; i < g_weights.size(); ++i) out.p[i] = reinterpret_cast<T*>(g_weights[i]);
  const int blocks = int(adj_blocks(B));
  cnf_adj_row_kernel<T><<<blocks, kAdjThreads, 0, stream>>>(wts, net, t, z, c, noise, az, adiv, dz, div, gz, gc, work,
                                                             B, softplus_act, divergence);
  cuda_check(cudaGetLastError(), "cnf_adj_row_kernel launch");
  cnf_adj_reduce_kernel<T><<<grid_for(net.n_partial, kAdjThreads), kAdjThreads, 0, stream>>>(net, work, gt, out);
  cuda_check(cudaGetLastError(), "cnf_adj_reduce_kernel launch");
}

}  // namespace

int64_t cnf_adjoint_workspace_cuda(int64_t B, const std::vector<int64_t>& widths, int64_t C, int64_t divergence) {
  const AdjLayout y = adj_layout(widths, C, divergence);
  return 1 + adj_blocks(B) * (int64_t(y.row_size) + y.n_partial);
}

void cnf_adjoint_cuda(int64_t t, int64_t z, int64_t c, int64_t noise, const std::vector<int64_t>& weights,
                      const std::vector<int64_t>& widths, int64_t a_z, int64_t a_div, int64_t dz, int64_t div,
                      int64_t g_t, int64_t g_z, int64_t g_c, const std::vector<int64_t>& g_weights, int64_t workspace,
                      int64_t workspace_size, int64_t B, int64_t C, int64_t activation, int64_t divergence,
                      bool float64, int64_t stream) {
  check_cnf_adjoint(B, C, weights, widths, activation, divergence, t, z, c, noise, a_z, a_div, g_weights);
  const int64_t need = cnf_adjoint_workspace_cuda(B, widths, C, divergence);
  check_arg(workspace_size >= need, "cnf_adjoint: the workspace is smaller than cnf_adjoint_workspace_cuda()");
  check_ptr(workspace, "workspace", need);
  // B = 0 launches too: one block with no rows zeroes its sums, so the gradients come out 0
  const bool sp = activation == kCnfSoftplus;
  const int dv = int(divergence);
  auto go = [&](auto tag) {
    using T = decltype(tag);
    auto P = [](int64_t p) { return reinterpret_cast<T*>(p); };
    launch_adjoint<T>(P(t), P(z), C > 0 ? P(c) : nullptr, P(noise), weights, widths, P(a_z), P(a_div), P(dz), P(div),
                      P(g_t), P(g_z), C > 0 ? P(g_c) : nullptr, g_weights, P(workspace), B, C, sp, dv,
                      as_stream(stream));
  };
  if (float64)
    go(double{});
  else
    go(float{});
}
// cuda_host_emu: end

}  // namespace cgnf
