"""The score store's integrity (issue 21, items 4, 5 and 9): damaged pages are refused on open
(quick_check), a flipped byte in a stored value or cell is found by the row checksums (never
read, never counted as done, rescored), read-only folders and files are read but never
written, version-1 stores are migrated, and a scorer says which cells other live processes
still hold instead of calling its work done."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from cgnf_fast import get_space
from cgnf_fast.train.data import load_labelled
from cgnf_fast.zc import ScoreStore, StoreError, calibration_batch, check_store
from cgnf_fast.zc import run as zrun

from test_cli import cgnf

SPACE = "nb201"
PROXIES = ["params"]  # cheap: 24 cells score in about a second


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> dict:
    """A finished store of 24 NB201 cells (what ``cgnf zc score`` leaves), its cells and rows."""
    path = tmp_path_factory.mktemp("finished") / "s.sqlite"
    cells = get_space(SPACE).sample(24, seed=0, unique=True)
    batch = calibration_batch(4)
    summary = zrun.score_cells(cells, space=SPACE, proxies=PROXIES, store=str(path), batch=batch, progress=False)
    assert summary["computed"] == summary["cells"] >= 20
    with ScoreStore(path) as st:
        rows = list(st.rows())
    return {"path": path, "cells": cells, "batch": batch, "rows": rows,
            "fp": zrun.data_fingerprint(*batch), "ver": zrun.code_version()}


def copy_of(finished: dict, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "s.sqlite"
    shutil.copy(finished["path"], path)
    return path


def values(path) -> dict[tuple[int, str], tuple]:
    with ScoreStore(path) as st:
        return {(r["code"], r["proxy"]): (r["value"], r["status"], json.dumps(r["cell"])) for r in st.rows()}


def table_offsets(data: bytes, needle: bytes) -> list[int]:
    """Where ``needle`` occurs inside table leaf pages (type 0x0D: the rows themselves, not an index)."""
    page = int.from_bytes(data[16:18], "big")
    page = 65536 if page == 1 else page
    out, i = [], -1
    while (i := data.find(needle, i + 1)) >= 0:
        start = (i // page) * page
        if data[start + (100 if start == 0 else 0)] == 0x0D:
            out.append(i)
    return out


def overwrite(path: Path, offset: int, new: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(new)


def xor_byte(path: Path, offset: int, mask: int) -> None:
    b = path.read_bytes()[offset]
    overwrite(path, offset, bytes([b ^ mask]))


def assert_one_printable_line(message: str) -> None:
    assert "\n" not in message.strip() and message.isascii() and message.strip().isprintable(), repr(message)


def assert_export_refused(path: Path, tmp_path: Path, *names: str) -> None:
    """Library and CLI export both refuse the store in one line, leaving no CSV and no .partial."""
    out = tmp_path / "z.csv"
    with pytest.raises(StoreError) as e:
        zrun.export_csv(str(path), str(out))
    assert str(path) in str(e.value) and all(n in str(e.value) for n in names), str(e.value)
    assert not out.exists() and not Path(f"{out}.partial").exists()
    r = cgnf("zc", "export", "--store", str(path), "--out", str(out))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert r.stderr.startswith("cgnf: error:") and all(n in r.stderr for n in names), r.stderr
    assert_one_printable_line(r.stderr)
    assert not out.exists() and not Path(f"{out}.partial").exists()


# -- damaged pages: quick_check on open ------------------------------------------------------------
def test_damaged_pages_are_refused_on_open(finished, tmp_path):
    """Eight zero bytes over the header of a page holding rows (the adversarial run's damage):
    before, the store opened, ``done()`` read only the primary key's index and ``zc score``
    called every cell "already done"; now opening it is a one-line StoreError."""
    path = copy_of(finished, tmp_path / "store")
    data = path.read_bytes()
    cell = finished["rows"][len(finished["rows"]) // 2]["cell"]
    at = table_offsets(data, json.dumps(cell, separators=(",", ":")).encode())[0]
    page = int.from_bytes(data[16:18], "big")
    overwrite(path, (at // page) * page, bytes(8))
    with pytest.raises(StoreError) as e:
        ScoreStore(path)
    assert str(path) in str(e.value) and "is damaged" in str(e.value) and "quick_check" in str(e.value)
    assert_one_printable_line(str(e.value))
    with pytest.raises(StoreError, match="is damaged"):
        zrun.score_cells(finished["cells"], space=SPACE, proxies=PROXIES, store=str(path),
                         batch=finished["batch"], progress=False)
    report = check_store(path)
    assert report["ok"] is False and report["quick_check"] != "ok"
    assert_export_refused(path, tmp_path, "is damaged")


# -- flipped bytes in rows: checksums ----------------------------------------------------------------
def test_a_flipped_byte_in_a_stored_double(finished, tmp_path):
    """One byte of a stored double changes the value (48.2435 -> 48.1185 in the adversarial run)
    and leaves the file well formed: the row's checksum fails, so it is not read, not done, and
    rescoring replaces it with the value it had."""
    path = copy_of(finished, tmp_path / "store")
    counts = {}
    for r in finished["rows"]:
        counts[r["value"]] = counts.get(r["value"], 0) + 1
    victim = next(r for r in finished["rows"] if counts[r["value"]] == 1)
    (at,) = table_offsets(path.read_bytes(), struct.pack(">d", victim["value"]))
    xor_byte(path, at + 2, 0x10)  # a mantissa byte: still a finite double
    db = sqlite3.connect(path)
    changed = db.execute("SELECT value FROM scores WHERE code=?", (str(victim["code"]),)).fetchone()[0]
    db.close()
    assert changed != victim["value"]
    name = f"cell {victim['code']} params"
    with ScoreStore(path) as st:  # well formed: opens
        assert victim["code"] not in st.done(SPACE, finished["fp"], 0, finished["ver"], PROXIES)
        with pytest.raises(StoreError, match=f"1 damaged score row: {SPACE} {name} \\(checksum mismatch\\)"):
            list(st.rows())
    with pytest.raises(StoreError, match=name):
        load_labelled(str(path), SPACE, ["params"], holdout=None)
    report = check_store(path)
    assert report["ok"] is False and report["quick_check"] == "ok"
    assert [(d["code"], d["proxy"], d["problem"]) for d in report["damaged"]] == \
        [(str(victim["code"]), "params", "checksum mismatch")]
    r = cgnf("zc", "check", str(path))  # the command: exit 1, the damaged row named
    assert r.returncode == 1 and f"cell code {victim['code']}, proxy params: checksum mismatch" in r.stdout, r
    assert_export_refused(path, tmp_path, name)
    summary = zrun.score_cells(finished["cells"], space=SPACE, proxies=PROXIES, store=str(path),
                               batch=finished["batch"], progress=False)
    assert summary["damaged_rows_removed"] == [{"space": SPACE, "code": str(victim["code"]), "proxy": "params",
                                                "problem": "checksum mismatch"}]
    assert summary["computed"] == 1 and summary["complete"]
    assert values(path) == values(finished["path"])  # the value it had, scored again
    assert check_store(path)["ok"]
    assert cgnf("zc", "check", str(path)).returncode == 0


@pytest.mark.parametrize("damage", ["invalid UTF-8", "another digit"])
def test_a_flipped_byte_in_a_cell_string(finished, tmp_path, damage):
    """A byte of a stored cell: not UTF-8 any more (before: "Could not decode to UTF-8 column
    'cell'" with the bytes dumped to the terminal), or another valid cell (before: returned as
    if it were the scored one). Both are damaged rows, named in printable text."""
    path = copy_of(finished, tmp_path / "store")
    victim = finished["rows"][5]
    text = json.dumps(victim["cell"], separators=(",", ":")).encode()
    (at,) = table_offsets(path.read_bytes(), text)
    digit = text.index(b"[[0,") + 2  # the matrix's first entry: 0 -> 1 is another (valid) cell
    if damage == "invalid UTF-8":
        overwrite(path, at + text.index(b"ops") + 1, b"\xff")
    else:
        overwrite(path, at + digit, b"1")
    name = f"{SPACE} cell {victim['code']} params"
    with ScoreStore(path) as st:
        assert victim["code"] not in st.done(SPACE, finished["fp"], 0, finished["ver"], PROXIES)
        with pytest.raises(StoreError, match=name) as e:
            list(st.rows())
    assert_one_printable_line(str(e.value))
    assert_export_refused(path, tmp_path, name)
    summary = zrun.score_cells(finished["cells"], space=SPACE, proxies=PROXIES, store=str(path),
                               batch=finished["batch"], progress=False)
    assert summary["computed"] == 1 and len(summary["damaged_rows_removed"]) == 1 and summary["complete"]
    assert values(path) == values(finished["path"])


@pytest.mark.parametrize("where", ["table", "index"])
def test_a_flipped_digit_of_a_key(finished, tmp_path, where):
    """A digit of a row's code flipped in the table (the index still has the right one, and SQLite
    reads indexed fields from it, so lookups looked fine) or in the index (the row vanished from
    lookups, and a rescore stored the cell twice): both are found, and ``score_cells`` rebuilds
    the index and rescores what was damaged, leaving each row once."""
    path = copy_of(finished, tmp_path / "store")
    victim = finished["rows"][7]
    key = f"{SPACE}{victim['code']}params".encode()
    data = path.read_bytes()
    page = int.from_bytes(data[16:18], "big")
    found = [i for i in range(len(data)) if data.startswith(key, i)]
    kinds = {i: data[(i // page) * page + (100 if i < page else 0)] for i in found}
    at = next(i for i in found if kinds[i] == (0x0D if where == "table" else 0x0A))
    xor_byte(path, at + len(SPACE), 0x01)  # the code's first digit
    report = check_store(path)
    assert report["ok"] is False and report["quick_check"] == "ok" and report["index_mismatches"] == 1
    assert len(report["damaged"]) == (1 if where == "table" else 0)
    summary = zrun.score_cells(finished["cells"], space=SPACE, proxies=PROXIES, store=str(path),
                               batch=finished["batch"], progress=False)
    assert summary["complete"] and summary["computed"] == (1 if where == "table" else 0) and summary["index_rebuilt"]
    assert values(path) == values(finished["path"])
    with ScoreStore(path) as st:
        assert st.count() == len(finished["rows"])
    assert check_store(path)["ok"]


# -- read-only stores --------------------------------------------------------------------------------
@contextmanager
def unwritable(path: Path):
    """``path`` (a file or a folder) made unwritable: ``chattr +i`` as root (whom permissions do
    not stop), else the write bits removed."""
    if os.geteuid() == 0:
        if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(path)],
                                                           capture_output=True).returncode != 0:
            pytest.skip("running as root and chattr +i is not available here")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(path)], check=True)
    else:
        mode = path.stat().st_mode
        path.chmod(mode & ~0o222)
        try:
            yield
        finally:
            path.chmod(mode)


@pytest.mark.parametrize("what", ["folder", "file"])
def test_a_read_only_store_is_read_not_written(finished, tmp_path, what):
    """A store in a read-only folder (before: "not a cgnf_fast score store (unable to open database
    file)", even for export) or an immutable/read-only file (before: a traceback, "attempt to
    write a readonly database", when work was left): reading, export and check work; every write
    is a one-line StoreError saying read-only."""
    path = copy_of(finished, tmp_path / "store")
    extra = get_space(SPACE).sample(40, seed=1, unique=True)
    out = tmp_path / "z.csv"
    with unwritable(path.parent if what == "folder" else path):
        with ScoreStore(path) as st:
            assert st.read_only is not None and (what == "folder") == ("folder" in st.read_only)
            assert list(st.rows()) == finished["rows"]
            for write in (lambda: st.claim(SPACE, 1, "fp", 0, "v"),
                          lambda: st.put(SPACE, 1, "{}", "fp", 0, "v", {"params": 1.0})):
                with pytest.raises(StoreError, match="is read-only") as e:
                    write()
                assert_one_printable_line(str(e.value))
        assert zrun.export_csv(str(path), str(out)) == len(finished["rows"])
        r = cgnf("zc", "export", "--store", str(path), "--out", str(tmp_path / "cli.csv"))
        assert r.returncode == 0, r.stderr
        report = check_store(path)
        assert report["ok"] and report["read_only"] and report["rows"] == len(finished["rows"])
        # nothing left to do: fine; work left: read-only, said in one line
        summary = zrun.score_cells(finished["cells"], space=SPACE, proxies=PROXIES, store=str(path),
                                   batch=finished["batch"], progress=False)
        assert summary["complete"] and summary["already_done"] == summary["cells"]
        with pytest.raises(StoreError, match="is read-only") as e:
            zrun.score_cells(finished["cells"] + extra, space=SPACE, proxies=PROXIES, store=str(path),
                             batch=finished["batch"], progress=False)
        assert_one_printable_line(str(e.value))
        if what == "folder":
            with pytest.raises(StoreError, match="read-only"):
                ScoreStore(path.parent / "new.sqlite")
    assert values(path) == values(finished["path"])


# -- migration of version-1 stores -------------------------------------------------------------------
_V1_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE scores (
    space TEXT NOT NULL, code TEXT NOT NULL, proxy TEXT NOT NULL, data_fp TEXT NOT NULL,
    seed INTEGER NOT NULL, code_version TEXT NOT NULL,
    cell TEXT NOT NULL, value REAL, value_text TEXT, status TEXT NOT NULL, seconds REAL,
    created REAL NOT NULL,
    PRIMARY KEY (space, code, proxy, data_fp, seed, code_version)
);
CREATE TABLE claims (
    space TEXT NOT NULL, code TEXT NOT NULL, data_fp TEXT NOT NULL, seed INTEGER NOT NULL,
    code_version TEXT NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL, claimed REAL NOT NULL,
    PRIMARY KEY (space, code, data_fp, seed, code_version)
);
"""
CELL = '{"matrix":[[0,1],[0,0]],"ops":["input","output"]}'


def version_1_store(path: Path, implausible: bool = False) -> None:
    """A store as cgnf_fast wrote it before checksums (store version 1)."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(_V1_SCHEMA)
    db.execute("INSERT INTO meta VALUES ('format', 'cgnf_fast.ScoreStore'), ('version', '1')")
    rows = [(SPACE, "7", "a", "fp", 0, "v", CELL, 1.25, None, "ok", 0.5, 1.7e9),
            (SPACE, "7", "b", "fp", 0, "v", CELL, None, "nan", "nonfinite", 0.25, 1.7e9),
            (SPACE, "7", "c", "fp", 0, "v", CELL, None, "RuntimeError: boom", "error", None, 1.7e9)]
    if implausible:
        rows.append((SPACE, "8", "a", "fp", 0, "v", '{"matrix":[[0', 2.5, None, "ok", 0.5, 1.7e9))
    db.executemany("INSERT INTO scores VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    db.close()


def test_a_version_1_store_is_migrated_when_writable(tmp_path):
    path = tmp_path / "v1" / "s.sqlite"
    path.parent.mkdir()
    version_1_store(path)
    # read-only: read as it is, without checksums
    with unwritable(path):
        with ScoreStore(path) as st:
            assert st.version == 1 and not st.checksums and st.migrated is None
            got = {r["proxy"]: r for r in st.rows()}
            assert got["a"]["value"] == 1.25 and got["c"]["message"] == "RuntimeError: boom"
            assert st.done(SPACE, "fp", 0, "v", ["a", "b", "c"]) == {7}
        report = check_store(path)
        assert report["ok"] and report["version"] == 1 and report["checksums"] is False
    with ScoreStore(path, migrate=False) as st:
        before = repr(list(st.rows()))  # repr: NaN == NaN
    # writable: every row gets its checksum, in place
    with ScoreStore(path) as st:
        assert st.migrated == {"from_version": 1, "rows": 3, "implausible": 0}
        assert st.version == 2 and st.checksums
        assert repr(list(st.rows())) == before
    db = sqlite3.connect(path)
    assert db.execute("SELECT value FROM meta WHERE key='version'").fetchone()[0] == "2"
    assert db.execute("SELECT count(*) FROM scores WHERE checksum IS NULL").fetchone()[0] == 0
    db.execute("UPDATE scores SET value=1.5 WHERE proxy='a'")  # what a flipped byte does, now noticed
    db.commit()
    db.close()
    with ScoreStore(path) as st:
        assert st.migrated is None
        with pytest.raises(StoreError, match="cell 7 a \\(checksum mismatch\\)"):
            list(st.rows())


def test_migration_gives_no_checksum_to_an_implausible_row(tmp_path):
    """A version-1 row that cannot be as written (a cell that is not JSON) is not blessed with a
    checksum: it counts as damaged, and is deleted to be rescored."""
    path = tmp_path / "s.sqlite"
    version_1_store(path, implausible=True)
    with ScoreStore(path) as st:
        assert st.migrated == {"from_version": 1, "rows": 4, "implausible": 1}
        assert st.done(SPACE, "fp", 0, "v", ["a"]) == {7}
        with pytest.raises(StoreError, match="cell 8 a \\(no checksum"):
            list(st.rows())
        assert st.remove_damaged() == {"rows": [{"rowid": 4, "space": SPACE, "code": "8", "proxy": "a",
                                                 "problem": "no checksum (implausible when its store was migrated)"}],
                                       "index_rebuilt": False}
        assert len(list(st.rows())) == 3


# -- concurrent scorers: cells held by others --------------------------------------------------------
_HOLDER = """
import os, signal, sys, time
from cgnf_fast.zc.store import ScoreStore
path, space, code, fp, ver, cell, then, delay = sys.argv[1:]
with ScoreStore(path) as st:
    assert st.claim(space, int(code), fp, 0, ver)
    print("claimed", flush=True)
    time.sleep(float(delay))
    if then == "dies":  # like a scorer SIGKILLed mid-cell: the claim stays behind
        os.kill(os.getpid(), signal.SIGKILL)
    st.put(space, int(code), cell, fp, 0, ver, {"params": 1.0})
"""


def hold(finished: dict, path: Path, victim: dict, then: str, delay: float) -> subprocess.Popen:
    """A process that claims ``victim``'s cell, then after ``delay`` s "dies" or "finishes" it."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(path), SPACE, str(victim["code"]), finished["fp"],
                             finished["ver"], json.dumps(victim["cell"], separators=(",", ":")), then, str(delay)],
                            stdout=subprocess.PIPE, text=True, cwd="/")  # (not the repository: its unbuilt source)
    if proc.stdout.readline().strip() != "claimed":
        proc.kill()
        proc.communicate()
        pytest.fail("the holder process did not claim the cell")
    return proc


def empty_store_for(finished: dict, folder: Path) -> Path:
    folder.mkdir()
    path = folder / "s.sqlite"
    ScoreStore(path).close()
    return path


def test_a_cell_held_by_a_live_process_is_reported(finished, tmp_path):
    """The survivor used to return "skipped" without saying whether the cells were finished or
    still held; now held cells are named with their holder, and the run is not complete."""
    path = empty_store_for(finished, tmp_path / "store")
    victim = finished["rows"][3]
    proc = hold(finished, path, victim, "finishes", 600)
    try:
        summary = zrun.score_cells(finished["cells"], space=SPACE, proxies=PROXIES, store=str(path),
                                   batch=finished["batch"], progress=False, wait=0)
        assert summary["held_by_others"] == 1 and summary["finished_by_others"] == 0
        assert summary["holders"] == {f"{socket.gethostname()}:{proc.pid}": [victim["code"]]}
        assert summary["complete"] is False and summary["missing"] == 1
        assert summary["computed"] == summary["cells"] - 1 and summary["skipped"] == 1
        claims = check_store(path)["claims"]
        assert [(c["code"], c["holder"]) for c in claims["live"]] == [(victim["code"], f"{socket.gethostname()}:{proc.pid}")]
        # the command: exit 3, one line per holder naming it (the same 24 cells and batch)
        r = cgnf("zc", "score", SPACE, "--n", "24", "--proxies", "params", "--store", str(path), "--batch-size",
                 "4", "--wait", "0", "--no-progress")
        assert r.returncode == 3, r.stderr[-2000:]
        assert f"cgnf: error: 1 of 24 cells not scored: held by {socket.gethostname()}:{proc.pid}" in r.stderr
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    assert [c["code"] for c in check_store(path)["claims"]["stale"]] == [victim["code"]]
    summary = zrun.score_cells(finished["cells"], space=SPACE, proxies=PROXIES, store=str(path),
                               batch=finished["batch"], progress=False)
    assert summary["computed"] == 1 and summary["complete"] and summary["held_by_others"] == 0
    assert values(path) == values(finished["path"])
    assert check_store(path)["claims"] == {"live": [], "stale": []}


@pytest.mark.parametrize("then", ["dies", "finishes"])
def test_cells_held_by_others_are_settled_before_returning(finished, tmp_path, then):
    """One of two scorers is SIGKILLed holding a claim: the survivor used to exit 0 with that
    cell missing. Now it waits (``wait``) for the held cells: a dead holder's cell is scored
    here, a finished one counted as finished by others; either way the store is complete.
    (The killed holder stays a zombie until this test reaps it: a zombie counts as dead.)"""
    path = empty_store_for(finished, tmp_path / "store")
    victim = finished["rows"][3]
    proc = hold(finished, path, victim, then, 2.0)
    try:
        summary = zrun.score_cells(finished["cells"], space=SPACE, proxies=PROXIES, store=str(path),
                                   batch=finished["batch"], progress=False, wait=120)
    finally:
        proc.wait(timeout=120)
        proc.stdout.close()
    assert summary["complete"] and summary["held_by_others"] == 0 and summary["holders"] == {}
    if then == "dies":
        assert summary["computed"] == summary["cells"] and summary["finished_by_others"] == 0
        assert values(path) == values(finished["path"])
    else:
        assert summary["computed"] == summary["cells"] - 1 and summary["finished_by_others"] == 1
    assert check_store(path)["claims"] == {"live": [], "stale": []}
