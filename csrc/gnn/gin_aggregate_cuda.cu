// CUDA GIN aggregation, forward and backward (math and layout in gnn.h).
//
// Work split. A graph is tiny (N <= 16 vertices) but its rows are wide (H features), and every
// output entry (row i, column k) needs only column k of the graph's N source rows. So:
//  * forward and grad_h: a block of 256 threads is (tx, ty) = (threads over columns, graphs):
//    tx = H rounded up to a warp, at most 256; ty = 256 / tx graphs per block (small H packs
//    several graphs into a block instead of idling threads). The ty adjacency matrices
//    (ty * N * N weights) are staged in shared memory once per block, and every thread reads
//    them as warp-wide broadcasts (a warp never spans two graphs since tx is a multiple of 32).
//    A thread loads column k of the N source rows into registers (N <= 16, unrolled over a
//    compile-time bound NMAX in {4, 8, 16}) and writes column k of all output rows: every
//    global read and write is coalesced over k and each output entry is written exactly once.
//  * grad_adj (only when asked for): a reduction over H for each of the N^2 pairs. A block of
//    256 threads holds 256 / NMAX^2 graphs and gives one (graph, a, c) pair to each thread
//    (NMAX in {8, 16}; the N < NMAX threads idle); the block stages 32-column tiles of h, g1
//    and g2 of its graphs in shared memory (rows padded to 33 to avoid bank conflicts), and
//    each thread accumulates its two dot products tile by tile in a register.
// Grid-stride loops over graph groups cover any batch with at most 65535 blocks. Zero weights
// are skipped as on the CPU (branches are uniform over a warp). Every launch uses the caller's
// stream and is checked for launch errors.
#include <cuda_runtime.h>

#include <algorithm>

#include "../common/checks.h"
#include "../common/cuda_utils.h"
#include "gnn.h"

namespace cgnf {

// cuda_host_emu: begin (scripts/emulate_cuda_kernels.py compiles from here to the end marker as host C++)
namespace {

constexpr int kThreads = 256;
constexpr int kTileK = 32;  // columns per shared-memory tile of the grad_adj kernel

template <typename T, int NMAX>
__global__ void __launch_bounds__(kThreads)
    gin_fwd_kernel(const T* __restrict__ adj, const T* __restrict__ h, T* __restrict__ out, int64_t B, int N,
                   int64_t H, T self) {
  extern __shared__ __align__(16) unsigned char smem[];
  T* As = reinterpret_cast<T*>(smem);  // [ty, N, N]
  const int NN = N * N, ty = blockDim.y;
  const int tid = threadIdx.y * blockDim.x + threadIdx.x, nthreads = blockDim.x * blockDim.y;
  for (int64_t g0 = int64_t(blockIdx.x) * ty; g0 < B; g0 += int64_t(gridDim.x) * ty) {
    const int count = int(min(int64_t(ty), B - g0));
    __syncthreads();  // the previous group is done with As
    for (int e = tid; e < count * NN; e += nthreads) As[e] = adj[g0 * NN + e];
    __syncthreads();
    const int64_t b = g0 + threadIdx.y;
    if (b >= B) continue;
    const T* A = As + threadIdx.y * NN;
    const T* hb = h + b * N * H;
    T* ob = out + b * N * 2 * H;
    for (int64_t k = threadIdx.x; k < H; k += blockDim.x) {
      T hv[NMAX];
#pragma unroll
      for (int j = 0; j < NMAX; ++j) hv[j] = j < N ? hb[j * H + k] : T(0);
#pragma unroll
      for (int i = 0; i < NMAX; ++i) {
        if (i >= N) break;
        T pred = self != T(0) ? self * hv[i] : T(0), succ = T(0);
#pragma unroll
        for (int j = 0; j < NMAX; ++j) {
          if (j >= N) break;
          const T wp = A[j * N + i], ws = A[i * N + j];
          if (wp != T(0)) pred += wp * hv[j];
          if (ws != T(0)) succ += ws * hv[j];
        }
        ob[i * 2 * H + k] = pred;
        ob[i * 2 * H + H + k] = succ;
      }
    }
  }
}

template <typename T, int NMAX>
__global__ void __launch_bounds__(kThreads)
    gin_bwd_h_kernel(const T* __restrict__ grad_out, const T* __restrict__ adj, T* __restrict__ grad_h, int64_t B,
                     int N, int64_t H, T self) {
  extern __shared__ __align__(16) unsigned char smem[];
  T* As = reinterpret_cast<T*>(smem);  // [ty, N, N]
  const int NN = N * N, ty = blockDim.y;
  const int tid = threadIdx.y * blockDim.x + threadIdx.x, nthreads = blockDim.x * blockDim.y;
  for (int64_t g0 = int64_t(blockIdx.x) * ty; g0 < B; g0 += int64_t(gridDim.x) * ty) {
    const int count = int(min(int64_t(ty), B - g0));
    __syncthreads();
    for (int e = tid; e < count * NN; e += nthreads) As[e] = adj[g0 * NN + e];
    __syncthreads();
    const int64_t b = g0 + threadIdx.y;
    if (b >= B) continue;
    const T* A = As + threadIdx.y * NN;
    const T* gb = grad_out + b * N * 2 * H;
    T* out = grad_h + b * N * H;
    for (int64_t k = threadIdx.x; k < H; k += blockDim.x) {
      T g1[NMAX], g2[NMAX];
#pragma unroll
      for (int i = 0; i < NMAX; ++i) {
        g1[i] = i < N ? gb[i * 2 * H + k] : T(0);
        g2[i] = i < N ? gb[i * 2 * H + H + k] : T(0);
      }
#pragma unroll
      for (int j = 0; j < NMAX; ++j) {
        if (j >= N) break;
        T acc = self != T(0) ? self * g1[j] : T(0);
#pragma unroll
        for (int i = 0; i < NMAX; ++i) {
          if (i >= N) break;
          const T w_out = A[j * N + i], w_in = A[i * N + j];
          if (w_out != T(0)) acc += w_out * g1[i];
          if (w_in != T(0)) acc += w_in * g2[i];
        }
        out[j * H + k] = acc;
      }
    }
  }
}

// Graphs per block of gin_bwd_adj_kernel: one thread per (a, c) pair of NMAX x NMAX.
template <int NMAX>
constexpr int bwd_adj_graphs() {
  static_assert(kThreads % (NMAX * NMAX) == 0, "a block holds whole graphs");
  return kThreads / (NMAX * NMAX);
}

template <typename T, int NMAX>
__global__ void __launch_bounds__(kThreads)
    gin_bwd_adj_kernel(const T* __restrict__ grad_out, const T* __restrict__ h, T* __restrict__ grad_adj, int64_t B,
                       int N, int64_t H) {
  constexpr int P = NMAX * NMAX, G = bwd_adj_graphs<NMAX>();
  __shared__ T hs[G][NMAX][kTileK + 1], g1s[G][NMAX][kTileK + 1], g2s[G][NMAX][kTileK + 1];
  const int t = threadIdx.x, q = t / P, a = (t % P) / NMAX, c = t % NMAX;
  for (int64_t g0 = int64_t(blockIdx.x) * G; g0 < B; g0 += int64_t(gridDim.x) * G) {
    T acc = T(0);
    for (int64_t k0 = 0; k0 < H; k0 += kTileK) {
      __syncthreads();  // the previous tile is consumed
      for (int e = t; e < G * NMAX * kTileK; e += kThreads) {
        const int qq = e / (NMAX * kTileK), r = (e / kTileK) % NMAX, kk = e % kTileK;
        const int64_t bb = g0 + qq, k = k0 + kk;
        const bool ok = bb < B && r < N && k < H;
        const int64_t row = bb * N + r;
        hs[qq][r][kk] = ok ? h[row * H + k] : T(0);
        g1s[qq][r][kk] = ok ? grad_out[row * 2 * H + k] : T(0);
        g2s[qq][r][kk] = ok ? grad_out[row * 2 * H + H + k] : T(0);
      }
      __syncthreads();
#pragma unroll 8
      for (int kk = 0; kk < kTileK; ++kk) acc += hs[q][a][kk] * g1s[q][c][kk] + g2s[q][a][kk] * hs[q][c][kk];
    }
    const int64_t b = g0 + q;
    if (b < B && a < N && c < N) grad_adj[(b * N + a) * N + c] = acc;
  }
}

// Threads over columns (a multiple of the warp, <= 256) and graphs per block for width H.
dim3 block_for(int64_t H) {
  const int tx = int(std::min<int64_t>(kThreads, (H + 31) / 32 * 32));
  return dim3(tx, kThreads / tx);
}

template <typename T>
void fwd_typed(const T* adj, const T* h, T* out, int64_t B, int N, int64_t H, T self, cudaStream_t stream) {
  const dim3 block = block_for(H);
  const int grid = grid_for(B, int(block.y));
  const size_t smem = size_t(block.y) * N * N * sizeof(T);
  if (N <= 4)
    gin_fwd_kernel<T, 4><<<grid, block, smem, stream>>>(adj, h, out, B, N, H, self);
  else if (N <= 8)
    gin_fwd_kernel<T, 8><<<grid, block, smem, stream>>>(adj, h, out, B, N, H, self);
  else
    gin_fwd_kernel<T, 16><<<grid, block, smem, stream>>>(adj, h, out, B, N, H, self);
  cuda_check(cudaGetLastError(), "gin_fwd_kernel launch");
}

template <typename T>
void bwd_typed(const T* grad_out, const T* adj, const T* h, T* grad_h, T* grad_adj, int64_t B, int N, int64_t H,
               T self, cudaStream_t stream) {
  const dim3 block = block_for(H);
  const int grid = grid_for(B, int(block.y));
  const size_t smem = size_t(block.y) * N * N * sizeof(T);
  if (N <= 4)
    gin_bwd_h_kernel<T, 4><<<grid, block, smem, stream>>>(grad_out, adj, grad_h, B, N, H, self);
  else if (N <= 8)
    gin_bwd_h_kernel<T, 8><<<grid, block, smem, stream>>>(grad_out, adj, grad_h, B, N, H, self);
  else
    gin_bwd_h_kernel<T, 16><<<grid, block, smem, stream>>>(grad_out, adj, grad_h, B, N, H, self);
  cuda_check(cudaGetLastError(), "gin_bwd_h_kernel launch");
  if (!grad_adj) return;
  if (N <= 8)
    gin_bwd_adj_kernel<T, 8><<<grid_for(B, bwd_adj_graphs<8>()), kThreads, 0, stream>>>(grad_out, h, grad_adj, B, N, H);
  else
    gin_bwd_adj_kernel<T, 16>
        <<<grid_for(B, bwd_adj_graphs<16>()), kThreads, 0, stream>>>(grad_out, h, grad_adj, B, N, H);
  cuda_check(cudaGetLastError(), "gin_bwd_adj_kernel launch");
}

}  // namespace

void gin_aggregate_fwd_cuda(int64_t adj, int64_t h, int64_t out, int64_t B, int64_t N, int64_t H, double eps,
                            bool float64, int64_t stream) {
  check_gin("gin_aggregate_fwd", B, N, H, {{adj, "adj"}, {h, "h"}, {out, "out"}});
  if (B == 0) return;
  if (float64)
    fwd_typed(reinterpret_cast<const double*>(adj), reinterpret_cast<const double*>(h), reinterpret_cast<double*>(out),
              B, int(N), H, 1.0 + eps, as_stream(stream));
  else
    fwd_typed(reinterpret_cast<const float*>(adj), reinterpret_cast<const float*>(h), reinterpret_cast<float*>(out),
              B, int(N), H, static_cast<float>(1.0 + eps), as_stream(stream));
}

void gin_aggregate_bwd_cuda(int64_t grad_out, int64_t adj, int64_t h, int64_t grad_h, int64_t grad_adj, int64_t B,
                            int64_t N, int64_t H, double eps, bool float64, int64_t stream) {
  check_gin("gin_aggregate_bwd", B, N, H, {{grad_out, "grad_out"}, {adj, "adj"}, {grad_h, "grad_h"}});
  if (grad_adj) check_ptr(h, "h (needed for grad_adj)", B);
  if (B == 0) return;
  if (float64)
    bwd_typed(reinterpret_cast<const double*>(grad_out), reinterpret_cast<const double*>(adj),
              reinterpret_cast<const double*>(h), reinterpret_cast<double*>(grad_h),
              reinterpret_cast<double*>(grad_adj), B, int(N), H, 1.0 + eps, as_stream(stream));
  else
    bwd_typed(reinterpret_cast<const float*>(grad_out), reinterpret_cast<const float*>(adj),
              reinterpret_cast<const float*>(h), reinterpret_cast<float*>(grad_h), reinterpret_cast<float*>(grad_adj),
              B, int(N), H, static_cast<float>(1.0 + eps), as_stream(stream));
}
// cuda_host_emu: end

}  // namespace cgnf
