// NB101 hashes on the CPU with multi-buffer MD5: the MD5 messages of many graphs are hashed
// together, one per SIMD lane (GCC vector extensions): 16 lanes with AVX-512, 8 with AVX2, 8 on
// SSE2 otherwise, chosen at run time.
//
// Per chunk of graphs: round 0 hashes str((out_degree, in_degree, label)) of every vertex;
// each of the n rounds builds, for every vertex, the message "sorted in-neighbour hex | sorted
// out-neighbour hex | own hex" exactly as NB101's hash_module does; the fingerprint is the MD5
// of str(sorted(hashes)). Messages of equal block count are grouped and hashed together. The
// scalar path (graph_impl.h: nb101_hash_one) computes the same bytes; tests compare both with
// the Python reference.
#include <algorithm>
#include <cstdlib>
#include <string>
#include <cstring>
#include <vector>

#include "../common/checks.h"
#include "../common/parallel.h"
#include "dag.h"
#include "graph_impl.h"

namespace cgnf {

namespace {

typedef uint32_t v8u __attribute__((vector_size(32)));
typedef uint32_t v16u __attribute__((vector_size(64)));

// A padded message: `blocks` 64-byte MD5 blocks, written to `out`.
struct Job {
  const uint8_t* data;
  int blocks;
  uint8_t* out;
};

// Words 0..15 of block `blk` of eight jobs, transposed so that m[i] holds word i of every job
// (two 8x8 transposes of 32-bit words with shuffles).
__attribute__((always_inline)) inline void load8(const Job* jobs, int blk, v8u* m) {
  for (int half = 0; half < 2; ++half) {
    v8u r[8];
    for (int l = 0; l < 8; ++l) std::memcpy(&r[l], jobs[l].data + 64 * blk + 32 * half, 32);
    v8u t[8], u[8];
    for (int i = 0; i < 8; i += 2) {
      t[i] = __builtin_shufflevector(r[i], r[i + 1], 0, 8, 1, 9, 4, 12, 5, 13);
      t[i + 1] = __builtin_shufflevector(r[i], r[i + 1], 2, 10, 3, 11, 6, 14, 7, 15);
    }
    for (int i = 0; i < 8; i += 4) {
      u[i] = __builtin_shufflevector(t[i], t[i + 2], 0, 1, 8, 9, 4, 5, 12, 13);
      u[i + 1] = __builtin_shufflevector(t[i], t[i + 2], 2, 3, 10, 11, 6, 7, 14, 15);
      u[i + 2] = __builtin_shufflevector(t[i + 1], t[i + 3], 0, 1, 8, 9, 4, 5, 12, 13);
      u[i + 3] = __builtin_shufflevector(t[i + 1], t[i + 3], 2, 3, 10, 11, 6, 7, 14, 15);
    }
    for (int i = 0; i < 4; ++i) {
      m[8 * half + i] = __builtin_shufflevector(u[i], u[i + 4], 0, 1, 2, 3, 8, 9, 10, 11);
      m[8 * half + i + 4] = __builtin_shufflevector(u[i], u[i + 4], 4, 5, 6, 7, 12, 13, 14, 15);
    }
  }
}

__attribute__((always_inline)) inline void load(const Job* jobs, int blk, v8u* m) { load8(jobs, blk, m); }

__attribute__((always_inline)) inline void load(const Job* jobs, int blk, v16u* m) {
  v8u lo[16], hi[16];
  load8(jobs, blk, lo);
  load8(jobs + 8, blk, hi);
  for (int i = 0; i < 16; ++i)
    m[i] = __builtin_shufflevector(lo[i], hi[i], 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
}

// MD5 of L padded messages with the same number of blocks, one per lane.
template <typename V, int L>
__attribute__((always_inline)) inline void md5_lanes_impl(const Job* jobs) {
  V a0 = (V){} + 0x67452301u, b0 = (V){} + 0xefcdab89u, c0 = (V){} + 0x98badcfeu, d0 = (V){} + 0x10325476u;
  const int blocks = jobs[0].blocks;
  for (int blk = 0; blk < blocks; ++blk) {
    V m[16];
    load(jobs, blk, m);
    md5_steps(a0, b0, c0, d0, m);
  }
  for (int l = 0; l < L; ++l) {
    const uint32_t h[4] = {a0[l], b0[l], c0[l], d0[l]};
    std::memcpy(jobs[l].out, h, 16);
  }
}

__attribute__((target("avx512f"))) void md5x16_avx512(const Job* jobs) { md5_lanes_impl<v16u, 16>(jobs); }
__attribute__((target("avx2"))) void md5x8_avx2(const Job* jobs) { md5_lanes_impl<v8u, 8>(jobs); }
void md5x8_generic(const Job* jobs) { md5_lanes_impl<v8u, 8>(jobs); }

struct Md5Lanes {
  void (*fn)(const Job*);
  int lanes;
};

// The widest lane set the CPU supports; CGNF_SIMD=avx2|generic caps it, CGNF_SIMD=scalar
// selects the one-graph-at-a-time scalar path that the CUDA kernel runs (tests use this to
// check every path on the CPU).
Md5Lanes pick_md5() {
  __builtin_cpu_init();
  const char* cap = std::getenv("CGNF_SIMD");
  const std::string want = cap ? cap : "";
  if (want == "scalar") return {nullptr, 1};
  if (want != "avx2" && want != "generic" && __builtin_cpu_supports("avx512f")) return {md5x16_avx512, 16};
  if (want != "generic" && __builtin_cpu_supports("avx2")) return {md5x8_avx2, 8};
  return {md5x8_generic, 8};
}

// Hex text of a digest, two characters per table lookup.
struct HexTable {
  uint16_t pair[256];
};
HexTable make_hex_table() {
  HexTable t;
  const char* hex = "0123456789abcdef";
  for (int b = 0; b < 256; ++b) {
    const uint8_t two[2] = {uint8_t(hex[b >> 4]), uint8_t(hex[b & 15])};
    std::memcpy(&t.pair[b], two, 2);
  }
  return t;
}
const HexTable kHex = make_hex_table();

inline void hex_fast(uint8_t* dst, const uint8_t* digest) {
  uint16_t out[16];
  for (int i = 0; i < 16; ++i) out[i] = kHex.pair[digest[i]];
  std::memcpy(dst, out, 32);
}

// Pads msg[0..len) into whole MD5 blocks at dst; returns the number of blocks.
int pad(const uint8_t* msg, int len, uint8_t* dst) {
  const int blocks = (len + 9 + 63) / 64;
  std::memcpy(dst, msg, len);
  dst[len] = 0x80;
  std::memset(dst + len + 1, 0, blocks * 64 - len - 1);
  const uint64_t bits = uint64_t(len) * 8;
  std::memcpy(dst + blocks * 64 - 8, &bits, 8);  // little-endian length
  return blocks;
}

// Pads a message already at dst[0..len) in place; returns the number of blocks.
int pad_in_place(uint8_t* dst, int len) {
  const int blocks = (len + 9 + 63) / 64;
  dst[len] = 0x80;
  std::memset(dst + len + 1, 0, blocks * 64 - len - 1);
  const uint64_t bits = uint64_t(len) * 8;
  std::memcpy(dst + blocks * 64 - 8, &bits, 8);  // little-endian length
  return blocks;
}

// Runs all jobs: grouped by block count (a counting sort: messages have at most 9 blocks),
// one per SIMD lane (short groups repeat their first job into a scratch digest).
void run_jobs(std::vector<Job>& jobs, std::vector<Job>& sorted, Md5Lanes md5) {
  int counts[17] = {0};
  for (const Job& j : jobs) ++counts[j.blocks];
  int start[17], at = 0;
  for (int b = 0; b < 17; ++b) {
    start[b] = at;
    at += counts[b];
  }
  sorted.resize(jobs.size());
  for (const Job& j : jobs) sorted[start[j.blocks]++] = j;
  size_t i = 0;
  const size_t lanes = size_t(md5.lanes);
  Job group[16];
  uint8_t sink[16][16];
  while (i < sorted.size()) {
    size_t j = i;
    while (j < sorted.size() && j - i < lanes && sorted[j].blocks == sorted[i].blocks) ++j;
    const size_t k = j - i;
    for (size_t l = 0; l < lanes; ++l) {
      group[l] = sorted[l < k ? i + l : i];
      if (l >= k) group[l].out = sink[l];
    }
    md5.fn(group);
    i = j;
  }
}

// Round-0 digests of every (out-degree, in-degree, label) with NB101's labels -2..2.
struct InitTable {
  uint8_t d[kMax][kMax][5][16];
};

InitTable make_init_table() {
  InitTable t;
  uint8_t msg[32];
  for (int o = 0; o < kMax; ++o)
    for (int i = 0; i < kMax; ++i)
      for (int l = -2; l <= 2; ++l) md5(msg, nb101_init_message(msg, o, i, l), t.d[o][i][l + 2]);
  return t;
}

struct Chunk {  // reused across chunks: no allocation per chunk once warm
  std::vector<SmallGraph> graphs;
  std::vector<uint8_t> arena, dig, nxt, hex;
  std::vector<Job> jobs, sorted;
};

constexpr int kMaxMsg = (2 * kMax + 1) * 32 + 8;  // longest round message
constexpr int kMaxPadded = ((kMaxMsg + 9 + 63) / 64) * 64;
constexpr int kMaxFinal = kMax * 36 + 4;
constexpr int kMaxFinalPadded = ((kMaxFinal + 9 + 63) / 64) * 64;

void hash_chunk(Chunk& c, uint8_t* out, Md5Lanes md5x8) {
  const size_t G = c.graphs.size();
  c.dig.resize(G * kMax * 16);
  c.nxt.resize(G * kMax * 16);
  c.hex.resize(G * kMax * 32);
  auto& dig = c.dig;
  auto& nxt = c.nxt;
  auto& hex = c.hex;
  c.arena.resize(G * kMax * kMaxPadded + G * kMaxFinalPadded);
  uint8_t msg[kMaxFinal > kMaxMsg ? kMaxFinal : kMaxMsg];
  auto D = [&](std::vector<uint8_t>& v, size_t g, int x) { return v.data() + (g * kMax + x) * 16; };
  auto H = [&](size_t g, int x) { return hex.data() + (g * kMax + x) * 32; };
  // round 0: md5(str((out_degree, in_degree, label))), from a table for NB101's labels
  static const InitTable init = make_init_table();
  c.jobs.clear();
  for (size_t g = 0; g < G; ++g) {
    const SmallGraph& s = c.graphs[g];
    for (int v = 0; v < s.n; ++v) {
      int in = 0, outd = 0;
      for (int u = 0; u < s.n; ++u) {
        if (u < v && s.w[u][v]) ++in;
        if (v < u && s.w[v][u]) ++outd;
      }
      const int lab = s.label[v];
      if (lab >= -2 && lab <= 2) {
        std::memcpy(D(dig, g, v), init.d[outd][in][lab + 2], 16);
        continue;
      }
      uint8_t* slot = c.arena.data() + (g * kMax + v) * kMaxPadded;
      c.jobs.push_back({slot, pad_in_place(slot, nb101_init_message(slot, outd, in, lab)), D(dig, g, v)});
    }
  }
  run_jobs(c.jobs, c.sorted, md5x8);
  int rounds = 0;
  for (const auto& s : c.graphs) rounds = std::max(rounds, s.n);
  for (int round = 0; round < rounds; ++round) {
    c.jobs.clear();
    for (size_t g = 0; g < G; ++g) {
      const SmallGraph& s = c.graphs[g];
      if (round >= s.n) continue;  // a graph of n vertices runs n rounds
      for (int v = 0; v < s.n; ++v) hex_fast(H(g, v), D(dig, g, v));
      // vertices in the order of their hex digests: neighbour lists come out sorted
      const uint8_t(*dg)[16] = reinterpret_cast<const uint8_t(*)[16]>(D(dig, g, 0));
      uint8_t rank[kMax];
      for (int v = 0; v < s.n; ++v) rank[v] = uint8_t(v);
      sort_by_digest(rank, s.n, dg);
      for (int v = 0; v < s.n; ++v) {
        uint8_t* slot = c.arena.data() + (g * kMax + v) * kMaxPadded;
        int len = 0;
        for (int i = 0; i < s.n; ++i) {
          const int u = rank[i];
          if (u < v && s.w[u][v]) {
            std::memcpy(slot + len, H(g, u), 32);
            len += 32;
          }
        }
        slot[len++] = '|';
        for (int i = 0; i < s.n; ++i) {
          const int u = rank[i];
          if (u > v && s.w[v][u]) {
            std::memcpy(slot + len, H(g, u), 32);
            len += 32;
          }
        }
        slot[len++] = '|';
        std::memcpy(slot + len, H(g, v), 32);
        len += 32;
        c.jobs.push_back({slot, pad_in_place(slot, len), D(nxt, g, v)});
      }
    }
    run_jobs(c.jobs, c.sorted, md5x8);
    for (size_t g = 0; g < G; ++g)
      if (round < c.graphs[g].n) std::memcpy(D(dig, g, 0), D(nxt, g, 0), size_t(c.graphs[g].n) * 16);
  }
  // fingerprint: md5("['h0', 'h1', ...]") over the sorted hashes
  c.jobs.clear();
  for (size_t g = 0; g < G; ++g) {
    const SmallGraph& s = c.graphs[g];
    const uint8_t(*dg)[16] = reinterpret_cast<const uint8_t(*)[16]>(D(dig, g, 0));
    const int len = nb101_final_message(msg, s.n, dg);
    uint8_t* slot = c.arena.data() + G * kMax * kMaxPadded + g * kMaxFinalPadded;
    c.jobs.push_back({slot, pad(msg, len, slot), out + 16 * g});
  }
  run_jobs(c.jobs, c.sorted, md5x8);
}

const Md5Lanes& chosen_md5() {
  static const Md5Lanes md5 = pick_md5();
  return md5;
}

}  // namespace

int md5_lanes() { return chosen_md5().lanes; }

void dag_nb101_hash_cpu(int64_t adj, int64_t labels, int64_t n, int64_t out_digest, int64_t B, int64_t N,
                        int64_t num_threads) {
  check_batch("dag_nb101_hash", B, N, {{adj, "adj"}, {labels, "labels"}, {n, "n"}, {out_digest, "out_digest"}});
  const Md5Lanes md5x8 = chosen_md5();
  auto* a = reinterpret_cast<const uint8_t*>(adj);
  auto* l = reinterpret_cast<const int8_t*>(labels);
  auto* nn = reinterpret_cast<const int8_t*>(n);
  auto* out = reinterpret_cast<uint8_t*>(out_digest);
  if (md5x8.lanes == 1) {  // scalar path (graph_impl.h), as on the GPU
    parallel_for(B, num_threads, 256, [&](int64_t lo, int64_t hi) {
      SmallGraph g;
      for (int64_t b = lo; b < hi; ++b) {
        if (load_graph(a + b * N * N, l + b * N, nn[b], N, g))
          nb101_hash_one(g, out + 16 * b);
        else
          std::memset(out + 16 * b, 0, 16);
      }
    });
    return;
  }
  constexpr int64_t kChunk = 256;  // graphs hashed together (enough messages to fill the lanes)
  const int64_t chunks = (B + kChunk - 1) / kChunk;
  parallel_for(chunks, num_threads, 1, [&](int64_t lo, int64_t hi) {
    Chunk c;
    std::vector<int64_t> where;
    std::vector<uint8_t> digests;
    for (int64_t ch = lo; ch < hi; ++ch) {
      c.graphs.clear();
      where.clear();
      const int64_t b0 = ch * kChunk, b1 = std::min(B, b0 + kChunk);
      for (int64_t b = b0; b < b1; ++b) {
        SmallGraph g;
        if (load_graph(a + b * N * N, l + b * N, nn[b], N, g)) {
          c.graphs.push_back(g);
          where.push_back(b);
        } else {
          std::memset(out + 16 * b, 0, 16);
        }
      }
      if (c.graphs.empty()) continue;
      digests.resize(c.graphs.size() * 16);
      hash_chunk(c, digests.data(), md5x8);
      for (size_t i = 0; i < where.size(); ++i) std::memcpy(out + 16 * where[i], digests.data() + 16 * i, 16);
    }
  });
}

}  // namespace cgnf
