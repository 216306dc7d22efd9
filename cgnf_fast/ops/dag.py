"""Batched DAG ops on tensors (native CPU/CUDA kernels; reference: ``cgnf_fast.reference.dag``).

Batches hold graphs of up to ``N <= 8`` vertices, padded to a common ``N``:

    adj    [B, N, N] uint8   edge i -> j where adj[b, i, j] != 0 (only i < j is read)
    labels [B, N]    int8    vertex labels (cgnf_fast label ids, or any int8 tags)
    n      [B]       int8    vertices of each graph (2 <= n <= N); the output is vertex n-1
"""

from __future__ import annotations

import torch

from .. import _native
from .._native import _C
from ._checks import check_tensor

MAX_NODES = int(_C.build_config()["max_nodes"])
#: Label of padding slots in outputs.
PAD_LABEL = -1


def _check_batch(adj: torch.Tensor, labels: torch.Tensor, n: torch.Tensor) -> tuple[int, int]:
    check_tensor("adj", adj, dtype=torch.uint8, ndim=3, shape_doc="[B, N, N]")
    B, N, N2 = adj.shape
    if N != N2:
        raise ValueError(f"adj must have shape [B, N, N], got {list(adj.shape)}")
    if not 2 <= N <= MAX_NODES:
        raise ValueError(f"adj must have shape [B, N, N] with 2 <= N <= {MAX_NODES}, got {list(adj.shape)}")
    check_tensor("labels", labels, dtype=torch.int8, ndim=2, shape_doc="[B, N]", device=adj.device)
    if tuple(labels.shape) != (B, N):
        raise ValueError(f"labels must have shape [B, N] = {[B, N]}, got {list(labels.shape)}")
    check_tensor("n", n, dtype=torch.int8, ndim=1, shape_doc="[B]", device=adj.device)
    if n.shape[0] != B:
        raise ValueError(f"n must have shape [B] = {[B]}, got {list(n.shape)}")
    if B and (bool((n < 2).any()) or bool((n > N).any())):
        bad = n[(n < 2) | (n > N)][:5].tolist()
        raise ValueError(f"n must be in [2, N={N}] for every graph, found {bad}")
    return B, N


@torch.library.custom_op("cgnf_fast::dag_prune", mutates_args=())
def _dag_prune(adj: torch.Tensor, labels: torch.Tensor, n: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    B, N = adj.shape[0], adj.shape[1]
    out_adj = torch.empty_like(adj)
    out_labels = torch.empty_like(labels)
    out_n = torch.empty_like(n)
    args = (
        adj.data_ptr(),
        labels.data_ptr(),
        n.data_ptr(),
        out_adj.data_ptr(),
        out_labels.data_ptr(),
        out_n.data_ptr(),
        B,
        N,
    )
    if adj.device.type == "cuda":
        _native.require_cuda("dag_prune")
        with torch.cuda.device(adj.device):
            _C.dag_prune_cuda(*args, _native.stream_of(adj))
    else:
        _C.dag_prune_cpu(*args, _native.num_threads())
    return out_adj, out_labels, out_n


@_dag_prune.register_fake
def _(adj: torch.Tensor, labels: torch.Tensor, n: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return torch.empty_like(adj), torch.empty_like(labels), torch.empty_like(n)


def dag_prune(
    adj: torch.Tensor, labels: torch.Tensor, n: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """NB101 pruning of a batch: keep the vertices on some input -> output path.

    Shapes:
        adj [B, N, N] uint8, labels [B, N] int8, n [B] int8 (see the module doc).

    Returns:
        ``(out_adj [B, N, N] uint8, out_labels [B, N] int8, out_n [B] int8)``: each pruned
        graph compacted into the top-left ``out_n x out_n`` block (order kept), labels of
        the kept vertices then ``PAD_LABEL``; ``out_n == 0`` when the graph has no path.

    Reference: ``cgnf_fast.reference.dag.prune``.
    """
    _check_batch(adj, labels, n)
    return _dag_prune(adj, labels, n)
