"""``cgnf evaluate beyond`` (cgnf_fast.searching.beyond): the rules, the seed space, the labels
written from S only, the baselines, ``sample(exclude=...)`` and the report (the trained models
and the full protocol run in `cgnf evaluate beyond`; docs/results.md has its figures)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest

from cgnf_fast.searching import beyond
from cgnf_fast.searching.beyond import RULES, BeyondConfig, seed_classes
from cgnf_fast.searching.domain import nb201_domain


@pytest.fixture(scope="module")
def dom():
    return nb201_domain()


@pytest.fixture(scope="module")
def ops(dom):
    return beyond._edge_ops(dom)


@pytest.mark.parametrize("name,strings", [("one-conv3x3", 4 ** 6 + 6 * 4 ** 5),
                                          ("two-convs", 3 ** 6 + 6 * 2 * 3 ** 5 + 15 * 4 * 3 ** 4),
                                          ("no-skip", 4 ** 6), ("no-conv-into-last", 3 ** 3 * 5 ** 3),
                                          ("no-conv3x3", 4 ** 6)])
def test_rules_keep_the_strings_they_say(name, strings, ops):
    """Counted by hand: e.g. at most one nor_conv_3x3 = none (4^6) or one of six edges (6 * 4^5)."""
    assert sum(RULES[name].keep(o) for o in ops) == strings


def test_seed_classes_are_the_networks_of_kept_strings(dom, ops):
    rule = RULES["no-skip"]
    inside = seed_classes(rule, dom, ops)
    kept = np.fromiter((rule.keep(o) for o in ops), dtype=bool)
    assert inside[dom.class_of[kept]].all() and inside[dom.zero_class]
    # a network outside has no string the rule keeps
    outside = np.flatnonzero(~inside)
    assert len(outside) > 0 and not kept[np.isin(dom.class_of, outside)].any()
    assert [r.name for r in RULES.values() if r.sanity] == ["no-conv3x3"]


def test_config_is_checked():
    with pytest.raises(ValueError, match="rules must be"):
        BeyondConfig(table="t.csv", rules=["nope"]).validate()
    with pytest.raises(ValueError, match="seeds must be"):
        BeyondConfig(table="t.csv", seeds=0).validate()


def test_labels_come_from_s_only_and_read_as_the_pipeline_reads_them(tmp_path, dom, ops):
    from cgnf_fast.searching.generator import zc_table
    from cgnf_fast.train.data import load_labelled

    inside = seed_classes(RULES["one-conv3x3"], dom, ops)
    classes = np.flatnonzero(inside & (np.arange(dom.num_classes) != dom.zero_class))[:40]
    counts = np.asarray([[1e6 * (k + 1), 2e6 * (k + 1)] for k in range(dom.num_classes)])
    zc = zc_table()
    beyond.write_labels(tmp_path / "s.sqlite", classes, dom, zc, counts)
    lab = load_labelled(str(tmp_path / "s.sqlite"), "nb201", ["synflow", "nwot", "params", "flops"], holdout="eval")
    codes = {dom.network_codes[k] for k in classes}
    assert len(lab.cells) <= 40 and all(c.network_code() in codes for c in lab.cells)
    got = {c.network_code(): v for c, v in zip(lab.cells, lab.values)}
    k = int(classes[0])
    if math.isfinite(zc["synflow"][k]) and math.isfinite(zc["nwot"][k]):
        np.testing.assert_allclose(got[dom.network_codes[k]], [zc["synflow"][k], zc["nwot"][k], k + 1, 2 * (k + 1)])


def _rule_state(dom, ops, name="two-convs"):
    from cgnf_fast.searching.generator import zc_table

    inside = seed_classes(RULES[name], dom, ops)
    rng = np.random.default_rng(0)
    acc = rng.random(dom.num_classes)
    counts = np.stack([rng.integers(100_000, 1_500_000, dom.num_classes),
                       rng.integers(10_000_000, 200_000_000, dom.num_classes)], 1).astype(float)
    ref = int(np.argmax(np.where(inside, acc, -1)))
    return beyond._Rule(RULES[name], inside, acc, ref, np.flatnonzero(~inside[dom.class_of]), counts, zc_table())


def test_baselines_are_outside_distinct_and_what_they_say(dom, ops):
    r = _rule_state(dom, ops)
    base = beyond._baselines(r, dom, 20, 200, seed=3)
    assert set(base) == {"random", "params", "neighbours", "zc"}
    for m, classes in base.items():
        assert len(set(classes)) == len(classes) and not r.inside[classes].any(), m
    assert len(base["random"]) == 20 and len(base["zc"]) == 20
    ref_p = r.counts[r.ref_class, 0]
    assert (np.abs(r.counts[base["params"], 0] - ref_p) <= 0.1 * ref_p).all()
    ref_string = int(dom.representative[r.ref_class])
    nbrs = {int(dom.class_of[i]) for i in dom.neighbours(ref_string)}
    assert set(base["neighbours"]) <= nbrs
    assert base == beyond._baselines(r, dom, 20, 200, seed=3)  # deterministic per seed
    row = beyond._row("random", 3, base["random"], r)
    assert row["above"] == int((r.acc[base["random"]] > r.acc[r.ref_class]).sum())


def test_summary_pairs_methods_by_seed(dom, ops):
    r = _rule_state(dom, ops)
    rows = []
    for seed in range(6):
        for m, classes in beyond._baselines(r, dom, 20, 200, seed).items():
            rows.append(beyond._row(m, seed, classes, r))
        rows.append(beyond._row("generated", seed, beyond._baselines(r, dom, 20, 200, seed + 50)["random"], r))
    s = beyond._summary(rows, 6)
    assert set(s["methods"]) == {"generated", "random", "params", "neighbours", "zc"}
    nonempty = {m for m, x in s["methods"].items() if not x.get("empty") and m != "generated"}
    assert set(s["paired_tests"]) == {f"generated_vs_{m}" for m in nonempty} and "random" in nonempty
    for v in s["paired_tests"].values():
        assert 0.0 <= v["above_p_greater"] <= 1.0
    x = s["methods"]["random"]
    assert x["mean_above_ci95"][0] <= x["mean_above"] <= x["mean_above_ci95"][1]
    result = {"table": "t", "rules": [{"rule": "two-convs", "text": RULES["two-convs"].text, "sanity": False,
                                       "seed_networks": 10, "outside_networks": 5,
                                       "reference": {"arch": "|a|", "accuracy": 90.0, "params_m": 1.0},
                                       "outside_above_reference": 1, "outside_above_reference_share": 0.2, **s}]}
    md = beyond.to_markdown(result)
    assert "| generated | 20 |" in md and "generated > random: p =" in md


def test_sample_exclude_drops_cells():
    from cgnf_fast import sample

    cells = sample("best", n=8, space="nb201-like", seed=1, progress=False,
                   exclude=lambda c: "nor_conv_3x3" in c.ops)
    assert len(cells) == 8 and not any("nor_conv_3x3" in c.cell.ops for c in cells)
    with pytest.raises(ValueError, match="exclude must be"):
        sample("best", n=2, space="nb201-like", exclude="nor_conv_3x3")


@pytest.mark.skipif(not os.environ.get("CGNF_DATA_DIR"), reason="needs CGNF_DATA_DIR (the NB201 table)")
def test_references_are_the_best_of_s_by_the_table(dom, ops):
    """The issue's figures for the shared CIFAR-10 column: the best of "at most one nor_conv_3x3"
    is 93.75 by strings; by class means (what the protocol reads) it is within 0.3 of that and
    below NB201's best."""
    from cgnf_fast.searching.objectives import TableObjective

    path = Path(os.environ["CGNF_DATA_DIR"]) / "nb201" / "naswot_arch_score_acc.csv"
    if not path.is_file():
        pytest.skip(f"{path} missing")
    t = TableObjective(path, "cifar10_test_200ep", "max", dom)
    inside = seed_classes(RULES["one-conv3x3"], dom, ops)
    best_s = np.nanmax(np.where(inside, t.class_means, np.nan))
    assert abs(best_s - 93.75) < 0.3 and best_s < np.nanmax(t.class_means)


def test_an_empty_baseline_is_reported_not_tested(dom, ops):
    r = _rule_state(dom, ops)
    rows = [beyond._row("generated", s, [1, 2, 3], r) for s in range(3)]
    rows += [beyond._row("params", s, [], r) for s in range(3)]
    s = beyond._summary(rows, 3)
    assert s["methods"]["params"] == {"seeds": 3, "k": 0, "empty": True}
    assert "generated_vs_params" not in s["paired_tests"]


def test_aim_condition_moves_the_condition_up_the_values():
    """Values that grow with the predicted synflow: the aimed condition asks for more synflow than
    the reference's own prediction; bad input is refused."""
    from cgnf_fast import Cell
    from cgnf_fast.sampling import aim_condition
    from cgnf_fast.sampling.model import SamplingModel, default_model_dir
    from cgnf_fast.space import get as get_space

    model = SamplingModel.load(default_model_dir("nb201-like"))
    cells = get_space("nb201").sample(30, seed=4, unique=True)
    pred = model.vae.predict(cells)
    ref_pred = model.vae.predict([Cell.from_nb201(beyond_ref := "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|"
                                                                "+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|")])
    cond = aim_condition(beyond_ref, cells, list(pred["synflow"]), model=model)
    assert set(cond) == set(model.conditions.names)
    assert cond["synflow"] > float(ref_pred["synflow"][0])
    with pytest.raises(ValueError, match="values must be"):
        aim_condition(beyond_ref, cells, [1.0] * 3, model=model)
    with pytest.raises(ValueError, match="at least 2 cells"):
        aim_condition(beyond_ref, cells[:1], [1.0], model=model)
    with pytest.raises(ValueError, match="members=True takes"):
        aim_condition(beyond_ref, cells, list(pred["synflow"]), model=model, members=True)
