"""Batched DAG ops on tensors (native CPU/CUDA kernels; reference: ``cgnf_fast.reference.dag``).

Batches hold graphs of up to ``N <= 8`` vertices, padded to a common ``N``:

    adj    [B, N, N] uint8   edge i -> j where adj[b, i, j] != 0 (only i < j is read)
    labels [B, N]    int8    vertex labels (cgnf_fast label ids, or any int8 tags)
    n      [B]       int8    vertices of each graph (2 <= n <= N); the output is vertex n-1
"""

from __future__ import annotations

import numpy as np
import torch

from .. import _native
from .._checks import check_tensor
from .._native import _C
from ..reference.dag import MAX_NODES

if int(_C.build_config()["max_nodes"]) != MAX_NODES:  # one limit: the native core is built with it
    raise ImportError(f"cgnf_fast._C was built for graphs of {_C.build_config()['max_nodes']} vertices, but this "
                      f"cgnf_fast uses {MAX_NODES}; reinstall the package (pip install .) to rebuild it")
#: Device types the DAG kernels run on.
_DEVICES = ("cpu", "cuda")
#: Label of padding slots in outputs.
PAD_LABEL = -1


def _host(*ts: torch.Tensor) -> tuple[np.ndarray, ...] | tuple[torch.Tensor, ...]:
    """``ts`` as NumPy views when all are plain CPU tensors, else as they are (CUDA, tracing, fake
    tensors); the value checks below read either. On the CPU they avoid torch ops: torch runs
    reductions and masks over a large batch on its OpenMP pool, whose threads then spin for a
    while and take cores from the native kernel's threads that follow (about 7 of 33 ms in a
    two-thread NB101 hash of 40,000 graphs)."""
    if all(t.device.type == "cpu" for t in ts) and _native.eager_plain(*ts):
        return tuple(t.numpy() for t in ts)
    return ts


def _check_batch(adj: torch.Tensor, labels: torch.Tensor, n: torch.Tensor) -> tuple[int, int]:
    check_tensor("adj", adj, "[B, N, N]", dtype=torch.uint8, ndim=3, devices=_DEVICES, contiguous=True)
    B, N, N2 = adj.shape
    if N != N2:
        raise ValueError(f"adj must have shape [B, N, N], got {list(adj.shape)}")
    if not 2 <= N <= MAX_NODES:
        raise ValueError(f"adj must have shape [B, N, N] with 2 <= N <= {MAX_NODES}, got {list(adj.shape)}")
    check_tensor("labels", labels, "[B, N]", dtype=torch.int8, ndim=2, device=adj.device, devices=_DEVICES,
                 contiguous=True)
    if tuple(labels.shape) != (B, N):
        raise ValueError(f"labels must have shape [B, N] = {[B, N]}, got {list(labels.shape)}")
    check_tensor("n", n, "[B]", dtype=torch.int8, ndim=1, device=adj.device, devices=_DEVICES, contiguous=True)
    if n.shape[0] != B:
        raise ValueError(f"n must have shape [B] = {[B]}, got {list(n.shape)}")
    if B:  # two reductions (~100x cheaper than masks)
        (nv,) = _host(n)
        if not (2 <= int(nv.min()) and int(nv.max()) <= N):
            bad = n[(n < 2) | (n > N)][:5].tolist()
            raise ValueError(f"n must be in [2, N={N}] for every graph, found {bad}")
    return B, N


def _launch(name: str, adj: torch.Tensor, labels: torch.Tensor, n: torch.Tensor, *outs: torch.Tensor) -> None:
    """Runs ``_C.<name>_cpu`` or ``_C.<name>_cuda`` on (adj, labels, n, *outs, B, N)."""
    args = (adj.data_ptr(), labels.data_ptr(), n.data_ptr(), *(o.data_ptr() for o in outs), adj.shape[0], adj.shape[1])
    if adj.device.type == "cuda":
        _native.require_cuda(name)
        with torch.cuda.device(adj.device):
            getattr(_C, f"{name}_cuda")(*args, _native.stream_of(adj))
    else:
        getattr(_C, f"{name}_cpu")(*args, _native.num_threads())


def _prune_impl(adj: torch.Tensor, labels: torch.Tensor, n: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    outs = (torch.empty_like(adj), torch.empty_like(labels), torch.empty_like(n))
    _launch("dag_prune", adj, labels, n, *outs)
    return outs


_dag_prune = torch.library.custom_op("cgnf_fast::dag_prune", mutates_args=())(_prune_impl)


@_dag_prune.register_fake
def _(adj: torch.Tensor, labels: torch.Tensor, n: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return torch.empty_like(adj), torch.empty_like(labels), torch.empty_like(n)


def _code_impl(adj: torch.Tensor, labels: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    out = torch.empty(adj.shape[0], dtype=torch.int64, device=adj.device)
    _launch("dag_canonical_code", adj, labels, n, out)
    return out


_dag_canonical_code = torch.library.custom_op("cgnf_fast::dag_canonical_code", mutates_args=())(_code_impl)


@_dag_canonical_code.register_fake
def _(adj: torch.Tensor, labels: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    return adj.new_empty(adj.shape[0], dtype=torch.int64)


def _hash_impl(adj: torch.Tensor, labels: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    out = torch.empty(adj.shape[0], 16, dtype=torch.uint8, device=adj.device)
    _launch("dag_nb101_hash", adj, labels, n, out)
    return out


_dag_nb101_hash = torch.library.custom_op("cgnf_fast::dag_nb101_hash", mutates_args=())(_hash_impl)


@_dag_nb101_hash.register_fake
def _(adj: torch.Tensor, labels: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    return adj.new_empty(adj.shape[0], 16, dtype=torch.uint8)


def _check_labels_in(labels: torch.Tensor, n: torch.Tensor, lo: int, hi: int, what: str, offset: int = 0) -> None:
    """Intermediate labels (positions 1 .. n-2) must lie in [lo, hi]; ``offset`` shifts the
    graph index named in the message (when checking a slice)."""
    if labels.shape[0] == 0:
        return
    lv, nv = _host(labels, n)
    pos = np.arange(lv.shape[1]) if isinstance(lv, np.ndarray) else torch.arange(lv.shape[1], device=lv.device)
    inner = (pos[None, :] >= 1) & (pos[None, :] < nv[:, None] - 1)  # (int8 n <= MAX_NODES: no overflow)
    bad = inner & ((lv < lo) | (lv > hi))
    if not bool(bad.any()):
        return
    b, v = (int(x) for x in torch.as_tensor(bad).nonzero()[0])
    raise ValueError(f"labels[{b + offset}, {v}] = {int(labels[b, v])}: {what} labels must be in [{lo}, {hi}]")


def dag_canonical_code(adj: torch.Tensor, labels: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """Exact structural canonical code of every graph, as given (prune first to compare cells).

    Shapes:
        adj [B, N, N] uint8, labels [B, N] int8 (intermediate labels in [0, 31], as
        ``Cell.labels()``; input/output labels are ignored), n [B] int8.

    Returns:
        ``[B] int64``: the codes (``< 2**62``), equal to ``Cell.canonical_code()``.

    Reference: ``cgnf_fast.reference.dag.canonical_code``.
    """
    _check_batch(adj, labels, n)
    codes = (_code_impl if _native.eager_plain(adj, labels, n) else _dag_canonical_code)(adj, labels, n)
    if adj.shape[0] and int(codes.min()) < 0:  # the kernel flags labels outside [0, 31]
        b = int((codes < 0).nonzero()[0, 0])
        _check_labels_in(labels[b : b + 1], n[b : b + 1], 0, 31, "op", offset=b)
        raise RuntimeError(f"dag_canonical_code flagged graph {b} but its labels are in range")  # pragma: no cover
    return codes


def dag_nb101_hash(adj: torch.Tensor, labels: torch.Tensor, n: torch.Tensor) -> list[str]:
    """NB101's fingerprint of every graph, as given (NB101 hashes pruned specs: prune first).

    Shapes:
        adj [B, N, N] uint8, labels [B, N] int8 with NB101's labels (-1 input, -2 output,
        0/1/2 conv3x3-bn-relu/conv1x1-bn-relu/maxpool3x3), n [B] int8.

    Returns:
        ``B`` hex strings, byte for byte NB101's ``hash_module``.

    Reference: ``cgnf_fast.reference.dag.nb101_hash``.
    """
    return [bytes(d).hex() for d in dag_nb101_digest(adj, labels, n).cpu().numpy()]


def dag_nb101_digest(adj: torch.Tensor, labels: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """``[B, 16] uint8`` MD5 digests behind :func:`dag_nb101_hash` (stays on the device)."""
    _check_batch(adj, labels, n)
    _check_labels_in(labels, n, 0, 2, "NB101 op")
    return (_hash_impl if _native.eager_plain(adj, labels, n) else _dag_nb101_hash)(adj, labels, n)


def dag_valid(
    adj: torch.Tensor, labels: torch.Tensor, n: torch.Tensor, *, max_edges: int | None = None
) -> torch.Tensor:
    """Whether each graph has an input -> output path and at most ``max_edges`` edges after pruning.

    Shapes:
        adj [B, N, N] uint8, labels [B, N] int8, n [B] int8 -> ``[B] bool``.

    Composed from :func:`dag_prune` and stock tensor ops (no kernel of its own). Reference:
    ``DesignSpace.validate`` on cells.
    """
    if max_edges is not None and (isinstance(max_edges, bool) or not isinstance(max_edges, int)
                                  or not 0 <= max_edges <= MAX_NODES * (MAX_NODES - 1) // 2):
        raise ValueError(f"max_edges must be None or an int in [0, {MAX_NODES * (MAX_NODES - 1) // 2}] (the most "
                         f"edges a {MAX_NODES}-vertex DAG has), got {max_edges!r}")
    out_adj, _, out_n = dag_prune(adj, labels, n)
    ok = out_n > 0
    if max_edges is not None:
        ok &= out_adj.sum(dim=(1, 2), dtype=torch.int64) <= max_edges
    return ok


def dag_network_code(adj: torch.Tensor, labels: torch.Tensor, n: torch.Tensor, identity_labels) -> list[int]:
    """Network codes of every graph, as given (prune first): vertices whose label is in
    ``identity_labels`` are folded into edge multiplicities and the weighted DAG is coded
    canonically, as ``Cell.network_code()`` does for pruned cells.

    Shapes:
        adj [B, N, N] uint8, labels [B, N] int8 (intermediate labels in [0, 31]), n [B] int8;
        CPU tensors (this kernel has no CUDA version).

    Returns:
        ``B`` Python ints (< 2**230), equal to the reference's.

    Reference: ``cgnf_fast.reference.dag.fold_identities`` + ``canonical_code(..., NETWORK_WEIGHT_BITS)``.
    """
    _check_batch(adj, labels, n)
    if adj.device.type != "cpu":
        raise ValueError(f"dag_network_code runs on CPU tensors, got {adj.device}")
    _check_labels_in(labels, n, 0, 31, "op")
    mask = 0
    if isinstance(identity_labels, (str, bytes)) or not hasattr(identity_labels, "__iter__"):
        raise ValueError(f"identity_labels must be a collection of ints in [0, 31], got {identity_labels!r}")
    for lab in identity_labels:
        if isinstance(lab, bool) or not isinstance(lab, int) or not 0 <= lab <= 31:
            raise ValueError(f"identity_labels must be ints in [0, 31], got {lab!r}")
        mask |= 1 << lab
    out = torch.empty(adj.shape[0], 4, dtype=torch.int64)
    _C.dag_network_code_cpu(adj.data_ptr(), labels.data_ptr(), n.data_ptr(), out.data_ptr(), adj.shape[0],
                            adj.shape[1], mask, _native.num_threads())
    words = out.numpy().view(np.uint64).tolist()
    return [(w0 << 192) | (w1 << 128) | (w2 << 64) | w3 for w0, w1, w2, w3 in words]


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
    return (_prune_impl if _native.eager_plain(adj, labels, n) else _dag_prune)(adj, labels, n)
