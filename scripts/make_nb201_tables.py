"""Write cgnf_fast/data/nb201_order.npy from NB201's table (the official index order).

Source: ``$CGNF_DATA_DIR/nb201/naswot_arch_score_acc.csv`` (BayesWatch/nas-without-training,
the NB201 API's row order). Each entry is the base-5 digit code of the six edge ops (string
order, first edge most significant, ops indexed as NB201_EDGE_OPS). Usage:

    CGNF_DATA_DIR=../shared/data python scripts/make_nb201_tables.py
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from cgnf_fast.space import nb201


def main() -> None:
    data = Path(os.environ.get("CGNF_DATA_DIR", "../shared/data"))
    with open(data / "nb201" / "naswot_arch_score_acc.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["arch"]) for r in rows] == list(range(nb201.NUM_ARCHS))
    codes = np.array([nb201._digit_code(nb201.parse(r["cellstr"])) for r in rows], dtype=np.uint16)
    out = Path(__file__).resolve().parents[1] / "cgnf_fast" / "data" / "nb201_order.npy"
    np.save(out, codes)
    print(f"wrote {out} ({codes.nbytes} bytes)")


if __name__ == "__main__":
    main()
