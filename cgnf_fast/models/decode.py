"""Decoder outputs -> cells: the most likely layout, repaired where it is not a member.

For each row of logits, the most likely layout (argmax op per slot, edges with logit > 0),
pruned. When that layout is invalid it is repaired, minimally in likelihood terms:

- *no input -> output path* (the zero cell): add the single input -> output path that costs
  the least log-likelihood: a longest-path dynamic programme over the slots in order, where an
  edge already on costs 0 and an edge off costs its logit (``log p - log(1-p)``, <= 0), and a
  slot on the path that the decoder left absent costs ``max_op log p(op) - log p(absent)`` and
  takes that op. The result is the most likely layout among "the greedy layout plus one path";
- *too many edges* (NB101's limit of 9): remove live edges in increasing order of logit,
  skipping any whose removal would cut the last input -> output path, until within the limit.

A layout still outside the space after repair (only possible for spaces with extra rules, such
as ``nb201`` itself) is dropped (None). Non-finite logits (a damaged model) raise ValueError.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from ..ops import dag_canonical_code, dag_network_code, dag_prune
from ..space import Cell, DesignSpace, vocabulary

if TYPE_CHECKING:
    from .codec import CellCodec

__all__ = ["decode_logits"]


def _reach(adj: np.ndarray, present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Slots reachable from the input / reaching the output through present slots."""
    N = adj.shape[0]
    fwd = np.zeros(N, dtype=bool)
    bwd = np.zeros(N, dtype=bool)
    fwd[0] = True
    for j in range(1, N):
        fwd[j] = present[j] and bool((adj[:j, j] & fwd[:j]).any())
    bwd[N - 1] = True
    for i in range(N - 2, -1, -1):
        bwd[i] = present[i] and bool((adj[i, i + 1:] & bwd[i + 1:]).any())
    return fwd, bwd


def _repair_path(adj: np.ndarray, ops: np.ndarray, op_logp: np.ndarray, edge_logit: np.ndarray) -> None:
    """Adds the least costly input -> output path (module doc), in place."""
    N = adj.shape[0]
    node_gain = np.zeros(N)
    best_op = np.zeros(N, dtype=np.int64)
    for j in range(1, N - 1):
        if ops[j] == 0:
            k = int(op_logp[j - 1, 1:].argmax()) + 1
            best_op[j] = k
            node_gain[j] = op_logp[j - 1, k] - op_logp[j - 1, 0]
    best = np.full(N, -np.inf)
    prev = np.full(N, -1, dtype=np.int64)
    best[0] = 0.0
    for j in range(1, N):
        for i in range(j):
            if best[i] == -np.inf:
                continue
            g = best[i] + (0.0 if adj[i, j] else min(float(edge_logit[i, j]), 0.0)) + node_gain[j]
            if g > best[j]:
                best[j], prev[j] = g, i
    if prev[N - 1] < 0:  # (finite logits always give a path; this guards the loop below)
        raise ValueError("no input -> output path can be added: the decoder's scores are not finite")
    j = N - 1
    while j != 0:
        i = int(prev[j])
        adj[i, j] = True
        if 0 < j < N - 1 and ops[j] == 0:
            ops[j] = best_op[j]
        j = i


def _live_edges(adj: np.ndarray, present: np.ndarray) -> list[tuple[int, int]]:
    fwd, bwd = _reach(adj, present)
    return [(int(i), int(j)) for i, j in zip(*np.nonzero(adj)) if fwd[i] and bwd[j]]


def _limit_edges(adj: np.ndarray, ops: np.ndarray, edge_logit: np.ndarray, max_edges: int) -> bool:
    """Removes live edges, least likely first, until at most ``max_edges`` remain (in place).

    A removal that costs only that edge is preferred; one that also prunes vertices away (their
    edges with them) is taken only when no such removal exists; a removal that would cut the last
    input -> output path never is. False when the limit cannot be met.
    """
    present = ops != 0
    live = _live_edges(adj, present)
    while len(live) > max_edges:
        order = sorted(live, key=lambda e: (edge_logit[e], e))
        fallback = None
        for e in order:
            adj[e] = False
            after = _live_edges(adj, present)
            adj[e] = True
            if len(after) == len(live) - 1:
                fallback = (e, after)
                break
            if fallback is None and after:
                fallback = (e, after)
        if fallback is None:
            return False
        adj[fallback[0]] = False
        live = fallback[1]
    return True


def _decode_one(codec: CellCodec, space: DesignSpace, op_logp: np.ndarray,
                edge_logit: np.ndarray) -> tuple[Cell | None, bool]:
    N = codec.num_nodes
    ops = np.zeros(N, dtype=np.int64)
    ops[0], ops[N - 1] = codec.input_index, codec.output_index
    ops[1:-1] = op_logp.argmax(-1)
    adj = edge_logit > 0
    cell = codec.decode_one(adj, ops)
    ok = not cell.is_zero and (space.max_edges is None or cell.num_edges <= space.max_edges)
    if ok and space.contains(cell):
        return cell, False
    if cell.is_zero:
        _repair_path(adj, ops, op_logp, edge_logit)
    if space.max_edges is not None and not _limit_edges(adj, ops, edge_logit, space.max_edges):
        return None, True
    cell = codec.decode_one(adj, ops)
    if cell.is_zero or not space.contains(cell):
        return None, True
    return cell, True


@torch.no_grad()
def decode_logits(op_logits: torch.Tensor, edge_logits: torch.Tensor, codec: CellCodec,
                  space: DesignSpace | None = None,
                  known: set[int] | None = None) -> list[tuple[Cell | None, bool | None]]:
    """Cells of a batch of decoder outputs, repaired where invalid (module doc).

    Returns ``(cell or None, repaired)`` per row: the pruned member cell (never the zero cell)
    and whether the most likely layout had to be repaired; None when repair could not make a
    member of ``space`` (default: the codec's space). A row whose most likely layout is a member
    whose network code is in ``known`` comes back as ``(None, None)`` without building its cell
    (the sampler's duplicates: most draws of a large request).

    Shapes:
        op_logits [B, N-2, K+1] (slot ops: absent + the space's K ops), edge_logits
        [B, N(N-1)/2] (pairs i < j in ``torch.triu_indices(N, N, 1)`` order).
    """
    sp = codec.space if space is None else space
    N, K = codec.num_nodes, len(codec.ops)
    B = op_logits.shape[0]
    if op_logits.dim() != 3 or tuple(op_logits.shape[1:]) != (N - 2, K + 1):
        raise ValueError(f"op_logits must have shape [B, {N - 2}, {K + 1}], got {list(op_logits.shape)}")
    P = N * (N - 1) // 2
    if edge_logits.dim() != 2 or tuple(edge_logits.shape) != (B, P):
        raise ValueError(f"edge_logits must have shape [{B}, {P}], got {list(edge_logits.shape)}")
    if not (bool(torch.isfinite(op_logits).all()) and bool(torch.isfinite(edge_logits).all())):
        raise ValueError("the decoder's logits are not all finite (NaN or inf): the model or its input latents are "
                         "damaged")
    op_logp = torch.log_softmax(op_logits.double(), -1).cpu().numpy()  # [B, N-2, K+1]
    el = edge_logits.double().cpu().numpy()  # [B, P]
    iu = np.triu_indices(N, 1)
    E = np.full((B, N, N), -np.inf)  # [B, N, N], -inf on and below the diagonal (never an edge)
    E[:, iu[0], iu[1]] = el
    # The most likely layouts of the whole batch, pruned by the native kernel: an absent slot
    # loses its edges (so no path runs through it) and pruning then drops it, as decode_one
    # does; a layout without a path, or one that is not a member, goes through _decode_one.
    slot_ops = op_logp.argmax(-1)  # [B, N-2], 0 = absent
    present = np.ones((B, N), dtype=bool)
    present[:, 1:-1] = slot_ops >= 1
    adj = (E > 0) & present[:, :, None] & present[:, None, :]
    labels = np.zeros((B, N), dtype=np.int8)
    labels[:, 1:-1] = slot_ops
    pa, pl, pn = (t.numpy() for t in dag_prune(torch.from_numpy(adj.astype(np.uint8)), torch.from_numpy(labels),
                                                torch.full((B,), N, dtype=torch.int8)))
    # membership = path, ops, sizes (unless the space has rules of its own)
    plain_members = type(sp).validate is DesignSpace.validate and type(sp).contains is DesignSpace.contains
    names = (vocabulary.INPUT, *codec.ops, vocabulary.OUTPUT)
    # the pruned graphs' canonical and network codes, natively from the same arrays (the cells
    # remember them); the kernels read op labels (Cell.labels()) at the op vertices only
    rows = np.flatnonzero(pn >= 2)
    to_label = np.asarray([0] + [vocabulary.op_label(o) for o in codec.ops], dtype=np.int8)
    lab = to_label[np.clip(pl[rows], 0, None)]  # (padding, -1, reads as 0)
    ra, rl, rn = torch.from_numpy(np.ascontiguousarray(pa[rows])), torch.from_numpy(lab), torch.from_numpy(pn[rows])
    canon = dict(zip(rows.tolist(), dag_canonical_code(ra, rl, rn).tolist()))
    net = dict(zip(rows.tolist(), dag_network_code(ra, rl, rn, vocabulary.identity_labels())))
    ops_fit = set(codec.ops) <= set(sp.ops)  # else checked per cell
    edges = pa.sum(axis=(1, 2)).tolist() if sp.max_edges is not None else None
    pn_list = pn.tolist()
    skip = np.zeros(B, dtype=bool)
    if known and plain_members and ops_fit:  # a member by size alone: its cell would be a duplicate
        for b in rows.tolist():
            k = pn_list[b]
            skip[b] = (net[b] in known and k <= sp.max_nodes and (edges is None or edges[b] <= sp.max_edges))
    build = np.flatnonzero(~skip)
    pa_rows = dict(zip(build.tolist(), pa[build].tolist()))
    pl_rows = dict(zip(build.tolist(), pl[build].tolist()))
    out: list[tuple[Cell | None, bool | None]] = []
    for b in range(B):
        if skip[b]:
            out.append((None, None))
            continue
        k = pn_list[b]
        cell = None
        if k >= 2:
            cell = Cell._pruned_from_rows([r[:k] for r in pa_rows[b][:k]],
                                          [names[0]] + [names[x] for x in pl_rows[b][1:k - 1]] + [names[-1]],
                                          canon[b], net[b])
            fits = (k <= sp.max_nodes and (ops_fit or set(cell.ops[1:-1]) <= set(sp.ops))
                    and (edges is None or edges[b] <= sp.max_edges))
            if not (fits if plain_members else sp.contains(cell)):
                cell = None
        out.append((cell, False) if cell is not None else _decode_one(codec, sp, op_logp[b], E[b]))
    return out
