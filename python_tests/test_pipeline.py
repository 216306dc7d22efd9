"""`cgnf pipeline`: every stage for real at toy sizes (scoring on the embedded CIFAR-10 images,
G-VAE, flow, export), resumption, refusal of a changed config, and the exported model sampling."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from cgnf_fast.pipeline import PipelineConfig
from cgnf_fast.sampling import export_model
from cgnf_fast.sampling import SamplingModel, sample
from cgnf_fast.io import CheckpointError

from helpers import run_cli

TINY = ["--space", "nb201-like", "--proxies", "params,flops", "--labels", "24", "--stratified", "12",
        "--batch-size", "2", "--gvae-epochs", "2", "--unlabelled", "300", "--seed-space-cells", "50",
        "--heldout", "10", "--latent", "4", "--gvae-hidden", "16", "--gvae-layers", "2", "--gvae-batch", "64",
        "--flow-epochs", "1", "--flow-batch", "64", "--flow-max-cells", "200", "--flow-hidden", "8,8",
        "--no-progress"]


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("pipe") / "run"
    rc, out, err = run_cli("pipeline", "--out", str(d), *TINY)
    assert rc == 0, err
    res = json.loads(out)
    assert res["model"] == str(d / "model") and set(res) >= {"score", "gvae", "flow"}
    return d


@pytest.mark.slow
def test_every_stage_ran_and_the_model_is_exported(run_dir: Path) -> None:
    info = json.loads((run_dir / "pipeline.json").read_text())
    assert info["config"]["labels"] == 24 and info["command"].startswith("cgnf pipeline --out ")
    score = info["stages"]["score"]
    assert 24 <= score["cells"] <= 36  # distinct cells: the random and stratified draws may overlap
    assert score["computed"] + score["already_done"] == score["cells"]
    assert (run_dir / "scores.sqlite").is_file()
    assert (run_dir / "gvae" / "gvae.safetensors").is_file() and (run_dir / "flow" / "flow.safetensors").is_file()
    model = json.loads((run_dir / "model" / "model.json").read_text())
    assert model["space"] == "nb201-like" and model["pipeline"]["flow_hidden"] == [8, 8]
    assert model["command"] == info["command"]
    assert set(model["files"]) == {"gvae/gvae.json", "gvae/gvae.safetensors", "flow/flow.json", "flow/flow.safetensors"}
    for rel, sha in model["files"].items():
        assert _sha(run_dir / "model" / rel) == sha
        assert _sha(run_dir / rel) == sha  # an exact copy of the trained files
    # only what sampling needs: no checkpoints, optimizer state or training data
    assert sorted(p.name for p in (run_dir / "model" / "gvae").iterdir()) == ["gvae.json", "gvae.safetensors"]


@pytest.mark.slow
def test_the_exported_model_samples(run_dir: Path) -> None:
    m = SamplingModel.load(run_dir / "model")
    cells = sample("best", n=5, seed=1, model=m)
    assert len({c.network_code for c in cells}) == 5
    assert set(cells[0].predicted) == {"params", "flops"}


@pytest.mark.slow
def test_rerun_resumes_without_recomputing(run_dir: Path) -> None:
    before = {p: _sha(run_dir / p) for p in ("gvae/gvae.safetensors", "flow/flow.safetensors")}
    losses = json.loads((run_dir / "gvae" / "metrics.json").read_text())["final_losses"]
    nll = json.loads((run_dir / "flow" / "metrics.json").read_text())["final_train_nll_ema"]
    rc, out, err = run_cli("pipeline", "--out", str(run_dir), *TINY)
    assert rc == 0, err
    info = json.loads((run_dir / "pipeline.json").read_text())
    assert info["stages"]["score"]["computed"] == 0  # every label came from the store
    assert {p: _sha(run_dir / p) for p in before} == before
    # nothing was left to train, and the metrics (and the exported provenance) still report the
    # losses the runs ended with (from their checkpoints' last records)
    again = json.loads((run_dir / "model" / "model.json").read_text())["gvae_metrics"]["final_losses"]
    assert set(losses) == {"rec", "kl", "trip", "pred"} and set(again) == set(losses)
    assert all(again[k] == pytest.approx(losses[k], rel=1e-3, abs=1e-5) for k in losses)
    flow_again = json.loads((run_dir / "flow" / "metrics.json").read_text())["final_train_nll_ema"]
    assert nll is not None and flow_again == pytest.approx(nll, rel=1e-3, abs=1e-5)


@pytest.mark.slow
def test_changed_config_is_refused(run_dir: Path) -> None:
    args = list(TINY)
    args[args.index("--labels") + 1] = "25"
    rc, _, err = run_cli("pipeline", "--out", str(run_dir), *args)
    assert rc == 2 and "different config (labels: 24 -> 25)" in err


def test_bad_arguments(tmp_path: Path) -> None:
    rc, _, err = run_cli("pipeline", "--out", str(tmp_path / "x"), "--space", "nb999")
    assert rc == 2 and "nb999" in err
    rc, _, err = run_cli("pipeline", "--out", str(tmp_path / "y"), "--space", "nb201-like", "--proxies", "synflow,bogus")
    assert rc == 2 and "bogus" in err
    with pytest.raises(ValueError, match="labels \\+ stratified must be at least 2"):
        PipelineConfig(space="nb201-like", labels=1, stratified=0).validate()
    with pytest.raises(CheckpointError):
        export_model(tmp_path / "nothing", tmp_path / "model")
    assert not (tmp_path / "model").exists()
    # every stage's settings are checked before any work
    rc, _, err = run_cli("pipeline", "--out", str(tmp_path / "z"), "--space", "nb201-like", "--flow-hidden", "0")
    assert rc == 2 and "hidden must be a non-empty list of ints >= 1" in err and not (tmp_path / "z").exists()
    rc, _, err = run_cli("pipeline", "--out", str(tmp_path / "z"), "--space", "nb201-like", "--batch-size", "999")
    assert rc == 2 and "the embedded calibration batch has 250 images" in err


@pytest.mark.slow
def test_resume_from_another_directory_and_foreign_label_groups(run_dir: Path, tmp_path: Path,
                                                                 monkeypatch) -> None:
    import os

    monkeypatch.chdir(run_dir.parent)
    rc, _, err = run_cli("pipeline", "--out", os.path.relpath(run_dir), *TINY)
    assert rc == 0, err  # the same run, named relative to another directory
    # a store whose largest label group comes from other images is refused before training
    import shutil

    from cgnf_fast.zc.store import ScoreStore

    d = tmp_path / "foreign"
    d.mkdir()
    shutil.copy(run_dir / "scores.sqlite", d / "scores.sqlite")
    with ScoreStore(str(d / "scores.sqlite")) as st:
        rows = list(st.rows())
        for r in rows:  # twice as many cells under other images: the largest group is not this run's
            for code in (r["code"], r["code"] + 10**15):
                st.put(r["space"], code, json.dumps(r["cell"]), "other-images", r["seed"], r["code_version"],
                       {r["proxy"]: r["value"]})
    rc, _, err = run_cli("pipeline", "--out", str(d / "run"), "--store", str(d / "scores.sqlite"), *TINY)
    assert rc == 2 and "is not this pipeline's" in err


# -- cgnf evaluate sampler (on the pipeline's toy model) -----------------------------------
@pytest.mark.slow
def test_evaluate_sampler_cli(run_dir: Path, tmp_path: Path) -> None:
    png = tmp_path / "cond.png"
    rc, out, err = run_cli("evaluate", "sampler", "--model", str(run_dir / "model"), "--attributes", "params",
                            "--levels=-1,0,1", "--n", "4", "--draws", "50", "--batches", "2", "--png", str(png),
                            "--json", "--no-progress")
    assert rc == 0, err
    r = json.loads(out)
    c = r["conditioning"]["params"]
    assert [x["level_std"] for x in c["levels"]] == [-1.0, 0.0, 1.0]
    targets = [x["target"] for x in c["levels"]]
    assert targets == sorted(targets) and targets[0] < r["reference_predicted"]["params"] < targets[2]
    assert len(c["achieved"]) == 12 and all(v > 0 for v in c["achieved"])
    assert -1.0 <= c["spearman_target_achieved"] <= 1.0
    b = r["batch"]
    assert b["batch"] == 50 and 0 <= b["valid"] <= 50 and b["unique_networks"] <= b["valid"]
    assert b["seed_space"] == "nb201" and 0 <= b["novel"] <= b["unique_networks"]
    bs = r["batches"]
    assert bs["seeds"] == [0, 1] and bs["runs"][0] == b and bs["runs"][1]["batch"] == 50
    u = [x["uniqueness"] for x in bs["runs"]]
    assert bs["uniqueness_min"] == min(u) and abs(bs["uniqueness_mean"] - sum(u) / 2) < 1e-12
    assert png.stat().st_size > 10_000
    from cgnf_fast.evaluate.sampler import evaluate_sampler

    with pytest.raises(ValueError, match="batches must be an int >= 1"):
        evaluate_sampler(str(run_dir / "model"), attributes=["params"], batches=0, progress=False)
    rc, out, err = run_cli("evaluate", "sampler", "--model", str(run_dir / "model"), "--attributes", "synflow",
                            "--no-progress")
    assert rc == 2 and "conditioned on ['params', 'flops'] only" in err
    ref = json.dumps({"matrix": [[0, 1, 1, 0], [0, 0, 0, 1], [0, 0, 0, 1], [0, 0, 0, 0]],
                      "ops": ["input", "nor_conv_3x3", "nor_conv_1x1", "output"]})
    rc, out, err = run_cli("evaluate", "sampler", "--model", str(run_dir / "model"), "--reference", ref,
                            "--attributes", "params", "--levels=-1,1", "--n", "2", "--draws", "0", "--json",
                            "--no-progress")
    assert rc == 0, err
    assert json.loads(out)["reference"]["ops"] == ["input", "nor_conv_3x3", "nor_conv_1x1", "output"]
    # the model is named relative to where the command ran, not by this machine's absolute path
    assert json.loads(out)["model"] == os.path.relpath(run_dir / "model")


@pytest.mark.slow
def test_measured_zc_scores_equal_direct_scoring(run_dir: Path, tmp_path: Path) -> None:
    from cgnf_fast import get_space, zc
    from cgnf_fast.evaluate.sampler import measure
    from cgnf_fast.zc import calibration_batch

    m = SamplingModel.load(run_dir / "model")
    cells = get_space("nb201-like").sample(3, seed=5, unique=True)
    store = str(tmp_path / "m.sqlite")
    got = measure(cells, "nwot", space="nb201-like", model=m, store=store)
    want = [zc.score(c, ["nwot"], skeleton="nb201", batch=calibration_batch(2), seed=0)["nwot"] for c in cells]
    assert got.tolist() == pytest.approx(want, rel=1e-9)
    assert measure(cells, "nwot", space="nb201-like", model=m, store=store).tolist() == got.tolist()  # cached
    with pytest.raises(ValueError, match="needs a score store"):
        measure(cells, "nwot", space="nb201-like", model=m, store=None)
    params = measure(cells, "params", space="nb201-like", model=m, store=None)
    from cgnf_fast import nets
    assert params.tolist() == [nets.count_params(c, skeleton="nb201") / 1e6 for c in cells]
