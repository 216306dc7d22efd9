"""Helpers shared by the tests: hypothesis strategies, device lists, pinned example cells."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import strategies as st

from cgnf_fast.space import NB101_OPS, NB201_NODE_OPS, Cell

FIXTURES = Path(__file__).resolve().parent / "data"

#: Marks a test, or a parameter (``pytest.param(..., marks=needs_cuda)``), that needs a CUDA
#: device: the ``cuda`` marker, which conftest.py turns into a skip where
#: ``cgnf_fast.cuda_available()`` is false (no GPU, or built without CUDA). ``-m "not cuda"``
#: leaves these tests out; ``-m cuda`` runs only them.
needs_cuda = pytest.mark.cuda

DEVICE_PARAMS = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=needs_cuda)]

# The Inception-like module of the NB101 README (labels [-1, 1, 0, 0, 0, 2, -2]); its hash is
# the test vector in NB101's own tests.
INCEPTION = Cell(
    [
        [0, 1, 1, 1, 0, 1, 0],
        [0, 0, 0, 0, 0, 0, 1],
        [0, 0, 0, 0, 0, 0, 1],
        [0, 0, 0, 0, 1, 0, 0],
        [0, 0, 0, 0, 0, 0, 1],
        [0, 0, 0, 0, 0, 0, 1],
        [0, 0, 0, 0, 0, 0, 0],
    ],
    ["input", "conv1x1-bn-relu", "conv3x3-bn-relu", "conv3x3-bn-relu", "conv3x3-bn-relu", "maxpool3x3", "output"],
)

# A strong NB201 cell (index 9930: third-best CIFAR-10 test accuracy, 94.363; the best are 6111 and 13714, see cgnf_fast.sampling.BEST_NB201).
BEST_ISH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"


@st.composite
def dags(draw, min_nodes: int = 2, max_nodes: int = 8, ops: tuple[str, ...] = NB101_OPS + NB201_NODE_OPS) -> Cell:
    """Random labelled DAG cells (upper-triangular, any wiring, not necessarily pruned)."""
    n = draw(st.integers(min_nodes, max_nodes))
    bits = draw(st.lists(st.booleans(), min_size=n * (n - 1) // 2, max_size=n * (n - 1) // 2))
    m = np.zeros((n, n), dtype=np.uint8)
    m[np.triu_indices(n, 1)] = bits
    mid = draw(st.lists(st.sampled_from(ops), min_size=n - 2, max_size=n - 2))
    return Cell(m, ["input", *mid, "output"])


@st.composite
def topo_permutations(draw, cell: Cell) -> list[int]:
    """A random topological order of ``cell`` (input first, output last)."""
    n = cell.num_nodes
    adj = cell.adjacency
    placed: list[int] = [0]
    while len(placed) < n - 1:
        ready = [
            v for v in range(1, n - 1) if v not in placed and all(u in placed for u in range(n) if adj[u][v])
        ]
        placed.append(draw(st.sampled_from(ready)))
    placed.append(n - 1)
    return placed


def permute(cell: Cell, order: list[int]) -> Cell:
    """The same cell with vertex ``order[p]`` moved to position ``p``."""
    m = cell.matrix[np.ix_(order, order)]
    return Cell(m, [cell.ops[v] for v in order])


def tiny_label_store(path: str) -> str:
    """A score store with real params/flops of 40 NB201-like cells plus a synthetic "nwot"
    (edges + 0.5 x conv ops: cheap, deterministic, and not a cost attribute) for tiny model tests."""
    import json

    from cgnf_fast import get_space
    from cgnf_fast.zc import calibration_batch
    from cgnf_fast.zc.run import score_cells
    from cgnf_fast.zc.store import ScoreStore

    cells = get_space("nb201-like").sample(40, seed=3, unique=True)
    score_cells(cells, space="nb201-like", proxies=["params", "flops"], store=path, batch=calibration_batch(2),
                progress=False)
    with ScoreStore(path) as st:
        for r in [r for r in st.rows() if r["proxy"] == "params"]:
            cell = Cell.from_json(r["cell"])
            v = float(np.asarray(cell.matrix).sum()) + 0.5 * sum("conv" in o for o in cell.ops)
            st.put(r["space"], r["code"], json.dumps(r["cell"]), r["data_fp"], r["seed"], r["code_version"],
                   {"nwot": v})
    return path


SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load_script(name: str):
    """``scripts/<name>.py`` as a module (None when it is not in this checkout). It is registered
    in sys.modules under its name (dataclasses need that while it runs); sys.path is left as it
    was (the emulation scripts put scripts/ on it to import cuda_host_emu, which stays loaded and
    is shared between them)."""
    import importlib.util
    import sys

    path = SCRIPTS / f"{name}.py"
    if not path.is_file():
        return None
    saved = list(sys.path)
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.path[:] = saved
    return mod


def run_cli(*args: str) -> tuple[int, str, str]:
    """``cgnf ARGS`` in-process: (exit status, stdout, stderr)."""
    import contextlib
    import io

    from cgnf_fast.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(list(args))
    return rc, out.getvalue(), err.getvalue()


#: A G-VAE small enough to train in seconds (flow and sampler tests). Its lr is spelled out: the
#: flow tests' measured thresholds (test_train_flow's conditioning Spearman) were taken with 1e-3,
#: TrainGVAEConfig's default before it became the 2e-3 every reported G-VAE was trained with.
GVAE_TINY = dict(n_unlabelled=400, include_seed_space=100, heldout=20, hidden=16, layers=2, latent=4, dec_hidden=32,
                 pred_hidden=16, batch=128, labelled_batch=16, epochs=3, lr=1e-3, ckpt_every=100)


def tiny_gvae(root, out) -> str:
    """Trains the :data:`GVAE_TINY` G-VAE (nwot, params, flops) on :func:`tiny_label_store`
    labels in ``root`` into run directory ``out``; returns ``out``."""
    from cgnf_fast.train.gvae import TrainGVAEConfig, train_gvae

    store = tiny_label_store(str(root / "labels.sqlite"))
    train_gvae(TrainGVAEConfig(space="nb201-like", store=store, attributes=["nwot", "params", "flops"], **GVAE_TINY),
               str(out), backend="torch", progress=False)
    return out


def use_simd(monkeypatch, simd: str, kernel: str) -> None:
    """Switch the native CPU kernels to instruction set ``simd`` ("default", "avx2" or
    "generic"; chosen per call, so CGNF_SIMD works in-process) and check that ``kernel``'s
    build-config entry (``cnf_simd``, ``gin_simd``) is one this cap allows."""
    from cgnf_fast import _C

    if simd == "default":
        monkeypatch.delenv("CGNF_SIMD", raising=False)
    else:
        monkeypatch.setenv("CGNF_SIMD", simd)
    allowed = {"default": ("avx512", "avx2", "generic"), "avx2": ("avx2", "generic"), "generic": ("generic",)}
    assert _C.build_config()[kernel] in allowed[simd]
