"""Exact counting and enumeration of design spaces (native engine: csrc/dag/count_cpu.cpp).

The four numbers of a space (``count``):

* ``labeled`` - labelled graphs on the space's maximum number of vertices K: every
  upper-triangular K x K matrix with every op labelling, ``2**(K(K-1)/2) * len(ops)**(K-2)``;
* ``valid`` - those whose pruned cell has an input -> output path and respects the edge limit;
* ``unique`` - distinct pruned valid cells up to isomorphism (distinct canonical codes);
* ``unique_networks`` - distinct networks built by those cells (distinct network codes:
  identity ops folded into edge multiplicities).

The zero cell (no input -> output path) is not counted in ``valid``/``unique``; where the space
allows it, it is one more class (``zero_cell: true``).

Method (prune-then-label with orbit counting), stated in full in ``count_cpu.cpp``: valid
matrices are counted by pruning every K-vertex matrix; unique cells are counted over the
unlabelled pruned classes (one canonical matrix per class) with Burnside's lemma over each
class's automorphism group; networks fold every subset of identity vertices of each class and
deduplicate the weighted results exactly before counting their labellings the same way.
"""

from __future__ import annotations

import json
import os
import random
import resource
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from .. import _native
from .._native import _C
from . import nb201, vocabulary
from .cell import Cell
from .spaces import DesignSpace, NB201Space, get


def _resolve(space: str | DesignSpace, max_edges: int | None) -> DesignSpace:
    sp = get(space)
    if max_edges is not None:
        if not isinstance(max_edges, int) or max_edges < 0:
            raise ValueError(f"max_edges must be a non-negative int, got {max_edges!r}")
        if isinstance(sp, NB201Space):
            raise ValueError("--max-edges does not apply to the nb201 seed space (its cells are fixed)")
        sp = DesignSpace(sp.ops, sp.max_nodes, max_edges, sp.allow_zero, f"{sp.name}[max_edges={max_edges}]")
    return sp


def _op_order(sp: DesignSpace) -> list[str]:
    """The space's ops with identity ops first (the engine's label convention)."""
    ident = [o for o in sp.ops if vocabulary.op_info(o).identity]
    return ident + [o for o in sp.ops if not vocabulary.op_info(o).identity]


def _counter(sp: DesignSpace, *, networks: bool, emit: bool):
    ops = _op_order(sp)
    n_ident = sum(vocabulary.op_info(o).identity for o in ops)
    return _C.SpaceCounter(
        sp.max_nodes, len(ops), n_ident, -1 if sp.max_edges is None else sp.max_edges, networks, emit
    )


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def count(
    space: str | DesignSpace,
    *,
    max_edges: int | None = None,
    device: str = "cpu",
    progress: bool = True,
    networks: bool = True,
) -> dict[str, Any]:
    """The exact ``labeled``, ``valid``, ``unique`` and ``unique_networks`` of a space.

    Returns a dict with those keys plus ``space``, ``zero_cell``, ``seconds``, ``device`` and
    ``peak_rss_mb`` (peak resident memory of this process so far). ``networks=False`` skips
    the network count (``unique_networks`` is then None).
    """
    sp = _resolve(space, max_edges)
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    t0 = time.perf_counter()
    if isinstance(sp, NB201Space):
        out = _count_nb201()
    elif device == "cuda":
        from . import _count_cuda

        out = _count_cuda.count(sp, networks=networks, progress=progress)
    else:
        c = _counter(sp, networks=networks, emit=False)
        cheap, costly = unit_order(c.units(), sp.max_nodes)
        threads = _native.num_threads()
        with tqdm(cheap, desc=f"count {sp.name}: matrices", unit="chunk", disable=not progress, file=sys.stderr,
                  leave=False) as bar:
            for i in bar:
                c.process(i, threads)
        # The classes' chunks cost from 0.02 s to 3 s each (nb201-like), the costly ones bunched at
        # the end of the mask order: in a fixed random order, and with the rate averaged over every
        # chunk done (smoothing=0), the bar's ETA is an unbiased estimate from the start.
        with tqdm(costly, desc=f"count {sp.name}: classes", unit="chunk", disable=not progress, file=sys.stderr,
                  leave=False, smoothing=0) as bar:
            for i in bar:
                c.process(i, threads)
        c.finalize(threads)
        t = c.totals()
        k = sp.max_nodes
        labelings = len(sp.ops) ** (k - 2)
        out = {
            "labeled": 2 ** (k * (k - 1) // 2) * labelings,
            "valid": int(t["valid_matrices"]) * labelings,
            "unique": int(t["unique"]),
            "unique_networks": int(t["unique_networks"]) if networks else None,
        }
    return {
        "space": sp.name,
        **out,
        "zero_cell": sp.allow_zero,
        "seconds": round(time.perf_counter() - t0, 3),
        "device": device,
        "peak_rss_mb": round(_peak_rss_mb(), 1),
    }


def unit_order(units: list[tuple[int, int, int]], max_nodes: int) -> tuple[list[int], list[int]]:
    """The counter's work units (``(k, lo, hi)``, see ``SpaceCounter.units``) in the order
    :func:`count` runs them: ``(cheap, costly)``. Cheap: the valid-matrix sweep (``k = 0``, even
    cost per chunk) and the classes of fewer than ``max_nodes`` vertices (a small share of the
    work). Costly: the ``max_nodes``-vertex classes, whose chunks differ in cost ~100-fold, in a
    fixed pseudo-random order so that the progress bar's rate estimate is unbiased. The counts do
    not depend on the order (sums, and a set of network keys)."""
    cheap = [i for i, (k, _, _) in enumerate(units) if k != max_nodes]
    costly = [i for i, (k, _, _) in enumerate(units) if k == max_nodes]
    random.Random(0).shuffle(costly)
    return cheap, costly


def _count_nb201() -> dict[str, int]:
    # The zero cell is one class of each count and is not "valid" (no input -> output path).
    c = nb201.class_counts()
    return {
        "labeled": nb201.NUM_ARCHS,
        "valid": nb201.NUM_ARCHS - c["zero_cells"],
        "unique": c["structural"] - 1,
        "unique_networks": c["network"] - 1,
    }


def iter_cell_batches(
    space: str | DesignSpace, *, max_edges: int | None = None, progress: bool = True
) -> Iterator[tuple[np.ndarray, list[list[str]], np.ndarray]]:
    """Every unique cell of a space exactly once, in batches ``(adj [M,K,K], ops, n [M])``.

    ``ops[m]`` lists the op names of cell ``m`` (input ... output); cell ``m`` is the top-left
    ``n[m] x n[m]`` block. Pruned, connected cells only (the zero cell is not listed).
    """
    sp = _resolve(space, max_edges)
    if isinstance(sp, NB201Space):
        all_cells = nb201.all_cells()
        cells = [all_cells[i] for i in sorted(nb201._class_table()[1].values()) if not all_cells[i].is_zero]
        yield _cells_to_batch(cells, sp.max_nodes)
        return
    names = _op_order(sp)
    c = _counter(sp, networks=False, emit=True)
    units = c.units()
    K = sp.max_nodes
    with tqdm(total=len(units), desc=f"enumerate {sp.name}", unit="chunk", disable=not progress,
              file=sys.stderr, leave=False) as bar:
        for i, (k, _, _) in enumerate(units):
            if k == 0:  # the valid-matrix job emits nothing
                bar.update(1)
                continue
            c.process(i, _native.num_threads())
            adj, labels, n = c.take_emitted(K)
            bar.update(1)
            if len(n):
                ops = [
                    [vocabulary.INPUT, *(names[int(x)] for x in labels[m, 1 : n[m] - 1]), vocabulary.OUTPUT]
                    for m in range(len(n))
                ]
                yield adj, ops, n


def _cells_to_batch(cells: list[Cell], K: int) -> tuple[np.ndarray, list[list[str]], np.ndarray]:
    adj = np.zeros((len(cells), K, K), dtype=np.uint8)
    n = np.zeros(len(cells), dtype=np.int8)
    for m, c in enumerate(cells):
        adj[m, : c.num_nodes, : c.num_nodes] = c.adjacency
        n[m] = c.num_nodes
    return adj, [list(c.ops) for c in cells], n


def write_jsonl(
    space: str | DesignSpace, path: str | os.PathLike, *, max_edges: int | None = None, progress: bool = True
) -> int:
    """Write every unique cell as one JSON line; returns the number written.

    Each line: ``{"matrix", "ops", "code", "nb101_hash"}`` (``nb101_hash`` is null unless the
    cell uses NB101 ops only). Written to ``PATH.partial`` and renamed at the end, so an
    interrupted run leaves no truncated file under ``path``.
    """
    from ..ops import dag_canonical_code, dag_nb101_hash

    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    nb101 = set(vocabulary.NB101_OPS)
    written = 0
    with open(tmp, "w") as f:
        for adj, ops, n in iter_cell_batches(space, max_edges=max_edges, progress=progress):
            K = adj.shape[1]
            labels = np.zeros((len(n), K), dtype=np.int8)
            hlabels = np.zeros((len(n), K), dtype=np.int8)
            is101 = np.zeros(len(n), dtype=bool)
            for m, names in enumerate(ops):
                k = int(n[m])
                labels[m, 1 : k - 1] = [vocabulary.op_label(o) for o in names[1:-1]]
                if all(o in nb101 for o in names[1:-1]):
                    is101[m] = True
                    hlabels[m, :k] = [-1] + [vocabulary.NB101_OPS.index(o) for o in names[1:-1]] + [-2]
            ta, tn = torch.from_numpy(adj), torch.from_numpy(n)
            codes = dag_canonical_code(ta, torch.from_numpy(labels), tn).tolist()
            hashes: list[str | None] = [None] * len(n)
            if is101.any():
                idx = np.flatnonzero(is101)
                sel = torch.from_numpy(idx)
                for j, h in zip(idx, dag_nb101_hash(ta[sel].contiguous(), torch.from_numpy(hlabels[idx]), tn[sel].contiguous())):
                    hashes[j] = h
            lines = []
            for m, names in enumerate(ops):
                k = int(n[m])
                lines.append(
                    json.dumps(
                        {"matrix": adj[m, :k, :k].tolist(), "ops": names, "code": codes[m], "nb101_hash": hashes[m]},
                        separators=(",", ":"),
                    )
                )
            f.write("\n".join(lines) + "\n")
            written += len(lines)
    os.replace(tmp, path)
    return written
