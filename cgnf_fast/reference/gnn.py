"""Pure PyTorch reference semantics of the GNN ops (mirrored natively by ``cgnf_fast.ops.gnn``).

Batches of small dense graphs: ``adj[b, j, i]`` is the weight of the edge ``j -> i`` (usually
0/1, may be soft), ``h[b, i]`` the feature row of vertex ``i``. Stock ``bmm``/``cat``, so
autograd differentiates these to any order; no validation (the op wrappers validate).
"""

from __future__ import annotations

import torch


def gin_aggregate(adj: torch.Tensor, h: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """One GIN message-passing step along and against the edges. Mirrors
    ``cgnf_fast.ops.gnn.gin_aggregate`` (native op ``cgnf_fast::gin_aggregate``).

    Shapes:
        adj [B, N, N], h [B, N, H] -> ``[B, N, 2H]``::

            out[b, i, :H] = (1 + eps) * h[b, i] + sum_j adj[b, j, i] * h[b, j]   (predecessors)
            out[b, i, H:] =                       sum_j adj[b, i, j] * h[b, j]   (successors)
    """
    pred = torch.bmm(adj.transpose(1, 2), h)  # [B, N, H]
    succ = torch.bmm(adj, h)  # [B, N, H]
    return torch.cat([(1 + eps) * h + pred, succ], dim=-1)


def gin_aggregate_bwd(
    grad_out: torch.Tensor, adj: torch.Tensor, h: torch.Tensor, eps: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """The vector-Jacobian product of :func:`gin_aggregate`, written out. Mirrors the native
    op ``cgnf_fast::gin_aggregate_bwd``.

    Shapes:
        grad_out [B, N, 2H], adj [B, N, N], h [B, N, H] -> ``(grad_h [B, N, H], grad_adj [B, N, N])``::

            g1, g2 = grad_out[..., :H], grad_out[..., H:]
            grad_h[b, j]      = (1 + eps) * g1[b, j] + sum_i adj[b, j, i] g1[b, i] + sum_i adj[b, i, j] g2[b, i]
            grad_adj[b, a, c] = <h[b, a], g1[b, c]> + <g2[b, a], h[b, c]>
    """
    H = h.shape[-1]
    g1, g2 = grad_out[..., :H], grad_out[..., H:]
    grad_h = (1 + eps) * g1 + torch.bmm(adj, g1) + torch.bmm(adj.transpose(1, 2), g2)
    grad_adj = torch.bmm(h, g1.transpose(1, 2)) + torch.bmm(g2, h.transpose(1, 2))
    return grad_h, grad_adj
