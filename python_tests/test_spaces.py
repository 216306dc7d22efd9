"""Design spaces: registry, membership, sampling."""

from __future__ import annotations

import numpy as np
import pytest

from cgnf_fast.space import Cell, DesignSpace, NB201Space, get, names, nb201

from helpers import INCEPTION


def test_registry():
    assert names() == ["nb101", "nb101-like", "nb201", "nb201-like"]
    assert isinstance(get("nb201"), NB201Space)
    with pytest.raises(ValueError, match="unknown space 'nb301'"):
        get("nb301")


def test_nb101_membership():
    sp = get("nb101")
    assert sp.contains(INCEPTION)
    assert not sp.contains(Cell.zero())
    # 10 edges after pruning: in nb101-like, not in nb101
    m = np.triu(np.ones((6, 6), dtype=int), 1)  # 15 edges
    dense = Cell(m, ["input"] + ["maxpool3x3"] * 4 + ["output"])
    assert not sp.contains(dense) and get("nb101-like").contains(dense)
    with pytest.raises(ValueError, match="15 edges after pruning; space 'nb101' allows 9"):
        sp.validate(dense)
    with pytest.raises(ValueError, match="not in space 'nb101'"):
        sp.validate(Cell([[0, 1, 0], [0, 0, 1], [0, 0, 0]], ["input", "nor_conv_3x3", "output"]))


def test_nb201_membership_and_index():
    sp = get("nb201")
    c = sp.cell(9930)
    assert sp.contains(c)
    assert sp.index(c) == min(sp.indices(c))
    assert 9930 in sp.indices(c)
    assert sp.contains(Cell.zero())  # 341 NB201 strings have no path
    assert get("nb201-like").contains(Cell.zero())  # valid where the space allows it ...
    for name in ("nb101", "nb101-like"):  # ... and invalid where it does not
        assert not get(name).contains(Cell.zero())
    assert not DesignSpace(("nor_conv_3x3",), max_nodes=4).contains(Cell.zero())
    chain = Cell([[1 if j == i + 1 else 0 for j in range(6)] for i in range(6)], ["input"] + ["nor_conv_1x1"] * 4 + ["output"])
    assert get("nb201-like").contains(chain) and not sp.contains(chain)
    assert sp.index(chain) is None


@pytest.mark.parametrize("name", ["nb101", "nb101-like", "nb201", "nb201-like"])
def test_sample_is_deterministic_and_members(name):
    sp = get(name)
    a = sp.sample(50, seed=3)
    assert a == sp.sample(50, seed=3)
    assert a != sp.sample(50, seed=4)
    assert len(a) == 50 and all(sp.contains(c) for c in a)
    u = sp.sample(40, seed=1, unique=True)
    assert len({c.network_code() for c in u}) == 40


def test_user_space():
    sp = DesignSpace(ops=("conv3x3-bn-relu", "maxpool3x3"), max_nodes=5, max_edges=6, name="mine")
    cells = sp.sample(30, seed=0)
    assert all(c.num_nodes <= 5 and c.num_edges <= 6 for c in cells)
    assert sp.num_labeled_graphs() == 2**10 * 2**3
    for kwargs, match in [
        (dict(ops=(), max_nodes=5), "non-empty"),
        (dict(ops=("conv7x7",), max_nodes=5), "unknown op"),
        (dict(ops=("input",), max_nodes=5), "do not list"),
        (dict(ops=("maxpool3x3",), max_nodes=9), "max_nodes"),
        (dict(ops=("maxpool3x3",), max_nodes=5, max_edges=-1), "max_edges"),
        (dict(ops=("maxpool3x3", "maxpool3x3"), max_nodes=5), "duplicates"),
    ]:
        with pytest.raises(ValueError, match=match):
            DesignSpace(**kwargs)
    with pytest.raises(ValueError, match="n must be"):
        sp.sample(-1)


def test_nb201_sample_uniform_over_strings():
    sp = get("nb201")
    cells = sp.sample(2000, seed=0)
    zero_share = sum(c.is_zero for c in cells) / len(cells)
    # 341 / 15625 = 2.2 %; a binomial 4-sigma band at n=2000 is +-1.3 %
    assert abs(zero_share - 341 / nb201.NUM_ARCHS) < 0.013


def test_info():
    info = get("nb101-like").info()
    assert info["labeled_graphs"] == 2**21 * 3**5
    assert get("nb201").info()["nb201_strings"] == 15625


def test_sample_stratified_spreads_vertex_counts():
    from collections import Counter

    sp = get("nb201-like")
    cells = sp.sample_stratified(300, seed=0)
    assert cells == sp.sample_stratified(300, seed=0)  # deterministic
    assert len(cells) == 300
    assert len({c.network_code() for c in cells}) == 300  # distinct networks
    assert all(sp.contains(c) for c in cells)
    by = Counter(c.num_nodes for c in cells)
    # 3 vertices = one op: only 8 distinct NB201-like networks exist (4 ops x skip edge or not);
    # the unused share goes to larger counts, which split the rest evenly
    assert by[3] == 8
    assert all(by[k] >= 50 for k in range(4, 9))
    with pytest.raises(ValueError, match="non-negative"):
        sp.sample_stratified(-1)
