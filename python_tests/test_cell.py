"""Cell construction, validation, immutability, interchange formats and pruning."""

from __future__ import annotations

import json

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cgnf_fast.reference import dag as ref
from cgnf_fast.space import Cell, register_op

from helpers import dags

CHAIN = Cell([[0, 1, 0], [0, 0, 1], [0, 0, 0]], ["input", "conv3x3-bn-relu", "output"])


def test_basic_properties():
    assert CHAIN.num_nodes == 3
    assert CHAIN.num_edges == 2
    assert CHAIN.ops == ("input", "conv3x3-bn-relu", "output")
    assert CHAIN.matrix.dtype == np.uint8
    assert CHAIN.labels() == [0, 1, 0]


def test_immutable_and_hashable():
    m = CHAIN.matrix
    m[0, 2] = 1  # a copy: the cell does not change
    assert CHAIN.num_edges == 2
    with pytest.raises(AttributeError):
        CHAIN.ops = ("input", "output")  # type: ignore[misc]
    same = Cell([[0, 1, 0], [0, 0, 1], [0, 0, 0]], ["input", "conv3x3-bn-relu", "output"])
    assert same == CHAIN and hash(same) == hash(CHAIN)
    assert len({CHAIN, same}) == 1


@pytest.mark.parametrize(
    "matrix, ops, match",
    [
        ([[0, 1], [0, 0], [0, 0]], ["input", "output"], "square"),
        ([[0, 1, 1]], ["input", "output"], "square"),
        ([[0, 2], [0, 0]], ["input", "output"], "0 or 1"),
        ([[0, 0.5], [0, 0]], ["input", "output"], "0 or 1"),
        ([[1, 1], [0, 0]], ["input", "output"], "self-loop"),
        ([[0, 1], [1, 0]], ["input", "output"], "cyclic"),
        ([[0, 0, 1], [1, 0, 0], [0, 0, 0]], ["input", "maxpool3x3", "output"], "upper triangular"),
        ([[0]], ["input"], "at least 2"),
        (np.zeros((9, 9)), ["input"] + ["maxpool3x3"] * 7 + ["output"], "at most 8"),
        ([[0, 1, 0], [0, 0, 1], [0, 0, 0]], ["input", "conv9x9", "output"], "unknown op 'conv9x9'"),
        ([[0, 1, 0], [0, 0, 1], [0, 0, 0]], ["input", "output"], "one name per vertex"),
        ([[0, 1, 0], [0, 0, 1], [0, 0, 0]], ["output", "maxpool3x3", "input"], "ops\\[0\\] must be 'input'"),
        ([[0, 1, 0], [0, 0, 1], [0, 0, 0]], ["input", "maxpool3x3", "maxpool3x3"], "ops\\[-1\\] must be 'output'"),
        ([[0, 1, 0], [0, 0, 1], [0, 0, 0]], ["input", "input", "output"], "only the first vertex"),
        ([[0, 1, 0], [0, 0, 1], [0, 0, 0]], ["input", 3, "output"], "op name"),
        ([[0, 1, 0], [0, 0, 1], [0, 0, 0]], "input", "list"),
        ([[0, 1], [0]], ["input", "output"], "square"),
        ("abc", ["input", "output"], "0/1"),
    ],
)
def test_bad_input_is_a_clear_value_error(matrix, ops, match):
    with pytest.raises(ValueError, match=match):
        Cell(matrix, ops)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.none(),
        st.integers(),
        st.text(max_size=10),
        st.lists(st.lists(st.one_of(st.integers(-3, 3), st.floats(allow_nan=True), st.text(max_size=2)), max_size=10), max_size=10),
        st.lists(st.integers(), max_size=10),
    ),
    st.one_of(st.none(), st.text(max_size=5), st.lists(st.one_of(st.text(max_size=12), st.integers()), max_size=10)),
)
def test_garbage_never_crashes(matrix, ops):
    try:
        Cell(matrix, ops)
    except ValueError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=200), st.binary(max_size=50).map(lambda b: b.decode("latin-1"))))
def test_garbage_json_and_nb201_never_crash(text):
    for parse in (Cell.from_json, Cell.from_nb201):
        try:
            parse(text)
        except ValueError:
            pass


@settings(max_examples=200, deadline=None)
@given(dags())
def test_json_round_trip(cell):
    assert Cell.from_json(cell.dumps()) == cell
    assert Cell.from_json(json.loads(cell.dumps())) == cell


@settings(max_examples=200, deadline=None)
@given(dags())
def test_networkx_round_trip(cell):
    g = cell.to_networkx()
    assert isinstance(g, nx.DiGraph)
    assert Cell.from_networkx(g) == cell


def test_from_networkx_reorders_and_checks():
    g = nx.DiGraph()
    g.add_node("o", op="output")
    g.add_node("c", op="maxpool3x3")
    g.add_node("i", op="input")
    g.add_edges_from([("i", "c"), ("c", "o")])
    assert Cell.from_networkx(g) == Cell([[0, 1, 0], [0, 0, 1], [0, 0, 0]], ["input", "maxpool3x3", "output"])
    g.add_edge("o", "c")
    with pytest.raises(ValueError, match="cyclic"):
        Cell.from_networkx(g)
    h = nx.DiGraph()
    h.add_node(0, op="input")
    with pytest.raises(ValueError, match="exactly one 'output'"):
        Cell.from_networkx(h)
    h.add_node(1, op="output")
    h.add_node(2, op="maxpool3x3")
    h.add_edge(1, 2)
    with pytest.raises(ValueError, match="output node has outgoing"):
        Cell.from_networkx(h)


@settings(max_examples=300, deadline=None)
@given(dags())
def test_pruning_semantics(cell):
    if not cell.has_path():
        with pytest.raises(ValueError, match="no input -> output path"):
            cell.pruned()
        assert cell.pruned(allow_zero=True) == Cell.zero()
        return
    p = cell.pruned()
    assert p.pruned() == p  # idempotent
    # every kept vertex lies on an input -> output path, and none was lost
    g = cell.to_networkx()
    on_path = {v for v in g if nx.has_path(g, 0, v) and nx.has_path(g, v, cell.num_nodes - 1)}
    assert p.num_nodes == len(on_path)
    assert sorted(p.ops) == sorted(cell.ops[v] for v in on_path)
    assert p.num_edges == g.subgraph(on_path).number_of_edges()


def test_zero_cell():
    z = Cell.zero()
    assert z.is_zero and not z.has_path()
    assert z.pruned(allow_zero=True) == z
    with pytest.raises(ValueError):
        z.pruned()


def test_register_op():
    info = register_op("test_sep_conv_5x5")
    assert register_op("test_sep_conv_5x5") == info
    assert 8 <= info.label <= 31
    c = Cell([[0, 1, 0], [0, 0, 1], [0, 0, 0]], ["input", "test_sep_conv_5x5", "output"])
    assert c.labels()[1] == info.label
    with pytest.raises(ValueError, match="identity"):
        register_op("test_sep_conv_5x5", identity=True)
    with pytest.raises(ValueError):
        register_op("has space")
    with pytest.raises(ValueError):
        register_op("input")


def test_prune_matches_reference_function():
    cell = Cell(
        [[0, 1, 1, 0, 0], [0, 0, 0, 0, 1], [0, 0, 0, 1, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]],
        ["input", "maxpool3x3", "conv1x1-bn-relu", "conv3x3-bn-relu", "output"],
    )
    adj, labels = ref.prune(cell.adjacency, list(cell.ops))
    assert cell.pruned() == Cell(adj, labels)
    assert cell.pruned().ops == ("input", "maxpool3x3", "output")
