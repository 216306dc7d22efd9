"""Every CUDA entry point once, on small inputs, compared with the CPU path: a short program for
``compute-sanitizer`` (memcheck, racecheck), which slows each launch too much for the test suite.

    compute-sanitizer --tool memcheck --error-exitcode 3 python benches/cuda_smoke.py

Covers the DAG ops (prune, canonical code, NB101 digest; ragged n, an empty batch), the GPU
space count (a 6-vertex user space with an identity op, so the network keys run too), the GIN
aggregation (forward and backward; float32 and float64; N = 1 to 9, H not a multiple of the
warp) and the CNF dynamics (no, exact and Hutchinson divergence; ragged row groups). Prints one
line per check; exits 1 on a mismatch (the sanitizer's own exit code on a memory error).
"""

from __future__ import annotations

import sys

import torch

import cgnf_fast
from cgnf_fast.ops import cnf_dynamics, dag_canonical_code, dag_nb101_digest, dag_prune, gin_aggregate
from cgnf_fast.space import DesignSpace
from cgnf_fast.space.counting import count

FAILED: list[str] = []


def check(name: str, ok: bool, detail: str = "") -> None:
    print(f"{'ok  ' if ok else 'FAIL'} {name} {detail}", flush=True)
    if not ok:
        FAILED.append(name)


def dags(B: int, N: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random upper-triangular graphs with n in [2, N] (padding past n zeroed), NB101 labels."""
    n = torch.randint(2, N + 1, (B,), generator=gen, dtype=torch.int8)
    adj = torch.triu(torch.randint(0, 2, (B, N, N), generator=gen, dtype=torch.uint8), diagonal=1)
    live = torch.arange(N)[None, :] < n.long()[:, None]
    adj &= (live[:, :, None] & live[:, None, :]).to(torch.uint8)
    labels = torch.randint(0, 3, (B, N), generator=gen, dtype=torch.int8)
    return adj, labels, n


def dag_checks(gen: torch.Generator) -> None:
    for B, N in ((0, 7), (1, 2), (37, 7), (300, 8)):
        adj, labels, n = dags(B, N, gen)
        cpu = dag_prune(adj, labels, n)
        gpu = dag_prune(adj.cuda(), labels.cuda(), n.cuda())
        check(f"dag_prune B={B} N={N}", all(torch.equal(a, b.cpu()) for a, b in zip(cpu, gpu)))
        pa, pl, pn = cpu
        keep = pn > 0
        pa, pl, pn = pa[keep], pl[keep], pn[keep]
        code_c = dag_canonical_code(pa, pl, pn)
        code_g = dag_canonical_code(pa.cuda(), pl.cuda(), pn.cuda())
        check(f"dag_canonical_code B={int(keep.sum())} N={N}", torch.equal(code_c, code_g.cpu()))
        d_c = dag_nb101_digest(pa, pl, pn)
        d_g = dag_nb101_digest(pa.cuda(), pl.cuda(), pn.cuda())
        check(f"dag_nb101_digest B={int(keep.sum())} N={N}", torch.equal(d_c, d_g.cpu()))


def count_checks() -> None:
    # a user space with an identity op (so the network keys run too), small enough for a sanitizer
    sp = DesignSpace(ops=("nor_conv_3x3", "skip_connect", "avg_pool_3x3"), max_nodes=6, max_edges=7, name="smoke")
    c = count(sp, device="cpu", progress=False)
    g = count(sp, device="cuda", progress=False)
    keys = ("labeled", "valid", "unique", "unique_networks")
    check("count 6-vertex user space", all(c[k] == g[k] for k in keys), str({k: (c[k], g[k]) for k in keys}))


def gin_checks(gen: torch.Generator) -> None:
    for dtype in (torch.float32, torch.float64):
        for B, N, H in ((1, 1, 3), (33, 9, 70), (5, 8, 256)):
            adj = torch.rand(B, N, N, generator=gen, dtype=dtype)
            h = torch.randn(B, N, H, generator=gen, dtype=dtype)
            g_out = torch.randn(B, N, 2 * H, generator=gen, dtype=dtype)
            res = {}
            for dev in ("cpu", "cuda"):
                a = adj.to(dev).clone().requires_grad_()  # (clone: a fresh leaf on every device)
                x = h.to(dev).clone().requires_grad_()
                out = gin_aggregate(a, x, eps=0.25)
                out.backward(g_out.to(dev))
                res[dev] = [t.detach().cpu() for t in (out, a.grad, x.grad)]
            # relative to each output's largest magnitude (grad adj sums H products: values ~40 here)
            tol = 1e-5 if dtype == torch.float32 else 1e-12
            err = max(float((p - q).abs().max() / p.abs().max().clamp_min(1.0)) if p.numel() else 0.0
                      for p, q in zip(res["cpu"], res["cuda"]))
            check(f"gin_aggregate fwd+bwd {dtype} B={B} N={N} H={H}", err <= tol, f"max relative |diff| {err:.2e}")


def cnf_checks(gen: torch.Generator) -> None:
    for dtype in (torch.float32, torch.float64):
        for divergence in (None, "exact", "hutchinson"):
            B, D, C, hidden = 37, 12, 3, (40, 33)
            widths = (D, *hidden, D)
            weights = []
            for i, o in zip(widths[:-1], widths[1:]):
                weights.append(tuple(torch.randn(*s, generator=gen, dtype=dtype) * 0.3
                                     for s in ((o, i), (o,), (o, 1 + C), (o,), (o, 1 + C))))
            z = torch.randn(B, D, generator=gen, dtype=dtype)
            c = torch.randn(B, C, generator=gen, dtype=dtype)
            noise = torch.randn(B, D, generator=gen, dtype=dtype) if divergence == "hutchinson" else None
            res = {}
            for dev in ("cpu", "cuda"):
                w = [tuple(t.to(dev) for t in layer) for layer in weights]
                dz, div = cnf_dynamics(0.3, z.to(dev), c.to(dev), w, "tanh", divergence,
                                       None if noise is None else noise.to(dev))
                res[dev] = (dz.cpu(), None if div is None else div.cpu())
            err = float((res["cpu"][0] - res["cuda"][0]).abs().max())
            if divergence is not None:
                err = max(err, float((res["cpu"][1] - res["cuda"][1]).abs().max()))
            tol = 1e-4 if dtype == torch.float32 else 1e-10
            check(f"cnf_dynamics {dtype} divergence={divergence}", err <= tol, f"max|diff| {err:.2e}")


def main() -> int:
    if not cgnf_fast.cuda_available():
        print("no CUDA device, or the package was built without CUDA", file=sys.stderr)
        return 2
    gen = torch.Generator().manual_seed(0)
    dag_checks(gen)
    count_checks()
    gin_checks(gen)
    cnf_checks(gen)
    torch.cuda.synchronize()
    print(f"{len(FAILED)} failed" + (f": {FAILED}" if FAILED else ""))
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
