"""The `cgnf` command, run as a real subprocess."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from helpers import BEST_ISH


def cgnf_executable() -> str:
    """The installed console script (next to this interpreter, else on PATH)."""
    here = Path(sys.executable).with_name("cgnf")
    found = str(here) if here.exists() else shutil.which("cgnf")
    assert found, "the `cgnf` console script is not installed"
    return found


def cgnf(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    # run outside the checkout so that the installed package, not the source tree, is used
    with tempfile.TemporaryDirectory() as cwd:
        return subprocess.run(
            [cgnf_executable(), *args], input=stdin, capture_output=True, text=True, timeout=300, cwd=cwd
        )


@pytest.mark.slow
def test_space_info_json():
    r = cgnf("space", "info", "nb201", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["classes"] == {"structural": 8765, "network": 5425, "nb201_unique_str": 6466, "zero_cells": 341}
    r = cgnf("space", "info", "nb101-like")
    # 2**21 adjacency matrices x 3**5 op labellings on 7 vertices
    assert r.returncode == 0 and "509,607,936" in r.stdout


def test_cell_hash():
    lines = [
        BEST_ISH,
        json.dumps({"matrix": [[0, 1, 0], [0, 0, 1], [0, 0, 0]], "ops": ["input", "maxpool3x3", "output"]}),
        "",
    ]
    r = cgnf("cell", "hash", stdin="\n".join(lines))
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(rows) == 2
    assert rows[0]["nb201"] == BEST_ISH and rows[0]["nb201_index"] == 9930 and rows[0]["nb101_hash"] is None
    assert rows[1]["nb201"] is None and len(rows[1]["nb101_hash"]) == 32
    assert isinstance(rows[0]["code"], int) and isinstance(rows[0]["network_code"], int)


def test_cell_hash_rows_have_the_same_keys_whatever_the_input():
    """A JSON cell of an NB201 network gets the NB201 index and unique string of its class, as
    an NB201 string does of itself; a cell outside NB201 gets the same keys, null."""
    arch = "|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|none~0|avg_pool_3x3~1|none~2|"
    chain = {"matrix": [[0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0]],
             "ops": ["input", "nor_conv_3x3", "avg_pool_3x3", "output"]}  # arch's network, pruned
    nb101 = {"matrix": [[0, 1, 0], [0, 0, 1], [0, 0, 0]], "ops": ["input", "maxpool3x3", "output"]}
    r = cgnf("cell", "hash", stdin="\n".join([arch, json.dumps(chain), json.dumps(nb101)]))
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    keys = {"code", "network_code", "nb101_hash", "nb201", "nb201_index", "nb201_unique_str"}
    assert [set(row) for row in rows] == [keys] * 3
    assert rows[0]["nb201_index"] == 193 and rows[1]["nb201_index"] == 193  # (193 is that class's lowest index)
    assert rows[0]["nb201_unique_str"] == rows[1]["nb201_unique_str"] == "#+#+((0)@nor_conv_3x3)@avg_pool_3x3"
    assert rows[0]["network_code"] == rows[1]["network_code"]
    assert rows[2]["nb201"] is None and rows[2]["nb201_index"] is None and rows[2]["nb201_unique_str"] is None


def test_version():
    r = cgnf("--version")
    assert r.returncode == 0 and r.stdout.startswith("cgnf_fast 0.") and f"torch {torch.__version__}" in r.stdout


@pytest.mark.slow
def test_errors_exit_2_with_one_line():
    for args, stdin, match in [
        (("space", "info", "nb999"), None, "unknown space 'nb999'"),
        (("cell", "hash"), '{"matrix": [[0,1],[1,0]], "ops": ["input","output"]}\n', "line 1: matrix is cyclic"),
        (("cell", "hash"), f"{BEST_ISH}\n|nor_conv_3x3~0|+|x~0|\n", "line 2:"),
        (("cell", "hash", "--input", "/nonexistent/file"), None, "No such file"),
        (("evaluate", "latent", "--gvae", "g", "--truth", "t.sqlite", "--png", "/nonexistent/l.png"), None,
         "--png /nonexistent/l.png: the folder /nonexistent does not exist"),  # before any model or truth
        (("sample", "--n", "2", "--device", "gpu0"), None, "device 'gpu0' is not a device; use 'cpu', 'cuda'"),
        (("sample", "--n", "2", "--device", "meta"), None, "runs on 'cpu' or 'cuda[:N]', not meta"),
    ] + ([] if torch.cuda.is_available() else [
        (("space", "count", "nb101", "--device", "cuda"), None, "device 'cuda': torch "),
        (("sample", "--n", "2", "--device", "cuda:0"), None, "device 'cuda:0': torch "),
    ]):
        r = cgnf(*args, stdin=stdin)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        # stderr is exactly one line, the error itself (no traceback, no warning, no blank line)
        assert r.stderr.startswith("cgnf: error: ") and r.stderr.count("\n") == 1 and r.stderr.endswith("\n"), r.stderr
        assert match in r.stderr and "Traceback" not in r.stderr, r.stderr


@pytest.mark.slow
def test_space_count_and_enumerate(tmp_path):
    r = cgnf("space", "count", "nb101", "--json", "--no-progress")
    assert r.returncode == 0, r.stderr
    row = json.loads(r.stdout)
    assert set(row) >= {"space", "labeled", "valid", "unique", "unique_networks", "seconds"}
    assert row["unique"] == 423624
    r = cgnf("space", "count", "nb101", "--max-edges", "3", "--json", "--no-progress")
    small = json.loads(r.stdout)
    assert 0 < small["unique"] < 423624
    out = tmp_path / "cells.jsonl"
    r = cgnf("space", "enumerate", "nb101", "--max-edges", "3", "--out", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == small["unique"]
    assert set(rows[0]) == {"matrix", "ops", "code", "nb101_hash"}
    r = cgnf("space", "count", "nb101", "--max-edges", "-2")
    assert r.returncode == 2 and "non-negative" in r.stderr
    r = cgnf("space", "enumerate", "nb101", "--out", str(tmp_path / "missing" / "x.jsonl"), "--no-progress")
    assert r.returncode == 2 and f"the folder {tmp_path / 'missing'} does not exist" in r.stderr


def test_unwritable_outputs_are_refused_up_front_in_the_users_words(tmp_path):
    """Every output is checked before the work: a folder given as the file, a place no file can
    be created (/proc; an immutable folder where chattr exists), a missing folder; messages name
    the flag and the user's path, never a temporary name or a Python repr, and nothing is written
    (a bad --png used to fail after sampling, and the valid --out was then not written either)."""
    from helpers import run_cli

    good = tmp_path / "good.json"
    cases = [(["--out", "."], "--out .: is a folder; give a file name"),
             (["--out", str(tmp_path) + "/"], "is a folder"),
             (["--out", str(good), "--png", "/proc/x.png"], "--png /proc/x.png: cannot write files in /proc"),
             (["--out", str(tmp_path / "no" / "x.json")], f"the folder {tmp_path / 'no'} does not exist")]
    for args, message in cases:
        rc, out, err = run_cli("sample", "--n", "2", *args)
        assert rc == 2 and out == "" and err.count("\n") == 1 and message in err, (args, err)
        assert ".partial" not in err and "PosixPath" not in err and "Errno" not in err, err
    assert not good.exists()
    rc, _, err = run_cli("cell", "hash", "--input", str(tmp_path / "nope.txt"))
    assert rc == 2 and err == f"cgnf: error: {tmp_path / 'nope.txt'}: No such file or directory\n", err
    imm = tmp_path / "imm"
    imm.mkdir()
    if shutil.which("chattr") and subprocess.run(["chattr", "+i", str(imm)], capture_output=True).returncode == 0:
        try:
            rc, _, err = run_cli("sample", "--n", "2", "--out", str(imm / "x.json"))
            assert rc == 2 and f"--out {imm / 'x.json'}: cannot write files in {imm} (Operation not permitted)" in err
        finally:
            subprocess.run(["chattr", "-i", str(imm)], check=True)


def test_space_info_prints_no_python_none():
    """`space info nb201` printed `max_edges None` and `labeled_graphs None` (issue 20, item 14)."""
    from helpers import run_cli

    for space in ("nb201", "nb101-like"):
        rc, out, err = run_cli("space", "info", space)
        assert rc == 0 and "None" not in out, out
    assert "no limit" in next(line for line in out.splitlines() if line.startswith("max_edges"))


def test_the_space_is_spelled_the_same_everywhere():
    """`space ...` and `zc score` take the space as a positional argument or as --space, the
    spelling of every other command (issue 20, item 13); both at once must agree."""
    from helpers import run_cli

    rc1, out1, _ = run_cli("space", "info", "nb101", "--json")
    rc2, out2, _ = run_cli("space", "info", "--space", "nb101", "--json")
    assert rc1 == rc2 == 0 and out1 == out2
    rc, _, err = run_cli("space", "info", "nb101", "--space", "nb201")
    assert rc == 2 and "given twice and differently" in err
    rc, _, err = run_cli("space", "info")
    assert rc == 2 and "a space is required" in err
