"""Check the index arithmetic of csrc/cnf/cnf_dynamics_cuda.cu without a GPU.

A line-by-line Python transliteration of its two kernels (cnf_fwd_kernel and
cnf_exact_div_kernel): blocks and threads run one after the other between barriers, shared
memory is a NaN-filled array, so a read of anything the kernel did not write shows up as NaN.
Compared in float64 with cgnf_fast.reference.cnf on shapes that hit ragged row groups (MB rows
per block, chosen as the CUDA launcher does), chunked probe columns of the exact divergence,
one to three hidden layers and every divergence. It says nothing about races or the hardware;
keep it in step with the .cu when the kernels change. Usage (slow: pure Python, ~1 min):

    python scripts/emulate_cnf_cuda.py
"""

from __future__ import annotations

import math

import numpy as np
import torch

from cgnf_fast.reference import cnf as ref

kThreads, kRows, kSmem = 256, 4, 48 * 1024

def launch(t, z, c, noise, ws, widths, B, C, softplus_act, divergence, tsize):
    """cnf_dynamics_fwd_cuda's launch(): both kernels, in the .cu's variable names."""
    L = len(widths) - 1; D = widths[0]
    W = [w[0].reshape(-1) for w in ws]; bb = [w[1] for w in ws]; G = [w[2].reshape(-1) for w in ws]
    g = [w[3] for w in ws]; H = [w[4].reshape(-1) for w in ws]
    ins = widths[:-1]; outs = widths[1:]
    off = []; wsum = 0; whid = 1
    for l in range(L):
        off.append(wsum); wsum += outs[l]
        if l + 1 < L: whid = max(whid, outs[l])
    wmax = max(widths)
    hut, exact = divergence == 2, divergence == 1
    per_row = (4 if hut else 2) * wmax * tsize
    MB = max(1, min(16, kSmem // per_row))
    grid = max(1, min(65535, (B + MB - 1) // MB))
    dz = np.full(B * D, np.nan); div = np.full(B, np.nan); work = np.full(B * wsum, np.nan)
    z = z.reshape(-1); c = c.reshape(-1); nz = None if noise is None else noise.reshape(-1)
    cs = 1 + C
    chunks = (MB + kRows - 1) // kRows
    for blk in range(grid):
        smem = np.full(MB * wmax * (4 if hut else 2), np.nan)
        r0 = blk * MB
        while r0 < B:
            nr = min(MB, B - r0)
            hA, hB, uA, uB = 0, MB * wmax, 2 * MB * wmax, 3 * MB * wmax  # offsets
            for e in range(MB * D):
                r, k = e // D, e % D
                smem[hA + r * wmax + k] = z[(r0 + r) * D + k] if r < nr else 0
                if hut: smem[uA + r * wmax + k] = nz[(r0 + r) * D + k] if r < nr else 0
            x, y, ux, uy = hA, hB, uA, uB
            for l in range(L):
                n_in, out = ins[l], outs[l]; last = l == L - 1
                for item in range(out * chunks):
                    n, rc = item % out, item // out
                    acc = [0.0] * kRows; uacc = [0.0] * kRows
                    for k in range(n_in):
                        w = W[l][n * n_in + k]
                        for q in range(kRows):
                            r = rc * kRows + q
                            if r < nr:
                                acc[q] += w * smem[x + r * wmax + k]
                                if hut: uacc[q] += w * smem[ux + r * wmax + k]
                    gb = g[l][n] + G[l][n * cs] * t; hb = H[l][n * cs] * t; bn = bb[l][n]
                    for q in range(kRows):
                        r = rc * kRows + q
                        if r >= nr: continue
                        b = r0 + r
                        gp, hp = gb, hb
                        for j in range(C):
                            cv = c[b * C + j]; gp += G[l][n * cs + 1 + j] * cv; hp += H[l][n * cs + 1 + j] * cv
                        gate = 1 / (1 + math.exp(-gp))
                        pre = (acc[q] + bn) * gate + hp
                        if last:
                            dz[b * D + n] = pre
                            if exact: work[b * wsum + off[l] + n] = gate
                            if hut: smem[y + r * wmax + n] = nz[b * D + n] * gate * uacc[q]
                            continue
                        if softplus_act:
                            h = pre if pre > 20 else math.log1p(math.exp(pre)); dact = 1 / (1 + math.exp(-pre))
                        else:
                            h = math.tanh(pre); dact = 1 - h * h
                        smem[y + r * wmax + n] = h
                        if exact: work[b * wsum + off[l] + n] = dact * gate
                        if hut: smem[uy + r * wmax + n] = dact * gate * uacc[q]
                x, y = y, x; ux, uy = uy, ux
            if hut:
                for r in range(nr):
                    s = 0.0
                    for n in range(D): s += smem[x + r * wmax + n]
                    div[r0 + r] = s
            r0 += grid * MB
    if exact:
        per_col, fixed = 2 * whid * tsize, kThreads * tsize
        DC = max(1, min(D, 16, (kSmem - fixed) // per_col))
        grid2 = min(B, 65535)
        for blk in range(grid2):
            b = blk
            while b < B:
                TA = np.full(whid * DC, np.nan); TB = np.full(whid * DC, np.nan)
                wrow = work[b * wsum:(b + 1) * wsum]; gl = wrow[off[L - 1]:]
                total = 0.0
                if L == 1:
                    for i in range(D): total += gl[i] * W[0][i * D + i]
                else:
                    for d0 in range(0, D, DC):
                        dc = min(DC, D - d0); n1 = outs[0]
                        for e in range(n1 * dc):
                            n, j = e // dc, e % dc
                            TA[n * DC + j] = wrow[off[0] + n] * W[0][n * D + d0 + j]
                        ta, tb = TA, TB
                        for l in range(1, L - 1):
                            n_in, out = ins[l], outs[l]
                            for e in range(out * dc):
                                n, j = e // dc, e % dc
                                acc = 0.0
                                for k in range(n_in): acc += W[l][n * n_in + k] * ta[k * DC + j]
                                tb[n * DC + j] = wrow[off[l] + n] * acc
                            ta, tb = tb, ta
                        n_in = ins[L - 1]
                        red = [0.0] * kThreads
                        for tid in range(kThreads):
                            part = 0.0
                            for e in range(tid, dc * n_in, kThreads):
                                j, k = e // n_in, e % n_in
                                part += gl[d0 + j] * W[L - 1][(d0 + j) * n_in + k] * ta[k * DC + j]
                            red[tid] = part
                        s = kThreads // 2
                        while s > 0:
                            for tid in range(s): red[tid] += red[tid + s]
                            s >>= 1
                        total += red[0]
                div[b] = total
                b += grid2
    return dz.reshape(B, D), div

def make_problem(B: int, D: int, hidden: tuple[int, ...], C: int, seed: int, hutchinson: bool):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s, sc=1.0: torch.randn(*s, generator=g, dtype=torch.float64) * sc  # noqa: E731
    dims = (D, *hidden, D)
    ws = [(r(o, i, sc=i ** -0.5), r(o, sc=0.5), r(o, 1 + C), r(o), r(o, 1 + C, sc=0.5))
          for i, o in zip(dims[:-1], dims[1:])]
    return torch.rand((), generator=g, dtype=torch.float64), r(B, D, sc=1.5), r(B, C), ws, \
        (r(B, D) if hutchinson else None)


def check(B, D, hidden, C, act, divergence, seed=0):
    dv = {None: 0, "exact": 1, "hutchinson": 2}[divergence]
    t, z, c, ws, noise = make_problem(B, D, hidden, C, seed, dv == 2)
    wsn = [tuple(w.numpy() for w in lw) for lw in ws]
    dz, div = launch(float(t), z.numpy(), c.numpy(), None if noise is None else noise.numpy(), wsn,
                     [D, *hidden, D], B, C, act == "softplus", dv, 8)
    rdz, rdiv = ref.cnf_dynamics(t, z, c, ws, act, divergence, noise)
    e1 = np.abs(dz - rdz.numpy()).max()
    e2 = np.abs(div - rdiv.numpy()).max() if divergence else 0.0
    print(f"B={B} D={D} hidden={hidden} C={C} {act} {divergence}: max |dz err| {e1:.1e}, |div err| {e2:.1e}",
          flush=True)
    assert e1 < 1e-12 and e2 < 1e-11


def main() -> None:
    # MB = 16 rows per block except for the widths of 512 (MB = 6; DC = 5 probe columns a chunk)
    for args in [(5, 3, (4,), 2), (9, 4, (), 1), (7, 2, (3, 5), 0), (21, 20, (6, 7), 2), (3, 5, (40, 30, 9), 1)]:
        for divergence in (None, "exact", "hutchinson"):
            for act in ("tanh", "softplus"):
                check(*args, act, divergence)
    check(13, 20, (512, 64), 1, "tanh", "exact")
    check(13, 20, (512, 64), 1, "softplus", "hutchinson")
    print("all match")


if __name__ == "__main__":
    main()
