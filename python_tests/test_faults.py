"""Fault injection: interrupts that never change results.

Ctrl-C (SIGINT) is sent from inside a training step -- just before the optimizer step, and
between ``opt.step()`` and the loop's step counter, where a checkpoint used to be saved with
weights one step ahead of its recorded step -- then the run is resumed; the final weights and
the reported loss averages must equal an uninterrupted run's bit for bit.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch

from cgnf_fast.io import load_json, load_tensors
from cgnf_fast.train.flow import TrainFlowConfig, train_flow
from cgnf_fast.train.gvae import TrainGVAEConfig, train_gvae

from helpers import GVAE_TINY, tiny_gvae, tiny_label_store

FLOW_TINY = dict(hidden=[16, 16], batch=64, epochs=2, lr=1e-2, ckpt_every=100, max_cells=300, val_fraction=0.2,
                 sanity_n=16)
#: (where, which optimizer step) the interrupt lands: before the update, or after it and before
#: the loop counts the step
POINTS = [("before", 2), ("after", 2), ("after", 7), ("before", 11)]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("faults")


@pytest.fixture(scope="module")
def labels(root: Path) -> str:
    return tiny_label_store(str(root / "labels.sqlite"))


@pytest.fixture(scope="module")
def gvae_dir(root: Path) -> Path:
    return Path(tiny_gvae(root, root / "gvae"))


def _interrupt_at(monkeypatch, where: str, call: int) -> None:
    """Sends SIGINT to this process from inside the ``call``-th ``Adam.step``, ``where`` before or after the update."""
    real = torch.optim.Adam.step
    calls = [0]

    def step(self, *args, **kwargs):
        calls[0] += 1
        if where == "before" and calls[0] == call:
            os.kill(os.getpid(), signal.SIGINT)
        out = real(self, *args, **kwargs)
        if where == "after" and calls[0] == call:
            os.kill(os.getpid(), signal.SIGINT)
        return out

    monkeypatch.setattr(torch.optim.Adam, "step", step)


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    return sorted(k for k in a if not torch.equal(a[k], b[k])) + sorted(set(a) ^ set(b))


@pytest.mark.slow
@pytest.mark.parametrize("where,call", POINTS)
def test_ctrl_c_inside_a_gvae_step_changes_nothing(labels: str, root: Path, tmp_path: Path, monkeypatch,
                                                   where: str, call: int) -> None:
    cfg = dict(space="nb201-like", store=labels, attributes=["nwot", "params", "flops"], **GVAE_TINY)
    ref = root / "gvae-uninterrupted"
    if not (ref / "gvae.safetensors").exists():
        train_gvae(TrainGVAEConfig(**cfg), str(ref), backend="torch", progress=False)
    out = tmp_path / "run"
    _interrupt_at(monkeypatch, where, call)
    with pytest.raises(KeyboardInterrupt):
        train_gvae(TrainGVAEConfig(**cfg), str(out), backend="torch", progress=False)
    monkeypatch.undo()
    saved = load_json(out / "checkpoint.json")["step"]
    assert saved == call  # the step in flight finished; nothing past it was saved
    train_gvae(TrainGVAEConfig(**cfg), str(out), backend="torch", progress=False)
    assert _same(load_tensors(out / "gvae.safetensors")[0], load_tensors(ref / "gvae.safetensors")[0]) == []
    assert load_json(out / "metrics.json")["final_losses"] == load_json(ref / "metrics.json")["final_losses"]


@pytest.mark.slow
@pytest.mark.parametrize("where,call", POINTS[:3])
def test_ctrl_c_inside_a_flow_step_changes_nothing(gvae_dir: Path, root: Path, tmp_path: Path, monkeypatch,
                                                   where: str, call: int) -> None:
    ref = root / "flow-uninterrupted"
    if not (ref / "flow.safetensors").exists():
        train_flow(TrainFlowConfig(**FLOW_TINY), gvae_dir, ref, progress=False)
    out = tmp_path / "run"
    _interrupt_at(monkeypatch, where, call)
    with pytest.raises(KeyboardInterrupt):
        train_flow(TrainFlowConfig(**FLOW_TINY), gvae_dir, out, progress=False)
    monkeypatch.undo()
    assert load_json(out / "checkpoint.json")["step"] == call
    train_flow(TrainFlowConfig(**FLOW_TINY), gvae_dir, out, progress=False)
    assert _same(load_tensors(out / "flow.safetensors")[0], load_tensors(ref / "flow.safetensors")[0]) == []
    assert (load_json(out / "metrics.json")["final_train_nll_ema"]
            == load_json(ref / "metrics.json")["final_train_nll_ema"])


@pytest.mark.slow
def test_a_second_ctrl_c_stops_at_once_without_saving(labels: str, tmp_path: Path, monkeypatch) -> None:
    """Two Ctrl-Cs inside one step: the run stops inside the step and the checkpoint on disk is
    the last periodic one (never a half-updated state)."""
    cfg = TrainGVAEConfig(space="nb201-like", store=labels, attributes=["nwot", "params", "flops"],
                          **{**GVAE_TINY, "ckpt_every": 4})
    real = torch.optim.Adam.step
    calls = [0]

    def step(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] == 6:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    out = tmp_path / "run"
    before = signal.getsignal(signal.SIGINT)  # (SIG_IGN when pytest runs as a shell's background job)
    with pytest.raises(KeyboardInterrupt):
        train_gvae(cfg, str(out), backend="torch", progress=False)
    assert load_json(out / "checkpoint.json")["step"] == 4
    assert signal.getsignal(signal.SIGINT) is before  # the handler is restored


# -- corruption that never goes unnoticed ---------------------------------------------------------
def _flip_bit(path: Path, offset: int = -100) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.fixture()
def shipped(tmp_path: Path) -> Path:
    """A copy of the shipped nb201-like model directory (gvae/, flow/, model.json)."""
    import shutil

    from cgnf_fast.sampling import default_model_dir

    d = tmp_path / "model"
    shutil.copytree(default_model_dir("nb201-like"), d)
    return d


def test_model_directories_are_verified(shipped: Path) -> None:
    """A flipped bit in any file, a missing or garbled model.json: one CheckpointError naming the
    file (a flipped bit in flow.safetensors used to give other cells, exit 0). ``verify=False``
    loads a directory without a manifest; a manifest that is there is always checked."""
    import json
    import shutil

    from cgnf_fast.io import CheckpointError
    from cgnf_fast.sampling import SamplingModel

    SamplingModel.load(shipped)  # intact
    for name in ("flow/flow.safetensors", "gvae/gvae.safetensors", "flow/flow.json"):
        broken = shipped.parent / name.replace("/", "_")
        shutil.copytree(shipped, broken)
        _flip_bit(broken / name, -3 if name.endswith(".json") else -100)
        with pytest.raises(CheckpointError, match=f"{name.split('/')[1]}: sha256 .* does not match"):
            SamplingModel.load(broken)
        with pytest.raises(CheckpointError, match="does not match"):
            SamplingModel.load(broken, verify=False)
    (shipped / "model.json").write_text("[1, 2, 3]")
    with pytest.raises(CheckpointError, match="not a cgnf_fast model manifest"):
        SamplingModel.load(shipped)
    (shipped / "model.json").write_text(json.dumps({"format": "cgnf_fast.model", "files": {}}))
    with pytest.raises(CheckpointError, match="lists no sha256 for gvae/gvae.json"):
        SamplingModel.load(shipped)
    (shipped / "model.json").unlink()
    with pytest.raises(CheckpointError, match="no model.json.*--unverified"):
        SamplingModel.load(shipped)
    SamplingModel.load(shipped, verify=False)


@pytest.mark.slow
def test_runs_record_their_weights_and_checkpoints_their_contents(labels: str, tmp_path: Path) -> None:
    """A trained run's config records its weights' sha256, so a model directory made of runs
    (no model.json) is verified too; a flipped byte in a training checkpoint is refused on resume
    (it used to be accepted silently)."""
    from cgnf_fast.io import CheckpointError
    from cgnf_fast.models import GraphVAE

    cfg = TrainGVAEConfig(space="nb201-like", store=labels, attributes=["nwot", "params", "flops"],
                          **{**GVAE_TINY, "epochs": 2, "ckpt_every": 3})
    out = tmp_path / "run"
    train_gvae(cfg, str(out), backend="torch", progress=False)
    assert "weights_sha256" in load_json(out / "gvae.json")
    GraphVAE.load(out)
    _flip_bit(out / "gvae.safetensors")
    with pytest.raises(CheckpointError, match="gvae.safetensors: sha256 .* does not match .*gvae.json"):
        GraphVAE.load(out)
    # a training checkpoint: flip a byte in its tensor data, then resume a longer run from it
    _flip_bit(out / "checkpoint.safetensors")
    longer = TrainGVAEConfig(**{**cfg.to_dict(), "epochs": 3})
    with pytest.raises(CheckpointError, match="checkpoint.safetensors: its tensors or state do not match"):
        train_gvae(longer, str(out), backend="torch", progress=False)


@pytest.mark.slow
def test_a_failed_start_changes_nothing_on_disk(labels: str, tmp_path: Path) -> None:
    """A mistyped --store or an unknown attribute fails before anything is written: no run
    directory, no empty SQLite file at the mistyped path, and the corrected command then runs
    (it used to be refused: "holds a G-VAE run with a different config")."""
    out = tmp_path / "run"
    typo = tmp_path / "lables.sqlite"
    base = dict(space="nb201-like", attributes=["nwot", "params", "flops"], **{**GVAE_TINY, "epochs": 1})
    with pytest.raises(ValueError, match="no such file"):
        train_gvae(TrainGVAEConfig(store=str(typo), **base), str(out), backend="torch", progress=False)
    assert not typo.exists() and not out.exists()
    with pytest.raises(ValueError, match="synflow"):
        train_gvae(TrainGVAEConfig(store=labels, **{**base, "attributes": ["synflow"]}), str(out), backend="torch",
                   progress=False)
    assert not out.exists()
    train_gvae(TrainGVAEConfig(store=labels, **base), str(out), backend="torch", progress=False)
    assert (out / "gvae.safetensors").exists()


def test_cli_refuses_a_tampered_model_in_one_line(shipped: Path) -> None:
    """`cgnf sample --model DIR` on a directory with a flipped bit, or without its model.json:
    one 'cgnf: error:' line (exit 2); --unverified loads the one without a manifest."""
    from helpers import run_cli

    (shipped / "model.json").unlink()
    rc, out, err = run_cli("sample", "--model", str(shipped), "--n", "2")
    assert rc == 2 and err.count("\n") == 1 and err.startswith("cgnf: error:") and "--unverified" in err, err
    rc, out, err = run_cli("sample", "--model", str(shipped), "--n", "2", "--unverified")
    assert rc == 0, err
    _flip_bit(shipped / "flow" / "flow.safetensors")
    rc, out, err = run_cli("sample", "--model", str(shipped), "--n", "2", "--unverified")
    assert rc == 0  # (no manifest and no recorded sha256: nothing can tell; that is what --unverified means)
    rc, out, err = run_cli("sample", "--unverified", "--n", "2")
    assert rc == 2 and "--unverified needs --model" in err


@pytest.mark.slow
def test_parallel_scoring_is_quiet_and_leaves_no_temp_folders(tmp_path: Path) -> None:
    """`cgnf zc score --workers 2` prints nothing on stderr ("leaked semaphore" warnings came on
    every such run: the pool's workers were terminated, not joined) and leaves no pymp-* folder."""
    import subprocess
    import sys

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    r = subprocess.run([sys.executable, "-m", "cgnf_fast", "zc", "score", "nb201-like", "--n", "6", "--proxies",
                        "params,synflow", "--store", str(tmp_path / "s.sqlite"), "--workers", "2", "--no-progress"],
                       capture_output=True, text=True, timeout=600, cwd=tmp_path, env={**os.environ, "TMPDIR": str(tmp)})
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert list(tmp.iterdir()) == []


@pytest.mark.slow
def test_sigterm_leaves_no_partial_file(tmp_path: Path) -> None:
    """SIGTERM during `cgnf zc export` (writing NAME.partial): the command exits 143 after its
    cleanup ran, so neither the output nor a stray .partial is left (the default SIGTERM action
    skipped every finally block)."""
    import subprocess
    import sys
    import time

    from cgnf_fast.zc import ScoreStore

    store = tmp_path / "s.sqlite"
    with ScoreStore(store) as st:  # a large store, so that the export takes a while
        for code in range(60_000):
            st.put("nb201-like", code, '{"matrix": [[0, 1], [0, 0]], "ops": ["input", "output"]}', "fp", 0, "v",
                   {"params": float(code)})
    out = tmp_path / "z.csv"
    proc = subprocess.Popen([sys.executable, "-m", "cgnf_fast", "zc", "export", "--store", str(store), "--out",
                             str(out)], stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    partial = Path(f"{out}.partial")
    try:
        deadline = time.monotonic() + 120
        while not partial.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        assert partial.exists(), "the export finished before it could be interrupted"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert proc.returncode == 143 and "cgnf: terminated" in err, err
    assert not partial.exists() and not out.exists()


def test_an_impossible_condition_is_one_line() -> None:
    """`cgnf sample --condition nwot=1e30` (the flow's solver underflowed: a 39-line traceback),
    `synflow=+1000%` (its params followed to 8M, beyond the space's 1.53M: it went through
    silently) and `params=>=1.6M` (ten rounds before failing): each one line, up front."""
    from helpers import run_cli

    for condition, message in (("nwot=1e30", "condition 'nwot': the target (1e30) is 1.08e+29 standard deviations"),
                               ("synflow=+1000%", "condition 'synflow': the target (+1000%) is"),
                               ("params=>=1.6M", "'>=1.6M' is impossible in space 'nb201-like': its largest network "
                                                 "has 1.5315M params")):
        rc, out, err = run_cli("sample", "--condition", condition, "--n", "3")
        assert rc == 2 and out == "" and err.count("\n") == 1, err
        assert err.startswith("cgnf: error: ") and message in err, err


@pytest.mark.parametrize("name", ["flow/flow.safetensors", "gvae/gvae.safetensors", "gvae/gvae.json"])
def test_random_byte_flips_in_model_files_are_all_caught(shipped: Path, name: str) -> None:
    """Twenty random single-byte changes per file, each caught on load (fixed seed)."""
    import random

    from cgnf_fast.io import CheckpointError
    from cgnf_fast.sampling import SamplingModel

    path = shipped / name
    original = path.read_bytes()
    rng = random.Random(name)
    for _ in range(20):
        data = bytearray(original)
        data[rng.randrange(len(data))] ^= rng.randrange(1, 256)
        path.write_bytes(bytes(data))
        with pytest.raises(CheckpointError):
            SamplingModel.load(shipped)
    path.write_bytes(original)
    SamplingModel.load(shipped)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [11, 12, 13])
def test_ctrl_c_at_random_steps_changes_nothing(labels: str, root: Path, tmp_path: Path, monkeypatch,
                                                seed: int) -> None:
    """The longer version: Ctrl-C at a step and side of the update drawn at random (fixed seeds)."""
    import random

    rng = random.Random(seed)
    where, call = rng.choice(["before", "after"]), rng.randrange(1, 12)
    test_ctrl_c_inside_a_gvae_step_changes_nothing(labels, root, tmp_path, monkeypatch, where, call)
