"""What the score store's integrity checks cost: ``PRAGMA quick_check`` (run on every open), the
checksums of a full read, and the table/index scan that ``score_cells`` runs before scoring,
on a store of ``--rows`` rows (NB201 cells x 5 proxies, written with ``ScoreStore.put``).

    python benches/store_check.py [--rows 10000 100000] [--reps 7]

Prints one JSON line per store size (medians of ``--reps`` runs, milliseconds; ``open_*``: a
fresh ``ScoreStore`` opened and closed, with and without the quick_check).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sqlite3
import tempfile
import time

from cgnf_fast.space import nb201
from cgnf_fast.zc.store import ScoreStore

PROXIES = ["synflow", "jacob_cov", "snip", "grad_norm", "nwot"]


def build(path: str, rows: int) -> None:
    rng = random.Random(0)
    cells = list(nb201.all_cells())
    with ScoreStore(path) as st:
        for i in range(rows // len(PROXIES)):
            c = cells[i % len(cells)]
            st.put("nb201", 10**9 + i, c.dumps(), "0123456789abcdef", 0, "0.1.0+zc1",
                   {p: rng.uniform(-10, 100) for p in PROXIES}, {p: rng.uniform(0, 1) for p in PROXIES})


def ms(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return round(1000 * statistics.median(times), 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--reps", type=int, default=7)
    args = ap.parse_args()
    for rows in args.rows:
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "s.sqlite")
            build(path, rows)
            db = sqlite3.connect(path)
            with ScoreStore(path) as st:
                out = {
                    "rows": st.count(),
                    "file_mb": round(os.path.getsize(path) / 1e6, 2),
                    "quick_check_ms": ms(lambda: db.execute("PRAGMA quick_check").fetchall(), args.reps),
                    "integrity_check_ms": ms(lambda: db.execute("PRAGMA integrity_check").fetchall(), args.reps),
                    "open_verify_ms": ms(lambda: ScoreStore(path).close(), args.reps),
                    "open_no_verify_ms": ms(lambda: ScoreStore(path, verify=False).close(), args.reps),
                    "done_all_ms": ms(lambda: st.done("nb201", "0123456789abcdef", 0, "0.1.0+zc1", PROXIES),
                                      args.reps),
                    "rows_all_ms": ms(lambda: sum(1 for _ in st.rows()), args.reps),
                    "damaged_scan_ms": ms(st.damaged, args.reps),
                    "sqlite": sqlite3.sqlite_version,
                    "python": platform.python_version(),
                }
            db.close()
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
