"""NB101 fingerprints: byte-for-byte NB101's hash_module."""

from __future__ import annotations

import json

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from cgnf_fast.space import NB101_OPS, Cell

from helpers import FIXTURES, INCEPTION, dags, permute, topo_permutations

def test_readme_vector():
    assert INCEPTION.nb101_hash() == "28cfc7874f6d200472e1a9dcd8650aa0"


def test_committed_fixture_200():
    rows = json.loads((FIXTURES / "nb101_hashes_200.json").read_text())["rows"]
    assert len(rows) == 200
    for r in rows:
        assert Cell.from_nb101(r["adjacency"], r["operations"]).nb101_hash() == r["key"], r["index"]


@pytest.mark.data
def test_all_1000_shared_graphs(shared_data):
    d = json.loads((shared_data / "nb101" / "nasbenchvis_data-1k.json").read_text())
    keys = [Cell.from_nb101(a, o).nb101_hash() for a, o in zip(d["adjacency"], d["operations"])]
    assert keys == d["key"]


@pytest.mark.data
def test_30_full_records(shared_data):
    d = json.loads((shared_data / "nb101" / "naslib_nb101_dummy_30.json").read_text())
    assert len(d) == 30
    for h, r in d.items():
        assert Cell.from_nb101(r["module_adjacency"], r["module_operations"]).nb101_hash() == h


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_hash_invariant_under_permutation(data):
    cell = data.draw(dags(min_nodes=3, max_nodes=7, ops=NB101_OPS))
    assume(cell.has_path())
    order = data.draw(topo_permutations(cell))
    assert permute(cell, order).nb101_hash() == cell.nb101_hash()


def test_hash_is_of_the_pruned_spec():
    dangling = Cell(
        [[0, 1, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0], [0, 0, 0, 0]],
        ["input", "conv3x3-bn-relu", "maxpool3x3", "output"],
    )
    assert dangling.nb101_hash() == dangling.pruned().nb101_hash()


@pytest.mark.data
def test_codes_and_nb101_hashes_partition_alike(shared_data):
    """NB101's hash has no collisions inside NB101 (the NB101 authors checked 423,624 classes),
    so on NB101 cells it must induce exactly the partition of the exact canonical codes."""
    d = json.loads((shared_data / "nb101" / "nasbenchvis_data-1k.json").read_text())
    cells = [Cell.from_nb101(a, o).pruned() for a, o in zip(d["adjacency"], d["operations"])]
    pairs = {(c.nb101_hash(), c.canonical_code()) for c in cells}
    assert len(pairs) == len({h for h, _ in pairs}) == len({k for _, k in pairs})


def test_non_nb101_ops_rejected():
    c = Cell([[0, 1, 0], [0, 0, 1], [0, 0, 0]], ["input", "nor_conv_3x3", "output"])
    with pytest.raises(ValueError, match="NB101 ops"):
        c.nb101_hash()


def test_from_nb101_integer_labels_with_padding():
    c = Cell.from_nb101(
        [[0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]], [-1, 2, -2, -3]
    )
    assert c.ops == ("input", "maxpool3x3", "output")
    with pytest.raises(ValueError, match="unknown NB101 op label 7"):
        Cell.from_nb101([[0, 1], [0, 0]], [-1, 7])
