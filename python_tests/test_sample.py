"""``cgnf_fast.sample()`` and the ``cgnf sample`` / ``cgnf train flow`` commands.

One tiny model directory (``gvae/`` + ``flow/``) is built once for the module: a G-VAE (latent
4) on nb201-like cells labelled with real params/FLOPs and a synthetic identity-transformed
attribute stored as ``nwot`` (as in test_train_flow.py), and a flow trained on it through
``cgnf train flow`` itself. Sampling is checked for what it promises (n distinct valid cells,
determinism, repair, bounds on exact counts, novelty, the JSON form), not for how well a model
this small conditions.
"""

from __future__ import annotations

import json
import math
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from cgnf_fast import get_space, nets
from cgnf_fast.models.codec import CellCodec
from cgnf_fast.sampling import (BEST_NB101, BEST_NB101_HASH, BEST_NB201, BEST_NB201_INDEX, NoDefaultModelError,
                              SampledCell, SamplingError, SamplingModel, Target, decode_logits, default_model_dir,
                              parse_condition, parse_condition_args, resolve_reference, sample, sample_with_info)
from cgnf_fast.space import Cell, nb201
from cgnf_fast.io import CheckpointError

from helpers import run_cli, tiny_gvae

JSON_KEYS = {"matrix", "ops", "code", "in_seed_space", "nb201", "nb101_hash", "predicted", "params", "flops",
             "repaired", "latent"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("model")
    d = root / "tiny"
    tiny_gvae(root, d / "gvae")
    # the flow through the CLI: `cgnf train flow` prints the metrics JSON
    rc, out, err = run_cli("train", "flow", "--gvae", str(d / "gvae"), "--out", str(d / "flow"), "--hidden", "16,16",
                            "--batch", "64", "--epochs", "2", "--lr", "1e-2", "--max-cells", "300",
                            "--val-fraction", "0.2", "--sanity-n", "16", "--no-progress")
    assert rc == 0, err
    metrics = json.loads(out)
    assert metrics["steps"] == 2 * 4 and "conditioning" in metrics
    assert json.loads((d / "flow" / "flow.json").read_text())["train"]["hidden"] == [16, 16]
    return d


@pytest.fixture(scope="module")
def model(model_dir: Path) -> SamplingModel:
    return SamplingModel.load(model_dir)


@pytest.fixture(scope="module")
def twelve(model: SamplingModel) -> list[SampledCell]:
    return sample("best", n=12, seed=0, model=model)


# -- sampling ------------------------------------------------------------------------------
@pytest.mark.slow
def test_returns_n_distinct_valid_cells_with_exact_facts(twelve: list[SampledCell]) -> None:
    sp, seed_sp = get_space("nb201-like"), get_space("nb201")
    assert len(twelve) == 12
    assert len({s.network_code for s in twelve}) == 12
    for s in twelve:
        assert sp.contains(s.cell) and not s.cell.is_zero
        # a new cell of the same graph: its pruning and codes come from the pure-Python reference
        # (the sampled cell carries the native kernels' results, which it would return as its own)
        fresh = Cell(s.cell.matrix, s.cell.ops)
        assert fresh == fresh.pruned()
        assert s.code == fresh.canonical_code() and s.network_code == fresh.network_code()
        assert set(s.predicted) == {"nwot", "params", "flops"}
        assert all(math.isfinite(v) for v in s.predicted.values())
        assert s.in_seed_space == seed_sp.contains(s.cell)
        if s.nb201 is not None:  # the NB201 string names this very class
            assert s.in_seed_space and nb201.to_cell(s.nb201).canonical_code() == s.code
        assert s.nb101_hash is None  # NB201 ops
        assert len(s.latent) == 4
    s = twelve[0]
    m = nets.build(s.cell, "nb201")
    assert (s.params, s.flops) == (nets.count_params(m), nets.count_flops(m))


@pytest.mark.slow
def test_deterministic_per_seed_prefix_stable_and_seeds_differ(model: SamplingModel,
                                                               twelve: list[SampledCell]) -> None:
    again = sample("best", n=12, seed=0, model=model)
    assert [s.to_json() for s in again] == [s.to_json() for s in twelve]
    # without selection (oversample=1) the cells come in draw order: a smaller n is a prefix
    first = sample("best", n=12, seed=0, model=model, oversample=1)
    five = sample("best", n=5, seed=0, model=model, oversample=1)
    assert [s.code for s in five] == [s.code for s in first[:5]]
    other = sample("best", n=12, seed=1, model=model)
    assert [s.latent for s in other] != [s.latent for s in twelve]
    assert [s.code for s in other] != [s.code for s in twelve]


@pytest.mark.slow
def test_selection_keeps_the_candidates_closest_to_the_condition(model: SamplingModel,
                                                                 twelve: list[SampledCell]) -> None:
    # oversample=5: the 20 first distinct valid candidates, ranked by the distance of their
    # attributes to the condition vector (predicted nwot; exact params/FLOPs, closed forms in
    # NB201's skeleton), the 4 closest returned, closest first
    four = sample("best", n=4, seed=0, model=model, oversample=5)
    cands, info = sample_with_info("best", n=20, seed=0, model=model, oversample=1)
    conds = model.conditions

    def attrs(s: SampledCell) -> list[float]:
        return [s.params / 1e6 if a == "params" else s.flops / 1e6 if a == "flops" else s.predicted[a]
                for a in conds.names]

    c = conds.to_flow(torch.tensor([[info["targets"][a] for a in conds.names]], dtype=torch.float64))
    p = conds.to_flow(torch.tensor([attrs(s) for s in cands], dtype=torch.float64))
    dist = ((p - c) ** 2).sum(1).numpy()
    want = [cands[i].code for i in np.argsort(dist, kind="stable")[:4]]
    assert [s.code for s in four] == want
    got = conds.to_flow(torch.tensor([attrs(s) for s in four], dtype=torch.float64))
    d4 = ((got - c) ** 2).sum(1).numpy()
    assert (np.diff(d4) >= -1e-9).all() and d4.max() <= np.sort(dist)[4] + 1e-9
    # the toy model has few distinct cells: the default oversample stops once draws add none
    _, info12 = sample_with_info("best", n=12, seed=0, model=model, max_draws=10_000)
    assert info12["candidates"] < 60 and info12["drawn"] < 10_000
    for bad in (0.5, float("nan"), True):
        with pytest.raises(ValueError, match="oversample must be a finite number >= 1"):
            sample("best", n=2, model=model, oversample=bad)


@pytest.mark.slow
def test_reference_forms_give_the_same_samples(model: SamplingModel, twelve: list[SampledCell]) -> None:
    codes = [s.code for s in twelve]
    for ref in (BEST_NB201, nb201.to_cell(BEST_NB201)):
        assert [s.code for s in sample(ref, n=12, model=model)] == codes


@pytest.mark.slow
def test_novel_only(model: SamplingModel) -> None:
    novel = sample("best", n=8, seed=2, novel_only=True, model=model)
    assert len(novel) == 8 and all(s.in_seed_space is False for s in novel)


@pytest.mark.slow
def test_latents_are_the_flow_of_seeded_tempered_noise(model: SamplingModel) -> None:
    # the mechanism, replayed by hand: c = the reference's predicted attributes through the flow's
    # condition map, noise = temperature * N(0, I) from a CPU generator seeded with `seed`
    got, info = sample_with_info("best", n=1, seed=7, temperature=0.5, model=model, chunk=16, oversample=1)
    c = model.conditions.to_flow(torch.tensor([[info["reference_predicted"][a] for a in model.conditions.names]],
                                              dtype=torch.float64)).float()
    noise = torch.randn((16, 4), generator=torch.Generator().manual_seed(7), dtype=torch.float64) * 0.5
    with torch.no_grad():
        z = model.flow.sample(c.expand(16, -1).contiguous(), noise=noise.float())
    # the first draw is always kept (repair makes it valid; no filter is active)
    np.testing.assert_allclose(got[0].latent, z[0].double().numpy(), rtol=0, atol=1e-6)
    assert got[0].cell == model.vae.decode(z[:1])[0] or got[0].repaired


@pytest.mark.slow
def test_params_bounds_filter_on_exact_counts(model: SamplingModel, twelve: list[SampledCell], monkeypatch) -> None:
    params = sorted(s.params for s in twelve)
    # half a parameter around the median of an unconstrained draw (in millions; a cell exactly
    # at a bound would leave the test to the rounding of the unit conversion)
    bound = (params[len(params) // 2] + 0.5) / 1e6
    low = sample("best", {"params": f"<={bound}M"}, n=5, model=model)
    assert all(s.params <= bound * 1e6 for s in low)
    bound = (params[len(params) // 2] - 0.5) / 1e6
    high = sample("best", {"params": f">={bound * 1000}K"}, n=5, model=model)
    assert all(s.params >= bound * 1e6 for s in high)
    # below the smallest network of the skeleton: refused before drawing anything
    with pytest.raises(ValueError, match=r"condition 'params': '<=0.1K' is impossible in space 'nb201-like': the "
                       r"smallest network \(input -> output\) has 0.0\d+M params"):
        sample("best", {"params": "<=0.1K"}, n=3, model=model)
    # above the largest network: refused up front (it used to spend every round first)
    with pytest.raises(ValueError, match=r"'>=1G' is impossible in space 'nb201-like': its largest network has "
                       r"1.5315M params"):
        sample("best", {"params": ">=1G"}, n=2, model=model)
    # never met within the draws allowed (the up-front checks, which know NB201's skeleton,
    # switched off: in other skeletons only the draws can tell): the error says what was dropped
    import cgnf_fast.sampling.sampler as S

    monkeypatch.setattr(S, "_refuse_impossible_bounds", lambda *a: None)
    monkeypatch.setattr(S, "_refuse_uncovered_targets", lambda *a: None)
    with pytest.raises(SamplingError, match=r"found 0 of 2 distinct valid cells after drawing 16 latents in 1 "
                       r"rounds \(.*\d+ outside bounds.*\) under params>=1000M"):
        sample("best", {"params": ">=1G"}, n=2, model=model, chunk=16, max_draws=16)
    monkeypatch.undo()
    with pytest.raises(SamplingError, match=r"found [1-8] of 10 distinct valid cells after drawing 8 latents"):
        sample("best", n=10, model=model, chunk=8, max_draws=8)


@pytest.mark.slow
def test_conditions_move_the_flow_condition(model: SamplingModel) -> None:
    _, base = sample_with_info("best", n=2, model=model, chunk=32)
    _, up = sample_with_info("best", {"nwot": "+10%", "flops": 50.0}, n=2, model=model, chunk=32)
    ref = base["reference_predicted"]
    assert base["targets"] == pytest.approx({a: ref[a] for a in ("nwot", "params", "flops")})
    assert up["targets"]["nwot"] == pytest.approx(ref["nwot"] + 0.1 * abs(ref["nwot"]))
    assert up["targets"]["flops"] == pytest.approx(50.0, rel=1e-12)
    # params was not given: it follows nwot and flops by the training conditions' correlations
    conds = model.conditions
    names = conds.names
    row = torch.tensor([[ref[a] for a in names]], dtype=torch.float64)
    c_ref = conds.to_flow(row)[0]
    asked = row.clone()
    asked[0, names.index("nwot")] = up["targets"]["nwot"]
    asked[0, names.index("flops")] = 50.0
    c_asked = conds.to_flow(asked)[0]
    given = {names.index(a): float(c_asked[names.index(a)]) for a in ("nwot", "flops")}
    want = conds.from_flow(conds.follow(c_ref, given)[None])[0]
    assert up["targets"]["params"] == pytest.approx(float(want[names.index("params")]), rel=1e-9)
    assert up["targets"]["params"] != pytest.approx(ref["params"])  # it moved


@pytest.mark.slow
def test_json_form(twelve: list[SampledCell]) -> None:
    rows = json.loads(json.dumps([s.to_json() for s in twelve]))
    for s, r in zip(twelve, rows):
        assert set(r) == JSON_KEYS
        assert Cell(r["matrix"], r["ops"]) == s.cell
        assert isinstance(r["code"], int) and isinstance(r["params"], int) and isinstance(r["flops"], int)
        assert isinstance(r["in_seed_space"], bool) and set(r["predicted"]) == {"nwot", "params_millions", "flops_millions"}
        # units: the exact counts are integers, the predictions of them in millions, named so
        assert r["predicted"]["params_millions"] == pytest.approx(r["params"] / 1e6, rel=0.5)


# -- repair --------------------------------------------------------------------------------
@pytest.mark.slow
def test_repair_makes_valid_cells_from_garbage_latents(model: SamplingModel) -> None:
    vae = model.vae
    z = torch.randn(200, 4, generator=torch.Generator().manual_seed(0)) * 40.0
    with torch.no_grad():
        ops, edges = vae.model.decode_logits(z)
    out = decode_logits(ops, edges, vae.codec)
    assert all(c is not None and vae.space.contains(c) and not c.is_zero for c, _ in out)
    # pure noise logits: most greedy layouts are invalid, all repaired ones valid
    g = torch.Generator().manual_seed(1)
    noise = decode_logits(torch.randn(300, 6, 5, generator=g) * 3, torch.randn(300, 28, generator=g) * 3 - 2,
                          vae.codec)
    assert sum(r for _, r in noise) > 50
    assert all(c is not None and vae.space.contains(c) and not c.is_zero for c, _ in noise)


def test_path_repair_takes_the_most_likely_path() -> None:
    codec = CellCodec(get_space("nb201-like"))  # N = 8 slots, ops: absent + 4
    op_logits = torch.zeros(1, 6, 5)
    op_logits[0, :, 0] = 5.0  # every slot prefers "absent"
    k3 = 1 + codec.ops.index("nor_conv_3x3")
    op_logits[0, 2, k3] = 4.5  # slot 3: conv3x3 is a close second (cost 0.5)
    iu = torch.triu_indices(8, 8, 1)
    edge = torch.full((1, 28), -10.0)  # no edge is likely

    def set_edge(i: int, j: int, v: float) -> None:
        edge[0, int(((iu[0] == i) & (iu[1] == j)).nonzero())] = v

    set_edge(0, 3, -1.0)
    set_edge(3, 7, -1.0)
    set_edge(0, 7, -3.0)  # direct input -> output costs 3, the detour through slot 3 costs 2.5
    (cell, repaired), = decode_logits(op_logits, edge, codec)
    assert repaired
    assert cell == Cell([[0, 1, 0], [0, 0, 1], [0, 0, 0]], ["input", "nor_conv_3x3", "output"])
    set_edge(0, 7, -2.0)  # now the direct edge is cheaper
    (cell, repaired), = decode_logits(op_logits, edge, codec)
    assert repaired and cell == Cell([[0, 1], [0, 0]], ["input", "output"])
    # a valid greedy layout is kept as is
    set_edge(0, 7, 1.0)
    (cell, repaired), = decode_logits(op_logits, edge, codec)
    assert not repaired and cell == Cell([[0, 1], [0, 0]], ["input", "output"])


def test_edge_limit_repair_drops_the_least_likely_edges() -> None:
    sp = get_space("nb101")  # at most 9 edges
    codec = CellCodec(sp)
    N = codec.num_nodes
    P = N * (N - 1) // 2
    op_logits = torch.zeros(2, N - 2, len(codec.ops) + 1)
    op_logits[:, :, 1] = 3.0  # every op slot present (the first NB101 op)
    edge = torch.stack([torch.linspace(1.0, 5.0, P), torch.linspace(5.0, 1.0, P)])  # the complete DAG (21 edges)
    out = decode_logits(op_logits, edge, codec)
    for cell, repaired in out:
        # removals that lose no vertex come first: all 7 vertices survive with exactly 9 edges
        assert repaired and sp.contains(cell) and cell.num_nodes == N and cell.num_edges == 9
    # the two logit orders keep different edges: row 0 keeps the most likely pairs (the last ones)
    assert out[0][0].canonical_code() != out[1][0].canonical_code()
    iu = np.triu_indices(N, 1)
    kept = [k for k, (i, j) in enumerate(zip(*iu)) if out[0][0].adjacency[i][j]]
    assert kept[-3:] == [P - 3, P - 2, P - 1]
    # without a limit (nb101-like) the same logits decode as they are
    (full, repaired), _ = decode_logits(op_logits, edge, CellCodec(get_space("nb101-like")))
    assert not repaired and full.num_edges == P


def test_decode_logits_checks_shapes() -> None:
    codec = CellCodec(get_space("nb201-like"))
    with pytest.raises(ValueError, match=r"op_logits must have shape \[B, 6, 5\]"):
        decode_logits(torch.zeros(2, 6, 4), torch.zeros(2, 28), codec)
    with pytest.raises(ValueError, match=r"edge_logits must have shape \[2, 28\]"):
        decode_logits(torch.zeros(2, 6, 5), torch.zeros(2, 27), codec)


# -- conditions ----------------------------------------------------------------------------
ATTRS = ["nwot", "params", "flops"]


def test_condition_parsing_good() -> None:
    t = parse_condition({"nwot": 3.5, "params": "<=0.8M", "flops": "+10%"}, ATTRS)
    assert t["nwot"] == Target("nwot", "absolute", 3.5, "3.5")
    assert (t["params"].kind, t["params"].value) == ("at_most", 0.8)
    assert (t["flops"].kind, t["flops"].value) == ("relative", pytest.approx(0.1))
    assert parse_condition({"params": "800K"}, ATTRS)["params"].value == pytest.approx(0.8)
    assert parse_condition({"flops": ">= 1.2G"}, ATTRS)["flops"] == Target("flops", "at_least", 1200.0, ">= 1.2G")
    assert parse_condition({"nwot": "-5%"}, ATTRS)["nwot"].target(-20.0) == pytest.approx(-21.0)  # "-" = lower
    assert parse_condition({"nwot": "+10%"}, ATTRS)["nwot"].target(-20.0) == pytest.approx(-18.0)  # "+" = higher
    assert parse_condition({"nwot": "-1.5e2"}, ATTRS)["nwot"].value == -150.0
    assert parse_condition(None, ATTRS) == {}
    # a params bound on a flow that is not conditioned on params: a filter only
    f = parse_condition({"params": "<=1M"}, ["nwot"])["params"]
    assert f.filter_only and f.admits(0.5) and not f.admits(1.5)
    assert parse_condition_args(["nwot=+10%", "params=<=0.8M, flops=>=100M"]) == {
        "nwot": "+10%", "params": "<=0.8M", "flops": ">=100M"}


@pytest.mark.parametrize("cond, attrs, match", [
    ({"synflow": "+10%"}, ATTRS, "condition 'synflow': unknown attribute; the model is conditioned on nwot"),
    ({"nwot": float("nan")}, ATTRS, "condition 'nwot': value must be a finite number"),
    ({"nwot": "inf"}, ATTRS, "condition 'nwot': value must be a finite number"),
    ({"nwot": "3M"}, ATTRS, "condition 'nwot': the unit suffix 'M' in '3M' only applies to params and flops"),
    ({"params": "0.8X"}, ATTRS, "condition 'params': unknown unit suffix 'X'"),
    ({"params": "0.8m"}, ATTRS, "condition 'params': unknown unit suffix 'm'"),
    ({"params": 800000}, ATTRS, "condition 'params': 800000 would mean 800000 million params"),
    ({"params": "<=0"}, ATTRS, r"condition 'params': '<=0' is impossible \(params is positive\)"),
    ({"flops": "-100%"}, ATTRS, "condition 'flops': '-100%' is impossible"),
    ({"nwot": "10%"}, ATTRS, "a relative change needs a sign"),
    ({"params": "<0.8M"}, ATTRS, "bounds are written '<=X' or '>=X'"),
    ({"nwot": "lots"}, ATTRS, r"condition 'nwot': cannot read 'lots'; expected a number"),
    ({"nwot": True}, ATTRS, "condition 'nwot': expected a number or a string"),
    ({"params": "+10%"}, ["nwot"], "the model is not conditioned on params .* only a bound"),
    (["nwot"], ATTRS, "condition must be a mapping"),
])
def test_condition_parsing_errors_name_the_entry(cond, attrs, match) -> None:
    with pytest.raises(ValueError, match=match):
        parse_condition(cond, attrs)


def test_condition_args_errors() -> None:
    with pytest.raises(ValueError, match="expected ATTRIBUTE=VALUE"):
        parse_condition_args(["nwot+10%"])
    with pytest.raises(ValueError, match="condition 'nwot' is given twice"):
        parse_condition_args(["nwot=1", "nwot=2"])


# -- references ----------------------------------------------------------------------------
def test_reference_forms_and_errors() -> None:
    best = resolve_reference("best", "nb201-like")
    assert best == nb201.to_cell(BEST_NB201) and nb201.index_of(BEST_NB201) == BEST_NB201_INDEX
    assert resolve_reference(BEST_NB201, "nb201") == best
    b101 = resolve_reference("best", "nb101-like")
    assert b101.nb101_hash() == BEST_NB101_HASH
    # an NB101 (matrix, ops) pair, with op names or NB101's integer labels
    assert resolve_reference(BEST_NB101, "nb101") == b101
    labels = [-1, 0, 0, 0, 0, -2]  # NB101 labels: conv3x3 = 0, conv1x1 = 1, maxpool = 2
    assert resolve_reference((np.array(BEST_NB101[0]), labels), "nb101-like") == b101
    for ref, space, match in [
        ("nb201-best", "nb201-like", "unknown reference string 'nb201-best'"),
        ("|nor_conv_3x3~0|+|bogus~0|", "nb201-like", "not a valid NB201 string"),
        (BEST_NB101, "nb201-like", "the reference is not in space 'nb201-like'"),
        (BEST_NB201, "nb101-like", "the reference is not in space 'nb101-like'"),
        ("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|", "nb201-like", "the reference is the zero cell"),
        (42, "nb201-like", "reference must be a Cell \\(or a sampled cell\\), an NB201 string"),
        (([[0, 1], [1, 0]], ["input", "output"]), "nb101-like", "not a valid NB101 \\(matrix, ops\\) pair"),
    ]:
        with pytest.raises(ValueError, match=match):
            resolve_reference(ref, space)


@pytest.mark.data
def test_best_references_match_the_data(shared_data: Path) -> None:
    import csv

    with open(shared_data / "nb201" / "naswot_arch_score_acc.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    acc = np.array([float(r["cifar10_test_200ep"]) for r in rows])
    top = np.flatnonzero(acc == acc.max())
    # two cells tie at 94.3733 %: 6111 and 13714; the lower index is the embedded reference
    assert top.tolist() == [6111, 13714] and acc.max() == pytest.approx(94.37333, abs=1e-5)
    assert rows[BEST_NB201_INDEX]["cellstr"] == BEST_NB201 and int(rows[6111]["arch"]) == 6111
    assert nb201.arch_at(BEST_NB201_INDEX) == BEST_NB201
    # NB101: the highest 108-epoch validation accuracy over the shared data's 1,030 cells (the 30
    # NASLib records by the mean of their 3 runs, whose best was the reference before)
    d = json.loads((shared_data / "nb101" / "naslib_nb101_dummy_30.json").read_text())
    val = {h: float(np.mean([r["final_validation_accuracy"] for r in v["108"]])) for h, v in d.items()}
    test = {h: float(np.mean([r["final_test_accuracy"] for r in v["108"]])) for h, v in d.items()}
    assert max(test, key=test.get) == max(val, key=val.get) == "ff9707907f5c17ef8f80cc68fff30f74"
    assert max(val.values()) == pytest.approx(0.93663, abs=1e-5)
    k = json.loads((shared_data / "nb101" / "nasbenchvis_data-1k.json").read_text())
    val |= dict(zip(k["key"], map(float, k["108_final_validation_accuracy"])))
    best = max(val, key=val.get)
    assert best == BEST_NB101_HASH and val[best] == pytest.approx(0.94671, abs=1e-5) and len(val) == 1030
    i = k["key"].index(best)
    keep = [j for j, o in enumerate(k["operations"][i]) if o != -3]
    adj = [[int(k["adjacency"][i][a][b]) for b in keep] for a in keep]
    assert [list(r) for r in BEST_NB101[0]] == adj
    assert Cell.from_nb101(*BEST_NB101).nb101_hash() == best


# -- models and errors ---------------------------------------------------------------------
def test_no_model_is_a_clear_error() -> None:
    # nb201-like and nb101-like ship pretrained models (test_pretrained.py); the seed spaces do not
    assert default_model_dir("nb101") is None
    with pytest.raises(NoDefaultModelError, match=r"no pretrained model is installed for space 'nb101' \(shipped: "
                       r"nb101-like, nb201-like\); train one with `cgnf pipeline --space nb101 --out RUN`") as e:
        sample("best", space="nb101")
    assert len(str(e.value)) < 200  # one short line (it was 450 characters)


@pytest.mark.slow
def test_bad_model_dirs_and_arguments(model_dir: Path, model: SamplingModel, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such model directory"):
        sample("best", model=tmp_path / "nope")
    (tmp_path / "half" / "gvae").mkdir(parents=True)
    with pytest.raises(CheckpointError, match="missing the flow/ sub-directory"):
        sample("best", model=tmp_path / "half")
    with pytest.raises(ValueError, match="was trained for space 'nb201-like', not 'nb101-like'"):
        sample("best", space="nb101-like", model=model_dir)
    with pytest.raises(ValueError, match="space 'nb201' is its own seed space"):
        sample("best", space="nb201", novel_only=True, model=model)
    for kw, match in [({"n": 0}, "n must be an int >= 1"), ({"temperature": 0.0}, "temperature must be"),
                      ({"seed": -1}, "seed must be"), ({"novel_only": "yes"}, "novel_only must be a bool"),
                      ({"device": "gpu"}, "device 'gpu' is not a device"), ({"device": 3.5}, "is not a device"),
                      ({"device": "meta"}, "runs on 'cpu' or 'cuda"), ({"device": "cuda:99"}, "device 'cuda:99': torch")]:
        with pytest.raises(ValueError, match=match):
            sample("best", model=model, **kw)


# -- CLI -----------------------------------------------------------------------------------
@pytest.mark.slow
def test_cli_sample_round_trip(model_dir: Path, model: SamplingModel, tmp_path: Path) -> None:
    out, png = tmp_path / "samples.json", tmp_path / "cells.png"
    args = ["sample", "--space", "nb201-like", "--reference", "best", "--n", "6", "--seed", "3", "--model",
            str(model_dir), "--condition", "nwot=+10%", "--out", str(out)]
    has_mpl = __import__("importlib").util.find_spec("matplotlib") is not None
    if has_mpl:
        args += ["--png", str(png)]
    rc, stdout, err = run_cli(*args)
    assert rc == 0, err
    rows = json.loads(out.read_text())
    direct = sample("best", {"nwot": "+10%"}, n=6, seed=3, model=model)
    assert rows == [s.to_json() for s in direct]
    assert "reference  " + BEST_NB201 in stdout and "nwot=" in stdout and "(+10%)" in stdout
    assert len([ln for ln in stdout.splitlines() if ln[:3].strip().isdigit()]) == 6
    if has_mpl:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob("*.partial")) and not list(tmp_path.glob("*.drawing.png"))


@pytest.mark.slow
def test_cli_sample_same_seed_same_cells_in_two_processes(model_dir: Path, model: SamplingModel,
                                                          tmp_path: Path) -> None:
    """Determinism across processes, not only within one (where a per-process input, such as
    Python's string hash, or a set's iteration order, would stay the same): two `cgnf sample`
    processes with one seed write byte-identical files, equal to this process's draw."""
    import subprocess

    from test_cli import cgnf_executable

    outs = [tmp_path / f"s{i}.json" for i in range(2)]
    procs = [subprocess.Popen([cgnf_executable(), "sample", "--model", str(model_dir), "--n", "8", "--seed", "5",
                               "--out", str(out)], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True) for out in outs]
    try:
        errs = [p.communicate(timeout=300)[1] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0, 0], errs
    assert outs[0].read_bytes() == outs[1].read_bytes()
    assert json.loads(outs[0].read_text()) == [s.to_json() for s in sample("best", n=8, seed=5, model=model)]


@pytest.mark.slow
def test_cli_sample_errors_are_one_line_and_write_nothing(model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "samples.json"
    for args, match in [
        (["sample", "--space", "nb101", "--out", str(out)], "no pretrained model is installed for space 'nb101'"),
        (["sample", "--model", str(model_dir), "--condition", "nwot=lots", "--out", str(out)],
         "condition 'nwot': cannot read 'lots'"),
        (["sample", "--model", str(model_dir), "--reference", "{nope", "--out", str(out)], "--reference: cell JSON is not valid JSON"),
        (["sample", "--model", str(model_dir), "--out", str(tmp_path / "no" / "dir.json")], "does not exist"),
        (["sample", "--model", str(model_dir), "--n", "2", "--condition", "params=<=0.1K", "--out", str(out)],
         "condition 'params': '<=0.1K' is impossible in space 'nb201-like'"),
    ]:
        rc, _, err = run_cli(*args)
        lines = err.strip().splitlines()
        assert rc == 2 and len(lines) == 1 and match in lines[0], (args, err)
        assert not out.exists()
    rc, _, err = run_cli("train", "flow", "--gvae", str(tmp_path / "none"), "--out", str(tmp_path / "f"))
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "gvae.safetensors: no such file" in err


@pytest.mark.slow
def test_cli_sample_json_reference(model_dir: Path, tmp_path: Path) -> None:
    cell = nb201.to_cell(BEST_NB201)
    out = tmp_path / "s.json"
    rc, _, err = run_cli("sample", "--model", str(model_dir), "--n", "3", "--reference", json.dumps(cell.to_json()),
                          "--out", str(out))
    assert rc == 0, err
    ref = sample("best", n=3, model=str(model_dir))
    assert json.loads(out.read_text()) == [s.to_json() for s in ref]


@pytest.mark.slow
def test_rounds_solved_ahead_and_skipped_duplicates_change_nothing(model: SamplingModel, monkeypatch) -> None:
    """The sampler solves the next round's flow in a worker thread and does not build cells for
    networks it has already seen; both are pure speed-ups: the same cells and counts as plain
    draw_round calls one after another, and torch's thread count is restored."""
    import cgnf_fast.sampling.sampler as S
    threads = torch.get_num_threads()
    runs = [dict(n=12, seed=4), dict(n=30, seed=5, chunk=32), dict(n=6, seed=6, oversample=1, chunk=16)]
    fast = [sample_with_info("best", model=model, **kw) for kw in runs]
    assert torch.get_num_threads() == threads
    monkeypatch.setattr(S, "_rounds", _one_by_one)
    slow = [sample_with_info("best", model=model, **kw) for kw in runs]
    for (a, ia), (b, ib) in zip(fast, slow):
        assert [s.to_json() for s in a] == [s.to_json() for s in b]
        assert ia == ib
    assert any(info["duplicates"] for _, info in fast)


@pytest.mark.slow
def test_the_calling_thread_solves_rounds_while_the_worker_is_slow(model: SamplingModel, monkeypatch) -> None:
    """When the worker's solves take longer than the decoding, the calling thread solves later
    rounds itself meanwhile: some rounds are solved in each thread, the cells and counts are
    those of plain rounds one after another, and at most _AHEAD rounds are solved beyond those
    consumed (queued ones are cancelled when the sampler stops)."""
    import cgnf_fast.sampling.rounds as R
    import cgnf_fast.sampling.sampler as S

    solve, where = R._solve_round, []

    def slow_worker(m, c_row, noise):
        in_worker = threading.current_thread().name.startswith("cgnf-flow")
        where.append(in_worker)
        if in_worker:
            time.sleep(0.05)
        return solve(m, c_row, noise)

    monkeypatch.setattr(R, "_solve_round", slow_worker)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the calling thread helps only when torch has a thread to give the worker
    try:
        fast, info = sample_with_info("best", model=model, n=30, seed=5, chunk=16)
        assert torch.get_num_threads() == 2
        monkeypatch.setattr(S, "_rounds", _one_by_one)
        slow, slow_info = sample_with_info("best", model=model, n=30, seed=5, chunk=16)
    finally:
        torch.set_num_threads(threads)
    helped = where[: len(where) - slow_info["rounds"]]
    assert any(helped) and not all(helped), helped  # rounds solved in both threads
    assert info["rounds"] <= len(helped) <= info["rounds"] + R._AHEAD
    assert [s.to_json() for s in fast] == [s.to_json() for s in slow]
    assert info == slow_info


@pytest.mark.slow
def test_a_failed_solve_ahead_fails_only_the_round_that_is_reached(model: SamplingModel, monkeypatch) -> None:
    """A round solved ahead in the calling thread that fails raises only if the sampler reaches
    that round, as a failed worker round does: here the first round (slow, in the worker) is
    enough, so the failing rounds solved meanwhile are never reached and the draw succeeds."""
    import cgnf_fast.sampling.rounds as R

    kw = dict(n=6, seed=6, oversample=1, chunk=16)
    want, want_info = sample_with_info("best", model=model, **kw)
    assert want_info["rounds"] == 1  # (the premise: one round is enough)
    solve, failed = R._solve_round, []

    def flaky(m, c_row, noise):
        if threading.current_thread().name.startswith("cgnf-flow"):
            time.sleep(0.2)
            return solve(m, c_row, noise)
        failed.append(True)
        raise RuntimeError("solve failed")

    monkeypatch.setattr(R, "_solve_round", flaky)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        got, info = sample_with_info("best", model=model, **kw)
    finally:
        torch.set_num_threads(threads)
    assert failed  # rounds were solved (and failed) in the calling thread
    assert [c.to_json() for c in got] == [c.to_json() for c in want] and info == want_info


def _one_by_one(m, c_row, gen, temperature, chunk, limit, known):
    """The sampler's rounds without solving ahead or skipping known networks: plain draw_round calls."""
    from cgnf_fast.sampling import draw_round

    drawn = 0
    while drawn < limit:
        size = min(chunk, limit - drawn)
        z, decoded = draw_round(m, c_row, size, gen, temperature)  # no `known`: every cell built
        drawn += size
        yield size, z, decoded


@pytest.mark.slow
def test_non_finite_models_and_huge_requests_fail_at_once(model: SamplingModel) -> None:
    """A damaged flow (one NaN weight) or NaN decoder logits give one clear error instead of
    looping forever in the repair; an n no call can hold is refused before any work."""
    import copy

    bad = copy.deepcopy(model)
    with torch.no_grad():
        next(p for p in bad.flow.parameters() if p.numel()).view(-1)[0] = float("nan")
    with pytest.raises(ValueError, match="solve failed .*dynamics are not finite"):
        sample("best", model=bad, n=3)
    if model.flow.bn_in is not None:  # the adversarial run's case: NaN latents out of a finite solve
        bad = copy.deepcopy(model)
        with torch.no_grad():
            bad.flow.bn_in.bias[0] = float("nan")
        with pytest.raises(ValueError, match="decoder's logits are not all finite"):
            sample("best", model=bad, n=3)
    codec = model.vae.codec
    N, K = codec.num_nodes, len(codec.ops)
    ops = torch.zeros(2, N - 2, K + 1)
    edges = torch.full((2, N * (N - 1) // 2), float("nan"))
    with pytest.raises(ValueError, match="not all finite"):
        decode_logits(ops, edges, codec)
    with pytest.raises(ValueError, match="n must be at most"):
        sample("best", model=model, n=2 ** 63)
