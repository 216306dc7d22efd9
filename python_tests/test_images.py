"""Image batches: folders, the CIFAR-10 tarballs, the embedded calibration batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cgnf_fast.zc import calibration_batch, cifar10_folder, load_folder
from cgnf_fast.zc.images import CIFAR10_MEAN, CIFAR10_STD


def write_images(root, sizes):
    for cls, size_list in sizes.items():
        (root / cls).mkdir(parents=True)
        for i, (w, h) in enumerate(size_list):
            Image.fromarray(np.full((h, w, 3), 40 * i, dtype=np.uint8)).save(root / cls / f"{i:03d}.png")


def test_load_folder(tmp_path):
    write_images(tmp_path, {"b": [(8, 6)] * 2, "a": [(8, 6)] * 3})
    x, y, classes = load_folder(tmp_path)
    assert classes == ["a", "b"] and x.shape == (5, 3, 6, 8) and x.dtype == torch.uint8
    assert y.tolist() == [0, 0, 0, 1, 1]
    assert int(x[1].max()) == 40  # files in sorted order
    x2, y2, _ = load_folder(tmp_path, per_class=1)
    assert y2.tolist() == [0, 1]


def test_folder_batch_interleaves_classes(tmp_path):
    from cgnf_fast.zc.images import folder_batch, normalize

    write_images(tmp_path, {"a": [(8, 6)] * 4, "b": [(8, 6)] * 4, "c": [(8, 6)] * 2})
    x, y = folder_batch(tmp_path, 5)
    assert y.tolist() == [0, 1, 2, 0, 1] and x.dtype == torch.float32 and x.shape == (5, 3, 6, 8)
    raw, ry, _ = load_folder(tmp_path)
    want = normalize(raw[[0, 4, 8, 1, 5]])  # first image of a, b, c, then the second of a, b
    assert torch.equal(x, want)
    x, y = folder_batch(tmp_path, 50)  # asks for more than there are: everything, interleaved
    assert y.tolist() == [0, 1, 2, 0, 1, 2, 0, 1, 0, 1]
    with pytest.raises(ValueError, match="batch size must be an int >= 1"):
        folder_batch(tmp_path, 0)


def test_load_folder_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_folder(tmp_path / "nope")
    with pytest.raises(ValueError, match="no class sub-folders"):
        load_folder(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="has no images"):
        load_folder(tmp_path)
    write_images(tmp_path / "mixed", {"a": [(8, 8)], "b": [(4, 4)]})
    with pytest.raises(ValueError, match="different sizes"):
        load_folder(tmp_path / "mixed")
    bad = tmp_path / "bad" / "a"
    bad.mkdir(parents=True)
    (bad / "x.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="cannot read image"):
        load_folder(tmp_path / "bad")


def test_calibration_batch_is_embedded():
    x, y = calibration_batch()
    assert x.shape == (250, 3, 32, 32) and x.dtype == torch.float32
    assert y[:10].tolist() == list(range(10))  # classes interleaved
    assert torch.bincount(y).tolist() == [25] * 10
    raw = x * torch.tensor(CIFAR10_STD).view(1, 3, 1, 1) + torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    assert 0.3 < float(raw.mean()) < 0.6  # real images, not noise or zeros
    assert calibration_batch(64)[0].shape[0] == 64
    with pytest.raises(ValueError, match="n must be in"):
        calibration_batch(0)


@pytest.mark.data
def test_calibration_batch_matches_its_source(shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("CGNF_CACHE_DIR", str(tmp_path))
    folder = cifar10_folder("test", shared_data)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    )
    assert cifar10_folder("test", shared_data) == folder  # extracted once, reused
    x, y, _ = load_folder(folder, per_class=25)
    order = np.argsort(np.tile(np.arange(25), 10), kind="stable")
    from cgnf_fast.zc.images import _calibration_arrays

    images, labels = _calibration_arrays()
    assert labels.tolist() == y.numpy()[order].tolist()
    # JPEG decoders may differ by a grey level between library versions
    assert int(np.abs(images.astype(int) - x.numpy()[order].astype(int)).max()) <= 2
    with pytest.raises(ValueError, match="split must be"):
        cifar10_folder("val", shared_data)
    with pytest.raises(ValueError, match="no CIFAR-10 test tarball"):
        cifar10_folder("test", tmp_path)


def test_zc_score_cli_uses_the_interleaved_folder_batch(tmp_path):
    from helpers import run_cli

    from cgnf_fast.zc.images import folder_batch
    from cgnf_fast.zc.run import data_fingerprint
    from cgnf_fast.zc.store import ScoreStore

    write_images(tmp_path / "imgs", {"a": [(32, 32)] * 3, "b": [(32, 32)] * 3})
    store = str(tmp_path / "s.sqlite")
    rc, out, err = run_cli("zc", "score", "nb201-like", "--n", "2", "--proxies", "nwot", "--images",
                           str(tmp_path / "imgs"), "--batch-size", "4", "--store", store, "--no-progress")
    assert rc == 0, err
    with ScoreStore(store) as st:
        fps = {r["data_fp"] for r in st.rows()}
    assert fps == {data_fingerprint(*folder_batch(tmp_path / "imgs", 4))}
