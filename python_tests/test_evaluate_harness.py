"""The evaluation harness: protocols, tasks, training with shared seeds, caching and resuming,
cell sets and baselines, and the ``cgnf evaluate upper-bound/transfer/all`` commands."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import BEST_ISH, DEVICE_PARAMS, run_cli

from cgnf_fast.evaluate import protocol as tr
from cgnf_fast.evaluate import tasks
from cgnf_fast.evaluate.upper_bound import SETS, benchmark_accuracy, cell_sets, neighbours
from cgnf_fast.sampling import BEST_NB101, BEST_NB201
from cgnf_fast.space import Cell, nb201
from cgnf_fast.space.spaces import get as get_space
from cgnf_fast.zc.images import calibration_batch

TINY = tr.get_protocol("tiny")


def _load(path) -> dict:
    with np.load(path) as z:
        return dict(z)


@pytest.fixture(scope="module")
def calib_task() -> tasks.Task:
    """The embedded CIFAR-10 calibration batch (250 real images) as a tiny classification task."""
    x, y = calibration_batch()
    return tasks.Task("calib", x[:200], y[:200], x[200:], y[200:])


@pytest.fixture(scope="module")
def task_file(tmp_path_factory) -> str:
    """A user task as a tensor file: the calibration images, grayscale 16x16, vehicle vs animal."""
    x, y = calibration_batch()
    g = torch.nn.functional.interpolate(x.mean(1, keepdim=True), size=(16, 16), mode="area")
    v = torch.isin(y, torch.tensor([0, 1, 8, 9])).long()
    path = tmp_path_factory.mktemp("task") / "vehicles.npz"
    np.savez(path, x_train=g[:200].numpy(), y_train=v[:200].numpy(), x_test=g[200:].numpy(), y_test=v[200:].numpy())
    return str(path)


# -- protocols ------------------------------------------------------------------------------
def test_presets_and_overrides():
    p = tr.get_protocol("nb201")
    assert (p.epochs, p.batch_size, p.optimizer, p.lr, p.nesterov, p.weight_decay) == (200, 256, "sgd", 0.1, True, 5e-4)
    q = tr.get_protocol("nb101")
    assert (q.epochs, q.optimizer, q.weight_decay) == (108, "rmsprop", 1e-4)
    o = tr.get_protocol("cpu-small:epochs=7,augment=false,train_images=none,lr=0.05")
    assert (o.epochs, o.augment, o.train_images, o.lr) == (7, False, None, 0.05)
    assert o.nb201 == tr.PROTOCOLS["cpu-small"].nb201
    assert tr.Protocol.from_json(o.to_json()) == o
    assert o.key() != tr.PROTOCOLS["cpu-small"].key()
    # a skeleton's key ignores the other skeleton's hyper-parameters and the name
    p2 = tr.get_protocol("cpu-small:epochs=5")
    assert p2.key() == tr.PROTOCOLS["cpu-small"].key()
    import dataclasses

    p3 = dataclasses.replace(p2, nb101={"stem_channels": 8})
    assert p3.key("nb201") == p2.key("nb201") and p3.key("nb101") != p2.key("nb101")


@pytest.mark.parametrize("spec, msg", [
    ("nope", "unknown protocol"), ("tiny:epochs", "bad protocol override"), ("tiny:colour=3", "bad protocol override"),
    ("tiny:epochs=x", "not a valid epochs"), ("tiny:epochs=0", "epochs must be an int >= 1"),
    ("tiny:optimizer=adam", "optimizer must be"), ("tiny:lr=-1", "lr must be"),
    ({"nb201": {"chanels": 4}}, "unknown skeleton hyper-parameters"), ({"nb101": {"num_stacks": 0}}, "int >= 1"),
    ({"nb101": {"bn_momentum": 2.0}}, r"\(0, 1\]"), ({"nb201": [4]}, "must be a dict"),
])
def test_bad_protocols(spec, msg):
    with pytest.raises(ValueError, match=msg):
        tr.get_protocol(spec)


def test_protocol_json_file(tmp_path):
    f = tmp_path / "p.json"
    f.write_text(json.dumps({**TINY.to_json(), "epochs": 2}))
    assert tr.get_protocol(str(f)).epochs == 2
    f.write_text(json.dumps({"epochs": 2, "colour": 1}))
    with pytest.raises(ValueError, match="unknown protocol fields"):
        tr.get_protocol(str(f))
    f.write_text("3")
    with pytest.raises(ValueError, match="JSON object"):
        tr.get_protocol(str(f))


# -- tasks ----------------------------------------------------------------------------------
def test_task_validation(calib_task):
    x, y = calib_task.x_train, calib_task.y_train
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        tasks.Task("t", x[:, 0], y, x, y)
    with pytest.raises(ValueError, match="one row per"):
        tasks.Task("t", x, y[:5], x, y)
    with pytest.raises(ValueError, match="int64 class labels"):
        tasks.Task("t", x, y.float(), x, y)
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        tasks.Task("t", bad, y, x, y)
    with pytest.raises(ValueError, match="unknown metric"):
        tasks.Task("t", x, y, x, y, metric="f1")
    with pytest.raises(ValueError, match="metric 'accuracy' does not go with loss 'mse'"):
        tasks.Task("t", x, y.float(), x, y.float(), loss="mse", metric="accuracy")
    with pytest.raises(ValueError, match="metric 'mae' does not go with loss 'cross_entropy'"):
        tasks.Task("t", x, y, x, y, metric="mae")
    with pytest.raises(ValueError, match="train images are"):
        tasks.Task("t", x, y, x[:, :, :16, :16], y)


def test_tensor_task_file(task_file, tmp_path):
    t = tasks.tensor_task(task_file)
    assert (t.in_channels, t.num_outputs, t.loss, t.metric, t.objective) == (1, 2, "cross_entropy", "accuracy", "max")
    z = _load(task_file)
    z["y_train"] = z["y_train"].astype(np.float32)
    z["y_test"] = z["y_test"].astype(np.float32)
    reg = tmp_path / "reg.npz"
    np.savez(reg, **z)
    r = tasks.tensor_task(reg)
    assert (r.loss, r.metric, r.objective, r.num_outputs) == ("mse", "mse", "min", 1)
    del z["x_test"]
    np.savez(tmp_path / "missing.npz", **z)
    with pytest.raises(ValueError, match="lacks x_test"):
        tasks.tensor_task(tmp_path / "missing.npz")
    good = Path(task_file).read_bytes()
    (tmp_path / "cut.npz").write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match="cannot read task file"):
        tasks.tensor_task(tmp_path / "cut.npz")
    (tmp_path / "junk.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(ValueError, match="cannot read task file"):
        tasks.tensor_task(tmp_path / "junk.safetensors")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="cannot read task file"):
        tasks.tensor_task(tmp_path / "junk.npz")
    with pytest.raises(ValueError, match="not 'cifar10', not a folder"):
        tasks.load_task(str(tmp_path / "x.txt"))


def test_folder_task(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, k in (("train", 6), ("test", 3)):
        for cls in ("a", "b"):
            d = tmp_path / split / cls
            d.mkdir(parents=True)
            for i in range(k):
                Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(d / f"{i}.png")
    t = tasks.load_task(str(tmp_path))
    assert t.x_train.shape == (12, 3, 12, 12) and t.x_test.shape == (6, 3, 12, 12) and t.num_outputs == 2
    assert t.y_train[:4].tolist() == [0, 1, 0, 1]  # classes interleaved
    (tmp_path / "test" / "c").mkdir()
    Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(tmp_path / "test" / "c" / "0.png")
    with pytest.raises(ValueError, match="different class folders"):
        tasks.load_task(str(tmp_path))


# -- training -------------------------------------------------------------------------------
@pytest.mark.slow
def test_training_is_deterministic_and_learns(calib_task):
    cell = Cell.from_nb201(BEST_ISH)
    p = tr.get_protocol("tiny:epochs=3,train_images=200,test_images=50,resolution=16")
    a = tr.train_cell(cell, "nb201", calib_task, p, seed=3)
    b = tr.train_cell(cell, "nb201", calib_task, p, seed=3)
    c = tr.train_cell(cell, "nb201", calib_task, p, seed=4)
    assert (a.metric, a.train_loss, a.test_loss) == (b.metric, b.train_loss, b.test_loss)
    assert a.train_loss != c.train_loss
    assert a.train_loss < np.log(10)  # below chance-level cross-entropy
    assert 0.0 <= a.metric <= 100.0


@pytest.mark.slow
def test_interrupted_training_resumes_to_the_same_result(calib_task, tmp_path, monkeypatch):
    import cgnf_fast.train.checkpoint as ck

    cell = Cell.from_nb201(BEST_ISH)
    p = tr.get_protocol("tiny:epochs=3")
    full = tr.train_cell(cell, "nb201", calib_task, p, seed=1)
    real_save = ck.save_training
    calls = []

    def save_then_die(*args, **kw):
        real_save(*args, **kw)
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(ck, "save_training", save_then_die)
    path = tmp_path / "cell.safetensors"
    with pytest.raises(KeyboardInterrupt):
        tr.train_cell(cell, "nb201", calib_task, p, seed=1, checkpoint=path)
    resumed_saves = []

    def count(*args, **kw):
        resumed_saves.append(args[3]["step"])
        real_save(*args, **kw)

    monkeypatch.setattr(ck, "save_training", count)
    resumed = tr.train_cell(cell, "nb201", calib_task, p, seed=1, checkpoint=path)
    assert resumed_saves == [3]  # only the third epoch ran again
    assert resumed.metric == full.metric
    assert resumed.train_loss == pytest.approx(full.train_loss, rel=1e-6)


def test_regression_task_trains(task_file, tmp_path):
    z = _load(task_file)
    z["y_train"] = np.stack([z["y_train"], 1 - z["y_train"]], 1).astype(np.float32)
    z["y_test"] = np.stack([z["y_test"], 1 - z["y_test"]], 1).astype(np.float32)
    np.savez(tmp_path / "reg.npz", **z)
    t = tasks.tensor_task(tmp_path / "reg.npz", metric="mae")
    r = tr.train_cell(Cell.from_nb201(BEST_ISH), "nb201", t, TINY, seed=0)
    assert t.num_outputs == 2 and np.isfinite(r.metric) and r.metric >= 0


def test_train_cells_caches_by_network_and_seed(calib_task, tmp_path):
    store = tmp_path / "s.sqlite"
    # the same network with its two parallel vertices in the other order
    m = [[0, 1, 1, 0], [0, 0, 0, 1], [0, 0, 0, 1], [0, 0, 0, 0]]
    a = Cell(m, ["input", "nor_conv_3x3", "skip_connect", "output"])
    b = Cell(m, ["input", "skip_connect", "nor_conv_3x3", "output"])
    assert a != b and a.network_code() == b.network_code()
    first = tr.train_cells([a, b], "nb201", calib_task, TINY, seeds=[0, 1], store=store, progress=False)
    assert [r.cached for r in first[0]] == [False, False] and [r.cached for r in first[1]] == [True, True]
    assert first[0][0].metric == first[1][0].metric
    again = tr.train_cells([b], "nb201", calib_task, TINY, seeds=[1, 0], store=store, progress=False)
    assert [r.cached for r in again[0]] == [True, True]
    assert again[0][0].metric == first[0][1].metric and again[0][1].metric == first[0][0].metric
    other = tr.train_cells([a], "nb201", calib_task, tr.get_protocol("tiny:lr=0.05"), seeds=[0], store=store,
                           progress=False)
    assert not other[0][0].cached  # another protocol is another key


def test_nb101_cell_trains(calib_task):
    from cgnf_fast import nets

    cell = Cell.from_nb101(*BEST_NB101)
    moms = {m.momentum for m in tr.build_network(cell, "nb101", calib_task, TINY).modules()
            if isinstance(m, torch.nn.BatchNorm2d)}
    assert moms == {0.1}
    assert {m.momentum for m in nets.build(cell, "nb101").modules() if isinstance(m, torch.nn.BatchNorm2d)} == {0.003}
    r = tr.train_cell(cell, "nb101", calib_task, TINY, seed=0)
    assert np.isfinite(r.train_loss)


# -- cell sets ------------------------------------------------------------------------------
def test_nb201_neighbours_are_one_edit_away():
    ref = Cell.from_nb201(BEST_NB201)
    got = neighbours(ref, get_space("nb201"), 20, seed=0)  # 24 strings are one edit away
    ref_digits = nb201.parse(BEST_NB201)
    codes = {c.network_code() for c in got}
    assert len(got) == 20 and len(codes) == 20 and ref.network_code() not in codes
    for c in got:
        # some string of the neighbour's class differs from the reference's in exactly one edge
        dists = [sum(x != y for x, y in zip(ref_digits, nb201.parse(nb201.arch_at(i))))
                 for i in get_space("nb201").indices(c)]
        assert min(dists) == 1


def test_nb101_neighbours_stay_in_nb101():
    ref = Cell.from_nb101(*BEST_NB101)
    sp = get_space("nb101")
    got = neighbours(ref, sp, 10, seed=0)
    assert len(got) == 10 and all(sp.contains(c) for c in got)
    assert ref.pruned().network_code() not in {c.network_code() for c in got}


def test_cell_sets_are_distinct_and_exclude_the_reference():
    ref, sets = cell_sets("nb201-like", "best", n=5, seed=0)
    assert list(sets) == list(SETS)
    seed_sp = get_space("nb201")
    for name, cells in sets.items():
        codes = [c.network_code() for c in cells]
        assert len(cells) == 5 and len(set(codes)) == 5, name
        assert ref.network_code() not in codes and not any(c.is_zero for c in cells)
    assert all(seed_sp.contains(c) for c in sets["random-seed"] + sets["neighbours"])
    # random-params: within 10 % of the reference's exact parameter count
    from cgnf_fast.nets import ExactCounts

    counts = ExactCounts("nb201")
    target = counts.get(ref.pruned(), ref.pruned().network_code())[0]
    assert all(abs(counts.get(c, c.network_code())[0] - target) <= 0.1 * target for c in sets["random-params"])
    with pytest.raises(ValueError, match="unknown cell sets"):
        cell_sets("nb201-like", "best", n=5, sets=["lucky"])


@pytest.mark.data
def test_benchmark_accuracy(shared_data):
    best = Cell.from_nb201(BEST_NB201)
    got = benchmark_accuracy([best, Cell.from_nb101(*BEST_NB101)], "nb201", shared_data)
    assert got[0] == pytest.approx(94.37, abs=0.01) and got[1] is None
    # NB101: test accuracy of the 30 NASLib records (their best, 92.97 %); the reference (best of the
    # shared data by validation accuracy) has none there
    rec = json.loads((shared_data / "nb101" / "naslib_nb101_dummy_30.json").read_text())["ff9707907f5c17ef8f80cc68fff30f74"]
    nb101 = benchmark_accuracy([Cell.from_nb101(rec["module_adjacency"], rec["module_operations"]),
                                Cell.from_nb101(*BEST_NB101)], "nb101", shared_data)
    assert nb101[0] == pytest.approx(92.97, abs=0.01) and nb101[1] is None


# -- CLI ------------------------------------------------------------------------------------
def test_cli_transfer(task_file, tmp_path):
    md, js = tmp_path / "t.md", tmp_path / "t.json"
    rc, out, err = run_cli("evaluate", "transfer", "--task", task_file, "--protocol", "tiny", "--n", "2",
                           "--store", str(tmp_path / "s.sqlite"), "--md", str(md), "--json", str(js),
                           "--no-progress")
    assert rc == 0, err
    assert "| vehicles |" in out and "obj." in out
    r = json.loads(js.read_text())
    assert r["objective"] == "max" and len(r["sets"]["generated"]["rows"]) == 2
    assert "Per-cell rows" in md.read_text()


@pytest.mark.parametrize("args, msg", [
    (["--protocol", "fast"], "unknown protocol"),
    (["--seeds", "0,x"], "--seeds"),
    (["--task", "nowhere.npz"], "does not exist"),
    (["--md", "/nonexistent/dir/t.md"], "does not exist"),
])
def test_cli_bad_input(task_file, args, msg):
    base = ["evaluate", "transfer", "--task", task_file, "--protocol", "tiny", "--n", "2", "--no-progress"]
    for i in range(0, len(args), 2):
        if args[i] in base:
            base[base.index(args[i]) + 1] = args[i + 1]
        else:
            base += args[i:i + 2]
    rc, _, err = run_cli(*base)
    assert rc == 2 and msg in err


def test_cli_all_refuses_unknown_spaces(tmp_path):
    pytest.importorskip("matplotlib")
    rc, _, err = run_cli("evaluate", "all", "--out", str(tmp_path / "r"), "--spaces", "nb201-like,nb999",
                         "--protocol", "tiny", "--no-progress")
    assert rc == 2 and "spaces must be nb201-like and/or nb101-like, got nb999" in err
    assert not (tmp_path / "r").exists()  # refused before anything is written


@pytest.mark.slow
def test_cli_all_writes_a_report(task_file, tmp_path, monkeypatch):
    """The whole report at toy size; without CGNF_DATA_DIR the CIFAR-10 sections say why they
    are skipped instead of failing."""
    pytest.importorskip("matplotlib")
    monkeypatch.delenv("CGNF_DATA_DIR", raising=False)
    out = tmp_path / "rep"
    rc, _, err = run_cli("evaluate", "all", "--out", str(out), "--protocol", "tiny", "--n", "2",
                         "--transfer-task", task_file, "--no-progress")
    assert rc == 0, err
    text = (out / "report.md").read_text()
    for section in ("## 1.", "## 3.", "## 4.", "## 5.", "## 7."):
        assert section in text
    assert "no CIFAR-10" in text  # section 5 skipped with the reason
    assert "## 9. Beyond the seed space" in text and "no NB201 table" in text  # likewise
    assert "## 8. Does the protocol rank NB201's top cells?" in text
    assert "| vehicles |" in text
    for png in ("samples_nb201like.png", "conditioning_nb201like.png"):
        assert (out / png).stat().st_size > 1000
    res = json.loads((out / "results.json").read_text())
    assert res["transfer"]["sets"]["generated"]["n"] == 2
    assert not (out / ".work").exists()
    # paths are shown relative to where the report was made (the store, the task, the command's
    # arguments) or to the package (the pretrained model), never as this machine's absolute paths
    absolute = re.compile(r"(?:^|[\s`(\"'=])/(?:tmp|work|root|home|usr|opt|var)/")
    for f in ("report.md", "results.json"):
        found = absolute.search((out / f).read_text())
        assert found is None, (f, found)
    assert res["store"] == os.path.relpath(out / "store.sqlite")
    # rerun: everything trained and measured comes from the store, nothing is added to it
    from cgnf_fast.zc.store import ScoreStore

    with ScoreStore(out / "store.sqlite") as st:
        rows = st.count()
    rc, _, err = run_cli("evaluate", "all", "--out", str(out), "--protocol", "tiny", "--n", "2",
                         "--transfer-task", task_file, "--no-progress")
    assert rc == 0, err
    with ScoreStore(out / "store.sqlite") as st:
        assert st.count() == rows
    again = json.loads((out / "results.json").read_text())
    assert again["transfer"]["reference"]["trained"] == res["transfer"]["reference"]["trained"]
    # one design space only: the other's sections say they were left out
    rc, _, err = run_cli("evaluate", "all", "--out", str(out), "--protocol", "tiny", "--n", "2",
                         "--spaces", "nb201-like", "--no-progress")
    assert rc == 0, err
    text = (out / "report.md").read_text()
    assert "nb101: skipped, left out of this report (`--spaces nb201-like`)" in text


def test_augment_crops_and_flips_like_slicing():
    x = torch.arange(2 * 3 * 16 * 16, dtype=torch.float32).view(2, 3, 16, 16)
    gen = torch.Generator().manual_seed(5)
    out = tr._augment(x, gen)
    gen = torch.Generator().manual_seed(5)
    pad = 2
    dy = torch.randint(0, 2 * pad + 1, (2,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (2,), generator=gen)
    flip = torch.rand(2, generator=gen) < 0.5
    xp = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    for b in range(2):
        want = xp[b, :, dy[b]:dy[b] + 16, dx[b]:dx[b] + 16]
        if flip[b]:
            want = want.flip(-1)
        assert torch.equal(out[b], want)


def test_small_inputs_and_divergence_are_handled(calib_task, tmp_path):
    cell = Cell.from_nb201(BEST_ISH)
    with pytest.raises(ValueError, match="do not fit the nb201 skeleton"):
        tr.train_cells([cell], "nb201", calib_task, tr.get_protocol("tiny:resolution=2"), progress=False)
    x = calib_task.x_train[:64]
    huge = torch.full((64,), 1e30)
    t = tasks.Task("huge", x, huge, x[:16], huge[:16], loss="mse", metric="mse")
    store = tmp_path / "s.sqlite"
    r = tr.train_cells([cell], "nb201", t, TINY, store=store, progress=False)[0][0]
    assert np.isnan(r.metric) and not r.cached
    again = tr.train_cells([cell], "nb201", t, TINY, store=store, progress=False)[0][0]
    assert np.isnan(again.metric) and again.cached  # a diverged cell is not retrained on every rerun


def test_cli_upper_bound_on_a_user_task(task_file, tmp_path):
    js = tmp_path / "u.json"
    rc, out, err = run_cli("evaluate", "upper-bound", "--task", task_file, "--sets", "neighbours,random-seed",
                           "--protocol", "tiny", "--n", "2", "--json", str(js), "--no-progress")
    assert rc == 0, err
    r = json.loads(js.read_text())
    assert list(r["sets"]) == ["neighbours", "random-seed"]
    # published CIFAR-10 accuracies only belong next to CIFAR-10 results
    assert all(x["benchmark_acc"] is None for s in r["sets"].values() for x in s["rows"])


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICE_PARAMS)
def test_training_on_each_device(calib_task, device):
    """The same protocol and seed on CPU and (where there is one) CUDA: both learn; CUDA results
    are cached under their own key (checked by the GPU script, benches/gpu_check.sh)."""
    cell = Cell.from_nb201(BEST_ISH)
    p = tr.get_protocol("tiny:epochs=3,train_images=200,test_images=50,resolution=16")
    r = tr.train_cell(cell, "nb201", calib_task, p, seed=3, device=device)
    assert r.train_loss < np.log(10) and 0.0 <= r.metric <= 100.0
    assert tr._store_key(calib_task, p, "nb201", device)[1] != tr._store_key(calib_task, p, "nb201", "cpu")[1] \
        or device == "cpu"
