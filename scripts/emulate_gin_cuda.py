"""Check the index arithmetic of csrc/gnn/gin_aggregate_cuda.cu without a GPU.

A line-by-line Python transliteration of its three kernels (gin_fwd_kernel, gin_bwd_h_kernel,
gin_bwd_adj_kernel) and of the host launchers (fwd_typed / bwd_typed: block_for, grid_for, the
dynamic shared-memory size and the NMAX template choice, as the .cu makes them). Blocks and
threads run one after the other between __syncthreads barriers; shared memory is a NaN-filled
array (kept by a block across its grid-stride groups, as on the device), and the outputs start
as NaN (torch.empty in cgnf_fast/ops/gnn.py), so a read of anything the kernel did not write,
or an output entry it never wrote, shows up as NaN. Every global store is also counted: each
output entry must be written exactly once.

Compared in float64 with the pure-PyTorch reference (cgnf_fast/reference/gnn.py, loaded from
this checkout by path) on shapes that hit: every N in 1..16 (the op's max, kGinMaxNodes) and so
every NMAX template (4, 8, 16 for the forward / grad_h kernels; 8, 16 for grad_adj); widths H
that give every block shape (tx = H rounded up to 32, ty = 256 / tx graphs a block, including
tx = 96, 160, 224 that leave threads of the 256 unused) and ragged grad_adj tiles of 32
columns; batches 0, 1, 7 and a few hundred (ragged last graph group of a block); eps = 0, 0.25
and -1 (self weight 0: the self term is skipped); 0/1 DAG, soft and fully dense adjacencies;
with and without grad_adj; non-finite features behind zero weights (the native kernels skip
zero weights, the bmm reference would give NaN there); and the grid-stride loops, by lowering
grid_for's 65535-block cap (marked "cap=" in the output: the only way to reach them at a
size pure Python can run). It says nothing about races, the hardware, or float32 rounding;
keep it in step with the .cu when the kernels change. Usage (pure Python, about a minute):

    python scripts/emulate_gin_cuda.py
"""

from __future__ import annotations

import importlib.util
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

_REF = Path(__file__).resolve().parents[1] / "cgnf_fast" / "reference" / "gnn.py"
_spec = importlib.util.spec_from_file_location("_gin_reference", _REF)
ref = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ref)  # pure torch; no need for the built package (_C)

kThreads, kTileK, kGinMaxNodes, kGridCap = 256, 32, 16, 65535
NAN = math.nan
TSIZE = 8  # sizeof(double): the emulation runs the float64 instantiation


def bwd_adj_graphs(NMAX):
    """Graphs per block of gin_bwd_adj_kernel."""
    assert kThreads % (NMAX * NMAX) == 0
    return kThreads // (NMAX * NMAX)


def grid_for(count, threads, cap=kGridCap):
    """common/cuda_utils.h grid_for (cap lowered only to reach the grid-stride loops)."""
    blocks = (count + threads - 1) // threads
    return 1 if blocks < 1 else (cap if blocks > cap else blocks)


def block_for(H):
    """(blockDim.x, blockDim.y): threads over columns (a multiple of 32, <= 256), graphs."""
    tx = min(kThreads, (H + 31) // 32 * 32)
    return tx, kThreads // tx


# ----------------------------------------------------------------------------------- kernels


def gin_fwd_kernel(NMAX, grid, block, smem_bytes, adj, h, out, B, N, H, self, writes):
    bdx, bdy = block
    for blockIdx in range(grid):
        smem = [NAN] * (smem_bytes // TSIZE)
        As = smem  # [ty, N, N]
        NN, ty = N * N, bdy
        nthreads = bdx * bdy
        g0 = blockIdx * ty
        while g0 < B:
            count = min(ty, B - g0)
            # __syncthreads(): the previous group is done with As
            for tid in range(nthreads):
                e = tid
                while e < count * NN:
                    As[e] = adj[g0 * NN + e]
                    e += nthreads
            # __syncthreads()
            for tyi in range(bdy):
                for txi in range(bdx):
                    b = g0 + tyi
                    if b >= B:
                        continue
                    A = tyi * NN  # As + threadIdx.y * NN
                    hb = b * N * H
                    ob = b * N * 2 * H
                    k = txi
                    while k < H:
                        hv = [0.0] * NMAX
                        for j in range(NMAX):
                            hv[j] = h[hb + j * H + k] if j < N else 0.0
                        for i in range(NMAX):
                            if i >= N:
                                break
                            pred = self * hv[i] if self != 0.0 else 0.0
                            succ = 0.0
                            for j in range(NMAX):
                                if j >= N:
                                    break
                                wp, ws = As[A + j * N + i], As[A + i * N + j]
                                if wp != 0.0:
                                    pred += wp * hv[j]
                                if ws != 0.0:
                                    succ += ws * hv[j]
                            out[ob + i * 2 * H + k] = pred
                            writes[ob + i * 2 * H + k] += 1
                            out[ob + i * 2 * H + H + k] = succ
                            writes[ob + i * 2 * H + H + k] += 1
                        k += bdx
            g0 += grid * ty


def gin_bwd_h_kernel(NMAX, grid, block, smem_bytes, grad_out, adj, grad_h, B, N, H, self, writes):
    bdx, bdy = block
    for blockIdx in range(grid):
        smem = [NAN] * (smem_bytes // TSIZE)
        As = smem  # [ty, N, N]
        NN, ty = N * N, bdy
        nthreads = bdx * bdy
        g0 = blockIdx * ty
        while g0 < B:
            count = min(ty, B - g0)
            # __syncthreads()
            for tid in range(nthreads):
                e = tid
                while e < count * NN:
                    As[e] = adj[g0 * NN + e]
                    e += nthreads
            # __syncthreads()
            for tyi in range(bdy):
                for txi in range(bdx):
                    b = g0 + tyi
                    if b >= B:
                        continue
                    A = tyi * NN
                    gb = b * N * 2 * H
                    o = b * N * H
                    k = txi
                    while k < H:
                        g1, g2 = [0.0] * NMAX, [0.0] * NMAX
                        for i in range(NMAX):
                            g1[i] = grad_out[gb + i * 2 * H + k] if i < N else 0.0
                            g2[i] = grad_out[gb + i * 2 * H + H + k] if i < N else 0.0
                        for j in range(NMAX):
                            if j >= N:
                                break
                            acc = self * g1[j] if self != 0.0 else 0.0
                            for i in range(NMAX):
                                if i >= N:
                                    break
                                w_out, w_in = As[A + j * N + i], As[A + i * N + j]
                                if w_out != 0.0:
                                    acc += w_out * g1[i]
                                if w_in != 0.0:
                                    acc += w_in * g2[i]
                            grad_h[o + j * H + k] = acc
                            writes[o + j * H + k] += 1
                        k += bdx
            g0 += grid * ty


def gin_bwd_adj_kernel(NMAX, grid, grad_out, h, grad_adj, B, N, H, writes, stats):
    P = NMAX * NMAX
    G = bwd_adj_graphs(NMAX)
    R = kTileK + 1  # rows padded to 33

    def at(qq, r, kk):  # [G][NMAX][kTileK + 1]
        return (qq * NMAX + r) * R + kk

    for blockIdx in range(grid):
        hs, g1s, g2s = [NAN] * (G * NMAX * R), [NAN] * (G * NMAX * R), [NAN] * (G * NMAX * R)
        g0 = blockIdx * G
        while g0 < B:
            acc = [0.0] * kThreads  # one register per thread
            k0 = 0
            while k0 < H:
                # __syncthreads(): the previous tile is consumed
                for t in range(kThreads):
                    e = t
                    while e < G * NMAX * kTileK:
                        qq, r, kk = e // (NMAX * kTileK), (e // kTileK) % NMAX, e % kTileK
                        bb, k = g0 + qq, k0 + kk
                        ok = bb < B and r < N and k < H
                        row = bb * N + r
                        hs[at(qq, r, kk)] = h[row * H + k] if ok else 0.0
                        g1s[at(qq, r, kk)] = grad_out[row * 2 * H + k] if ok else 0.0
                        g2s[at(qq, r, kk)] = grad_out[row * 2 * H + H + k] if ok else 0.0
                        e += kThreads
                # __syncthreads()
                for t in range(kThreads):
                    q, a, c = t // P, (t % P) // NMAX, t % NMAX
                    s = acc[t]
                    for kk in range(kTileK):
                        s += hs[at(q, a, kk)] * g1s[at(q, c, kk)] + g2s[at(q, a, kk)] * hs[at(q, c, kk)]
                    acc[t] = s
                k0 += kTileK
            for t in range(kThreads):
                q, a, c = t // P, (t % P) // NMAX, t % NMAX
                if acc[t] != acc[t]:  # idle threads too: a NaN here is a read of unwritten smem
                    stats["nan_acc"] += 1
                b = g0 + q
                if b < B and a < N and c < N:
                    grad_adj[(b * N + a) * N + c] = acc[t]
                    writes[(b * N + a) * N + c] += 1
            g0 += grid * G


# --------------------------------------------------------------------------------- launchers


def fwd_typed(adj, h, B, N, H, eps, cap=kGridCap):
    """gin_aggregate_fwd_cuda + fwd_typed. Returns (out [B*N*2H], writes, launch description)."""
    out = [NAN] * (B * N * 2 * H)
    writes = [0] * len(out)
    if B == 0:
        return out, writes, "B=0: no launch"
    self = 1.0 + eps
    block = block_for(H)
    grid = grid_for(B, block[1], cap)
    smem = block[1] * N * N * TSIZE
    NMAX = 4 if N <= 4 else (8 if N <= 8 else 16)
    gin_fwd_kernel(NMAX, grid, block, smem, adj, h, out, B, N, H, self, writes)
    return out, writes, f"fwd<{NMAX}> grid={grid} block={block[0]}x{block[1]} smem={smem}"


def bwd_typed(grad_out, adj, h, B, N, H, eps, want_adj, cap=kGridCap):
    """gin_aggregate_bwd_cuda + bwd_typed; h is None when grad_adj is not asked for (as in
    cgnf_fast/ops/gnn.py). Returns (grad_h, grad_adj or None, writes_h, writes_adj, stats, desc)."""
    grad_h = [NAN] * (B * N * H)
    grad_adj = [NAN] * (B * N * N) if want_adj else None
    wh, wa = [0] * len(grad_h), ([0] * (B * N * N) if want_adj else None)
    stats = {"nan_acc": 0}
    if B == 0:
        return grad_h, grad_adj, wh, wa, stats, "B=0: no launch"
    self = 1.0 + eps
    block = block_for(H)
    grid = grid_for(B, block[1], cap)
    smem = block[1] * N * N * TSIZE
    NMAX = 4 if N <= 4 else (8 if N <= 8 else 16)
    gin_bwd_h_kernel(NMAX, grid, block, smem, grad_out, adj, grad_h, B, N, H, self, wh)
    desc = f"bwd_h<{NMAX}> grid={grid}"
    if not want_adj:
        return grad_h, grad_adj, wh, wa, stats, desc
    if N <= 8:
        grid2 = grid_for(B, bwd_adj_graphs(8), cap)
        gin_bwd_adj_kernel(8, grid2, grad_out, h, grad_adj, B, N, H, wa, stats)
        desc += f" bwd_adj<8> grid={grid2}"
    else:
        grid2 = grid_for(B, bwd_adj_graphs(16), cap)
        gin_bwd_adj_kernel(16, grid2, grad_out, h, grad_adj, B, N, H, wa, stats)
        desc += f" bwd_adj<16> grid={grid2}"
    return grad_h, grad_adj, wh, wa, stats, desc


# ------------------------------------------------------------------------------------ checks


def make_problem(B, N, H, kind, seed):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(B, N, H, generator=g, dtype=torch.float64)
    go = torch.randn(B, N, 2 * H, generator=g, dtype=torch.float64)
    if kind == "dag":  # 0/1 strictly upper triangular, as cells are
        adj = (torch.rand(B, N, N, generator=g, dtype=torch.float64) < 0.5).double().triu(1)
    elif kind == "soft":  # real weights, about 40 % zeros (skipped)
        w = torch.randn(B, N, N, generator=g, dtype=torch.float64)
        adj = w * (torch.rand(B, N, N, generator=g, dtype=torch.float64) < 0.6)
    elif kind == "dense":  # no zero at all
        adj = torch.rand(B, N, N, generator=g, dtype=torch.float64) + 0.5
    else:
        raise ValueError(kind)
    return adj, h, go


def maxdiff(got, want):
    if want.size == 0:
        return 0.0
    return float(np.abs(got - want).max())


FAILS: list[str] = []


def check(B, N, H, kind="soft", eps=0.0, adj_grad=True, cap=kGridCap, nonfinite=False, seed=0):
    adj, h, go = make_problem(B, N, H, kind, seed)
    ref_h, ref_go = h, go
    if nonfinite:
        # Vertex v: no edge in or out, eps = -1 (self weight 0), so its features (h and
        # grad_out rows, NaN/inf) only ever meet zero weights and must not reach out / grad_h.
        assert eps == -1.0 and not adj_grad
        v = N // 2
        adj[:, v, :] = 0.0
        adj[:, :, v] = 0.0
        h[:, v, 0] = math.nan
        h[:, v, -1] = math.inf
        go[:, v, 0] = -math.inf
        go[:, v, H] = math.nan
        ref_h = torch.where(torch.isfinite(h), h, torch.zeros_like(h))  # what zero skipping means
        ref_go = torch.where(torch.isfinite(go), go, torch.zeros_like(go))
    adj_l, h_l, go_l = adj.reshape(-1).tolist(), h.reshape(-1).tolist(), go.reshape(-1).tolist()

    out, wo, d1 = fwd_typed(adj_l, h_l, B, N, H, eps, cap)
    gh, ga, wh, wa, stats, d2 = bwd_typed(go_l, adj_l, h_l if adj_grad else None, B, N, H, eps, adj_grad, cap)

    r_out = ref.gin_aggregate(adj, ref_h, eps).numpy()
    r_gh, r_ga = ref.gin_aggregate_bwd(ref_go, adj, h, eps)
    out, gh = np.array(out).reshape(B, N, 2 * H), np.array(gh).reshape(B, N, H)
    e_out, e_gh = maxdiff(out, r_out), maxdiff(gh, r_gh.numpy())
    nans = int(np.isnan(out).sum() + np.isnan(gh).sum())
    bad_writes = sum(1 for w in wo if w != 1) + sum(1 for w in wh if w != 1)
    e_ga = 0.0
    if adj_grad:
        ga = np.array(ga).reshape(B, N, N)
        e_ga = maxdiff(ga, r_ga.numpy())
        nans += int(np.isnan(ga).sum())
        bad_writes += sum(1 for w in wa if w != 1)
    nans += stats["nan_acc"]
    ok = e_out <= 1e-12 and e_gh <= 1e-12 and e_ga <= 1e-12 and nans == 0 and bad_writes == 0
    ok = ok and not any(math.isnan(e) for e in (e_out, e_gh, e_ga))
    name = (f"B={B} N={N} H={H} {kind} eps={eps:g} grad_adj={'yes' if adj_grad else 'no'}"
            + (f" cap={cap}" if cap != kGridCap else "") + (" nonfinite" if nonfinite else ""))
    print(f"{'ok  ' if ok else 'FAIL'} {name} [{d1}; {d2}]: max |err| out {e_out:.1e}, grad_h {e_gh:.1e}, "
          f"grad_adj {e_ga:.1e}; NaN {nans}, entries not written once {bad_writes}", flush=True)
    if not ok:
        FAILS.append(name)


def main() -> int:
    t0 = time.perf_counter()
    kinds, epss = ("soft", "dag", "dense"), (0.0, 0.25, -1.0)
    # Every N (NMAX 4 | 8 | 16, grad_adj 8 | 16) over ragged graph groups (B = 7 with ty = 8, 4,
    # 2, 1) and ragged grad_adj tiles.
    hs_n = (1, 33, 65, 5, 100, 32, 3, 64, 2, 31, 7, 97, 40, 9, 33, 17)
    for N in range(1, kGinMaxNodes + 1):
        check(7, N, hs_n[N - 1], kinds[N % 3], epss[N % 3], seed=N)
    # Every block shape: tx = 32 (ty 8), 64 (4), 96 (2 of 256 threads: 192), 128 (2),
    # 160 / 224 (ty 1, 96 / 32 threads unused), 256 (ty 1, k loop once or twice).
    for i, H in enumerate((1, 31, 32, 63, 96, 129, 200, 224, 256, 257, 300)):
        N = (3, 5, 9, 16)[i % 4]
        check(7 if H < 200 else 2, N, H, kinds[i % 3], epss[(i + 1) % 3], seed=100 + i)
    # Batch sizes 1 and a few hundred (ragged last group: 301 = 37 * 8 + 5 = 75 * 4 + 1).
    check(1, 4, 5, "dag", 0.0, seed=200)
    check(1, 16, 70, "soft", 0.25, seed=201)
    check(301, 2, 3, "soft", 0.25, seed=202)
    check(301, 5, 20, "dag", 0.0, seed=203)
    check(257, 9, 6, "dense", -1.0, seed=204)
    check(130, 16, 1, "soft", 0.0, seed=205)
    check(300, 1, 1, "soft", 0.0, seed=215)
    check(300, 16, 33, "soft", 0.25, seed=216)
    check(301, 8, 97, "dense", -1.0, seed=217)
    check(1, 4, 1000, "soft", 0.25, seed=218)  # block 256x1, 4 column strides, 32 grad_adj tiles
    # B = 0 (the launcher returns before any launch).
    check(0, 3, 8, "soft", 0.0, seed=206)
    # Without grad_adj (h not passed to the backward at all).
    check(7, 6, 40, "soft", 0.25, adj_grad=False, seed=207)
    check(300, 12, 2, "dag", 0.0, adj_grad=False, seed=208)
    # Non-finite features behind zero weights only: skipped, as on the CPU.
    check(7, 5, 33, "soft", -1.0, adj_grad=False, nonfinite=True, seed=209)
    check(9, 11, 4, "dense", -1.0, adj_grad=False, nonfinite=True, seed=210)
    # Grid-stride loops (grid capped low so a block handles several graph groups and reuses
    # its shared memory; stale data from the previous group would show).
    check(23, 3, 20, "soft", 0.25, cap=2, seed=211)
    check(37, 7, 70, "dense", 0.0, cap=3, seed=212)
    check(11, 13, 33, "soft", -1.0, cap=2, seed=213)
    check(9, 16, 260, "dag", 0.25, cap=1, seed=214)
    check(29, 9, 129, "soft", 0.0, cap=4, seed=219)
    check(50, 4, 16, "dag", -1.0, adj_grad=False, cap=5, seed=220)
    dt = time.perf_counter() - t0
    if FAILS:
        print(f"{len(FAILS)} case(s) FAILED in {dt:.0f} s: " + "; ".join(FAILS))
        return 1
    print(f"all match ({dt:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
