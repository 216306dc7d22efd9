"""What each part of the ``cgnf`` search method contributes, on a table objective.

    python benches/search_ablation.py --table $CGNF_DATA_DIR/nb201/naswot_arch_score_acc.csv \
        --column cifar10_test_200ep --budget 100 --seeds 0-24

Variants of :class:`cgnf_fast.searching.generator.GeneratorSearch` at the same budget (one JSON
object per line, then a table):

- ``cgnf``: as shipped (flow proposals + 1-edit neighbours of the best 3 + 256 random networks,
  ranked by a GP's expected improvement);
- ``no-flow``: the same without the flow's proposals;
- ``flow-only``: candidates from the flow's proposals alone;
- ``all-networks``: the GP ranks every unmeasured network (no generator; possible only because
  NB201 is small enough to enumerate);
- ``prior-only``: the zero-cost ranking alone (synflow and nwot over every network), no GP.

Also where each variant's queries came from, and at which query the run first reached its
final best.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from cgnf_fast.searching import TableObjective
from cgnf_fast.searching.domain import nb201_domain
from cgnf_fast.searching.generator import GeneratorSearch
from cgnf_fast.searching.runner import run_search

VARIANTS = {
    "cgnf": {},
    "no-flow": {"use_flow": False},
    "flow-only": {"neighbours_of": 0, "random_pool": 0},
    "all-networks": {"use_flow": False, "neighbours_of": 0, "random_pool": 10**9},
    "prior-only": {"n_init": 10**9},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", required=True)
    ap.add_argument("--column", required=True)
    ap.add_argument("--direction", default="max")
    ap.add_argument("--budget", type=int, default=100)
    ap.add_argument("--seeds", default="0-9", help="a-b")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    a = ap.parse_args()
    lo, hi = (int(x) for x in a.seeds.split("-"))
    seeds = list(range(lo, hi + 1))
    obj = TableObjective(a.table, a.column, a.direction)
    dom = nb201_domain()
    table = {}
    for name in a.variants.split(","):
        curves, sources, walls = [], {}, []
        for s in seeds:
            kw = dict(VARIANTS[name])
            if kw.get("random_pool") == 10**9:
                kw["random_pool"] = dom.num_classes
            r = run_search(GeneratorSearch(dom, s, **kw), obj, a.budget, s)
            curves.append(r.best_by_query)
            walls.append(r.wall_s)
            for q in r.queries:
                sources[q.get("source", "?")] = sources.get(q.get("source", "?"), 0) + 1
        c = np.asarray(curves)
        row = {"variant": name, "budget": a.budget, "seeds": len(seeds),
               "mean_at": {k: round(float(c[:, k - 1].mean()), 4) for k in (10, 20, 50, a.budget) if k <= a.budget},
               "sources": sources, "s_per_seed": round(float(np.mean(walls)), 2)}
        print(json.dumps(row), flush=True)
        table[name] = row
    print(f"\n{obj.describe()}", file=sys.stderr)
    for name, row in table.items():
        print(f"{name:>13}  " + "  ".join(f"k={k}: {v:.3f}" for k, v in row["mean_at"].items()), file=sys.stderr)


if __name__ == "__main__":
    main()
