"""Which labels the G-VAE may learn from: the "seed" and "eval" holdouts, seed-space labels outside
the evaluation set, and the predictor evaluation's refusal to score cells that were not held out."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from cgnf_fast import get_space
from cgnf_fast.evaluate.predictor import _check_held_out
from cgnf_fast.models.api import GraphVAE
from cgnf_fast.pipeline import PipelineConfig
from cgnf_fast.train.data import eval_cells, eval_networks, eval_set_sha256, load_labelled, seed_label_cells
from cgnf_fast.zc.store import ScoreStore

from helpers import GVAE_TINY, run_cli

NB101 = get_space("nb101")


def _model(space: str, labelled: dict | None) -> SimpleNamespace:
    """What the held-out check reads of a G-VAE: its space and its config's data.labelled."""
    vae = SimpleNamespace(cfg=SimpleNamespace(space=space), info={"data": {"labelled": labelled}})
    vae.training_labels = GraphVAE.training_labels.__get__(vae)
    return vae


def _store(path: Path, groups: dict[str, list]) -> str:
    """A label store of nb101-like cells with synthetic values (one row set per cell)."""
    with ScoreStore(str(path)) as st:
        for i, cell in enumerate(c for cells in groups.values() for c in cells):
            st.put("nb101-like", cell.canonical_code(), cell.dumps(), "fp", 0, "v", {"synflow": float(i), "params": 1.0})
    return str(path)


@pytest.fixture(scope="module")
def groups() -> dict[str, list]:
    evaluated = eval_cells("nb101")[:4]
    outside = seed_label_cells("nb101-like", 5, seed=0)
    beyond = [c for c in get_space("nb101-like").sample(200, seed=4, unique=True) if not NB101.contains(c)][:6]
    assert len(beyond) == 6
    return {"evaluated": evaluated, "outside": outside, "beyond": beyond}


def test_seed_label_cells_are_distinct_nb101_networks_outside_the_evaluation_set() -> None:
    cells = seed_label_cells("nb101-like", 40, seed=0)
    held = eval_networks("nb101")
    assert len(held) == 4000
    codes = [c.network_code() for c in cells]
    assert len(set(codes)) == 40 and not set(codes) & held
    assert all(NB101.contains(c) for c in cells)
    assert [c.network_code() for c in seed_label_cells("nb101-like", 40, seed=0)] == codes  # deterministic
    assert seed_label_cells("nb101-like", 0, seed=0) == []
    with pytest.raises(ValueError, match="nb201-like cannot take seed-space labels: every nb201 cell is in the predictor evaluation set"):
        seed_label_cells("nb201-like", 3, seed=0)
    with pytest.raises(ValueError, match="nb101 cannot take seed-space labels: it has no seed space"):
        seed_label_cells("nb101", 3, seed=0)


def test_holdouts_keep_out_the_seed_space_or_only_its_evaluation_set(groups, tmp_path: Path) -> None:
    store = _store(tmp_path / "s.sqlite", groups)
    attrs = ["synflow", "params"]
    strict = load_labelled(store, "nb101-like", attrs, holdout="seed")
    assert {c.canonical_code() for c in strict.cells} == {c.canonical_code() for c in groups["beyond"]}
    assert strict.skipped_seed == 9 and strict.info()["seed_space_labels"] == 0
    ev = load_labelled(store, "nb101-like", attrs, holdout="eval")
    assert {c.canonical_code() for c in ev.cells} == {c.canonical_code() for c in groups["beyond"] + groups["outside"]}
    assert ev.skipped_seed == 4 and ev.info()["seed_space_labels"] == 5 and ev.info()["holdout"] == "eval"
    assert ev.info()["held_out_sha256"] == eval_set_sha256("nb101") and "held_out_sha256" not in strict.info()
    assert len(load_labelled(store, "nb101-like", attrs, holdout=None).cells) == 15
    with pytest.raises(ValueError, match="holdout must be one of"):
        load_labelled(store, "nb101-like", attrs, holdout="all")


def test_predictor_evaluation_refuses_cells_outside_the_held_out_set() -> None:
    cells = eval_cells("nb101", 50, seed=3)  # another draw: most are in the 4,000, not all
    _check_held_out(_model("nb101-like", {"holdout": "seed"}), "nb101", cells)  # every NB101 cell was held out
    _check_held_out(_model("nb101-like", {"data_fp": "0"}), "nb101", cells)  # models from before the option: "seed"
    _check_held_out(_model("nb101-like", {"holdout": "eval"}), "nb101", eval_cells("nb101"))
    _check_held_out(_model("nb201-like", {"holdout": "eval"}), "nb201", eval_cells("nb201", 30))  # all of NB201 is held out
    with pytest.raises(ValueError, match=r"outside the 4000 networks \(seed 0\) this G-VAE held out"):
        _check_held_out(_model("nb101-like", {"holdout": "eval"}), "nb101", cells)
    # fewer cells with the default seed: the first n of the 4,000, so an "eval" model takes them
    first = eval_cells("nb101", 50)
    assert [c.network_code() for c in first] == [c.network_code() for c in eval_cells("nb101")[:50]]
    _check_held_out(_model("nb101-like", {"holdout": "eval"}), "nb101", first)
    # a model whose labels held nothing of the evaluated space out
    with pytest.raises(ValueError, match="learnt nb101 labels, none of which were held out .* model of nb101-like"):
        _check_held_out(_model("nb101", {"holdout": "eval"}), "nb101", first)
    with pytest.raises(ValueError, match="learnt nb101-like labels, none of which were held out for an evaluation on nb201"):
        _check_held_out(_model("nb101-like", {"holdout": "seed"}), "nb201", eval_cells("nb201", 30))
    with pytest.raises(ValueError, match="holdout None, which keeps nb101 labels in"):
        _check_held_out(_model("nb101-like", {"holdout": None}), "nb101", first)
    with pytest.raises(ValueError, match=r"does not say which labels it was trained on \(data.labelled\)"):
        _check_held_out(_model("nb101-like", None), "nb101", first)  # not taken for a "seed" model


def _pipeline(space: str, *, holdout: str, seed_labels: int = 0) -> PipelineConfig:
    cfg = PipelineConfig(space=space, seed_labels=seed_labels)
    cfg.gvae.holdout = holdout
    return cfg


@pytest.fixture(scope="module")
def gvaes(tmp_path_factory) -> dict[str, str]:
    """Two tiny G-VAEs (params, flops) trained for real: "held_out", of nb201-like (every NB201
    cell kept out of its labels), and "learnt", of nb201 itself (it learnt NB201 labels)."""
    from cgnf_fast.space import nb201
    from cgnf_fast.train.gvae import TrainGVAEConfig, train_gvae
    from cgnf_fast.zc import calibration_batch
    from cgnf_fast.zc.run import score_cells

    root = tmp_path_factory.mktemp("holdout_gvaes")
    store = str(root / "labels.sqlite")
    for space, cells in (("nb201", list(nb201.all_cells())[::700]),
                         ("nb201-like", get_space("nb201-like").sample(20, seed=3, unique=True))):
        score_cells(cells, space=space, proxies=["params", "flops"], store=store, batch=calibration_batch(2),
                    progress=False)
    out = {}
    for name, space in (("held_out", "nb201-like"), ("learnt", "nb201")):
        out[name] = str(root / name)
        train_gvae(TrainGVAEConfig(space=space, store=store, attributes=["params", "flops"], **GVAE_TINY), out[name],
                   backend="torch", progress=False)
    return out


LEARNT = "this G-VAE learnt nb201 labels, none of which were held out for an evaluation on nb201"


@pytest.mark.slow
def test_evaluate_predictor_refuses_a_model_that_learnt_the_evaluated_cells(gvaes, tmp_path: Path) -> None:
    """Through the public API, before any truth is scored (the truth store is never created)."""
    from cgnf_fast.evaluate.predictor import evaluate_predictor

    truth = tmp_path / "truth.sqlite"
    with pytest.raises(ValueError, match=LEARNT):
        evaluate_predictor(gvaes["learnt"], str(truth), "nb201", n=5, progress=False)
    assert not truth.exists()
    # the held-out model is evaluated on the same cells
    assert evaluate_predictor(gvaes["held_out"], str(truth), "nb201", n=5, progress=False)["cells"] == 5


@pytest.mark.slow
def test_evaluate_latent_refuses_any_model_that_learnt_the_evaluated_cells(gvaes, tmp_path: Path) -> None:
    """Every model is checked, not only the first (whose truth is computed), before any scoring."""
    from cgnf_fast.evaluate.predictor import evaluate_latent

    truth = tmp_path / "truth.sqlite"
    for models in ([gvaes["held_out"], gvaes["learnt"]], [gvaes["learnt"], gvaes["held_out"]]):
        with pytest.raises(ValueError, match=LEARNT):
            evaluate_latent(models, str(truth), "nb201", n=5, progress=False)
        assert not truth.exists()
    assert len(evaluate_latent([gvaes["held_out"]] * 2, str(truth), "nb201", n=15, progress=False)["models"]) == 2


@pytest.mark.slow
@pytest.mark.parametrize("command", ["predictor", "latent"])
def test_cli_evaluate_refuses_a_model_that_learnt_the_evaluated_cells(gvaes, command: str, tmp_path: Path) -> None:
    truth = tmp_path / "truth.sqlite"
    models = ["--gvae", gvaes["learnt"]] if command == "predictor" else ["--gvae", gvaes["held_out"], "--gvae",
                                                                            gvaes["learnt"]]
    rc, out, err = run_cli("evaluate", command, *models, "--truth", str(truth), "--n", "5", "--no-progress")
    assert (rc, out) == (2, "")
    assert err.startswith(f"cgnf: error: {LEARNT}") and err.count("\n") == 1
    assert not truth.exists()


def test_old_pipeline_runs_resume_with_the_flags_they_predate(tmp_path: Path) -> None:
    import json

    from cgnf_fast.pipeline import _check_resume

    cfg = PipelineConfig(space="nb101-like").to_dict()
    del cfg["gvae_holdout"], cfg["seed_labels"]  # written before the options existed: it held out "seed"
    (tmp_path / "pipeline.json").write_text(json.dumps({"format": "cgnf_fast.pipeline", "config": cfg}))
    with pytest.raises(ValueError, match=r"gvae_holdout: 'seed' -> 'eval'.*to resume it, add --gvae-holdout seed\)"):
        _check_resume(tmp_path, PipelineConfig(space="nb101-like"))
    _check_resume(tmp_path, _pipeline("nb101-like", holdout="seed"))


def test_pipeline_config_checks_seed_labels() -> None:
    with pytest.raises(ValueError, match="every nb201 cell is in the predictor evaluation set"):
        PipelineConfig(space="nb201-like", seed_labels=5).validate()
    with pytest.raises(ValueError, match="seed_labels need gvae_holdout 'eval'"):
        _pipeline("nb101-like", seed_labels=5, holdout="seed").validate()
    with pytest.raises(ValueError, match="seed_labels must be an int >= 0"):
        PipelineConfig(space="nb101-like", seed_labels=-1).validate()
    cfg = PipelineConfig(space="nb101-like", seed_labels=5)
    cfg.validate()
    assert cfg.gvae_config("s.sqlite").holdout == "eval"
    with pytest.raises(ValueError, match="holdout must be one of"):
        _pipeline("nb101-like", holdout="none").validate()
    with pytest.raises(ValueError, match="gvae_holdout must be one of"):
        _pipeline("nb101-like", holdout="none", seed_labels=5).validate()


#: eval_set_sha256("nb101") of the 4,000 networks the shipped nb101-like G-VAE held out of its labels
SHIPPED_NB101_EVAL_SET = "e535a8ba4ae10078279dcf9c69d261eb9f06904cc8f41083ee2e1a3657aefd13"


def test_the_nb101_evaluation_set_is_the_one_the_shipped_model_held_out() -> None:
    """The set is redrawn from the NB101 sampler at evaluation time: a change to the sampler
    would change it, and the shipped nb101-like model's NB101 figures would then include cells
    it learnt from. A G-VAE trained from now on records the fingerprint, and the evaluation
    refuses a model whose recorded set differs from this install's."""
    assert eval_set_sha256("nb101") == SHIPPED_NB101_EVAL_SET, (
        "the NB101 evaluation draw changed; retrain the shipped nb101-like model (its labels held out the old draw)")
    good = {"holdout": "eval", "held_out_sha256": SHIPPED_NB101_EVAL_SET}
    _check_held_out(_model("nb101-like", good), "nb101", eval_cells("nb101", 20))
    with pytest.raises(ValueError, match="draws a different nb101 evaluation set .* from the one this G-VAE held out"):
        _check_held_out(_model("nb101-like", dict(good, held_out_sha256="0" * 64)), "nb101", eval_cells("nb101", 20))

