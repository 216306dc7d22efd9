"""``cgnf evaluate calibrate`` (cgnf_fast.searching.calibrate), the upper bound's tests
(cgnf_fast.evaluate.upper_bound.upper_bound_tests) and the statistics they use. The calibrated
protocol's own figures come from the commands in docs/results.md."""

from __future__ import annotations

import json
import math
import zlib

import numpy as np
import pytest

from cgnf_fast._stats import bootstrap_diff_ci, permutation_greater, wilcoxon_greater
from cgnf_fast.evaluate.protocol import PROTOCOLS, get_protocol
from cgnf_fast.evaluate.upper_bound import significance_markdown, upper_bound_tests
from helpers import run_cli


def _table(shared_data):
    return shared_data / "nb201" / "naswot_arch_score_acc.csv"


# -- statistics -----------------------------------------------------------------------------
def test_permutation_test_and_difference_interval():
    rng = np.random.default_rng(1)
    a, b = rng.normal(1.0, 1.0, 30), rng.normal(0.0, 1.0, 30)
    assert permutation_greater(a, b) < 0.01 and permutation_greater(b, a) > 0.99
    assert permutation_greater(a, a) > 0.4  # no difference: about half the shuffles are as large
    # exact small case: a = {1, 2}, b = {0}: of the 3 splits, two give a mean difference >= the observed
    # (the observed split and the one with the same multiset of means is not there: only {1,2} reaches 1.5)
    p = permutation_greater(np.array([1.0, 2.0]), np.array([0.0]), resamples=60_000)
    assert p == pytest.approx(1 / 3, abs=0.01)
    lo, hi = bootstrap_diff_ci(a, b)
    assert lo < a.mean() - b.mean() < hi and lo > 0
    assert all(math.isnan(x) for x in bootstrap_diff_ci(a, np.array([])))
    assert permutation_greater(np.array([]), b) == 1.0
    assert wilcoxon_greater(np.arange(1, 9, dtype=float)) == pytest.approx(1 / 256)


def _result(objective="max"):
    def row(vals):
        return {"trained": vals, "trained_mean": float(np.mean(vals))}

    ref = row([50.0, 52.0])
    gen = [row([51.0 + i, 53.0 + i]) for i in range(5)]
    rnd = [row([45.0 + i, 47.0 + i]) for i in range(5)]
    return {"objective": objective, "seeds": [0, 1], "reference": ref,
            "sets": {"generated": {"rows": gen}, "random-extended": {"rows": rnd}}}


def test_upper_bound_tests_pair_each_cell_with_the_reference_and_compare_sets():
    t = upper_bound_tests(_result())
    g = t["vs_reference"]["generated"]
    assert g["mean_difference"] == pytest.approx(3.0) and g["cells"] == 5
    assert g["wilcoxon_p_greater"] == pytest.approx(1 / 32)  # all five better: the exact one-sided p
    assert t["vs_reference"]["random-extended"]["mean_difference"] == pytest.approx(-3.0)
    v = t["generated_vs"]["random-extended"]
    assert v["mean_difference"] == pytest.approx(6.0) and v["difference_by_seed"] == [6.0, 6.0]
    assert v["seeds_better"] == 2 and v["permutation_p_greater"] < 0.01
    # a "min" objective flips every sign: lower is better
    m = upper_bound_tests(_result("min"))
    assert m["vs_reference"]["generated"]["mean_difference"] == pytest.approx(-3.0)
    assert m["generated_vs"]["random-extended"]["mean_difference"] == pytest.approx(-6.0)
    text = significance_markdown(_result())
    assert "| generated | 5 | +3.00" in text and "| random-extended | +6.00" in text
    assert t["vs_reference"]["generated"]["spearman_vs_benchmark"] is None  # no published accuracies
    # with published accuracies (cells inside NB201): their rank agreement with the trained one
    r = _result()
    for i, row in enumerate(r["sets"]["random-extended"]["rows"]):
        row["benchmark_acc"] = 90.0 - i if i != 2 else None  # reversed order, one unknown
    v = upper_bound_tests(r)["vs_reference"]["random-extended"]
    assert v["spearman_vs_benchmark"] == pytest.approx(-1.0) and v["benchmark_known"] == 4
    assert "| -1.00 (4) |" in significance_markdown(r)


def test_upper_bound_tests_skip_diverged_cells():
    r = _result()
    r["sets"]["generated"]["rows"][0] = {"trained": [float("nan"), 1.0], "trained_mean": float("nan")}
    t = upper_bound_tests(r)
    assert t["vs_reference"]["generated"]["cells"] == 4 and math.isfinite(t["generated_vs"]["random-extended"]
                                                                          ["mean_difference"])


# -- the calibrated preset ------------------------------------------------------------------
def test_calibrated_preset_is_the_measured_override():
    """The preset reuses (same store key) what was trained under the override it names."""
    a = PROTOCOLS["cpu-calibrated"]
    b = get_protocol("cpu-small:epochs=10,train_images=10000,test_images=10000")
    assert a.key("nb201") == b.key("nb201") and a.key("nb101") == b.key("nb101")


# -- calibration ----------------------------------------------------------------------------
@pytest.mark.data
def test_calibration_cells_come_from_the_top_share(shared_data):
    from cgnf_fast.searching.calibrate import calibration_cells
    from cgnf_fast.searching.domain import nb201_domain
    from cgnf_fast.searching.objectives import TableObjective

    idx, pub = calibration_cells(_table(shared_data), cells=40, top=0.05)
    dom = nb201_domain()
    tab = TableObjective(_table(shared_data), "cifar10_test_200ep", "max", dom)
    acc = np.sort(tab.class_means[np.isfinite(tab.class_means)])[::-1]
    cut = acc[int(round(0.05 * dom.num_classes)) - 1]
    assert len(set(dom.network(i) for i in idx)) == 40  # 40 distinct networks
    assert (pub >= cut).all() and pub.max() == pytest.approx(acc[0], abs=1.0)
    assert calibration_cells(_table(shared_data), cells=40, top=0.05)[0] == idx  # seeded
    assert calibration_cells(_table(shared_data), cells=40, top=0.05, draw_seed=1)[0] != idx
    with pytest.raises(ValueError, match="top must be a share"):
        calibration_cells(_table(shared_data), top=1.5)
    with pytest.raises(ValueError, match="fewer than the 500"):
        calibration_cells(_table(shared_data), cells=500, top=0.01)
    with pytest.raises(ValueError, match="at least 3"):
        calibration_cells(_table(shared_data), cells=2)


@pytest.mark.data
def test_cli_calibrate_trains_resumes_and_reports(shared_data, tmp_path):
    js, store = tmp_path / "c.json", tmp_path / "s.sqlite"
    args = ("evaluate", "calibrate", "--protocol", "tiny:epochs=2,train_images=200,test_images=100", "--cells", "4",
            "--seeds", "0,1", "--store", str(store), "--json", str(js), "--no-progress")
    rc, out, err = run_cli(*args)
    assert rc == 0, err
    r = json.loads(js.read_text())
    assert r["cells"] == 4 and r["seeds"] == [0, 1] and r["trained_this_run"] == 8 and len(r["rows"]) == 4
    assert len(r["spearman_per_seed"]) == 2 and len(r["spearman_between_seeds"]) == 1
    assert r["passes"] == (r["spearman_mean_vs_published"] is not None and r["spearman_mean_vs_published"] >= 0.5)
    assert "Spearman with the published accuracy" in out and "seed 0 vs seed 1" in out
    rc, _, err = run_cli(*args)  # a rerun trains nothing: every result is in the store
    assert rc == 0, err
    again = json.loads(js.read_text())
    assert again["trained_this_run"] == 0 and [x["trained"] for x in again["rows"]] == [x["trained"] for x in r["rows"]]


@pytest.mark.parametrize("args, msg", [
    (("--top", "1.5"), "top must be a share"),
    (("--cells", "2"), "at least 3"),
    (("--protocol", "nope"), "unknown protocol"),
    (("--seeds", "x"), "--seeds"),
    ((), "no_such_table.csv"),
])
def test_cli_calibrate_bad_input(tmp_path, args, msg):
    base = {"--protocol": "tiny", "--table": str(tmp_path / "no_such_table.csv")}
    flat = list(args) + [x for k, v in base.items() if k not in args for x in (k, v)]
    rc, _, err = run_cli("evaluate", "calibrate", *flat, "--no-progress")
    assert rc != 0 and msg in err and "Traceback" not in err


# -- sample() says how many it found ----------------------------------------------------------
def test_sampling_error_says_how_many_were_found():
    from cgnf_fast.sampling import sample
    from cgnf_fast.sampling.sampler import SamplingError

    def rare(c) -> bool:  # keeps about one network in seven (crc32: the same in every process)
        return zlib.crc32(str(c.network_code()).encode()) % 7 != 0

    with pytest.raises(SamplingError) as e:
        sample("best", n=100, max_draws=256, exclude=rare, progress=False)
    assert 0 < e.value.found < 100 and f"found {e.value.found} of 100" in str(e.value)
    # the same draws, asking for what they found, succeed (what `cgnf evaluate beyond` relies on)
    assert len(sample("best", n=e.value.found, max_draws=256, exclude=rare, progress=False)) == e.value.found
