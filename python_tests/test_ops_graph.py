"""Native canonical codes and NB101 hashes against the pure-Python reference."""

from __future__ import annotations

import contextlib
import json
import os

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cgnf_fast.ops import dag_canonical_code, dag_nb101_hash, dag_valid
from cgnf_fast.space import batch_from_cells
from cgnf_fast.space import NB101_OPS, Cell, get

from helpers import DEVICE_PARAMS, FIXTURES, INCEPTION, dags


def to(device, *ts):
    return tuple(t.to(device) for t in ts)


@pytest.mark.parametrize("device", DEVICE_PARAMS)
@settings(max_examples=25, deadline=None)
@given(cells=st.lists(dags(), min_size=0, max_size=60))
def test_canonical_code_matches_reference(device, cells):
    adj, labels, n = batch_from_cells(cells, 8)
    got = dag_canonical_code(*to(device, adj, labels, n)).cpu().tolist()
    assert got == [c.canonical_code() for c in cells]


@contextlib.contextmanager
def simd_path(simd: str):
    """CGNF_SIMD=generic (the portable scan CUDA also runs) or unset (the CPU's best) inside."""
    from cgnf_fast import _C

    old = os.environ.pop("CGNF_SIMD", None)
    if simd == "generic":
        os.environ["CGNF_SIMD"] = "generic"
    try:
        assert _C.build_config()["canonical_simd"] in (("generic",) if simd == "generic" else ("sse4.1", "generic"))
        yield
    finally:
        os.environ.pop("CGNF_SIMD", None)
        if old is not None:
            os.environ["CGNF_SIMD"] = old


@pytest.mark.parametrize("simd", ["default", "generic"])
@pytest.mark.parametrize("N", [8, 7])
@settings(max_examples=25, deadline=None)
@given(cells=st.lists(dags(max_nodes=7), min_size=1, max_size=60))
def test_canonical_code_every_cpu_path(simd, N, cells):
    """Both CPU scans (SSE4.1 where the CPU has it, and the portable one) and both loaders
    (8x8 matrices at once; other N row by row) give the reference's codes."""
    with simd_path(simd):
        got = dag_canonical_code(*batch_from_cells(cells, N)).tolist()
    assert got == [c.canonical_code() for c in cells]


@pytest.mark.parametrize("simd", ["default", "generic"])
def test_canonical_code_ignores_padding_and_end_labels(simd):
    """Only the op vertices' labels are read: dag_prune's padding (-1) and any input/output
    label (NB101's -1/-2) are ignored for every n, including n = 2."""
    from cgnf_fast.ops import dag_prune

    cells = [Cell([[0, 1], [0, 0]], ["input", "output"]),
             Cell([[0, 1, 0], [0, 0, 1], [0, 0, 0]], ["input", "maxpool3x3", "output"]),
             Cell([[0, 1, 1, 0], [0, 0, 0, 1], [0, 0, 0, 1], [0, 0, 0, 0]],
                  ["input", "conv3x3-bn-relu", "conv3x3-bn-relu", "output"])]
    adj, labels, n = batch_from_cells(cells, 8)
    for b, c in enumerate(cells):
        labels[b, 0], labels[b, c.num_nodes - 1] = -1, -2
        labels[b, c.num_nodes:] = -1
    with simd_path(simd):
        got = dag_canonical_code(adj, labels, n).tolist()
        # prune first, as the docs say: the pruned batch carries padding labels
        padded = Cell([[0, 1, 0], [0, 0, 0], [0, 0, 0]], ["input", "maxpool3x3", "output"])  # prunes to in -> ?
        wired = Cell([[0, 1, 1], [0, 0, 0], [0, 0, 0]], ["input", "maxpool3x3", "output"])  # prunes to in -> out
        pa, pl, pn = dag_prune(*batch_from_cells([padded, wired], 8))
        keep = pn >= 2
        pruned_codes = dag_canonical_code(pa[keep], pl[keep], pn[keep]).tolist()
    assert got == [c.canonical_code() for c in cells]
    assert pruned_codes == [wired.pruned().canonical_code()]


@pytest.mark.parametrize("simd", ["default", "generic"])
def test_canonical_code_symmetric_cells(simd):
    """Cells on which the search branches: two labels only and dense wiring give ties between
    equal vertices at most levels (twins, automorphisms, equal chains), for every n."""
    rng = np.random.default_rng(3)
    ops = ("conv3x3-bn-relu", "maxpool3x3")
    cells = []
    for n in range(2, 9):
        for _ in range(300):
            m = np.triu(rng.random((n, n)) < 0.5, 1).astype(np.uint8)
            m[0, 1:] |= (rng.random(n - 1) < 0.7).astype(np.uint8)
            cells.append(Cell(m, ["input", *(ops[i] for i in rng.integers(0, 2, size=n - 2)), "output"]))
    with simd_path(simd):
        got = dag_canonical_code(*batch_from_cells(cells, 8)).tolist()
    assert got == [c.canonical_code() for c in cells]


@pytest.mark.parametrize("device", DEVICE_PARAMS)
@settings(max_examples=25, deadline=None)
@given(cells=st.lists(dags(min_nodes=2, max_nodes=8, ops=NB101_OPS), min_size=0, max_size=40))
def test_nb101_hash_matches_reference(device, cells):
    from cgnf_fast.reference import dag as ref

    adj, labels, n = batch_from_cells(cells, 8, nb101_labels=True)
    got = dag_nb101_hash(*to(device, adj, labels, n))
    want = [ref.nb101_hash(c.adjacency, [-1] + [NB101_OPS.index(o) for o in c.ops[1:-1]] + [-2]) for c in cells]
    assert got == want


@pytest.mark.parametrize("device", DEVICE_PARAMS)
def test_nb101_hash_vectors(device):
    rows = json.loads((FIXTURES / "nb101_hashes_200.json").read_text())["rows"]
    cells = [INCEPTION] + [Cell.from_nb101(r["adjacency"], r["operations"]).pruned() for r in rows]
    adj, labels, n = batch_from_cells(cells, 7, nb101_labels=True)
    got = dag_nb101_hash(*to(device, adj, labels, n))
    assert got == ["28cfc7874f6d200472e1a9dcd8650aa0"] + [r["key"] for r in rows]


@pytest.mark.data
@pytest.mark.parametrize("device", DEVICE_PARAMS)
def test_nb101_hash_shared_1k(device, shared_data):
    d = json.loads((shared_data / "nb101" / "nasbenchvis_data-1k.json").read_text())
    cells = [Cell.from_nb101(a, o).pruned() for a, o in zip(d["adjacency"], d["operations"])]
    adj, labels, n = batch_from_cells(cells, 7, nb101_labels=True)
    assert dag_nb101_hash(*to(device, adj, labels, n)) == d["key"]


@pytest.mark.parametrize("device", DEVICE_PARAMS)
def test_valid(device):
    sp = get("nb101")
    cells = get("nb101-like").sample(200, seed=0) + [
        Cell([[0, 1, 0], [0, 0, 0], [0, 0, 0]], ["input", "maxpool3x3", "output"])
    ]
    adj, labels, n = batch_from_cells(cells, 7)
    got = dag_valid(*to(device, adj, labels, n), max_edges=9).cpu().tolist()
    assert got == [c.has_path() and sp.contains(c) for c in cells]
    assert got[-1] is False


def test_opcheck_and_fake():
    cells = get("nb201-like").sample(16, seed=2)
    adj, labels, n = batch_from_cells(cells, 8)
    torch.library.opcheck(torch.ops.cgnf_fast.dag_canonical_code.default, (adj, labels, n))
    cells = get("nb101").sample(16, seed=2)
    adj, labels, n = batch_from_cells(cells, 7, nb101_labels=True)
    torch.library.opcheck(torch.ops.cgnf_fast.dag_nb101_hash.default, (adj, labels, n))


def test_bad_labels_are_clear_errors():
    adj, labels, n = batch_from_cells([INCEPTION], 7)
    with pytest.raises(ValueError, match=r"labels\[0, 1\] = 2: NB101 op labels must be in \[0, 2\]|labels\[0, \d\] = \d+: NB101"):
        dag_nb101_hash(adj, labels + 3, n)
    bad = labels.clone()
    bad[0, 2] = 40
    with pytest.raises(ValueError, match=r"labels\[0, 2\] = 40: op labels must be in \[0, 31\]"):
        dag_canonical_code(adj, bad, n)
    with pytest.raises(ValueError, match="not NB101 ops|NB101"):
        batch_from_cells([Cell([[0, 1, 0], [0, 0, 1], [0, 0, 0]], ["input", "nor_conv_3x3", "output"])], nb101_labels=True)
    with pytest.raises(ValueError, match=r"2 <= N <= 8"):
        dag_canonical_code(torch.zeros(1, 9, 9, dtype=torch.uint8), torch.zeros(1, 9, dtype=torch.int8), torch.tensor([9], dtype=torch.int8))


def test_random_garbage_batches_never_crash():
    rng = np.random.default_rng(0)
    for N in range(2, 9):
        adj = torch.from_numpy(rng.integers(0, 256, size=(500, N, N), dtype=np.uint8))
        labels = torch.from_numpy(rng.integers(0, 3, size=(500, N)).astype(np.int8))
        n = torch.from_numpy(rng.integers(2, N + 1, size=500).astype(np.int8))
        codes = dag_canonical_code(adj, labels, n)
        assert (codes > 0).all()
        assert len(dag_nb101_hash(adj, labels, n)) == 500


@pytest.mark.parametrize("simd", ["default", "avx2", "generic", "scalar"])
def test_nb101_hash_every_simd_path(simd, tmp_path):
    """Each MD5 lane implementation this CPU can run gives NB101's keys, and so does the scalar
    path the CUDA kernel uses (fresh process: the choice is made once per process)."""
    import os
    import subprocess
    import sys

    script = (
        "import json, sys\n"
        "from cgnf_fast import Cell, _C\n"
        "from cgnf_fast.ops import dag_nb101_hash; from cgnf_fast.space import batch_from_cells\n"
        f"rows = json.load(open({str(FIXTURES / 'nb101_hashes_200.json')!r}))['rows']\n"
        "cells = [Cell.from_nb101(r['adjacency'], r['operations']).pruned() for r in rows] * 5\n"
        "got = dag_nb101_hash(*batch_from_cells(cells, 7, nb101_labels=True))\n"
        "assert got == [r['key'] for r in rows] * 5, 'mismatch'\n"
        "print(_C.build_config()['md5_lanes'])\n"
    )
    env = dict(os.environ)
    if simd != "default":
        env["CGNF_SIMD"] = simd
    r = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    lanes = int(r.stdout.strip())
    assert lanes == {"default": lanes, "avx2": 8, "generic": 8, "scalar": 1}[simd] and lanes in (1, 8, 16)
