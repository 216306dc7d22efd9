"""NB201 strings, node form, official indices and the three meanings of "unique"."""

from __future__ import annotations

import csv

import pytest

from cgnf_fast.space import Cell, nb201

from helpers import BEST_ISH


def test_parse_and_format_round_trip():
    digits = nb201.parse(BEST_ISH)
    assert digits == (3, 3, 3, 1, 3, 3)
    assert nb201.format_arch(digits) == BEST_ISH


@pytest.mark.parametrize(
    "arch, match",
    [
        ("", "3 nodes"),
        ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|", "3 nodes"),
        ("|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|", "unknown NB201 op 'conv'"),
        ("|none~1|+|none~0|none~1|+|none~0|none~1|none~2|", "must come from node 0"),
        ("|none~0|+|none~0|+|none~0|none~1|none~2|", "2 incoming edges"),
        ("none~0|+|none~0|none~1|+|none~0|none~1|none~2|", "node 1 must look like"),
        ("|none0|+|none~0|none~1|+|none~0|none~1|none~2|", "unknown NB201 op 'none0'"),
        ("|none~x|+|none~0|none~1|+|none~0|none~1|none~2|", "malformed NB201 edge"),
        (None, "must be a str"),
    ],
)
def test_malformed_strings(arch, match):
    with pytest.raises(ValueError, match=match):
        nb201.parse(arch)


def test_node_form_of_a_chain():
    c = Cell.from_nb201("|nor_conv_3x3~0|+|none~0|avg_pool_3x3~1|+|none~0|none~1|skip_connect~2|")
    assert c == Cell(
        [[0, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 0, 1, 0], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0]],
        ["input", "nor_conv_3x3", "avg_pool_3x3", "skip_connect", "output"],
    )


def test_dead_parts_are_pruned_and_no_path_is_the_zero_cell():
    # node 1 is computed but never used by node 3: its edge vertex is pruned
    c = Cell.from_nb201("|nor_conv_3x3~0|+|none~0|none~1|+|avg_pool_3x3~0|none~1|none~2|")
    assert c.ops == ("input", "avg_pool_3x3", "output")
    zero = Cell.from_nb201("|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    assert zero == Cell.zero()
    assert nb201.unique_str("|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|") == "#+#+#"


def test_unique_str_examples():
    # skip folds into its input; terms are sorted as strings; '#' marks zero terms
    assert nb201.unique_str("|skip_connect~0|+|none~0|skip_connect~1|+|none~0|none~1|skip_connect~2|") == "#+#+#+0"
    assert nb201.unique_str(BEST_ISH) == (
        "(((0)@nor_conv_3x3)@nor_conv_3x3+(0)@nor_conv_3x3)@nor_conv_3x3+((0)@nor_conv_3x3)@nor_conv_3x3+0"
    )
    # NATS-Bench's quirk: only a node whose whole string is '#' is zero downstream; '#+#' is not
    quirk = nb201.unique_str("|none~0|+|none~0|none~1|+|none~0|none~1|nor_conv_3x3~2|")
    assert quirk == "#+#+(#+#)@nor_conv_3x3"


def test_index_round_trip():
    for i in (0, 1, 9930, 15624):
        assert nb201.index_of(nb201.arch_at(i)) == i
    with pytest.raises(ValueError):
        nb201.arch_at(15625)
    with pytest.raises(ValueError):
        nb201.arch_at(-1)


@pytest.fixture(scope="module")
def nb201_table(shared_data):
    with open(shared_data / "nb201" / "naswot_arch_score_acc.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.data
def test_shipped_order_is_the_official_order(nb201_table):
    assert nb201.all_archs() == [r["cellstr"] for r in nb201_table]


@pytest.mark.data
def test_all_15625_convert_and_the_three_counts(nb201_table):
    archs = [r["cellstr"] for r in nb201_table]
    cells = [Cell.from_nb201(a) for a in archs]
    # 341 cells have no input -> output path; they are exactly the rows whose NASWOT score is
    # missing in the table (their network output does not depend on the input).
    zero = [c.is_zero for c in cells]
    assert sum(zero) == 341
    assert zero == [r["naswot_v1_score"] == "" for r in nb201_table]
    # Structural classes: isomorphism of the pruned node form (the zero cell is one class).
    assert len({c.canonical_code() for c in cells}) == 8765
    # Network classes: skip_connect folded into edge multiplicities; the default "unique".
    assert len({c.network_code() for c in cells}) == 5425
    # NATS-Bench's to_unique_str(consider_zero=True): the 6,466 of the NB201 literature.
    assert len({nb201.unique_str(a) for a in archs}) == 6466


@pytest.mark.data
def test_round_trip_to_a_string_of_the_same_class(nb201_table):
    for i, r in enumerate(nb201_table):
        c = Cell.from_nb201(r["cellstr"])
        back = c.to_nb201()
        assert back is not None
        assert Cell.from_nb201(back).canonical_code() == c.canonical_code()
        idx = nb201.index_of(back)
        assert idx <= i and idx in nb201.indices_of_cell(c)


def test_to_nb201_outside_nb201():
    # a 6-conv chain has no NB201 string (NB201's longest path has 3 op vertices)
    chain = Cell(
        [[1 if j == i + 1 else 0 for j in range(8)] for i in range(8)],
        ["input"] + ["nor_conv_3x3"] * 6 + ["output"],
    )
    assert chain.to_nb201() is None
    assert Cell([[0, 1, 0], [0, 0, 1], [0, 0, 0]], ["input", "maxpool3x3", "output"]).to_nb201() is None
    assert Cell.zero().to_nb201() is not None


def test_unique_str_of_a_cell_says_why_not() -> None:
    """unique_str is a function of the NB201 string ('none' edges count, and vanish in a cell):
    a Cell is refused with the reason and what to use instead."""
    cell = nb201.to_cell("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|")
    with pytest.raises(ValueError, match="takes an NB201 string, not a Cell.*network_code"):
        nb201.unique_str(cell)
