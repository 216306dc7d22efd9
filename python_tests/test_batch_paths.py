"""Batch paths against their per-cell references: native network codes, the codec's batch
encoder, the sampler's batch decoder, the NB201 class table and the cells' memoised codes."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cgnf_fast.models.codec import CellCodec
from cgnf_fast.ops import dag_network_code
from cgnf_fast.space import batch_from_cells, cell_canonical_codes, cell_network_codes
from cgnf_fast.models.decode import _decode_one, decode_logits
from cgnf_fast.space import NB101_OPS, NB201_NODE_OPS, Cell, get
from cgnf_fast.space import nb201 as nb201_space

from helpers import dags

ALL_OPS = NB101_OPS + NB201_NODE_OPS


@settings(max_examples=40, deadline=None)
@given(cells=st.lists(dags(ops=ALL_OPS), min_size=1, max_size=40))
def test_network_codes_match_reference(cells):
    pruned = [c.pruned(allow_zero=True) for c in cells]
    want = [Cell(c.matrix, c.ops).network_code() for c in cells]
    skip = [4]  # skip_connect's label
    assert dag_network_code(*batch_from_cells(pruned, 8), skip) == want
    fresh = [Cell(c.matrix, c.ops) for c in cells]
    assert cell_network_codes(fresh) == want
    assert [c.network_code() for c in fresh] == want  # remembered


def test_network_code_bad_input():
    adj, labels, n = batch_from_cells([Cell([[0, 1], [0, 0]], ["input", "output"])], 8)
    with pytest.raises(ValueError, match="identity_labels must be ints in"):
        dag_network_code(adj, labels, n, [40])
    bad = labels.clone()
    bad[0, 1] = -3
    n3 = torch.tensor([3], dtype=torch.int8)
    with pytest.raises(ValueError, match=r"labels\[0, 1\] = -3"):
        dag_network_code(adj, bad, n3, [4])


@pytest.mark.parametrize("space", ["nb201-like", "nb101-like"])
@settings(max_examples=30, deadline=None)
@given(cells=st.lists(dags(max_nodes=7), min_size=1, max_size=30), seed=st.integers(0, 100))
def test_codec_batch_encode_equals_layout(space, cells, seed):
    sp = get(space)
    codec = CellCodec(sp)
    ops = sp.ops
    rng = np.random.default_rng(seed)
    cells = [Cell(c.matrix, ["input", *(ops[i] for i in rng.integers(0, len(ops), size=c.num_nodes - 2)), "output"])
             for c in cells]
    cells += sp.sample(5, seed=seed) + [Cell.zero()]
    adj, o = codec.encode(cells)
    for b, c in enumerate(cells):
        a_ref, o_ref = codec.layout(Cell(c.matrix, c.ops))
        assert np.array_equal(adj[b].numpy(), a_ref.astype(np.float32)) and np.array_equal(o[b].numpy(), o_ref), b


def test_codec_encode_errors():
    codec = CellCodec(get("nb101-like"))
    with pytest.raises(ValueError, match="op 'nor_conv_3x3' is not in space 'nb101-like'"):
        codec.encode([Cell([[0, 1, 0], [0, 0, 1], [0, 0, 0]], ["input", "nor_conv_3x3", "output"])])
    with pytest.raises(ValueError, match="cells\\[1\\] is a str"):
        codec.encode([Cell.zero(), "x"])
    big = Cell(np.triu(np.ones((8, 8), dtype=int), 1), ["input"] + ["maxpool3x3"] * 6 + ["output"])
    with pytest.raises(ValueError, match="8 vertices after pruning; space 'nb101-like' allows 7"):
        codec.encode([big])


@pytest.mark.parametrize("space", ["nb201-like", "nb101-like", "nb101", "nb201"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_decode_logits_batch_equals_per_row(space, seed):
    """The batch decoder (native pruning and codes) returns what _decode_one returns row by
    row, repairs included, for logits of every sign pattern."""
    sp = get(space)
    codec = CellCodec(sp)
    N, K = codec.num_nodes, len(codec.ops)
    g = torch.Generator().manual_seed(seed)
    B = 300
    op_logits = torch.randn(B, N - 2, K + 1, generator=g) * 2
    edge_logits = torch.randn(B, N * (N - 1) // 2, generator=g) * 2 - 0.3
    got = decode_logits(op_logits, edge_logits, codec, sp)
    op_logp = torch.log_softmax(op_logits.double(), -1).numpy()
    iu = np.triu_indices(N, 1)
    for b in range(B):
        E = np.full((N, N), -np.inf)
        E[iu] = edge_logits[b].double().numpy()
        want = _decode_one(codec, sp, op_logp[b], E)
        assert got[b][1] == want[1] and got[b][0] == want[0], b
        if got[b][0] is not None:
            ref = Cell(want[0].matrix, want[0].ops)
            assert got[b][0].canonical_code() == ref.canonical_code()
            assert got[b][0].network_code() == ref.network_code()


def test_nb201_class_table_equals_cell_codes():
    codes, first = nb201_space._class_table()
    want = np.asarray([c.canonical_code() for c in nb201_space.all_cells()], dtype=np.uint64)
    assert np.array_equal(codes, want) and len(first) == 8765


def test_memoised_codes_keep_cells_plain_values():
    c = Cell([[0, 1, 1], [0, 0, 1], [0, 0, 0]], ["input", "skip_connect", "output"])
    d = Cell(c.matrix, c.ops)
    cell_canonical_codes([c])
    assert c == d and hash(c) == hash(d)
    assert c.canonical_code() == d.canonical_code() and c.network_code() == d.network_code()
    e = pickle.loads(pickle.dumps(c))
    assert e == c and e.canonical_code() == c.canonical_code()
