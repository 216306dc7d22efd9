"""Canonical codes: invariance, exactness (equal codes <=> isomorphic) and network codes."""

from __future__ import annotations

import itertools

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cgnf_fast.reference import dag as ref
from cgnf_fast.space import Cell

from helpers import dags, permute, topo_permutations


def brute_canonical(cell: Cell, weight_bits: int = 1) -> int:
    """The definition: min of pack_code over every order that keeps the matrix upper triangular."""
    n = cell.num_nodes
    adj, labels = cell.adjacency, cell.labels()
    best = None
    for mid in itertools.permutations(range(1, n - 1)):
        order = [0, *mid, n - 1]
        pos = {v: p for p, v in enumerate(order)}
        if all(pos[u] < pos[v] for u in range(n) for v in range(n) if adj[u][v]):
            code = ref.pack_code(adj, labels, order, weight_bits)
            best = code if best is None else min(best, code)
    assert best is not None
    return best


def isomorphic(a: Cell, b: Cell) -> bool:
    return nx.is_isomorphic(a.to_networkx(), b.to_networkx(), node_match=lambda x, y: x["op"] == y["op"])


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_code_invariant_under_vertex_permutations(data):
    cell = data.draw(dags())
    order = data.draw(topo_permutations(cell))
    assert permute(cell, order).canonical_code() == cell.canonical_code()
    assert permute(cell, order).network_code() == cell.network_code()


@settings(max_examples=150, deadline=None)
@given(dags(max_nodes=7))
def test_fast_search_equals_the_definition(cell):
    assert cell.canonical_code() == brute_canonical(cell)


def test_code_fits_in_62_bits():
    full = Cell(np.triu(np.ones((8, 8), dtype=int), 1), ["input"] + ["avg_pool_3x3"] * 6 + ["output"])
    assert ref.code_bits(8) == 62
    assert 0 < full.canonical_code() < 2**62


@pytest.mark.parametrize("n, ops", [(4, ("maxpool3x3", "conv1x1-bn-relu", "conv3x3-bn-relu")), (5, ("maxpool3x3", "skip_connect")),
                                    pytest.param(6, ("maxpool3x3",), marks=pytest.mark.slow)])
def test_equal_codes_iff_isomorphic_exhaustive(n, ops):
    """Every labelled DAG of this size: codes group exactly the isomorphism classes.

    Within a code group all cells are isomorphic to the first (isomorphism is transitive);
    across groups, cells with the same (op, in-degree, out-degree) multiset (the only
    candidates for isomorphism) are checked pairwise to be non-isomorphic.
    """
    iu = np.triu_indices(n, 1)
    groups: dict[int, list[Cell]] = {}
    for bits in itertools.product((0, 1), repeat=len(iu[0])):
        m = np.zeros((n, n), dtype=np.uint8)
        m[iu] = bits
        for mid in itertools.product(ops, repeat=n - 2):
            c = Cell(m, ["input", *mid, "output"])
            groups.setdefault(c.canonical_code(), []).append(c)
    by_invariant: dict[str, list[Cell]] = {}
    for code, cells in groups.items():
        rep = cells[0]
        for c in cells[1:]:
            assert isomorphic(rep, c), (rep, c)
        g = rep.to_networkx()
        invariant = tuple(sorted((g.nodes[v]["op"], g.in_degree(v), g.out_degree(v)) for v in g))
        by_invariant.setdefault(invariant, []).append(rep)
    for reps in by_invariant.values():
        for a, b in itertools.combinations(reps, 2):
            assert not isomorphic(a, b), (a, b)


def test_known_small_class_counts():
    # Unlabelled DAGs on 4 vertices with fixed source 0 and sink 3 in topological position:
    # 2**6 labelled matrices; intermediate vertices 1, 2 may swap. Count by hand: 64 matrices,
    # the swap fixes those symmetric in (1, 2): edges (0,1)=(0,2), (1,3)=(2,3), and 1->2 absent,
    # 2**3 = 8 of them; swap-related pairs among matrices without 1->2: (32 - 8) / 2 = 12;
    # matrices with 1->2 have no partner (swap breaks topological order): 32. Total 8+12+32 = 52.
    iu = np.triu_indices(4, 1)
    codes = set()
    for bits in itertools.product((0, 1), repeat=6):
        m = np.zeros((4, 4), dtype=np.uint8)
        m[iu] = bits
        codes.add(Cell(m, ["input", "maxpool3x3", "maxpool3x3", "output"]).canonical_code())
    assert len(codes) == 52


def test_labels_distinguish():
    a = Cell([[0, 1, 0], [0, 0, 1], [0, 0, 0]], ["input", "maxpool3x3", "output"])
    b = Cell([[0, 1, 0], [0, 0, 1], [0, 0, 0]], ["input", "conv1x1-bn-relu", "output"])
    assert a.canonical_code() != b.canonical_code()


def test_network_code_folds_identities():
    conv = "nor_conv_3x3"
    # input -> skip -> conv -> output  ==  input -> conv -> output
    a = Cell([[0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0]], ["input", "skip_connect", conv, "output"])
    b = Cell([[0, 1, 0], [0, 0, 1], [0, 0, 0]], ["input", conv, "output"])
    assert a.canonical_code() != b.canonical_code()
    assert a.network_code() == b.network_code()
    # input -> skip -> output  ==  direct edge input -> output
    s = Cell([[0, 1, 0], [0, 0, 1], [0, 0, 0]], ["input", "skip_connect", "output"])
    d = Cell([[0, 1], [0, 0]], ["input", "output"])
    assert s.network_code() == d.network_code()
    # multiplicity matters: output = x + x (two skips) differs from output = x
    two = Cell([[0, 1, 1, 0], [0, 0, 0, 1], [0, 0, 0, 1], [0, 0, 0, 0]], ["input", "skip_connect", "skip_connect", "output"])
    assert two.network_code() != d.network_code()
    # dead vertices do not change the network
    dead = Cell([[0, 1, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0], [0, 0, 0, 0]], ["input", conv, "avg_pool_3x3", "output"])
    assert dead.network_code() == b.network_code()
    # no path: the zero cell's network
    assert Cell([[0, 1, 0], [0, 0, 0], [0, 0, 0]], ["input", conv, "output"]).network_code() == Cell.zero().network_code()


def test_fold_identities_counts_paths():
    # input -> s1 -> s2 -> output, input -> s2, s1 -> output: paths input=>output through
    # identities only: i-s1-s2-o, i-s2-o, i-s1-o  -> weight 3
    adj = [[0, 1, 1, 0], [0, 0, 1, 1], [0, 0, 0, 1], [0, 0, 0, 0]]
    w, labels = ref.fold_identities(adj, [0, 4, 4, 0], [False, True, True, False])
    assert w == [[0, 3], [0, 0]] and labels == [0, 0]
