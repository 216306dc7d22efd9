"""Exact space counts and enumeration against brute force, and NB101's published 423,624."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from cgnf_fast.space import Cell, DesignSpace, counting

from helpers import DEVICE_PARAMS, needs_cuda


def brute_force(space: DesignSpace) -> dict:
    """Every labelled graph on max_nodes vertices, pruned and coded with the Python reference."""
    k = space.max_nodes
    iu = np.triu_indices(k, 1)
    valid = 0
    codes, networks = set(), set()
    for bits in itertools.product((0, 1), repeat=len(iu[0])):
        m = np.zeros((k, k), dtype=np.uint8)
        m[iu] = bits
        probe = Cell(m, ["input"] + [space.ops[0]] * (k - 2) + ["output"])
        if not probe.has_path():
            continue
        p = probe.pruned()
        if space.max_edges is not None and p.num_edges > space.max_edges:
            continue
        for mid in itertools.product(space.ops, repeat=k - 2):
            valid += 1
            c = Cell(m, ["input", *mid, "output"]).pruned()
            code = c.canonical_code()
            if code not in codes:
                codes.add(code)
                networks.add(c.network_code())
    return {
        "labeled": 2 ** len(iu[0]) * len(space.ops) ** (k - 2),
        "valid": valid,
        "unique": len(codes),
        "unique_networks": len(networks),
    }


@pytest.mark.parametrize(
    "space",
    [
        DesignSpace(("skip_connect", "nor_conv_3x3", "avg_pool_3x3"), max_nodes=5, name="s5"),
        pytest.param(DesignSpace(("skip_connect", "nor_conv_1x1"), max_nodes=6, max_edges=7, name="s6e7"),
                     marks=pytest.mark.slow),
        DesignSpace(("conv3x3-bn-relu", "maxpool3x3"), max_nodes=5, max_edges=4, name="nb101ish"),
        DesignSpace(("skip_connect",), max_nodes=5, name="skips"),
    ],
    ids=lambda s: s.name,
)
def test_counts_equal_brute_force(space):
    got = counting.count(space, progress=False)
    want = brute_force(space)
    assert {k: got[k] for k in want} == want


@pytest.mark.parametrize("space", [DesignSpace(("skip_connect", "nor_conv_3x3", "avg_pool_3x3"), max_nodes=5, name="s5"),
                                   DesignSpace(("conv1x1-bn-relu", "maxpool3x3"), max_nodes=6, max_edges=6, name="e6")],
                         ids=lambda s: s.name)
def test_enumeration_lists_each_class_once(space, tmp_path):
    out = tmp_path / "cells.jsonl"
    n = counting.write_jsonl(space, out, progress=False)
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert n == len(rows) == counting.count(space, progress=False)["unique"]
    cells = [Cell(r["matrix"], r["ops"]) for r in rows]
    assert len({c.canonical_code() for c in cells}) == len(cells)
    assert all(space.contains(c) and c.pruned() == c for c in cells)
    assert [c.canonical_code() for c in cells] == [r["code"] for r in rows]
    assert not (tmp_path / "cells.jsonl.partial").exists()


def test_nb101_is_423624():
    # NAS-Bench-101 (Ying et al. 2019): 423,624 unique cells with <= 7 vertices, <= 9 edges,
    # 3 ops. Our count is exact (canonical codes); NB101's came from its (WL) hash.
    r = counting.count("nb101", progress=False)
    assert r["unique"] == 423624
    assert r["labeled"] == 2**21 * 3**5
    assert r["unique_networks"] == r["unique"]  # no identity op in NB101


def test_nb101_like_counts_pinned():
    # Regression pin of our exact counts (method checked against brute force above).
    r = counting.count("nb101-like", progress=False)
    assert (r["labeled"], r["valid"], r["unique"], r["unique_networks"]) == (509607936, 473253435, 18991191, 18991191)


def test_count_runs_the_costly_chunks_last_and_shuffled():
    """`cgnf space count nb201-like`'s ETA said 12 s and it took 3 min: the costly 8-vertex chunks
    sat at the end of the mask order. They now run after the cheap ones, in a fixed random order
    (the counts above are unchanged by it: they are sums and a set)."""
    sp = counting._resolve("nb201-like", None)
    units = counting._counter(sp, networks=True, emit=False).units()
    cheap, costly = counting.unit_order(units, sp.max_nodes)
    assert sorted(cheap + costly) == list(range(len(units)))
    assert len(costly) == 64 and all(units[i][0] == 8 for i in costly) and all(units[i][0] != 8 for i in cheap)
    assert costly != sorted(costly) and costly == counting.unit_order(units, sp.max_nodes)[1]
    ranked = sorted(costly)  # mask order
    early = costly[:16]  # the first 16 run hold chunks from both ends of the mask order
    assert sum(i in ranked[-16:] for i in early) >= 2 and sum(i in ranked[:32] for i in early) >= 4


def test_nb201_seed_counts():
    r = counting.count("nb201", progress=False)
    # the zero cell is not counted in valid/unique (it is one more class: 8,765 and 5,425)
    assert (r["labeled"], r["valid"], r["unique"], r["unique_networks"]) == (15625, 15284, 8764, 5424)
    assert r["zero_cell"] is True


@pytest.mark.slow
@pytest.mark.data
def test_enumerate_nb101_contains_the_1k_keys(tmp_path, shared_data):
    out = tmp_path / "nb101.jsonl"
    assert counting.write_jsonl("nb101", out, progress=False) == 423624
    hashes = set()
    with open(out) as f:
        for line in f:
            hashes.add(json.loads(line)["nb101_hash"])
    assert len(hashes) == 423624
    d = json.loads((shared_data / "nb101" / "nasbenchvis_data-1k.json").read_text())
    assert set(d["key"]) <= hashes


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown space"):
        counting.count("nb999")
    with pytest.raises(ValueError, match="max_edges"):
        counting.count("nb101", max_edges=-1)
    with pytest.raises(ValueError, match="device"):
        counting.count("nb101", device="tpu")
    with pytest.raises(ValueError, match="nb201 seed space"):
        counting.count("nb201", max_edges=3)


@pytest.mark.parametrize("device", DEVICE_PARAMS)
@pytest.mark.parametrize(
    ("space", "want"),
    [
        pytest.param("nb101", (509_607_936, 373_754_169, 423_624, 423_624), id="nb101"),
        pytest.param("nb101-like", (509_607_936, 473_253_435, 18_991_191, 18_991_191), id="nb101-like"),
        pytest.param(DesignSpace(("skip_connect", "nor_conv_3x3", "avg_pool_3x3"), max_nodes=6, name="s6"),
                     (2_654_208, 2_348_919, 153_243, 51_430), id="s6"),
    ],
)
def test_devices_agree(device, space, want):
    """Each device gives the pinned exact numbers: the CPU path's (its method is checked against
    brute force above; NB101's unique count is the published 423,624), so the CUDA path (skipped
    without a GPU) is compared with them, and a change to the CPU path fails here too."""
    got = counting.count(space, device=device, progress=False)
    assert tuple(got[k] for k in ("labeled", "valid", "unique", "unique_networks")) == want


@pytest.mark.parametrize("device", DEVICE_PARAMS)
def test_unique_rows_is_torch_unique_dim0(device):
    """The GPU count's per-unit dedup (four stable sorts) returns torch.unique(dim=0)'s rows, in
    its order (signed words, repeats, empty and one-row inputs)."""
    import torch

    from cgnf_fast.space._count_cuda import _unique_rows

    g = torch.Generator().manual_seed(0)
    for n in (0, 1, 7, 5000):
        keys = torch.randint(-3, 3, (n, 4), generator=g, dtype=torch.int64)
        keys[: n // 2, 0] = torch.iinfo(torch.int64).min  # (the sign bit set, as 8-vertex keys have it)
        keys = keys.to(device)
        assert torch.equal(_unique_rows(keys).cpu(), torch.unique(keys.cpu(), dim=0))


@needs_cuda
def test_devices_agree_on_8_vertices_cuda():
    """8-vertex spaces (nb201-like's size) on the GPU: network keys whose first word is negative
    as int64, through torch.unique on the device. The CPU path's numbers (12 s on a 2-core CPU:
    pinned here so the GPU run does not recount them)."""
    space = DesignSpace(("skip_connect", "nor_conv_3x3", "avg_pool_3x3"), max_nodes=8, max_edges=9, name="k8e9")
    got = counting.count(space, device="cuda", progress=False)
    assert {k: got[k] for k in ("labeled", "valid", "unique", "unique_networks")} == {
        "labeled": 195_689_447_424, "valid": 112_982_279_679, "unique": 871_692, "unique_networks": 127_872}
