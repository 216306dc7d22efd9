"""`cgnf search` and `cgnf_fast.search`: objectives, baselines, budget accounting, resuming, bad input.

Synthetic tables (made here, over all 15,625 NB201 strings) have a known optimum; the shared
NB201 tables are used only where ``CGNF_DATA_DIR`` provides them."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cgnf_fast.searching import CallableObjective, ObjectiveError, TableObjective, search
from cgnf_fast.searching.baselines import LocalSearch, RandomSearch, RegularizedEvolution, ZeroCostGreedy, rank_mean
from cgnf_fast.searching.compare import _wilcoxon_greater, compare
from cgnf_fast.searching.domain import nb201_domain
from cgnf_fast.searching.runner import run_search
from cgnf_fast.space import nb201

from helpers import run_cli

DOM = nb201_domain()
CONV3 = 3  # NB201_EDGE_OPS.index("nor_conv_3x3")


def synthetic_value(index: int) -> float:
    """Depends on the network only through its ops: 3x3 convolutions, fewer skips; bounded."""
    d = DOM.digits[index]
    return float((d == CONV3).sum() + 0.5 * (d == 2).sum() - 0.25 * (d == 1).sum())


def write_table(path: Path, *, key: str = "index", rows: list[int] | None = None, extra: dict | None = None,
                value=synthetic_value) -> Path:
    rows = list(range(nb201.NUM_ARCHS)) if rows is None else rows
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([key, "acc"])
        for i in rows:
            w.writerow([i if key == "index" else nb201.arch_at(i), (extra or {}).get(i, value(i))])
    return path


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> TableObjective:
    return TableObjective(write_table(tmp_path_factory.mktemp("t") / "t.csv"), "acc")


# -- the domain and the table ------------------------------------------------------------------
def test_domain_classes_and_edits():
    assert DOM.num_classes == 5425 and DOM.size == 15625
    assert all(DOM.representative[DOM.class_of[i]] <= i for i in range(0, 15625, 97))
    n = DOM.neighbours(9930)
    assert len(n) == 24 and len(set(n)) == 24 and 9930 not in n
    assert all((DOM.digits[j] != DOM.digits[9930]).sum() == 1 for j in n)
    rng = np.random.default_rng(0)
    assert all(DOM.mutate(9930, rng) in n for _ in range(50))


def test_table_values_are_class_means(tmp_path):
    """Two strings of one network with different values: each gets the mean of the two (repeated
    rows of one string are averaged first, NaN skipped)."""
    a = nb201.index_of("|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|")
    same = [i for i in range(15625) if DOM.network(i) == DOM.network(a) and i != a][0]
    path = write_table(tmp_path / "t.csv", extra={a: 10.0, same: 20.0})
    with open(path, "a") as f:
        f.write(f"{a},30.0\n{a},nan\n")
    t = TableObjective(path, "acc")
    members = [i for i in range(15625) if DOM.network(i) == DOM.network(a)]
    others = [synthetic_value(i) for i in members if i not in (a, same)]
    want = (20.0 + 20.0 + sum(others)) / len(members)  # a: mean(10, 30) = 20
    assert t(a) == pytest.approx(want) and t(same) == pytest.approx(want)
    assert t.optimum == pytest.approx(max(t.class_means))


def test_table_reads_arch_strings_and_the_shared_layout(tmp_path):
    t1 = TableObjective(write_table(tmp_path / "a.csv", key="arch"), "acc")
    t2 = TableObjective(write_table(tmp_path / "i.csv", key="index"), "acc")
    assert t1.key_column == "arch" and t2.key_column == "index"
    assert np.array_equal(t1.class_means, t2.class_means) and t1.optimum == 6.0


@pytest.mark.parametrize("content, match", [
    ("index,other\n0,1\n", "no column 'acc'; its columns: index, other"),
    ("arch,acc\n|nor_conv_3x3~0|+|x~0|,1\n", r"line 2: '\|nor_conv_3x3~0\|\+\|x~0\|' is not an NB201 cell"),
    ("index,acc\n0,1\n", "no value for 5423 of the 5,424 NB201 networks with an input -> output path"),
    ("index,acc\n99999,1\n", "line 2: '99999' is not an NB201 index"),
    ("index,acc\n0,abc\n", "line 2: acc is not a number"),
    ("name,acc\nx,1\n", "no key column"),
    ("", "the file is empty"),
])
def test_bad_tables_are_one_line(tmp_path, content, match):
    p = tmp_path / "bad.csv"
    p.write_text(content)
    with pytest.raises(ObjectiveError, match=match) as e:
        TableObjective(p, "acc")
    assert "\n" not in str(e.value)


# -- budget accounting -------------------------------------------------------------------------
def test_budget_counts_distinct_networks(table):
    r = run_search("rs", table, 40, seed=3)
    nets = [DOM.network(q["index"]) for q in r.queries]
    assert len(nets) == 40 and len(set(nets)) == 40
    assert r.best_by_query == list(np.maximum.accumulate([q["value"] for q in r.queries]))
    assert r.best["value"] == r.best_by_query[-1] == table(r.best["index"])


def test_repeated_networks_are_free_and_a_stuck_method_is_unstuck(table):
    class Stuck(RandomSearch):
        def ask(self):
            return 0  # always the same string

    r = run_search(Stuck(DOM, 0), table, 3, seed=0)
    assert len(r.queries) == 3 and r.forced == 2 and r.free >= 2 * 999


def test_minimising_and_failures(tmp_path):
    calls = []

    def f(cell):
        calls.append(cell)
        if len(calls) == 2:
            raise RuntimeError("out of memory")
        if len(calls) == 3:
            return float("nan")
        return float(cell.num_nodes)

    r = search(f, budget=6, seed=0, method="rs", direction="min")
    assert len(r.queries) == 6 and len(calls) == 6 and r.failures == 2
    assert r.queries[1]["error"] == "RuntimeError: out of memory" and r.queries[2]["value"] is None
    good = [q["value"] for q in r.queries if q["value"] is not None]
    assert r.best["value"] == min(good) and r.best_by_query[-1] == min(good)


def test_bad_search_arguments(table):
    with pytest.raises(ValueError, match="budget must be an int >= 1"):
        run_search("rs", table, 0)
    with pytest.raises(ValueError, match="unknown method 'bo'"):
        run_search("bo", table, 5)
    with pytest.raises(ValueError, match="more than the 5,425 networks"):
        run_search("rs", table, 6000)
    with pytest.raises(ObjectiveError, match="direction must be 'max' or 'min'"):
        CallableObjective(lambda c: 1.0, "up")


# -- the baselines, checked by hand ------------------------------------------------------------
def test_random_search_draws_uniform_strings():
    rs = RandomSearch(DOM, 5)
    want = np.random.default_rng(5).integers(0, 15625, size=10).tolist()
    assert [rs.ask() for _ in range(10)] == want


def test_regularised_evolution_mutates_the_tournament_winner():
    ea = RegularizedEvolution(DOM, 0)
    values = {}
    for _ in range(10):
        i = ea.ask()
        values[i] = synthetic_value(i)
        ea.tell(i, values[i])
    assert len(ea.population) == 10
    for _ in range(30):
        pop = list(ea.population)
        child = ea.ask()
        assert any(child in DOM.neighbours(p) for p, _ in pop)  # one edge changed of a member
        ea.tell(child, synthetic_value(child))
        assert list(ea.population) == pop[1:] + [(child, synthetic_value(child))]  # the oldest leaves


def test_local_search_measures_all_neighbours_then_moves_to_the_best():
    ls = LocalSearch(DOM, 1)
    start = ls.ask()
    ls.tell(start, synthetic_value(start))
    asked = [ls.ask() for _ in range(24)]
    assert sorted(asked) == sorted(DOM.neighbours(start))
    for i in asked:
        ls.tell(i, synthetic_value(i))
    nxt = ls.ask()
    best = max(asked, key=synthetic_value)
    if synthetic_value(best) > synthetic_value(start):
        assert ls.center[0] == best and nxt in DOM.neighbours(best)
    else:
        assert ls.center is None


def test_local_search_restarts_at_a_local_optimum():
    ls = LocalSearch(DOM, 2)
    top = max(range(15625), key=synthetic_value)
    ls.start = top  # (as if its random start had been the global optimum: no neighbour is better)
    ls.tell(top, synthetic_value(top))
    for _ in range(24):
        i = ls.ask()
        ls.tell(i, synthetic_value(i))
    ls.ask()
    assert ls.center is None  # restarted (its next answer becomes the new centre)


def test_zero_cost_greedy_queries_by_rank():
    zc = {"synflow": np.arange(DOM.num_classes, dtype=float), "nwot": np.arange(DOM.num_classes, dtype=float)}
    g = ZeroCostGreedy(DOM, 0, lambda items: {p: v[DOM.class_of[items]] for p, v in zc.items()}, pool=50)
    got = [g.ask() for _ in range(50)]
    classes = [DOM.network(i) for i in got]
    assert classes == sorted(classes, reverse=True)
    assert list(rank_mean(np.array([1.0, 3.0, 2.0]), np.array([3.0, 2.0, 1.0]))) == [1.0, 1.5, 0.5]


def test_wilcoxon_exact():
    # all 8 differences positive: p = 1 / 2**8
    assert _wilcoxon_greater(np.arange(1, 9, dtype=float)) == pytest.approx(1 / 256)
    assert _wilcoxon_greater(np.zeros(5)) == 1.0


# -- resuming ----------------------------------------------------------------------------------
_KILLABLE = """
import sys, time
from cgnf_fast.searching import search

def slow(cell):
    with open(sys.argv[2], "a") as f:
        f.write("x\\n")
    time.sleep(0.3)
    return float(cell.num_nodes)

r = search(slow, budget=12, seed=4, method="rea", store=sys.argv[1])
print(r.best_by_query)
"""


def test_a_killed_search_resumes_without_measuring_again(tmp_path):
    script = tmp_path / "s.py"
    script.write_text(_KILLABLE)
    store, calls = tmp_path / "s.sqlite", tmp_path / "calls.txt"
    p = subprocess.Popen([sys.executable, str(script), str(store), str(calls)], cwd=tmp_path,
                         stdout=subprocess.DEVNULL)
    deadline = time.time() + 120
    while (not calls.exists() or len(calls.read_text().splitlines()) < 5) and time.time() < deadline:
        time.sleep(0.05)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    before = len(calls.read_text().splitlines())
    assert 5 <= before < 12
    r = subprocess.run([sys.executable, str(script), str(store), str(calls)], cwd=tmp_path, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    measured = len(calls.read_text().splitlines())
    assert measured <= 12 + 1  # at most the one query cut by the kill is measured twice
    again = subprocess.run([sys.executable, str(script), str(store), str(tmp_path / "none.txt")], cwd=tmp_path,
                           capture_output=True, text=True, timeout=300)
    assert again.stdout == r.stdout and not (tmp_path / "none.txt").exists()  # all from the store


# -- the comparison and the command ------------------------------------------------------------
def test_compare_resumes_finished_searches(table, tmp_path):
    runs = tmp_path / "out.json.runs.jsonl"
    s1 = compare(table, ["rs", "rea"], [0, 1], 15, runs_path=runs, progress=False)
    assert len(runs.read_text().splitlines()) == 4
    s2 = compare(table, ["rs", "rea"], [0, 1], 15, runs_path=runs, progress=False)
    assert len(runs.read_text().splitlines()) == 4 and s1["methods"] == s2["methods"]
    assert s1["optimum"] == 6.0 and len(s1["methods"]["rs"]["best_by_query"][0]) == 15


def test_cli_search_on_a_synthetic_table(tmp_path):
    t = write_table(tmp_path / "t.csv")
    out = tmp_path / "out.json"
    rc, text, err = run_cli("search", "--space", "nb201", "--table", str(t), "--column", "acc", "--direction", "max",
                            "--budget", "12", "--seeds", "0-2", "--methods", "rea,rs,ls", "--json", str(out),
                            "--no-progress")
    assert rc == 0, err
    d = json.loads(out.read_text())
    assert d["optimum"] == 6.0 and set(d["methods"]) == {"rea", "rs", "ls"}
    for m in d["methods"].values():
        assert len(m["best_by_query"]) == 3 and all(len(c) == 12 for c in m["best_by_query"])
        assert len(m["wall_s"]) == 3
    assert "rea" in text and "k=12" in text


@pytest.mark.parametrize("args, match", [
    (("--methods", "rs,bo"), "--methods: expected distinct names from cgnf, rea, rs, ls, zc"),
    (("--budget", "0"), "the budget is the number of distinct networks queried, >= 1"),
    (("--seeds", "3-1"), "expected seeds like 0-9"),
    (("--seeds", "0-100000000"), "at most 10,000 seeds"),  # (refused before a list of 1e8 seeds is built)
    (("--column", "nope"), "no column 'nope'"),
])
def test_cli_search_bad_input(tmp_path, args, match):
    t = write_table(tmp_path / "t.csv", rows=list(range(100)))
    base = {"--table": str(t), "--column": "acc", "--budget": "5", "--seeds": "0", "--methods": "rs"}
    for k, v in zip(args[::2], args[1::2]):
        base[k] = v
    rc, out, err = run_cli("search", *[x for kv in base.items() for x in kv], "--no-progress")
    assert rc == 2 and err.startswith("cgnf: error:") and match in err and err.count("\n") == 1, err


def test_cli_search_refuses_a_table_that_does_not_cover_the_space(tmp_path):
    t = write_table(tmp_path / "t.csv", rows=list(range(100)))
    rc, out, err = run_cli("search", "--table", str(t), "--column", "acc", "--budget", "5", "--seeds", "0",
                           "--methods", "rs", "--no-progress")
    assert rc == 2 and "a table must cover the space" in err


def test_nan_values_are_skipped_and_a_nan_only_network_is_not_covered(tmp_path):
    sizes = np.bincount(DOM.class_of)
    shared = next(i for i in range(15625) if sizes[DOM.class_of[i]] > 1)
    alone = next(i for i in range(15625) if sizes[DOM.class_of[i]] == 1)
    t = TableObjective(write_table(tmp_path / "t.csv", extra={shared: math.nan}), "acc")
    assert math.isfinite(t(shared))  # its network's other strings have values
    with pytest.raises(ObjectiveError, match="has no value for 1 of the 5,424 NB201 networks"):
        TableObjective(write_table(tmp_path / "u.csv", extra={alone: math.nan}), "acc")


# -- the generator in the loop, its shipped zero-cost table ------------------------------------
def test_the_shipped_nb201_search_files_are_intact():
    import hashlib

    import cgnf_fast
    from cgnf_fast.searching.generator import zc_table

    d = Path(cgnf_fast.__file__).parent / "pretrained" / "nb201"
    record = json.loads((d / "model.json").read_text())
    assert record["benchmark_accuracies_seen"] is False and record["space"] == "nb201"
    for name, digest in record["files"].items():
        assert hashlib.sha256((d / name).read_bytes()).hexdigest() == digest
    zc = zc_table()
    assert all(len(v) == DOM.num_classes for v in zc.values())
    assert [int(np.isnan(v).sum()) for v in zc.values()] == [1, 1]  # the zero cell only
    assert np.isnan(zc["nwot"][DOM.zero_class])


def test_cgnf_queries_distinct_networks_and_says_where_each_came_from(table):
    r = run_search("cgnf", table, 15, seed=0)
    nets = [DOM.network(q["index"]) for q in r.queries]
    assert len(set(nets)) == 15
    sources = [q["source"] for q in r.queries]
    assert sources[:5] == ["from_prior"] * 5
    assert set(sources[5:]) <= {"from_flow", "from_neighbours", "from_random"}
    assert sum(r.extra.values()) == 15
    again = run_search("cgnf", table, 15, seed=0)
    assert [q["index"] for q in again.queries] == [q["index"] for q in r.queries]  # deterministic for a seed


def test_cgnf_beats_random_search_on_a_synthetic_table(table):
    """Not a benchmark (that is docs/search.md): on a smooth synthetic objective, the generator
    in the loop finds the optimum class within 30 queries on each of 3 seeds; random search
    does not on average."""
    best = [run_search("cgnf", table, 30, seed=s).best["value"] for s in range(3)]
    rand = [run_search("rs", table, 30, seed=s).best["value"] for s in range(3)]
    assert min(best) == table.optimum and np.mean(rand) < table.optimum


def test_search_from_python_with_a_table(table):
    from cgnf_fast import search as top_level

    r = top_level(table, budget=8, seed=1, method="zc")
    assert len(r.queries) == 8 and r.method == "zc" and r.best["value"] == max(q["value"] for q in r.queries)


# -- beyond one machine ------------------------------------------------------------------------
_ON_RAY = """
import json, sys
from cgnf_fast.searching import search
from cgnf_fast.zc import ScoreStore

def cell_size(cell):  # (defined in __main__: pickled by value for the workers)
    return float(cell.num_nodes)

r = search(cell_size, budget=6, seed=0, method="rs", store=sys.argv[1], batch_queries=3, ray="local", workers=2,
           name="cell-size")
with ScoreStore(sys.argv[1]) as s:
    stored = sum(1 for _ in s.rows(space="search:nb201"))
print(json.dumps({"queries": r.queries, "failures": r.failures, "stored": stored}))
"""


@pytest.mark.slow
def test_a_search_on_a_local_ray_instance(tmp_path):
    """Each batch measured on a local Ray instance, every result committed by the driver (run in
    a fresh process outside the checkout, as a user runs it: Ray's workers import the package
    from the driver's folder)."""
    pytest.importorskip("ray")
    script = tmp_path / "on_ray.py"
    script.write_text(_ON_RAY)
    r = subprocess.run([sys.executable, str(script), str(tmp_path / "s.sqlite")], cwd=tmp_path, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert len(out["queries"]) == 6 and out["failures"] == 0 and out["stored"] == 6
    assert all(q["value"] == float(DOM.cell(q["index"]).num_nodes) for q in out["queries"])


def test_cli_search_with_a_training_protocol(tmp_path):
    """--objective protocol:NAME trains each queried cell (the 'tiny' protocol on a small tensor
    task here) and keeps the results in --store: a rerun trains nothing."""
    from cgnf_fast.zc import calibration_batch

    x, y = calibration_batch()
    task = tmp_path / "t.npz"
    np.savez(task, x_train=x[:64].numpy(), y_train=y[:64].numpy(), x_test=x[64:96].numpy(), y_test=y[64:96].numpy())
    args = ("search", "--objective", "protocol:tiny", "--task", str(task), "--store", str(tmp_path / "s.sqlite"),
            "--budget", "2", "--seeds", "0", "--methods", "rs", "--json", str(tmp_path / "o.json"), "--no-progress")
    rc, out, err = run_cli(*args)
    assert rc == 0, err
    first = json.loads((tmp_path / "o.json").read_text())
    (tmp_path / "o.json.runs.jsonl").unlink()
    t0 = time.perf_counter()
    rc, out, err = run_cli(*args)
    assert rc == 0, err
    assert time.perf_counter() - t0 < 30
    second = json.loads((tmp_path / "o.json").read_text())
    assert first["methods"]["rs"]["best_by_query"] == second["methods"]["rs"]["best_by_query"]
    assert 0.0 <= first["methods"]["rs"]["best_by_query"][0][-1] <= 100.0  # test accuracy, %


@pytest.mark.parametrize("args, match", [
    (("--objective", "protocol:tiny"), "--objective needs --store FILE"),
    (("--objective", "cpu-small", "--store", "s.sqlite"), "--objective: expected protocol:NAME"),
    ((), "give the objective: --table FILE --column COL, or --objective protocol:NAME"),
])
def test_cli_search_objective_errors(tmp_path, args, match):
    rc, out, err = run_cli("search", *args, "--budget", "2", "--seeds", "0", "--methods", "rs", "--no-progress")
    assert rc == 2 and match in err and err.count("\n") == 1, err


# -- other spaces ------------------------------------------------------------------------------
def test_cell_domain_edits_stay_in_the_space():
    from cgnf_fast.searching.domain import CellDomain

    dom = CellDomain("nb101-like")
    cell = dom.random(np.random.default_rng(0), 3)[1]
    nbrs = dom.neighbours(cell)
    assert nbrs and all(dom.space.contains(c) for c in nbrs)
    codes = [c.network_code() for c in nbrs]
    assert len(set(codes)) == len(codes) and cell.network_code() not in codes
    small = next(c for c in dom.random(np.random.default_rng(1), 50) if c.num_nodes < dom.space.max_nodes)
    assert any(c.num_nodes == small.num_nodes + 1 for c in dom.neighbours(small))  # grows by a vertex


@pytest.mark.parametrize("method", ["rs", "rea", "ls", "zc", "cgnf"])
def test_search_in_a_space_that_cannot_be_listed(method, monkeypatch):
    from cgnf_fast.searching import runner

    monkeypatch.setattr(runner, "ZC_POOL_CELLS", 6)

    def f(cell) -> float:
        return float(sum(o == "nor_conv_3x3" for o in cell.ops)) - 0.1 * cell.num_edges

    r = search(f, space="nb201-like", budget=8, seed=0, method=method)
    assert len({json.dumps(q["cell"]) for q in r.queries}) == 8 and r.failures == 0
    assert r.best["value"] == max(q["value"] for q in r.queries) and "text" in r.best
    if method == "cgnf":
        assert [q["source"] for q in r.queries[:5]] == ["from_prior"] * 5


def test_a_table_objective_is_for_nb201_only(table):
    with pytest.raises(ValueError, match="a table objective covers nb201 only"):
        search(table, space="nb201-like", budget=3)
    with pytest.raises(ValueError, match="unknown space 'nb999'"):
        search(table, space="nb999", budget=3)


# -- review findings: failures, minimising, batches, NaN, ties ---------------------------------
def test_cgnf_steps_past_failed_first_queries():
    """Its first five queries failing used to end the search (a GP fitted on nothing)."""
    calls = []

    def f(cell):
        calls.append(1)
        if len(calls) <= 6:
            raise RuntimeError("no GPU")
        return float(cell.num_nodes)

    r = search(f, budget=12, seed=0, method="cgnf")
    assert len(r.queries) == 12 and r.failures == 6 and r.best is not None


def test_minimising_through_the_comparison(tmp_path):
    """direction=min: the best is the lowest, the zero network is a candidate (its value is the
    lowest here), and the paired difference is cgnf - baseline in the table's units."""
    t = TableObjective(write_table(tmp_path / "t.csv"), "acc", "min")
    assert t.optimum == min(t.class_means)
    s = compare(t, ["cgnf", "rs"], [0, 1, 2], 20, progress=False)
    p = s["paired"]["rs"]
    mine = np.array([c[-1] for c in s["methods"]["cgnf"]["best_by_query"]])
    theirs = np.array([c[-1] for c in s["methods"]["rs"]["best_by_query"]])
    assert p["mean_difference"] == pytest.approx((mine - theirs).mean()) and p["improvement"] == -p["mean_difference"]
    assert all(np.all(np.diff(c) <= 0) for c in s["methods"]["cgnf"]["best_by_query"])  # non-increasing


def test_local_search_with_batches_measures_only_neighbours():
    ls = LocalSearch(DOM, 3)
    start = ls.ask()
    ls.tell(start, synthetic_value(start))
    nbrs = set(DOM.neighbours(start))
    asked = [ls.ask() for _ in range(30)]  # a batch larger than the neighbourhood, before any result
    assert set(asked[:24]) == nbrs and ls.pending == nbrs
    for i in asked:
        ls.tell(i, synthetic_value(i))
    assert len(ls.measured) == 24 and {i for i, _ in ls.measured} == nbrs


def test_a_summary_with_failed_seeds_is_strict_json_and_plots(tmp_path):
    pytest.importorskip("matplotlib")
    from cgnf_fast.searching.compare import clean_json, plot_curves, summarise

    t = TableObjective(write_table(tmp_path / "t.csv"), "acc")
    nan = math.nan
    runs = {("cgnf", 0): {"best_by_query": [nan] * 12, "wall_s": 1.0, "best": None, "failures": 12, "extra": {}},
            ("cgnf", 1): {"best_by_query": [1.0] * 12, "wall_s": 1.0, "best": None, "failures": 0, "extra": {}},
            ("rs", 0): {"best_by_query": [nan] * 12, "wall_s": 1.0, "best": None, "failures": 12, "extra": {}},
            ("rs", 1): {"best_by_query": [0.5] * 12, "wall_s": 1.0, "best": None, "failures": 0, "extra": {}}}
    s = summarise(t, ["cgnf", "rs"], [0, 1], 12, runs)
    json.dumps(clean_json(s), allow_nan=False)
    assert s["paired"]["rs"]["dropped"] == 1 and s["paired"]["rs"]["wins"] == 1
    plot_curves(clean_json(s), tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 0


def test_wilcoxon_with_ties_against_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    for d in ([.5, .5, .5, -1, 2, 2, 2, 3, .1], rng.integers(-3, 6, size=30).astype(float),
              rng.normal(0.3, 1, size=20)):
        d = np.asarray(d, dtype=float)
        want = stats.wilcoxon(d[d != 0], alternative="greater", method="approx", correction=True).pvalue \
            if len(np.unique(np.abs(d[d != 0]))) < len(d[d != 0]) else stats.wilcoxon(d, alternative="greater").pvalue
        assert _wilcoxon_greater(d) == pytest.approx(want, rel=1e-6)


def test_tables_with_empty_values_and_a_valueless_zero_network(tmp_path):
    """Empty cells are missing values (pandas writes NaN so); the zero network may have none."""
    zero = [i for i in range(15625) if DOM.network(i) == DOM.zero_class]
    p = tmp_path / "t.csv"
    with open(p, "w") as f:
        f.write("index,score\n" + "".join(f"{i},{'' if i in zero else synthetic_value(i)}\n" for i in range(15625)))
    t = TableObjective(p, "score")
    assert math.isnan(t(zero[0])) and t.optimum == 6.0
    r = run_search("ls", t, 30, seed=0)
    assert len(r.queries) == 30


def test_a_runs_file_cut_by_a_kill_loses_only_the_cut_record(table, tmp_path):
    runs = tmp_path / "o.json.runs.jsonl"
    compare(table, ["rs"], [0], 10, runs_path=runs, progress=False)
    runs.write_text(runs.read_text() + '{"method": "rs", "seed": 1, "cut')  # a kill mid-write
    compare(table, ["rs"], [0, 1, 2], 10, runs_path=runs, progress=False)
    lines = runs.read_text().splitlines()
    assert len(lines) == 4 and sum(1 for ln in lines if ln.startswith('{"method": "rs", "seed": 1, "cut')) == 1
    assert compare(table, ["rs"], [0, 1, 2], 10, runs_path=runs, progress=False)["seeds"] == [0, 1, 2]
    assert len(runs.read_text().splitlines()) == 4  # nothing ran again


def test_a_lambda_with_a_store_needs_a_name(tmp_path):
    with pytest.raises(ValueError, match="with a store, name the objective"):
        search(lambda c: 1.0, budget=2, method="rs", store=tmp_path / "s.sqlite")
    r1 = search(lambda c: 1.0, budget=2, method="rs", store=tmp_path / "s.sqlite", name="one")
    r2 = search(lambda c: 2.0, budget=2, method="rs", store=tmp_path / "s.sqlite", name="two")
    assert [q["value"] for q in r1.queries] == [1.0, 1.0] and [q["value"] for q in r2.queries] == [2.0, 2.0]
