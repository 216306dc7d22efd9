"""Pure-Python reference semantics of the DAG ops (mirrored by ``cgnf_fast.ops.dag`` natively).

A graph here is ``(n, adj, labels)``: ``adj`` an ``n x n`` nested list (or tuple) of
non-negative ints, strictly upper triangular (vertex ``0`` is the input, ``n - 1`` the
output, the order is topological), ``labels`` a list of ``n`` ints. These functions assume
well-formed input; validation happens once, in :class:`cgnf_fast.Cell` and in the op
wrappers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

#: Largest number of vertices (input and output included) of a cell: every code then fits the
#: layouts below (the native core is built with the same limit; ``cgnf_fast.ops.dag`` checks it).
MAX_NODES = 8
#: Bits of the vertex-count field at the top of every code.
N_BITS = 4
#: Bits of one op label in a code (labels are 1..31, see ``cgnf_fast.space.vocabulary``).
LABEL_BITS = 5
#: Bits of one edge weight in a network code (multiplicities are <= 2**6 for 8 vertices).
NETWORK_WEIGHT_BITS = 7


def reach(adj: Sequence[Sequence[int]], start: int, *, forward: bool = True) -> set[int]:
    """Vertices reachable from ``start`` along the edges (``forward``) or against them."""
    n = len(adj)
    seen = {start}
    stack = [start]
    while stack:
        x = stack.pop()
        for y in range(n):
            if (adj[x][y] if forward else adj[y][x]) and y not in seen:
                seen.add(y)
                stack.append(y)
    return seen


def prune_keep(adj: Sequence[Sequence[int]]) -> list[int] | None:
    """Vertices kept by NB101's pruning (on some input->output path), or None without a path.

    Mirrors ``ModelSpec._prune`` of google-research/nasbench: vertices not reachable from the
    input or not reaching the output are extraneous; when the output is not reachable from
    the input the spec is invalid.
    """
    n = len(adj)
    fwd = reach(adj, 0)
    if n - 1 not in fwd:
        return None
    bwd = reach(adj, n - 1, forward=False)
    return [v for v in range(n) if v in fwd and v in bwd]


def prune(adj: Sequence[Sequence[int]], labels: Sequence) -> tuple[list[list[int]], list] | None:
    """``(adj, labels)`` restricted to the kept vertices, or None when there is no path."""
    keep = prune_keep(adj)
    if keep is None:
        return None
    return [[int(adj[u][v]) for v in keep] for u in keep], [labels[v] for v in keep]


def nb101_hash(adj: Sequence[Sequence[int]], labels: Sequence[int]) -> str:
    """NB101's ``graph_util.hash_module``, byte for byte.

    ``labels`` are NB101's: -1 input, -2 output, 0/1/2 for conv3x3/conv1x1/maxpool3x3.
    The graph is hashed as given (NB101 hashes the *pruned* spec: prune first).
    """
    n = len(adj)
    in_deg = [sum(int(adj[u][v]) for u in range(n)) for v in range(n)]
    out_deg = [sum(int(adj[u][v]) for v in range(n)) for u in range(n)]
    hashes = [
        hashlib.md5(str((out_deg[v], in_deg[v], int(labels[v]))).encode("utf-8")).hexdigest() for v in range(n)
    ]
    for _ in range(n):
        new_hashes = []
        for v in range(n):
            ins = "".join(sorted(hashes[u] for u in range(n) if adj[u][v]))
            outs = "".join(sorted(hashes[w] for w in range(n) if adj[v][w]))
            new_hashes.append(hashlib.md5((ins + "|" + outs + "|" + hashes[v]).encode("utf-8")).hexdigest())
        hashes = new_hashes
    return hashlib.md5(str(sorted(hashes)).encode("utf-8")).hexdigest()


def code_bits(n: int, weight_bits: int = 1) -> int:
    """Width in bits of a code of an ``n``-vertex graph."""
    return N_BITS + LABEL_BITS * (n - 2) + weight_bits * n * (n - 1) // 2


def pack_code(adj: Sequence[Sequence[int]], labels: Sequence[int], order: Sequence[int], weight_bits: int = 1) -> int:
    """The code of one vertex order (``order[p]`` = vertex at position ``p``).

    Layout, most significant first: ``n`` (4 bits); then for each intermediate position
    ``p = 1 .. n-2`` one chunk: the label of the vertex there (5 bits) above the weights of its
    in-edges, the edge from position ``q`` at bits ``q*weight_bits`` (``q = 0 .. p-1``); last,
    the output's chunk of in-edge weights from positions ``0 .. n-2``. Every chunk has a fixed
    width given ``n``, so comparing codes as integers compares the chunks lexicographically.
    """
    n = len(adj)
    code = n
    for p in range(1, n):
        v = order[p]
        chunk = 0
        for q in range(p):
            chunk |= int(adj[order[q]][v]) << (q * weight_bits)
        if p < n - 1:
            chunk |= int(labels[v]) << (p * weight_bits)
            code = (code << (LABEL_BITS + p * weight_bits)) | chunk
        else:
            code = (code << (p * weight_bits)) | chunk
    return code


def canonical_code(adj: Sequence[Sequence[int]], labels: Sequence[int], weight_bits: int = 1) -> int:
    """The minimum of :func:`pack_code` over all topological vertex orders.

    Every topological order of a cell keeps the input first and the output last, so the set
    of codes over all topological orders is the same for isomorphic labelled DAGs and
    disjoint for non-isomorphic ones: its minimum is an exact canonical form.

    Method: build the order position by position. The chunk at position ``p`` depends only
    on the vertices at positions ``0 .. p``, so the lexicographic minimum is found by keeping,
    level by level, every partial order whose prefix is minimal (ties branch; automorphic
    choices tie). Worst case is 720 partial orders (6 interchangeable vertices).
    """
    n = len(adj)
    limit = 1 << weight_bits
    for row in adj:
        for w in row:
            if w >= limit or w < 0:
                raise ValueError(f"edge weight {w} does not fit in {weight_bits} bits")
    preds = [[u for u in range(n) if adj[u][v]] for v in range(n)]
    code = n
    states: list[list[int]] = [[0]]
    for p in range(1, n - 1):
        best = -1
        nxt: list[list[int]] = []
        for order in states:
            placed = set(order)
            for v in range(1, n - 1):
                if v in placed or any(u not in placed for u in preds[v]):
                    continue
                chunk = int(labels[v]) << (p * weight_bits)
                for q in range(p):
                    chunk |= int(adj[order[q]][v]) << (q * weight_bits)
                if best < 0 or chunk < best:
                    best = chunk
                    nxt = [order + [v]]
                elif chunk == best:
                    nxt.append(order + [v])
        code = (code << (LABEL_BITS + p * weight_bits)) | best
        states = nxt
    best = -1
    for order in states:
        chunk = 0
        for q in range(n - 1):
            chunk |= int(adj[order[q]][n - 1]) << (q * weight_bits)
        if best < 0 or chunk < best:
            best = chunk
    return (code << ((n - 1) * weight_bits)) | best


def fold_identities(
    adj: Sequence[Sequence[int]], labels: Sequence[int], identity: Sequence[bool]
) -> tuple[list[list[int]], list[int]]:
    """Remove identity vertices, turning paths through them into weighted edges.

    An identity vertex forwards the sum of its inputs, so ``u -> s -> v`` through an identity
    ``s`` adds ``u`` once more to the sum that ``v`` receives. The weight of ``u -> v`` in the
    result is the number of paths from ``u`` to ``v`` whose inner vertices are all
    identities. ``identity[v]`` marks identity vertices (never the input or output).
    """
    n = len(adj)
    w = [[int(adj[u][v]) for v in range(n)] for u in range(n)]
    for s in range(1, n - 1):  # topological order: every path through s is complete here
        if not identity[s]:
            continue
        for u in range(s):
            if w[u][s]:
                for v in range(s + 1, n):
                    if w[s][v]:
                        w[u][v] += w[u][s] * w[s][v]
        for x in range(n):
            w[x][s] = 0
            w[s][x] = 0
    keep = [v for v in range(n) if v in (0, n - 1) or not identity[v]]
    return [[w[u][v] for v in keep] for u in keep], [labels[v] for v in keep]
