"""G-VAE: cell codec, losses, checkpoints, training (resumable, deterministic), API and CLI errors."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cgnf_fast import get_space
from cgnf_fast.models.api import GraphVAE
from cgnf_fast.models.codec import CellCodec, canonical_cell, code_to_graph
from cgnf_fast.models.gvae import GVAE, GVAEConfig, PathPredictor, mine_triplets, prune_layout, triplet_loss
from cgnf_fast.reference import dag as ref
from cgnf_fast.space import Cell
from cgnf_fast.io import CheckpointError, load_module, load_tensors, save_tensors
from cgnf_fast.train.gvae import TrainGVAEConfig, train_gvae

from helpers import dags, permute, run_cli, topo_permutations

NB201_OPS = get_space("nb201-like").ops


# -- codec ---------------------------------------------------------------------------------
@settings(max_examples=150, deadline=None)
@given(st.data())
def test_codec_round_trip_and_permutation_invariance(data) -> None:
    cell = data.draw(dags(ops=NB201_OPS))
    codec = CellCodec(get_space("nb201-like"))
    adj, ops = codec.encode([cell])
    back = codec.decode(adj, ops)[0]
    assert back.canonical_code() == cell.pruned(allow_zero=True).canonical_code()
    other = permute(cell, data.draw(topo_permutations(cell)))  # any topological renumbering
    a2, o2 = codec.encode([other])
    assert torch.equal(a2, adj) and torch.equal(o2, ops)


@settings(max_examples=100, deadline=None)
@given(dags(ops=NB201_OPS))
def test_code_to_graph_inverts_the_canonical_code(cell: Cell) -> None:
    p = cell.pruned(allow_zero=True)
    adj, labels = code_to_graph(p.canonical_code())
    assert ref.canonical_code(adj, labels) == p.canonical_code()
    assert canonical_cell(cell).canonical_code() == p.canonical_code()


def test_codec_zero_cell_and_errors() -> None:
    codec = CellCodec(get_space("nb201-like"))
    adj, ops = codec.encode([Cell.zero()])
    assert adj.sum() == 0 and ops[0, 1:-1].sum() == 0
    assert codec.decode(adj, ops)[0].is_zero
    with pytest.raises(ValueError, match="not in space"):
        codec.encode([Cell([[0, 1, 0], [0, 0, 1], [0, 0, 0]], ["input", "conv3x3-bn-relu", "output"])])
    with pytest.raises(ValueError, match="not a structural canonical code"):
        code_to_graph(1)


# -- losses --------------------------------------------------------------------------------
def test_triplets_order_positives_before_negatives() -> None:
    g = torch.Generator().manual_seed(0)
    t = torch.randn(64, 3, generator=g)
    a, p, n = mine_triplets(t, g)
    assert a.numel() > 40
    dp = (t[a] - t[p]).norm(dim=1)
    dn = (t[a] - t[n]).norm(dim=1)
    assert bool((dp < dn).all())
    assert not bool(((a == p) | (a == n) | (p == n)).any())


def test_triplet_loss_is_zero_when_latents_mirror_scores_and_positive_when_reversed() -> None:
    g = torch.Generator().manual_seed(1)
    t = torch.randn(128, 1, generator=g).double()
    good = torch.cat([t * 100, torch.zeros_like(t)], 1)  # latent distances = 100 x ZC distances
    assert triplet_loss(good, t, margin=0.01, generator=torch.Generator().manual_seed(2)).item() < 0.05
    bad = torch.randn(128, 2, generator=g).double()
    assert triplet_loss(bad, t, margin=1.0, generator=torch.Generator().manual_seed(2)).item() > 0.3


# -- the path predictor --------------------------------------------------------------------
def _path_sums(cell: Cell, ops: list[str], gains: torch.Tensor) -> list[float]:
    """Brute force: per channel, the sum over input->output paths of the product of the
    gains of the paths' op vertices (every path enumerated)."""
    p = cell.pruned(allow_zero=True)
    m, n = p.matrix, p.num_nodes
    out = []
    for c in range(gains.shape[0]):
        total = 0.0
        stack = [(0, 1.0)]
        while stack:
            v, prod = stack.pop()
            if v == n - 1:
                total += prod
                continue
            for w in range(v + 1, n):
                if m[v, w]:
                    stack.append((w, prod if w == n - 1 else prod * float(gains[c, ops.index(p.ops[w])])))
        out.append(total)
    return out


@settings(max_examples=60, deadline=None)
@given(st.lists(dags(ops=NB201_OPS), min_size=1, max_size=6))
def test_path_features_are_the_path_sums_of_the_cell(cells: list[Cell]) -> None:
    cfg = GVAEConfig(space="nb201-like", num_nodes=8, ops=list(NB201_OPS), attributes=["a"], predictor="paths",
                     path_channels=3)
    torch.manual_seed(0)
    pp = PathPredictor(cfg).double()
    adj, ops = CellCodec(get_space("nb201-like")).encode(cells)
    f = pp.features(*pp.features_of_layout(adj.double(), ops)).detach()
    gains = pp.log_gain.detach().exp()
    for i, c in enumerate(cells):
        want = np.log(np.array(_path_sums(c, list(NB201_OPS), gains)) + PathPredictor.EPS)
        np.testing.assert_allclose(f[i, :3].numpy(), want, rtol=1e-9, atol=1e-9)
        p = c.pruned(allow_zero=True)
        counts = [sum(o == op for o in p.ops) for op in NB201_OPS]
        np.testing.assert_array_equal(f[i, 3:3 + len(NB201_OPS)].numpy(), counts)
        assert f[i, -1].item() == p.num_edges


NB101_OPS = tuple(get_space("nb101-like").ops)


@settings(max_examples=60, deadline=None)
@given(st.lists(dags(ops=NB101_OPS, max_nodes=7), min_size=1, max_size=6))
def test_degree_features_count_the_output_split(cells: list[Cell]) -> None:
    cfg = GVAEConfig(space="nb101-like", num_nodes=7, ops=list(NB101_OPS), attributes=["a"], predictor="paths",
                     path_channels=2, degree_features=True)
    pp = PathPredictor(cfg).double()
    adj, ops = CellCodec(get_space("nb101-like")).encode(cells)
    f = pp.features(*pp.features_of_layout(adj.double(), ops)).detach().numpy()
    K = len(NB101_OPS)
    assert f.shape == (len(cells), 2 + K + 1 + 2 * K + 6)
    for i, c in enumerate(cells):
        p = c.pruned(allow_zero=True)
        m, n = p.matrix, p.num_nodes
        feeding = [v for v in range(1, n - 1) if m[v, n - 1]]
        k = max(len(feeding), 1)
        counts = np.array([sum(o == op for o in p.ops) for op in NB101_OPS], dtype=float)
        in_ops = sum(m[0, v] for v in range(1, n - 1))
        want = [k, 1 / k, 1 / k ** 2, m[0, 1:].sum(), m[0, n - 1] if n > 1 else 0,
                *[sum(p.ops[v] == op for v in feeding) for op in NB101_OPS], *(counts / k ** 2), in_ops / k]
        np.testing.assert_allclose(f[i, 2 + K + 1:], want, rtol=1e-12, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from(["nb201-like", "nb101-like"]))
def test_pruned_layouts_give_the_features_of_the_pruned_cells(seed: int, space: str) -> None:
    """prune_layout on arbitrary slot layouts (dangling vertices, absent slots with edges, no
    path at all) == the codec's layout of the pruned cell, as the graph predictor sees them."""
    sp = get_space(space)
    codec = CellCodec(sp)
    N, K = sp.max_nodes, len(sp.ops)
    g = torch.Generator().manual_seed(seed)
    adj = (torch.rand(64, N, N, generator=g) < 0.35).float().triu(1)
    ops = torch.randint(0, K + 1, (64, N), generator=g)
    ops[:, 0], ops[:, -1] = K + 1, K + 2
    cfg = GVAEConfig(space=space, num_nodes=N, ops=list(sp.ops), attributes=["a"], predictor="graph",
                     path_channels=3, degree_features=space == "nb101-like")
    pp = PathPredictor(cfg).double()
    pa, po = prune_layout(adj, ops)
    cells = codec.decode(adj, ops)  # pruned (the zero cell when nothing connects)
    ca, co = codec.encode(cells)
    f_pruned = pp.features(*pp.features_of_layout(pa.double(), po)).detach()
    f_cells = pp.features(*pp.features_of_layout(ca.double(), co)).detach()
    torch.testing.assert_close(f_pruned, f_cells, rtol=1e-9, atol=1e-9)
    for i, c in enumerate(cells):  # same vertex and edge sets, up to the slot order
        assert int((po[i, 1:-1] != 0).sum()) == c.num_nodes - 2 and int(pa[i].sum()) == c.num_edges


def test_path_predictor_reads_the_decoded_graph_without_training_the_decoder() -> None:
    torch.manual_seed(0)
    cfg = GVAEConfig(space="nb201-like", num_nodes=8, ops=list(NB201_OPS), hidden=8, layers=1, latent=4,
                     dec_hidden=16, pred_hidden=8, attributes=["a", "b"], predictor="paths", path_channels=4)
    m = GVAE(cfg)
    z = torch.randn(5, 4, requires_grad=True)
    out = m.predict_std(z)
    op_logits, edge_logits = m.decode_logits(z)
    torch.testing.assert_close(out, m.predictor(op_logits.softmax(-1), edge_logits.sigmoid()))
    out.sum().backward()
    assert z.grad is None and all(p.grad is None for p in m.decoder.parameters())
    assert m.predictor.log_gain.grad is not None
    with pytest.raises(ValueError, match="predictor must be one of"):
        GVAE(GVAEConfig(space="nb201-like", num_nodes=8, ops=list(NB201_OPS), predictor="mlp"))
    with pytest.raises(ValueError, match="path_channels"):
        GVAE(GVAEConfig(space="nb201-like", num_nodes=8, ops=list(NB201_OPS), path_channels=0))
    # configs written before the option existed are MLP-on-z models
    old = {k: v for k, v in cfg.to_dict().items() if k not in ("predictor", "path_channels")}
    assert GVAEConfig.from_dict(old).predictor == "latent"


# -- checkpoints ---------------------------------------------------------------------------
def _tiny_model() -> GVAE:
    return GVAE(GVAEConfig(space="nb201-like", num_nodes=8, ops=list(NB201_OPS), hidden=8, layers=1, latent=4,
                           dec_hidden=16, pred_hidden=8, attributes=["params"]))


def test_checkpoint_round_trip_and_clear_errors(tmp_path: Path) -> None:
    m = _tiny_model()
    path = tmp_path / "w.safetensors"
    save_tensors(path, m.state_dict())
    m2 = _tiny_model()
    tens, _ = load_tensors(path)
    load_module(m2, tens, str(path))
    for (k, v), (_, v2) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(v, v2), k
    data = path.read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_tensors(tmp_path / "trunc.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError):
        load_tensors(tmp_path / "junk.safetensors")
    with pytest.raises(CheckpointError, match="no such file"):
        load_tensors(tmp_path / "missing.safetensors")
    big = GVAE(GVAEConfig(space="nb201-like", num_nodes=8, ops=list(NB201_OPS), hidden=16, layers=1, latent=4,
                          dec_hidden=16, pred_hidden=8, attributes=["params"]))
    with pytest.raises(CheckpointError, match="shapes do not match"):
        load_module(big, tens, str(path))


# -- training ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def label_store(tmp_path_factory) -> str:
    """40 nb201-like cells with real params/flops labels (fast to compute)."""
    from cgnf_fast.zc import calibration_batch
    from cgnf_fast.zc.run import score_cells

    path = str(tmp_path_factory.mktemp("store") / "labels.sqlite")
    cells = get_space("nb201-like").sample(40, seed=3, unique=True)
    score_cells(cells, space="nb201-like", proxies=["params", "flops"], store=path, batch=calibration_batch(2),
                progress=False)
    return path


TINY = dict(n_unlabelled=600, include_seed_space=100, heldout=50, hidden=16, layers=2, latent=4, dec_hidden=32,
            pred_hidden=16, batch=128, labelled_batch=16, epochs=3, ckpt_every=2)


def _final_weights(run: Path) -> dict[str, torch.Tensor]:
    return load_tensors(run / "gvae.safetensors")[0]


@pytest.mark.slow
def test_train_writes_a_loadable_model_and_metrics(label_store: str, tmp_path: Path) -> None:
    cfg = TrainGVAEConfig(space="nb201-like", store=label_store, **TINY)
    metrics = train_gvae(cfg, str(tmp_path / "run"), backend="torch", progress=False)
    for f in ("train.json", "data.safetensors", "checkpoint.safetensors", "gvae.safetensors", "gvae.json",
              "metrics.json"):
        assert (tmp_path / "run" / f).is_file(), f
    assert set(metrics) >= {"held_reconstruction", "prior", "val_predictor_error_pct"}
    info = json.loads((tmp_path / "run" / "data.json").read_text())
    assert info["labelled"]["attributes"] == ["params", "flops"]
    vae = GraphVAE.load(tmp_path / "run", backend="torch")
    assert (vae.info["format"], vae.info["version"]) == ("cgnf_fast.gvae", 1)
    cells = get_space("nb201-like").sample(5, seed=9)
    z = vae.encode(cells)
    assert z.shape == (5, 4)
    assert len(vae.decode(z)) == 5
    # the repairing decoder (sampling's) gives members of the space, and the most likely layout
    # itself wherever that is one
    rz = torch.randn(64, 4, generator=torch.Generator().manual_seed(4))
    raw, fixed = vae.decode(rz, repair=False), vae.decode(rz)
    assert all(c is not None and not c.is_zero and vae.space.contains(c) for c in fixed)
    assert all(f == r for f, r in zip(fixed, raw) if not r.is_zero and vae.space.contains(r))
    assert any(r.is_zero for r in raw) or all(f == r for f, r in zip(fixed, raw))
    pred = vae.predict(cells)
    assert set(pred) == {"params", "flops"} and pred["params"].shape == (5,)
    # the graph predictor reads a latent through its most likely decoded cell
    assert vae.cfg.predictor == "graph"
    zr = torch.randn(64, 4, generator=torch.Generator().manual_seed(3))
    back = vae.decode(zr, repair=False)
    ok = [i for i, c in enumerate(back) if not c.is_zero and vae.space.contains(c)]
    assert len(ok) > 10
    from_z, from_cells = vae.predict(zr[ok]), vae.predict([back[i] for i in ok])
    for a in ("params", "flops"):
        np.testing.assert_allclose(from_z[a], from_cells[a], rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match=r"z must have shape \[B, 4\]"):
        vae.decode(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="not in space"):
        vae.encode([Cell([[0, 1, 0], [0, 0, 1], [0, 0, 0]], ["input", "conv3x3-bn-relu", "output"])])
    # a rerun with another config into the same directory is refused
    with pytest.raises(ValueError, match="different config"):
        train_gvae(TrainGVAEConfig(space="nb201-like", store=label_store, **{**TINY, "latent": 8}),
                   str(tmp_path / "run"), backend="torch", progress=False)


@pytest.mark.slow
def test_latent_predictor_trains_and_old_runs_resume_as_latent(label_store: str, tmp_path: Path) -> None:
    run = tmp_path / "run"
    # trained as before the predictor options existed: one learning rate, an MLP on z
    cfg = TrainGVAEConfig(space="nb201-like", store=label_store, predictor="latent", predictor_lr=None,
                          **{**TINY, "epochs": 1})
    train_gvae(cfg, str(run), backend="torch", progress=False)
    vae = GraphVAE.load(run, backend="torch")
    assert vae.cfg.predictor == "latent" and not isinstance(vae.model.predictor, PathPredictor)
    # a run directory from before the option existed: its train.json has no "predictor"
    old = json.loads((run / "train.json").read_text())
    del old["predictor"], old["path_channels"], old["predictor_lr"]
    (run / "train.json").write_text(json.dumps(old))
    # it trained with one learning rate; the refusal names the flag that resumes it
    with pytest.raises(ValueError, match=r"predictor_lr: None -> 0.003.*to resume it, add --predictor-lr none"):
        train_gvae(TrainGVAEConfig(space="nb201-like", store=label_store, predictor="latent", **{**TINY, "epochs": 1}),
                   str(run), backend="torch", progress=False)
    train_gvae(cfg, str(run), backend="torch", progress=False)  # resumes (nothing left to do)
    # an NB101-skeleton latent run resumes too (degree features belong to the path predictor only)
    legacy = TrainGVAEConfig(space="nb101-like", store=label_store, predictor="latent")
    legacy.validate()
    assert legacy.degree_features is False
    for space, degrees in (("nb101-like", True), ("nb201-like", False)):
        auto = TrainGVAEConfig(space=space, store=label_store)
        auto.validate()
        assert auto.predictor == "graph" and auto.degree_features is degrees
    with pytest.raises(ValueError, match="predictor: 'latent' -> 'graph'"):
        train_gvae(TrainGVAEConfig(space="nb201-like", store=label_store, predictor_lr=None, **{**TINY, "epochs": 1}),
                   str(run), backend="torch", progress=False)


@pytest.mark.slow
def test_soft_path_predictor_still_trains_and_predicts_through_latents(label_store: str, tmp_path: Path) -> None:
    cfg = TrainGVAEConfig(space="nb201-like", store=label_store, predictor="paths", **{**TINY, "epochs": 1})
    train_gvae(cfg, str(tmp_path / "run"), backend="torch", progress=False)
    vae = GraphVAE.load(tmp_path / "run", backend="torch")
    assert vae.cfg.predictor == "paths" and isinstance(vae.model.predictor, PathPredictor)
    cells = get_space("nb201-like").sample(6, seed=2)
    pred, via_z = vae.predict(cells), vae.predict(vae.encode(cells))
    for a in pred:
        np.testing.assert_allclose(pred[a], via_z[a], rtol=1e-6)
    with pytest.raises(ValueError, match="reads latents"):
        vae.model.predict_layout_std(*vae._tensors(cells))


@pytest.mark.slow
def test_predictor_groups_keep_the_autoencoder_independent_of_the_predictor(label_store: str, tmp_path: Path) -> None:
    """With its own parameter group and clip, the graph predictor's settings leave the encoder
    and decoder exactly as they are (its loss never reaches them)."""
    base = {**TINY, "epochs": 1}
    train_gvae(TrainGVAEConfig(space="nb201-like", store=label_store, **base), str(tmp_path / "a"),
               backend="torch", progress=False)
    train_gvae(TrainGVAEConfig(space="nb201-like", store=label_store, predictor_lr=0.05, predictor_weight=100.0,
                               **base), str(tmp_path / "b"), backend="torch", progress=False)
    wa, wb = _final_weights(tmp_path / "a"), _final_weights(tmp_path / "b")
    for k in wa:
        if k.startswith(("encoder.", "decoder.")):
            torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=0)
    assert any(not torch.equal(wa[k], wb[k]) for k in wa if k.startswith("predictor."))


@pytest.mark.slow
def test_native_and_torch_backends_train_alike(label_store: str, tmp_path: Path) -> None:
    cfg = TrainGVAEConfig(space="nb201-like", store=label_store, **{**TINY, "epochs": 1})
    train_gvae(cfg, str(tmp_path / "a"), backend="torch", progress=False)
    train_gvae(cfg, str(tmp_path / "b"), backend="native", progress=False)
    wa, wb = _final_weights(tmp_path / "a"), _final_weights(tmp_path / "b")
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-5)


_TRAIN_SCRIPT = """
import sys, time, torch
torch.set_num_threads(1)
from cgnf_fast.train.gvae import TrainGVAEConfig, train_gvae
cfg = TrainGVAEConfig(space="nb201-like", store=sys.argv[1], **{tiny})
train_gvae(cfg, sys.argv[2], backend="torch", progress=False)
"""


@pytest.mark.slow
def test_sigkill_then_rerun_gives_the_uninterrupted_result(label_store: str, tmp_path: Path) -> None:
    tiny = {**TINY, "epochs": 6, "ckpt_every": 3}
    script = tmp_path / "train.py"
    script.write_text(_TRAIN_SCRIPT.replace("{tiny}", repr(tiny)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run([sys.executable, str(script), label_store, str(straight)], check=True, env=env, cwd=tmp_path)
    proc = subprocess.Popen([sys.executable, str(script), label_store, str(killed)], env=env, cwd=tmp_path)
    deadline = time.time() + 120
    while not (killed / "checkpoint.safetensors").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "gvae.safetensors").exists(), "the run finished before it could be killed"
    step = json.loads(load_tensors(killed / "checkpoint.safetensors")[1]["checkpoint"])["step"]
    assert 0 < step < 6 * 5
    subprocess.run([sys.executable, str(script), label_store, str(killed)], check=True, env=env, cwd=tmp_path)
    ws, wk = _final_weights(straight), _final_weights(killed)
    for k in ws:
        assert torch.equal(ws[k], wk[k]), k


@pytest.mark.slow
def test_corrupt_gvae_dir_gives_clear_errors(label_store: str, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such directory"):
        GraphVAE.load(tmp_path / "nope")
    d = tmp_path / "bad"
    d.mkdir()
    (d / "gvae.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        GraphVAE.load(d)
    (d / "gvae.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(CheckpointError, match="not a cgnf_fast G-VAE config"):
        GraphVAE.load(d)
    (d / "gvae.json").write_text(json.dumps({"format": "cgnf_fast.gvae", "version": 2, "config": {}}))
    with pytest.raises(CheckpointError, match="G-VAE format version 2, this cgnf_fast reads version 1"):
        GraphVAE.load(d)
    # a well-formed file with a value of the wrong type: one CheckpointError, not a TypeError from deep inside
    import shutil

    from cgnf_fast.sampling import default_model_dir

    shipped = tmp_path / "shipped"
    shutil.copytree(default_model_dir("nb201-like") / "gvae", shipped)
    meta = json.loads((shipped / "gvae.json").read_text())
    meta["config"]["latent"] = "abc"
    (shipped / "gvae.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="bad G-VAE config"):
        GraphVAE.load(shipped)


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    for args, match in [
        (["train", "gvae", "--space", "nb201-like", "--store", str(tmp_path / "none.sqlite"), "--out",
          str(tmp_path / "o"), "--no-progress"], "none.sqlite: no such file (score cells into it first"),
        (["evaluate", "predictor", "--gvae", str(tmp_path / "none"), "--truth", str(tmp_path / "t.sqlite")],
         "none: no such directory"),
        (["train", "gvae", "--space", "nope", "--store", "x", "--out", str(tmp_path / "o")], "unknown space 'nope'"),
    ]:
        rc, out, err = run_cli(*args)
        assert (rc, out) == (2, ""), args
        # exactly one line, the error itself: no traceback, no progress output around it
        assert err.startswith("cgnf: error: ") and err.count("\n") == 1 and err.endswith("\n"), err
        assert match in err and "Traceback" not in err, err


@pytest.mark.slow
def test_evaluate_predictor_and_latent_on_nb201_cells(label_store: str, tmp_path: Path) -> None:
    from cgnf_fast.cli import main
    from cgnf_fast.evaluate.predictor import evaluate_latent, evaluate_predictor

    run = tmp_path / "run"
    train_gvae(TrainGVAEConfig(space="nb201-like", store=label_store, **{**TINY, "epochs": 1}), str(run),
               backend="torch", progress=False)
    truth = str(tmp_path / "truth.sqlite")
    r = evaluate_predictor(str(run), truth, "nb201", n=25, progress=False)
    assert r["cells"] == 25 and r["n"] == 25 - r["per_attribute"]["params"]["nonfinite_truth"]
    assert set(r["per_attribute"]) == {"params", "flops"}
    for d in r["per_attribute"].values():
        assert 0 <= d["mean_error_pct"] <= d["max_error_pct"] < float("inf")
    # the truth store now holds the scores: a second evaluation reads them (same numbers, no scoring)
    assert evaluate_predictor(str(run), truth, "nb201", n=25, progress=False) == r
    have_mpl = importlib.util.find_spec("matplotlib") is not None  # the `plot` extra
    png = str(tmp_path / "lat.png") if have_mpl else None
    lat = evaluate_latent([str(run), str(run)], truth, "nb201", n=25, png=png, progress=False)
    assert len(lat["models"]) == 2 and -1 <= lat["models"][0]["distance_spearman"] <= 1
    assert lat["models"][0] == {**lat["models"][1]}  # the same model twice: the same numbers
    if have_mpl:
        assert (tmp_path / "lat.png").stat().st_size > 1000
    assert main(["evaluate", "predictor", "--gvae", str(run), "--truth", truth, "--n", "25", "--json",
                 "--no-progress"]) == 0
