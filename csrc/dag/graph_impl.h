// Host/device building blocks for graphs of <= 8 vertices: canonical search, MD5, NB101 hash.
// Shared verbatim by the CPU and CUDA paths, so both compute bit-identical results.
//
// Conventions (as cgnf_fast/reference/dag.py): vertex 0 is the input, n-1 the output, the
// order is topological (only i < j entries of a matrix are read). A code is built position by
// position: n (4 bits), then for p = 1..n-2 a chunk holding the label (5 bits) of the vertex
// placed at p above its in-edge weights (the edge from position q at bit q*wbits), then the
// output's chunk of in-edge weights. The canonical code is the minimum over all topological
// orders (cgnf_fast/reference/dag.py: pack_code, canonical_code).
#pragma once

#include <cstdint>

#if defined(__SSE2__) && !defined(__CUDACC__)
#include <emmintrin.h>
#endif

#ifdef __CUDACC__
#define CGNF_HD __host__ __device__ __forceinline__
#else
#define CGNF_HD inline
#endif

namespace cgnf {

constexpr int kMax = 8;
constexpr int kLabelBits = 5;
constexpr int kNBits = 4;
constexpr int kNetworkWeightBits = 7;
constexpr uint64_t kInf = ~uint64_t{0};

// A graph as a weight matrix (0 = no edge) plus labels; structural graphs use weights 0/1.
struct SmallGraph {
  int n;
  uint8_t w[kMax][kMax];
  int8_t label[kMax];
  uint8_t pred[kMax];  // bitmask of u with w[u][v] != 0
};

CGNF_HD void finish_graph(SmallGraph& g) {
  for (int v = 0; v < g.n; ++v) {
    uint8_t m = 0;
    for (int u = 0; u < v; ++u)
      if (g.w[u][v]) m |= uint8_t(1u << u);
    g.pred[v] = m;
  }
}

// Result of a canonical search.
struct CanonResult {
  uint64_t chunk[kMax];   // best chunk per position (1..n-2 vertices, n-1 the output)
  int32_t automorphisms;  // number of orders achieving the minimum (= |Aut| of the graph)
  bool aborted;           // target mode: some order beat the target (graph not in canonical form)
};

CGNF_HD uint64_t vertex_chunk(const SmallGraph& g, const uint8_t* order, int p, int v, int wbits) {
  uint64_t c = (uint64_t(uint8_t(g.label[v])) & ((1u << kLabelBits) - 1)) << (p * wbits);
  for (int q = 0; q < p; ++q) c |= uint64_t(g.w[order[q]][v]) << (q * wbits);
  return c;
}

CGNF_HD uint64_t output_chunk(const SmallGraph& g, const uint8_t* order, int wbits) {
  uint64_t c = 0;
  const int o = g.n - 1;
  for (int q = 0; q < g.n - 1; ++q) c |= uint64_t(g.w[order[q]][o]) << (q * wbits);
  return c;
}

CGNF_HD int lowest_bit(uint32_t x) {
#ifdef __CUDA_ARCH__
  return __ffs(int(x)) - 1;
#else
  return __builtin_ctz(x);
#endif
}

CGNF_HD int popcount32(uint32_t x) {
#ifdef __CUDA_ARCH__
  return __popc(x);
#else
  return __builtin_popcount(x);
#endif
}

CGNF_HD int popcount64(uint64_t x) {
#ifdef __CUDA_ARCH__
  return __popcll(x);
#else
  return __builtin_popcountll(x);
#endif
}

// Intermediate vertices not yet placed whose predecessors are all placed.
CGNF_HD uint32_t ready_mask(const SmallGraph& g, uint32_t placed) {
  uint32_t m = 0;
  for (int v = 1; v < g.n - 1; ++v)
    if (!(placed >> v & 1u) && !(g.pred[v] & ~placed)) m |= 1u << v;
  return m;
}

// Depth-first search over topological orders, keeping only orders whose prefix is minimal.
// Invariant: at depth p the current prefix equals best[0..p-1]. Entering a depth evaluates all
// ready vertices and descends only into those with the smallest chunk; a chunk smaller than
// best[p] resets the deeper bests to +inf. acc[p][x] holds the in-edge weights of x from the
// vertices at positions 0..p-1, already at their bits (a chunk costs O(1), a placement O(n)).
// With `target` (the chunks of the identity order) the search aborts as soon as an order beats
// it and otherwise visits every order that matches it (the automorphisms); `on_leaf(order)` is
// called for each minimal leaf found so far.
template <typename OnLeaf>
CGNF_HD void canon_search(const SmallGraph& g, int wbits, const uint64_t* target, CanonResult& r, OnLeaf on_leaf) {
  const int n = g.n;
  uint64_t* best = r.chunk;
  for (int p = 0; p < kMax; ++p) best[p] = target ? target[p] : kInf;
  r.automorphisms = 0;
  r.aborted = false;
  uint64_t acc[kMax][kMax];
  uint32_t todo[kMax];
  uint8_t order[kMax];
  order[0] = 0;
  for (int x = 0; x < n; ++x) acc[1][x] = g.w[0][x];
  uint32_t placed = 1u;
  // Entering depth p: the ready vertices with the smallest chunk, if it does not exceed
  // best[p]; a smaller one resets the deeper bests (or, with a target, aborts).
  auto enter = [&](int p) -> uint32_t {
    uint32_t rest = ready_mask(g, placed), keep = 0;
    uint64_t mn = kInf;
    while (rest) {
      const int v = lowest_bit(rest);
      rest &= rest - 1;
      const uint64_t c = (uint64_t(uint8_t(g.label[v]) & ((1u << kLabelBits) - 1)) << (p * wbits)) | acc[p][v];
      if (c < mn) {
        mn = c;
        keep = 1u << v;
      } else if (c == mn) {
        keep |= 1u << v;
      }
    }
    if (mn > best[p]) return 0u;
    if (mn < best[p]) {
      if (target) {
        r.aborted = true;
        return 0u;
      }
      best[p] = mn;
      for (int q = p + 1; q < kMax; ++q) best[q] = kInf;
      r.automorphisms = 0;
    }
    return keep;
  };
  int p = 1;
  if (n > 2) {
    todo[1] = enter(1);
    if (r.aborted) return;
  }
  while (p >= 1) {
    if (p == n - 1) {  // leaf: every intermediate vertex placed
      order[p] = uint8_t(n - 1);
      const uint64_t c = acc[p][n - 1];
      if (c < best[p]) {
        if (target) {
          r.aborted = true;
          return;
        }
        best[p] = c;
        r.automorphisms = 0;
      }
      if (c == best[p]) {
        ++r.automorphisms;
        on_leaf(order);
      }
    } else if (todo[p]) {
      const int v = lowest_bit(todo[p]);
      todo[p] &= todo[p] - 1;
      order[p] = uint8_t(v);
      placed |= 1u << v;
      for (int x = 0; x < n; ++x) acc[p + 1][x] = acc[p][x] | (uint64_t(g.w[v][x]) << (p * wbits));
      ++p;
      if (p < n - 1) {
        todo[p] = enter(p);
        if (r.aborted) return;
      }
      continue;
    }
    --p;  // leaf done or depth exhausted: undo the placement at p
    if (p >= 1) placed &= ~(1u << order[p]);
  }
}

struct NoLeaf {
  CGNF_HD void operator()(const uint8_t*) const {}
};

// Chunks of the identity order (the graph exactly as stored).
CGNF_HD void identity_chunks(const SmallGraph& g, int wbits, uint64_t* out) {
  uint8_t order[kMax];
  for (int q = 0; q < kMax; ++q) order[q] = uint8_t(q);
  for (int p = 0; p < kMax; ++p) out[p] = kInf;
  for (int p = 1; p < g.n - 1; ++p) out[p] = vertex_chunk(g, order, p, p, wbits);
  out[g.n - 1] = output_chunk(g, order, wbits);
}

// Structural code (weights 0/1) packed in one integer (< 2**62 for n <= 8).
CGNF_HD uint64_t pack_structural(int n, const uint64_t* chunk) {
  uint64_t code = uint64_t(n);
  if (!chunk) return code << (n - 1);
  for (int p = 1; p < n - 1; ++p) code = (code << (kLabelBits + p)) | chunk[p];
  return (code << (n - 1)) | chunk[n - 1];
}

// A 0/1 graph as bitmasks (the fast path of structural canonical codes).
struct BitGraph {
  int n;
  uint8_t pred[kMax];   // bitmask of in-neighbours
  uint8_t succ[kMax];   // bitmask of out-neighbours
  uint8_t label[kMax];  // 5-bit labels
};

// Byte x of the result is 1 where bit x of `mask` (8 bits) is set, else 0.
CGNF_HD uint64_t spread_bytes(uint32_t mask) {
  const uint64_t y = (uint64_t(mask & 0xffu) * 0x0101010101010101ull) & 0x8040201008040201ull;
  return ((y + 0x7f7f7f7f7f7f7f7full) >> 7) & 0x0101010101010101ull;
}

// One level of the canonical search, lane by lane (portable; the CUDA kernel's and the CPU's
// CGNF_SIMD=generic path; canonical_code_cpu.cpp has an SSE4.1 copy). A vertex's key is
// label << 8 | in-bits: it orders like its chunk (label << p | in-bits, in-bits < 2**p).
// Returns the smallest key of the ready vertices (those in `avail` whose predecessors are all
// in `placed`; there is always one) and sets *keep to the vertices that have it.
struct KeyScanScalar {
  const BitGraph& g;
  CGNF_HD explicit KeyScanScalar(const BitGraph& graph) : g(graph) {}
  CGNF_HD uint32_t operator()(uint32_t avail, uint32_t placed, uint64_t inb, uint32_t* keep) const {
    uint32_t key[kMax], mn = 0xffffffffu;
#ifdef __CUDACC__
#pragma unroll
#endif
    for (int v = 1; v < kMax - 1; ++v) {
      const uint32_t ready = (avail >> v) & uint32_t((g.pred[v] & ~placed) == 0) & 1u;
      const uint32_t k = (uint32_t(g.label[v]) << 8) | uint32_t((inb >> (8 * v)) & 0xffu);
      key[v] = ready ? k : 0xffffffffu;
      mn = key[v] < mn ? key[v] : mn;
    }
    uint32_t kp = 0;
#ifdef __CUDACC__
#pragma unroll
#endif
    for (int v = 1; v < kMax - 1; ++v) kp |= uint32_t(key[v] == mn) << v;
    *keep = kp;
    return mn;
  }
};

#include "canonical_search.inc"

CGNF_HD uint64_t canonical_code_bits(const BitGraph& g) { return canonical_code_search(g, KeyScanScalar(g)); }

// Loads graph b of a batch straight into bitmasks (see load_graph); false when n is out of
// range or an intermediate label is outside [0, 31].
CGNF_HD bool load_bits(const uint8_t* adj, const int8_t* labels, int8_t n_b, int64_t N, BitGraph& g) {
  if (n_b < 2 || n_b > N || N > kMax) return false;
  const int n = n_b;
  g.n = n;
  for (int v = 0; v < kMax; ++v) {
    g.pred[v] = 0;
    g.succ[v] = 0;
    g.label[v] = v < n ? uint8_t(labels[v]) & ((1u << kLabelBits) - 1) : 0;
  }
  for (int v = 1; v < n - 1; ++v)
    if (labels[v] < 0 || labels[v] > (1 << kLabelBits) - 1) return false;
  for (int u = 0; u < n - 1; ++u) {
    const uint8_t* row = adj + u * N;
    for (int v = u + 1; v < n; ++v) {
      const uint8_t e = row[v] != 0;
      g.pred[v] |= uint8_t(e << u);
      g.succ[u] |= uint8_t(e << v);
    }
  }
  return true;
}

#ifndef __CUDACC__
// Bit 8u+v set for u < v < n, per n (rows of 8 bytes).
struct UpperTriangle {
  uint64_t mask[kMax + 1];
};
constexpr UpperTriangle upper_triangle() {
  UpperTriangle t{};
  for (int n = 0; n <= kMax; ++n)
    for (int u = 0; u < n; ++u)
      for (int v = u + 1; v < n; ++v) t.mask[n] |= uint64_t{1} << (8 * u + v);
  return t;
}
constexpr UpperTriangle kUpperTriangle = upper_triangle();

// load_bits for rows of exactly 8 bytes (N = 8), the matrix at once: its non-zero bytes become
// one 64-bit mask (SSE2 compares, or word-wise bit tricks), byte u the successors of u, and an
// 8x8 bit transpose gives the predecessor masks. Same result as load_bits.
inline bool load_bits8(const uint8_t* adj, const int8_t* labels, int8_t n_b, BitGraph& g) {
  if (n_b < 2 || n_b > 8) return false;
  const int n = n_b;
  uint64_t lab;
  __builtin_memcpy(&lab, labels, 8);
  const uint64_t inner = n > 2 ? ((~uint64_t{0}) >> (64 - 8 * (n - 2))) << 8 : 0;  // bytes 1 .. n-2
  if (lab & inner & 0xe0e0e0e0e0e0e0e0ull) return false;                 // < 0 or > 31
  const uint64_t in_n = n == 8 ? ~uint64_t{0} : (uint64_t{1} << (8 * n)) - 1;
  lab &= 0x1f1f1f1f1f1f1f1full & in_n;
  __builtin_memcpy(g.label, &lab, 8);
  g.n = n;
  const uint64_t tri = kUpperTriangle.mask[n];  // bit 8u+v of m: edge u -> v, kept for u < v < n
#if defined(__SSE2__)
  const __m128i zero = _mm_setzero_si128();
  uint64_t zeros = 0;  // bit i: byte i of the matrix is 0
  for (int k = 0; k < 4; ++k) {
    const __m128i r = _mm_loadu_si128(reinterpret_cast<const __m128i*>(adj + 16 * k));
    zeros |= uint64_t(uint32_t(_mm_movemask_epi8(_mm_cmpeq_epi8(r, zero)))) << (16 * k);
  }
  uint64_t m = ~zeros & tri;
#else
  uint64_t m = 0;
  for (int u = 0; u < 7; ++u) {
    uint64_t r;
    __builtin_memcpy(&r, adj + 8 * u, 8);
    r |= r >> 4;
    r |= r >> 2;
    r |= r >> 1;
    r &= 0x0101010101010101ull;
    m |= ((r * 0x0102040810204080ull) >> 56) << (8 * u);  // bit v = byte v non-zero
  }
  m &= tri;
#endif
  __builtin_memcpy(g.succ, &m, 8);
  uint64_t t;  // 8x8 bit transpose (bit 8u+v -> bit 8v+u)
  t = (m ^ (m >> 7)) & 0x00aa00aa00aa00aaull;
  m ^= t ^ (t << 7);
  t = (m ^ (m >> 14)) & 0x0000cccc0000ccccull;
  m ^= t ^ (t << 14);
  t = (m ^ (m >> 28)) & 0x00000000f0f0f0f0ull;
  m ^= t ^ (t << 28);
  __builtin_memcpy(g.pred, &m, 8);
  return true;
}
#endif

// Big-endian multiword packing of wide (network) codes: words[0] most significant.
struct Wide {
  uint64_t w[4];
};

CGNF_HD void wide_push(Wide& x, uint64_t value, int bits) {
  // x = (x << bits) | value, bits <= 63
  for (int i = 0; i < 3; ++i) x.w[i] = (x.w[i] << bits) | (x.w[i + 1] >> (64 - bits));
  x.w[3] = (x.w[3] << bits) | value;
}

CGNF_HD Wide pack_wide(int n, const uint64_t* chunk, int wbits) {
  Wide x = {{0, 0, 0, uint64_t(n)}};
  for (int p = 1; p < n - 1; ++p) wide_push(x, chunk[p], kLabelBits + p * wbits);
  wide_push(x, chunk[n - 1], (n - 1) * wbits);
  return x;
}

// ---- MD5 (RFC 1321) on short messages ----------------------------------------------------
// The MD5 tables: one copy for host code, one in constant memory for device code.
#define CGNF_MD5_K \
  { \
    0xd76aa478u, 0xe8c7b756u, 0x242070dbu, 0xc1bdceeeu, 0xf57c0fafu, 0x4787c62au, 0xa8304613u, 0xfd469501u, \
    0x698098d8u, 0x8b44f7afu, 0xffff5bb1u, 0x895cd7beu, 0x6b901122u, 0xfd987193u, 0xa679438eu, 0x49b40821u, \
    0xf61e2562u, 0xc040b340u, 0x265e5a51u, 0xe9b6c7aau, 0xd62f105du, 0x02441453u, 0xd8a1e681u, 0xe7d3fbc8u, \
    0x21e1cde6u, 0xc33707d6u, 0xf4d50d87u, 0x455a14edu, 0xa9e3e905u, 0xfcefa3f8u, 0x676f02d9u, 0x8d2a4c8au, \
    0xfffa3942u, 0x8771f681u, 0x6d9d6122u, 0xfde5380cu, 0xa4beea44u, 0x4bdecfa9u, 0xf6bb4b60u, 0xbebfbc70u, \
    0x289b7ec6u, 0xeaa127fau, 0xd4ef3085u, 0x04881d05u, 0xd9d4d039u, 0xe6db99e5u, 0x1fa27cf8u, 0xc4ac5665u, \
    0xf4292244u, 0x432aff97u, 0xab9423a7u, 0xfc93a039u, 0x655b59c3u, 0x8f0ccc92u, 0xffeff47du, 0x85845dd1u, \
    0x6fa87e4fu, 0xfe2ce6e0u, 0xa3014314u, 0x4e0811a1u, 0xf7537e82u, 0xbd3af235u, 0x2ad7d2bbu, 0xeb86d391u \
  }
#define CGNF_MD5_S \
  { \
    7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, \
    5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20, \
    4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, \
    6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21 \
  }
static constexpr uint32_t kMd5KHost[64] = CGNF_MD5_K;
static constexpr uint8_t kMd5SHost[64] = CGNF_MD5_S;
#ifdef __CUDACC__
__device__ __constant__ uint32_t kMd5KDev[64] = CGNF_MD5_K;
__device__ __constant__ uint8_t kMd5SDev[64] = CGNF_MD5_S;
#endif

CGNF_HD uint32_t md5_k(int i) {
#ifdef __CUDA_ARCH__
  return kMd5KDev[i];
#else
  return kMd5KHost[i];
#endif
}

CGNF_HD int md5_s(int i) {
#ifdef __CUDA_ARCH__
  return kMd5SDev[i];
#else
  return kMd5SHost[i];
#endif
}

// The 64 MD5 steps on one block, for a scalar state (T = uint32_t) or one state per SIMD lane
// (T = a GCC vector of uint32_t, nb101_hash_cpu.cpp). m: the block's 16 little-endian words.
template <typename T>
CGNF_HD void md5_steps(T& a0, T& b0, T& c0, T& d0, const T* m) {
  T a = a0, b = b0, c = c0, d = d0;
#ifdef __CUDACC__
#pragma unroll
#else
#pragma GCC unroll 64
#endif
  for (int i = 0; i < 64; ++i) {
    T f;
    int gi;
    if (i < 16) {
      f = (b & c) | (~b & d);
      gi = i;
    } else if (i < 32) {
      f = (d & b) | (~d & c);
      gi = (5 * i + 1) & 15;
    } else if (i < 48) {
      f = b ^ c ^ d;
      gi = (3 * i + 5) & 15;
    } else {
      f = c ^ (b | ~d);
      gi = (7 * i) & 15;
    }
    f = f + a + m[gi] + md5_k(i);
    const int sh = md5_s(i);
    a = d;
    d = c;
    c = b;
    b = b + ((f << sh) | (f >> (32 - sh)));
  }
  a0 += a;
  b0 += b;
  c0 += c;
  d0 += d;
}

CGNF_HD void md5_block(uint32_t* h, const uint8_t* blk) {
  uint32_t m[16];
  for (int i = 0; i < 16; ++i)
    m[i] = uint32_t(blk[4 * i]) | uint32_t(blk[4 * i + 1]) << 8 | uint32_t(blk[4 * i + 2]) << 16 |
           uint32_t(blk[4 * i + 3]) << 24;
  md5_steps(h[0], h[1], h[2], h[3], m);
}

// MD5 digest of msg[0..len) (len < 2**29).
CGNF_HD void md5(const uint8_t* msg, int len, uint8_t* out16) {
  uint32_t h[4] = {0x67452301u, 0xefcdab89u, 0x98badcfeu, 0x10325476u};
  int off = 0;
  for (; off + 64 <= len; off += 64) md5_block(h, msg + off);
  uint8_t tail[128];
  const int rest = len - off;
  for (int i = 0; i < rest; ++i) tail[i] = msg[off + i];
  tail[rest] = 0x80;
  const int tail_len = rest + 9 <= 64 ? 64 : 128;
  for (int i = rest + 1; i < tail_len; ++i) tail[i] = 0;
  const uint64_t bits = uint64_t(len) * 8;
  for (int i = 0; i < 8; ++i) tail[tail_len - 8 + i] = uint8_t(bits >> (8 * i));
  md5_block(h, tail);
  if (tail_len == 128) md5_block(h, tail + 64);
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) out16[4 * i + j] = uint8_t(h[i] >> (8 * j));
}

CGNF_HD void put_hex(uint8_t* dst, const uint8_t* digest) {
  const char* hex = "0123456789abcdef";
  for (int i = 0; i < 16; ++i) {
    dst[2 * i] = uint8_t(hex[digest[i] >> 4]);
    dst[2 * i + 1] = uint8_t(hex[digest[i] & 15]);
  }
}

CGNF_HD int put_int(uint8_t* dst, int v) {
  int len = 0;
  if (v < 0) {
    dst[len++] = '-';
    v = -v;
  }
  char tmp[12];
  int k = 0;
  do {
    tmp[k++] = char('0' + v % 10);
    v /= 10;
  } while (v);
  while (k) dst[len++] = uint8_t(tmp[--k]);
  return len;
}

CGNF_HD bool digest_less(const uint8_t* a, const uint8_t* b) {
  for (int i = 0; i < 16; ++i)
    if (a[i] != b[i]) return a[i] < b[i];
  return false;
}

// Sorts idx[0..k) by the digests they point at (insertion sort: k <= 8). Hex strings of equal
// length sort like the bytes they encode, so this is Python's sorted() of the hexdigests.
CGNF_HD void sort_by_digest(uint8_t* idx, int k, const uint8_t (*dig)[16]) {
  for (int i = 1; i < k; ++i) {
    uint8_t x = idx[i];
    int j = i - 1;
    while (j >= 0 && digest_less(dig[x], dig[idx[j]])) {
      idx[j + 1] = idx[j];
      --j;
    }
    idx[j + 1] = x;
  }
}

// NB101's first-round message: str((out_degree, in_degree, label)) as Python prints it.
CGNF_HD int nb101_init_message(uint8_t* dst, int outd, int in, int label) {
  int len = 0;
  dst[len++] = '(';
  len += put_int(dst + len, outd);
  dst[len++] = ',';
  dst[len++] = ' ';
  len += put_int(dst + len, in);
  dst[len++] = ',';
  dst[len++] = ' ';
  len += put_int(dst + len, label);
  dst[len++] = ')';
  return len;
}

// NB101's fingerprint message: str(sorted(hashes)) = "['h0', 'h1', ...]" (kMax * 36 + 4 bytes).
CGNF_HD int nb101_final_message(uint8_t* dst, int n, const uint8_t (*dig)[16]) {
  uint8_t idx[kMax];
  for (int v = 0; v < n; ++v) idx[v] = uint8_t(v);
  sort_by_digest(idx, n, dig);
  int len = 0;
  dst[len++] = '[';
  for (int i = 0; i < n; ++i) {
    if (i) {
      dst[len++] = ',';
      dst[len++] = ' ';
    }
    dst[len++] = '\'';
    put_hex(dst + len, dig[idx[i]]);
    len += 32;
    dst[len++] = '\'';
  }
  dst[len++] = ']';
  return len;
}

// NB101's graph_util.hash_module: labels are NB101's (-1 input, -2 output, 0..2 ops); reads
// the 0/1 weights of g. Writes the 16-byte fingerprint digest.
CGNF_HD void nb101_hash_one(const SmallGraph& g, uint8_t* out16) {
  const int n = g.n;
  uint8_t dig[kMax][16], nxt[kMax][16];
  uint8_t buf[(2 * kMax + 1) * 32 + 8];
  for (int v = 0; v < n; ++v) {
    int in = 0, outd = 0;
    for (int u = 0; u < n; ++u) {
      if (u < v && g.w[u][v]) ++in;
      if (v < u && g.w[v][u]) ++outd;
    }
    const int len = nb101_init_message(buf, outd, in, g.label[v]);
    md5(buf, len, dig[v]);  // kept as digests; messages use their hex text, as Python does
  }
  for (int round = 0; round < n; ++round) {
    for (int v = 0; v < n; ++v) {
      uint8_t idx[kMax];
      int len = 0, k = 0;
      for (int u = 0; u < v; ++u)
        if (g.w[u][v]) idx[k++] = uint8_t(u);
      sort_by_digest(idx, k, dig);
      for (int i = 0; i < k; ++i, len += 32) put_hex(buf + len, dig[idx[i]]);
      buf[len++] = '|';
      k = 0;
      for (int u = v + 1; u < n; ++u)
        if (g.w[v][u]) idx[k++] = uint8_t(u);
      sort_by_digest(idx, k, dig);
      for (int i = 0; i < k; ++i, len += 32) put_hex(buf + len, dig[idx[i]]);
      buf[len++] = '|';
      put_hex(buf + len, dig[v]);
      len += 32;
      md5(buf, len, nxt[v]);
    }
    for (int v = 0; v < n; ++v)
      for (int i = 0; i < 16; ++i) dig[v][i] = nxt[v][i];
  }
  // md5(str(sorted(hashes))) = md5("['h0', 'h1', ...]")
  uint8_t fin[kMax * 36 + 4];
  const int len = nb101_final_message(fin, n, dig);
  md5(fin, len, out16);
}

// Loads graph b of a batch ([B, N, N] uint8 adjacency, [B, N] int8 labels, [B] int8 n).
// Returns false (graph untouched) when n is out of range.
CGNF_HD bool load_graph(const uint8_t* adj, const int8_t* labels, int8_t n_b, int64_t N, SmallGraph& g) {
  if (n_b < 2 || n_b > N || N > kMax) return false;
  g.n = n_b;
  for (int u = 0; u < kMax; ++u)
    for (int v = 0; v < kMax; ++v) g.w[u][v] = 0;
  for (int u = 0; u < g.n; ++u) {
    g.label[u] = labels[u];
    for (int v = u + 1; v < g.n; ++v) g.w[u][v] = adj[u * N + v] ? 1 : 0;
  }
  finish_graph(g);
  return true;
}

}  // namespace cgnf
