"""Makes ``cgnf_fast/pretrained/nb201/``: what ``cgnf search --space nb201`` uses besides the
nb201-like G-VAE and flow: measured zero-cost scores of every NB201 network.

Steps (the commands are recorded in the written ``model.json``):

1. ``python scripts/make_nb201_search_model.py cells OUT.jsonl`` writes the lowest-index NB201
   string of each of the 5,425 network classes in node form, one JSON cell per line.
2. ``cgnf zc score nb201 --cells OUT.jsonl --proxies synflow,nwot --store STORE --workers 2``
   scores them (16 embedded CIFAR-10 images, seed 0: the defaults).
3. ``python scripts/make_nb201_search_model.py export STORE`` writes ``zc_nb201.npz`` (per
   class: ``index``, ``synflow``, ``nwot``; NaN where a proxy failed, as for the zero cell) and
   ``model.json``.

Nothing here reads a benchmark accuracy.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "cgnf_fast" / "pretrained" / "nb201"


def cells(path: str) -> None:
    from cgnf_fast.searching.domain import nb201_domain

    dom = nb201_domain()
    with open(path, "w") as f:
        for i in dom.representative:
            c = dom.cell(int(i))
            f.write(json.dumps({"matrix": [list(r) for r in c.adjacency], "ops": list(c.ops)}) + "\n")
    print(f"wrote {dom.num_classes} cells to {path}")


def export(store_path: str) -> None:
    from cgnf_fast import __version__
    from cgnf_fast.searching.domain import nb201_domain
    from cgnf_fast.space import Cell
    from cgnf_fast.zc import ScoreStore
    from cgnf_fast.zc.score import DEFAULT_BATCH

    dom = nb201_domain()
    net_class = {code: k for k, code in enumerate(dom.network_codes)}
    values = {p: np.full(dom.num_classes, np.nan) for p in ("synflow", "nwot")}
    seconds = 0.0
    meta = set()
    with ScoreStore(store_path) as store:
        for r in store.rows(space="nb201"):
            if r["proxy"] not in values:
                continue
            k = net_class[Cell(r["cell"]["matrix"], r["cell"]["ops"]).network_code()]
            if r["status"] == "ok":
                values[r["proxy"]][k] = r["value"]
            seconds += r["seconds"] or 0.0
            meta.add((r["data_fp"], r["seed"], r["code_version"]))
    missing = {p: int(np.isnan(v).sum()) for p, v in values.items()}
    OUT.mkdir(parents=True, exist_ok=True)
    npz = OUT / "zc_nb201.npz"
    np.savez_compressed(npz, index=dom.representative.astype(np.int32),
                        **{p: v.astype(np.float64) for p, v in values.items()})
    gvae = (OUT.parent / "nb201-like" / "model.json").read_bytes()
    record = {
        "format": "cgnf_fast.search_model", "version": 1, "space": "nb201", "cgnf_fast_version": __version__,
        "made": time.strftime("%Y-%m-%d", time.gmtime()),
        "what": "measured zero-cost scores (synflow, nwot) of the lowest-index string of each of the 5,425 NB201 "
                "network classes, for `cgnf search --space nb201` (the cgnf method's features and start, and the "
                "zc baseline); the G-VAE and the conditional flow are the shipped nb201-like model's",
        "commands": ["python scripts/make_nb201_search_model.py cells nb201_networks.jsonl",
                     "cgnf zc score nb201 --cells nb201_networks.jsonl --proxies synflow,nwot --store STORE "
                     "--workers 2",
                     "python scripts/make_nb201_search_model.py export STORE"],
        "images": f"the first {DEFAULT_BATCH} embedded CIFAR-10 calibration images", "score_keys": sorted(meta),
        "missing": missing, "scoring_cpu_seconds": round(seconds, 1),
        "uses_model": "nb201-like", "uses_model_json_sha256": hashlib.sha256(gvae).hexdigest(),
        "benchmark_accuracies_seen": False,
        "files": {npz.name: hashlib.sha256(npz.read_bytes()).hexdigest()},
    }
    (OUT / "model.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {npz} and {OUT / 'model.json'}; missing {missing}")


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("cells", "export"):
        sys.exit(__doc__)
    {"cells": cells, "export": export}[sys.argv[1]](sys.argv[2])
