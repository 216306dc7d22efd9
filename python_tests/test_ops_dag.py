"""Native DAG ops against the pure-Python reference, on every available device."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cgnf_fast import get_space
from cgnf_fast.ops import dag_network_code, dag_prune, dag_valid
from cgnf_fast.ops.dag import PAD_LABEL
from cgnf_fast.reference import dag as ref

from helpers import DEVICE_PARAMS, needs_cuda


def random_batch(rng: np.random.Generator, B: int, N: int, garbage_below_diagonal: bool = False):
    adj = rng.integers(0, 2, size=(B, N, N), dtype=np.uint8)
    if not garbage_below_diagonal:
        adj = np.triu(adj, 1)
    else:
        adj = adj * rng.integers(1, 255, size=adj.shape, dtype=np.uint8)
    n = rng.integers(2, N + 1, size=B).astype(np.int8)
    labels = rng.integers(0, 8, size=(B, N)).astype(np.int8)
    return adj, labels, n


def reference_prune(adj, labels, n):
    B, N, _ = adj.shape
    out_adj = np.zeros_like(adj)
    out_labels = np.full_like(labels, PAD_LABEL)
    out_n = np.zeros_like(n)
    for b in range(B):
        k = int(n[b])
        m = [[1 if (u < v and adj[b, u, v]) else 0 for v in range(k)] for u in range(k)]
        r = ref.prune(m, labels[b, :k].tolist())
        if r is None:
            continue
        pa, pl = r
        out_n[b] = len(pl)
        out_adj[b, : len(pl), : len(pl)] = pa
        out_labels[b, : len(pl)] = pl
    return out_adj, out_labels, out_n


@needs_cuda
def test_prune_on_a_side_stream_cuda():
    """The kernel runs on the current stream: inputs written on a side stream, pruned there, read
    after that stream only, equal the CPU's."""
    rng = np.random.default_rng(5)
    adj, labels, n = random_batch(rng, 20000, 8)
    want = dag_prune(torch.from_numpy(adj), torch.from_numpy(labels), torch.from_numpy(n))
    side = torch.cuda.Stream()
    torch.cuda._sleep(10**8)  # the default stream is busy: a kernel queued there would lose the race
    with torch.cuda.stream(side):
        ins = [torch.from_numpy(x).pin_memory().to("cuda", non_blocking=True) for x in (adj, labels, n)]
        got = [x.to("cpu", non_blocking=False) for x in dag_prune(*ins)]
    side.synchronize()
    for g, w in zip(got, want):
        assert torch.equal(g, w)


@pytest.mark.parametrize("device", DEVICE_PARAMS)
@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), B=st.integers(0, 300), N=st.integers(2, 8), garbage=st.booleans())
def test_prune_matches_reference(device, seed, B, N, garbage):
    rng = np.random.default_rng(seed)
    adj, labels, n = random_batch(rng, B, N, garbage)
    got = dag_prune(
        torch.from_numpy(adj).to(device), torch.from_numpy(labels).to(device), torch.from_numpy(n).to(device)
    )
    want = reference_prune(adj, labels, n)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g.cpu().numpy(), w)


def test_prune_large_batch_multithreaded():
    """Every row of a batch split over threads (chunks of >= 4,096 graphs), not only the first chunk's."""
    rng = np.random.default_rng(0)
    adj, labels, n = random_batch(rng, 20000, 8)
    got = dag_prune(torch.from_numpy(adj), torch.from_numpy(labels), torch.from_numpy(n))
    want = reference_prune(adj, labels, n)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g.numpy(), w)


def test_opcheck():
    rng = np.random.default_rng(1)
    adj, labels, n = (torch.from_numpy(x) for x in random_batch(rng, 17, 7))
    torch.library.opcheck(torch.ops.cgnf_fast.dag_prune.default, (adj, labels, n))


def test_bad_arguments_are_clear_errors():
    adj = torch.zeros(4, 5, 5, dtype=torch.uint8)
    labels = torch.zeros(4, 5, dtype=torch.int8)
    n = torch.full((4,), 5, dtype=torch.int8)
    with pytest.raises(ValueError, match="adj must have dtype torch.uint8"):
        dag_prune(adj.float(), labels, n)
    with pytest.raises(ValueError, match=r"adj must have shape \[B, N, N\]"):
        dag_prune(adj[:, :, :4].contiguous(), labels, n)
    with pytest.raises(ValueError, match=r"2 <= N <= 8, got \[4, 9, 9\]"):
        dag_prune(torch.zeros(4, 9, 9, dtype=torch.uint8), torch.zeros(4, 9, dtype=torch.int8), n)
    with pytest.raises(ValueError, match="contiguous"):
        dag_prune(adj.transpose(1, 2), labels, n)
    with pytest.raises(ValueError, match=r"labels must have shape \[B, N\]"):
        dag_prune(adj, labels[:3], n)
    with pytest.raises(ValueError, match=r"n must be in \[2, N=5\]"):
        dag_prune(adj, labels, torch.tensor([5, 5, 6, 1], dtype=torch.int8))
    with pytest.raises(ValueError, match="must be a torch.Tensor"):
        dag_prune(adj.numpy(), labels, n)
    with pytest.raises(ValueError, match="meta|cpu and cuda"):
        dag_prune(adj.to("meta"), labels.to("meta"), n.to("meta"))


def test_native_entry_rejects_null_pointers():
    from cgnf_fast import _C

    with pytest.raises(ValueError, match="null pointer"):
        _C.dag_prune_cpu(0, 0, 0, 0, 0, 0, 3, 4, 1)
    with pytest.raises(ValueError, match="N must be in"):
        _C.dag_prune_cpu(0, 0, 0, 0, 0, 0, 0, 9, 1)


def test_scalar_arguments_are_range_checked():
    """max_edges outside what a DAG of <= 8 vertices can have, a non-int, or identity labels that
    are not a collection give a ValueError naming the argument (2**70 used to overflow, -1 and
    1.5 passed, None gave a TypeError from deep inside)."""
    from cgnf_fast.space import batch_from_cells

    adj, labels, n = batch_from_cells(get_space("nb201-like").sample(3, seed=0))
    for bad in (2 ** 70, -1, 1.5, True, 29):
        with pytest.raises(ValueError, match="max_edges must be None or an int in \\[0, 28\\]"):
            dag_valid(adj, labels, n, max_edges=bad)
    assert dag_valid(adj, labels, n, max_edges=28).all()
    for bad in (None, 3, "ab"):
        with pytest.raises(ValueError, match="identity_labels must be"):
            dag_network_code(adj, labels, n, bad)
