"""``ScoreStore``: a durable, resumable SQLite store of zero-cost scores (stdlib sqlite3, WAL).

One row per (space, canonical code, proxy, data fingerprint, seed, code version) with the value,
the seconds it took and a status: ``ok`` (finite), ``nonfinite`` (NaN or +-inf: the value is
kept as text and returned as the float it was, never dropped) or ``error`` (the message is kept).
Rows are written with ``INSERT OR IGNORE`` on that key, so a cell is never stored twice.

Work is shared through claims: a scorer claims a cell (one transaction, ``BEGIN IMMEDIATE``)
before computing it and releases the claim when its rows are committed. A claim whose owner
process is gone (same host, pid not alive) or that is older than ``claim_ttl`` seconds is taken
over, so killing a scorer (even with SIGKILL) loses nothing: the rerun finishes its cells.
"""

from __future__ import annotations

import json
import math
import os
import socket
import sqlite3
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

FORMAT = "cgnf_fast.ScoreStore"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS scores (
    space TEXT NOT NULL, code TEXT NOT NULL, proxy TEXT NOT NULL, data_fp TEXT NOT NULL,
    seed INTEGER NOT NULL, code_version TEXT NOT NULL,
    cell TEXT NOT NULL, value REAL, value_text TEXT, status TEXT NOT NULL, seconds REAL,
    created REAL NOT NULL,
    PRIMARY KEY (space, code, proxy, data_fp, seed, code_version)
);
CREATE TABLE IF NOT EXISTS claims (
    space TEXT NOT NULL, code TEXT NOT NULL, data_fp TEXT NOT NULL, seed INTEGER NOT NULL,
    code_version TEXT NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL, claimed REAL NOT NULL,
    PRIMARY KEY (space, code, data_fp, seed, code_version)
);
"""


class StoreError(ValueError):
    """The file is not a usable score store (corrupt, foreign or from a newer version)."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _busy(e: sqlite3.OperationalError) -> bool:
    code = getattr(e, "sqlite_errorcode", None)  # Python >= 3.11
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(e) or "busy" in str(e)


class ScoreStore:
    """A score store at ``path`` (created when missing)."""

    def __init__(self, path: str | os.PathLike, *, claim_ttl: float = 3600.0, timeout: float = 60.0) -> None:
        self.path = Path(path)
        self.claim_ttl = claim_ttl
        # Several processes may open (and create) the same store at once: the schema is created in
        # one write transaction, and the few steps SQLite may refuse with "database is locked"
        # without waiting (switching a fresh file to WAL while another process does) are retried.
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._db = sqlite3.connect(str(self.path), timeout=max(0.0, deadline - time.monotonic()),
                                           isolation_level=None)
            except sqlite3.DatabaseError as e:
                raise StoreError(f"{str(self.path)!r} cannot be opened as a score store (SQLite says: {e})") from None
            try:
                self._open()
                break
            except sqlite3.OperationalError as e:
                self._db.close()
                if not _busy(e):
                    raise StoreError(f"{str(self.path)!r} is not a cgnf_fast score store (SQLite says: {e})") from None
                if time.monotonic() > deadline:
                    raise StoreError(f"{str(self.path)!r} is busy: other processes kept it locked for more than "
                                     f"{timeout:g} s") from None
                time.sleep(0.02)
            except sqlite3.DatabaseError as e:
                self._db.close()
                raise StoreError(f"{str(self.path)!r} is not a cgnf_fast score store (SQLite says: {e})") from None
            except BaseException:
                self._db.close()
                raise
        self._host = socket.gethostname()

    def _open(self) -> None:
        self._refuse_foreign(self._tables())  # before the WAL switch writes to someone else's file
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        if not self._tables():  # a new or empty database (no tables); others creating it at once is harmless
            with self._tx() as db:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute("INSERT OR IGNORE INTO meta VALUES ('format', ?)", (FORMAT,))
                db.execute("INSERT OR IGNORE INTO meta VALUES ('version', ?)", (str(SCHEMA_VERSION),))
        self._check_existing()

    def _tables(self) -> set[str]:
        return {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}

    def _refuse_foreign(self, tables: set[str]) -> None:
        if tables and "meta" not in tables:
            raise StoreError(f"{str(self.path)!r} is an SQLite file but not a cgnf_fast score store (no meta table)")

    def _check_existing(self) -> None:
        tables = self._tables()
        self._refuse_foreign(tables)
        meta = dict(self._db.execute("SELECT key, value FROM meta"))
        if meta.get("format") != FORMAT:
            raise StoreError(f"{str(self.path)!r} is not a cgnf_fast score store (format {meta.get('format')!r})")
        if int(meta.get("version", "0")) > SCHEMA_VERSION:
            raise StoreError(
                f"{str(self.path)!r} was written by a newer cgnf_fast (store version {meta['version']}, "
                f"this one reads {SCHEMA_VERSION})"
            )
        if not {"scores", "claims"} <= tables:
            raise StoreError(f"{str(self.path)!r} is a damaged score store (tables missing)")
        self._db.execute("SELECT count(*) FROM scores").fetchone()  # touches the table: corrupt pages raise

    class _Tx:
        def __init__(self, db: sqlite3.Connection) -> None:
            self.db = db

        def __enter__(self):
            self.db.execute("BEGIN IMMEDIATE")
            return self.db

        def __exit__(self, exc_type, exc, tb):
            self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")
            return False

    def _tx(self) -> ScoreStore._Tx:
        return ScoreStore._Tx(self._db)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ScoreStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- claims ---------------------------------------------------------------------------
    def claim(self, space: str, code: int, data_fp: str, seed: int, code_version: str) -> bool:
        """Claim a cell for this process; False when someone alive holds it."""
        key = (space, str(code), data_fp, seed, code_version)
        now = time.time()
        with self._tx() as db:
            row = db.execute(
                "SELECT host, pid, claimed FROM claims WHERE space=? AND code=? AND data_fp=? AND seed=? AND code_version=?",
                key,
            ).fetchone()
            if row is not None:
                host, pid, claimed = row
                mine = host == self._host and pid == os.getpid()
                stale = now - claimed > self.claim_ttl or (host == self._host and not _pid_alive(pid))
                if not (mine or stale):
                    return False
                db.execute(
                    "UPDATE claims SET host=?, pid=?, claimed=? WHERE space=? AND code=? AND data_fp=? AND seed=? AND code_version=?",
                    (self._host, os.getpid(), now, *key),
                )
                return True
            db.execute("INSERT INTO claims VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (*key, self._host, os.getpid(), now))
            return True

    # -- scores ---------------------------------------------------------------------------
    def put(self, space: str, code: int, cell_json: str, data_fp: str, seed: int, code_version: str,
            values: dict[str, float], seconds: dict[str, float] | None = None,
            errors: dict[str, str] | None = None) -> None:
        """Store a cell's scores (one transaction) and release its claim."""
        now = time.time()
        rows = []
        for proxy, v in values.items():
            v = float(v)
            finite = math.isfinite(v)
            rows.append((space, str(code), proxy, data_fp, seed, code_version, cell_json,
                         v if finite else None, None if finite else repr(v), "ok" if finite else "nonfinite",
                         (seconds or {}).get(proxy), now))
        for proxy, msg in (errors or {}).items():
            rows.append((space, str(code), proxy, data_fp, seed, code_version, cell_json, None, msg, "error",
                         (seconds or {}).get(proxy), now))
        with self._tx() as db:
            db.executemany("INSERT OR IGNORE INTO scores VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            db.execute(
                "DELETE FROM claims WHERE space=? AND code=? AND data_fp=? AND seed=? AND code_version=?",
                (space, str(code), data_fp, seed, code_version),
            )

    def done(self, space: str, data_fp: str, seed: int, code_version: str, proxies: Iterable[str]) -> set[int]:
        """Codes of cells that already have every proxy in ``proxies``."""
        proxies = list(proxies)
        q = ("SELECT code FROM scores WHERE space=? AND data_fp=? AND seed=? AND code_version=? AND proxy IN (%s) "
             "GROUP BY code HAVING count(DISTINCT proxy)=?" % ",".join("?" * len(proxies)))
        return {int(r[0]) for r in self._db.execute(q, (space, data_fp, seed, code_version, *proxies, len(proxies)))}

    def rows(self, *, space: str | None = None, data_fp: str | None = None, seed: int | None = None,
             code_version: str | None = None, proxies: Iterable[str] | None = None) -> Iterator[dict[str, Any]]:
        """Stored scores as dicts (non-finite values restored as floats): all of them, or those
        matching every given filter (selected in SQL, so a filter skips the rest cheaply)."""
        where, args = [], []
        for col, v in (("space", space), ("data_fp", data_fp), ("seed", seed), ("code_version", code_version)):
            if v is not None:
                where.append(f"{col}=?")
                args.append(v)
        if proxies is not None:
            proxies = list(proxies)
            where.append("proxy IN (%s)" % ",".join("?" * len(proxies)))
            args += proxies
        cur = self._db.execute(
            "SELECT space, code, proxy, data_fp, seed, code_version, cell, value, value_text, status, seconds, created "
            "FROM scores" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY space, code, proxy",
            args,
        )
        for r in cur:
            space, code, proxy, fp, seed, ver, cell, value, text, status, seconds, created = r
            if status == "nonfinite":
                value = float(text)
            yield {"space": space, "code": int(code), "proxy": proxy, "data_fp": fp, "seed": seed,
                   "code_version": ver, "cell": json.loads(cell), "value": value, "status": status,
                   "message": text if status == "error" else None, "seconds": seconds, "created": created}

    def count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM scores").fetchone()[0])
