"""``ScoreStore``: a durable, resumable SQLite store of zero-cost scores (stdlib sqlite3, WAL).

One row per (space, canonical code, proxy, data fingerprint, seed, code version) with the value,
the seconds it took and a status: ``ok`` (finite), ``nonfinite`` (NaN or +-inf: the value is
kept as text and returned as the float it was, never dropped) or ``error`` (the message is kept).
Rows are written with ``INSERT OR IGNORE`` on that key, so a cell is never stored twice.

Work is shared through claims: a scorer claims a cell (one transaction, ``BEGIN IMMEDIATE``)
before computing it and releases the claim when its rows are committed. A claim whose owner
process is gone (same host, pid not alive) or that is older than ``claim_ttl`` seconds is taken
over, so killing a scorer (even with SIGKILL) loses nothing: the rerun finishes its cells.

Integrity (store version 2). Opening a store runs ``PRAGMA quick_check`` (every page and record
is well formed; 2.4-2.6 ms for a store of 10,000 rows, see :class:`ScoreStore`) and refuses a
damaged file with a one-line :class:`StoreError`. Every row carries a checksum of all its
stored fields, so a flipped byte that leaves the file well formed (a digit of a double, a
character of a cell) is found too: such a row is never returned, never counts as done, and
:meth:`ScoreStore.remove_damaged` (run by ``score_cells``) deletes it so that its cell is scored
again (the primary key's index is compared with the table as well, and rebuilt where they
differ). A version-1 store (no checksums) gets them when opened writable; read-only, it is read
without them (each row only checked for plausibility).

A store that cannot be written (a read-only or immutable file, a read-only folder) opens for
reading; every write then raises a :class:`StoreError` saying "read-only".
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

from ._rows import _busy, _code, _corrupt, _fetch, _implausible, _readonly, _show, checksum

FORMAT = "cgnf_fast.ScoreStore"
#: 1: the first layout; 2: a ``checksum`` column covering every other field of a row.
SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS scores (
    space TEXT NOT NULL, code TEXT NOT NULL, proxy TEXT NOT NULL, data_fp TEXT NOT NULL,
    seed INTEGER NOT NULL, code_version TEXT NOT NULL,
    cell TEXT NOT NULL, value REAL, value_text TEXT, status TEXT NOT NULL, seconds REAL,
    created REAL NOT NULL, checksum TEXT,
    PRIMARY KEY (space, code, proxy, data_fp, seed, code_version)
);
CREATE TABLE IF NOT EXISTS claims (
    space TEXT NOT NULL, code TEXT NOT NULL, data_fp TEXT NOT NULL, seed INTEGER NOT NULL,
    code_version TEXT NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL, claimed REAL NOT NULL,
    PRIMARY KEY (space, code, data_fp, seed, code_version)
);
"""
# ``checksum`` is the last column so that a version-1 table given it by ALTER TABLE has the same layout.

#: The fields of a score row that its checksum covers, in this order.
_FIELDS = ("space", "code", "proxy", "data_fp", "seed", "code_version", "cell", "value", "value_text", "status",
           "seconds", "created")
_KEY = ("space", "code", "proxy", "data_fp", "seed", "code_version")
_SCORES_INDEX = "sqlite_autoindex_scores_1"  # the primary key's index
_SHOWN = 5  # damaged rows named in an error message


class StoreError(ValueError):
    """The file is not a usable score store (corrupt, foreign, from a newer version, or read-only
    where a write was asked for)."""


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` (on this host) runs; a zombie (killed, not yet reaped by its parent)
    does not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:  # Linux: the state field follows the parenthesised command name
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


class ScoreStore:
    """A score store at ``path`` (created when missing and its folder is writable).

    ``verify`` (default True) runs ``PRAGMA quick_check`` on open and raises a one-line
    :class:`StoreError` naming the file and SQLite's findings when it fails. It reads every page
    once: ``python benches/store_check.py`` (2-core development machine, SQLite 3.40.1,
    2026-12-07) measured 2.4-2.6 ms for a store of 10,000 rows (2,000 NB201 cells x 5 proxies,
    4.0 MB; opening takes 4.7-4.8 ms with it, 0.4 ms without) and 36-39 ms for 100,000 rows
    (40 MB), so scoring, export and reading do it on every open. ``verify=False`` is for
    :meth:`check`, which reports a damaged file instead of refusing it. (The checksums cost more,
    as they are computed in Python: 70-80 ms per 10,000 rows for :meth:`done` or :meth:`damaged`.)

    A version-1 store opened writable is migrated (:meth:`_migrate`; after a quick_check, even
    with ``verify=False``) unless ``migrate=False``; ``migrated`` then says how many rows got a
    checksum.

    ``read_only`` is None for a writable store, else why it cannot be written ("the file is not
    writable: ...", "its folder is read-only"): such a store opens for reading (SQLite ``mode=ro``,
    or ``immutable=1`` where a read-only folder leaves no room for WAL's shared-memory file;
    a non-empty write-ahead log there is refused, since reading past it would miss its rows).
    """

    def __init__(self, path: str | os.PathLike, *, claim_ttl: float = 3600.0, timeout: float = 60.0,
                 verify: bool = True, migrate: bool = True) -> None:
        self.path = Path(path)
        self.claim_ttl = claim_ttl
        self.verify = verify
        self.migrate = migrate
        self.read_only: str | None = self._read_only_reason()
        #: after opening a version-1 store writable: {"from_version", "rows", "implausible"}
        self.migrated: dict[str, int] | None = None
        self._host = socket.gethostname()
        # Several processes may open (and create) the same store at once: the schema is created in
        # one write transaction, and the few steps SQLite may refuse with "database is locked"
        # without waiting (switching a fresh file to WAL while another process does) are retried.
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._db = self._connect(max(0.0, deadline - time.monotonic()))
            except sqlite3.DatabaseError as e:
                raise self._error(e) from None
            except UnicodeDecodeError as e:  # SQLite's message quotes a damaged name
                raise StoreError(f"{self._name} is damaged (SQLite says: "
                                 f"{e.object.decode('ascii', 'backslashreplace')})") from None
            try:
                self._open()
                break
            except sqlite3.OperationalError as e:
                self._db.close()
                if self.read_only is None and _readonly(e):  # SQLite found it read-only where the OS did not
                    self.read_only = f"SQLite cannot write it: {e}"
                    continue
                if not _busy(e):
                    raise self._error(e) from None
                if time.monotonic() > deadline:
                    raise StoreError(f"{self._name} is busy: other processes kept it locked for more than "
                                     f"{timeout:g} s") from None
                time.sleep(0.02)
            except sqlite3.DatabaseError as e:
                self._db.close()
                raise self._error(e) from None
            except UnicodeDecodeError as e:  # SQLite's message quotes a damaged name
                self._db.close()
                raise StoreError(f"{self._name} is damaged (SQLite says: "
                                 f"{e.object.decode('ascii', 'backslashreplace')})") from None
            except BaseException:
                self._db.close()
                raise

    @property
    def _name(self) -> str:
        return repr(str(self.path))

    def _error(self, e: sqlite3.Error) -> StoreError:
        if _corrupt(e) and "not a database" not in str(e):
            return StoreError(f"{self._name} is damaged (SQLite says: {e})")
        return StoreError(f"{self._name} is not a cgnf_fast score store (SQLite says: {e})")

    # -- opening ---------------------------------------------------------------------------
    def _read_only_reason(self) -> str | None:
        p = self.path
        folder = p.parent
        if not p.exists():
            if not folder.is_dir():
                raise StoreError(f"{self._name} cannot be created: no folder {str(folder)!r}")
            if not os.access(folder, os.W_OK):
                raise StoreError(f"{self._name} does not exist and cannot be created: its folder is read-only")
            return None
        if not os.access(p, os.W_OK):  # also an immutable file, even for root
            return "the file is not writable: permissions or an immutable flag"
        if not os.access(folder, os.W_OK):  # WAL writes its -wal and -shm files beside the store
            if not all(os.access(f"{p}{s}", os.W_OK) for s in ("-wal", "-shm")):
                return "its folder is read-only"
        return None

    def _connect(self, timeout: float) -> sqlite3.Connection:
        if self.read_only is None:
            return sqlite3.connect(str(self.path), timeout=timeout, isolation_level=None)
        uri = self.path.resolve().as_uri()
        db = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=timeout, isolation_level=None)
        try:  # a read-only connection that still shares WAL's index with writers
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return db
        except sqlite3.OperationalError as e:
            db.close()
            if _code(e) != sqlite3.SQLITE_CANTOPEN:
                raise
        wal = Path(f"{self.path}-wal")  # no -shm can be made here: read the file as it is, without WAL
        if wal.exists() and wal.stat().st_size > 0:
            raise StoreError(f"{self._name} is read-only ({self.read_only}) and its write-ahead log {wal.name} "
                             f"holds changes SQLite cannot read without writing beside it")
        return sqlite3.connect(f"{uri}?immutable=1", uri=True, timeout=timeout, isolation_level=None)

    def _open(self) -> None:
        tables = self._tables()
        self._refuse_foreign(tables)  # before the WAL switch writes to someone else's file
        if self.read_only is None:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            if not self._tables():  # a new or empty database (no tables); others creating it at once is harmless
                with self._tx() as db:
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            db.execute(statement)
                    db.execute("INSERT OR IGNORE INTO meta VALUES ('format', ?)", (FORMAT,))
                    db.execute("INSERT OR IGNORE INTO meta VALUES ('version', ?)", (str(SCHEMA_VERSION),))
        elif not tables:
            raise StoreError(f"{self._name} has no score store yet and cannot get one: it is read-only "
                             f"({self.read_only})")
        self._check_existing()
        migrate = self.migrate and self.version < SCHEMA_VERSION and self.read_only is None
        if self.verify or migrate:  # never give checksums to the rows of a damaged file
            problems = self.quick_check()
            if problems:
                more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
                raise StoreError(f"{self._name} is damaged (SQLite quick_check: {'; '.join(problems[:3])}{more})")
        if migrate:
            self._migrate()
        self.checksums = "checksum" in self._columns("scores")

    def _tables(self) -> set[str]:
        return {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}

    def _columns(self, table: str) -> list[str]:
        return [r[1] for r in self._db.execute(f"PRAGMA table_info({table})")]

    def _refuse_foreign(self, tables: set[str]) -> None:
        if tables and "meta" not in tables:
            raise StoreError(f"{self._name} is an SQLite file but not a cgnf_fast score store (no meta table)")

    def _check_existing(self) -> None:
        tables = self._tables()
        self._refuse_foreign(tables)
        meta = dict(self._db.execute("SELECT key, value FROM meta"))
        if meta.get("format") != FORMAT:
            raise StoreError(f"{self._name} is not a cgnf_fast score store (format {_show(meta.get('format'))})")
        try:
            self.version = int(meta.get("version", "0"))
        except ValueError:
            raise StoreError(f"{self._name} is a damaged score store (version {_show(meta['version'])})") from None
        if self.version > SCHEMA_VERSION:
            raise StoreError(
                f"{self._name} was written by a newer cgnf_fast (store version {meta['version']}, "
                f"this one reads {SCHEMA_VERSION})"
            )
        if not {"scores", "claims"} <= tables:
            raise StoreError(f"{self._name} is a damaged score store (tables missing)")
        self._db.execute("SELECT count(*) FROM scores").fetchone()  # touches the table: corrupt pages raise

    def quick_check(self) -> list[str]:
        """SQLite's ``PRAGMA quick_check`` findings (each on one line), ``[]`` when the file is well formed."""
        try:
            found = [str(r[0]) for r in self._db.execute("PRAGMA quick_check(20)")]
        except sqlite3.DatabaseError as e:
            if isinstance(e, sqlite3.OperationalError) and _busy(e):
                raise
            return [str(e)]
        return [] if found == ["ok"] else [" ".join(m.split()) for m in found]

    def _migrate(self) -> None:
        """Version 1 -> 2: adds the checksum column and fills it for every row that is plausible
        (a row that is not, e.g. a cell that is not JSON, gets none and counts as damaged). One
        transaction; a second process opening the store at once finds it migrated."""
        with self._tx() as db:
            version = int(dict(db.execute("SELECT key, value FROM meta"))["version"])
            if version >= SCHEMA_VERSION:
                self.version = version
                return
            if "checksum" not in self._columns("scores"):
                db.execute("ALTER TABLE scores ADD COLUMN checksum TEXT")
            sums = []
            for rowid, *fields in _fetch(db, f"SELECT rowid, {', '.join(_FIELDS)} FROM scores NOT INDEXED"):
                fields = tuple(fields)
                sums.append((None if _implausible(fields) else checksum(fields), rowid))
            db.executemany("UPDATE scores SET checksum=? WHERE rowid=?", sums)
            db.execute("UPDATE meta SET value=? WHERE key='version'", (str(SCHEMA_VERSION),))
        self.migrated = {"from_version": version, "rows": len(sums), "implausible": sum(s is None for s, _ in sums)}
        self.version = SCHEMA_VERSION

    class _Tx:
        def __init__(self, store: ScoreStore) -> None:
            self.store = store
            self.db = store._db

        def __enter__(self):
            try:
                self.db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as e:
                if _readonly(e):
                    raise StoreError(f"{self.store._name} is read-only (SQLite says: {e})") from None
                raise
            return self.db

        def __exit__(self, exc_type, exc, tb):
            if exc_type is None:
                self.db.execute("COMMIT")
            elif self.db.in_transaction:  # SQLite may have rolled back already (e.g. on corruption)
                self.db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.OperationalError) and _readonly(exc):
                raise StoreError(f"{self.store._name} is read-only (SQLite says: {exc})") from None
            return False

    def _tx(self) -> ScoreStore._Tx:
        return ScoreStore._Tx(self)

    def _writable(self, what: str) -> None:
        if self.read_only is not None:
            raise StoreError(f"{self._name} is read-only ({self.read_only}): cannot {what}")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ScoreStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- claims ---------------------------------------------------------------------------
    def claim(self, space: str, code: int, data_fp: str, seed: int, code_version: str) -> bool:
        """Claim a cell for this process; False when someone alive holds it (:meth:`try_claim` says who)."""
        return self.try_claim(space, code, data_fp, seed, code_version) is None

    def try_claim(self, space: str, code: int, data_fp: str, seed: int, code_version: str) -> str | None:
        """Claims a cell for this process: None when it now holds the claim, else ``"host:pid"`` of
        the live process that does (read in the same transaction, so never a holder already gone)."""
        self._writable("claim a cell")
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
                if not (mine or self._stale(host, pid, claimed, now)):
                    return f"{host}:{pid}"
                db.execute(
                    "UPDATE claims SET host=?, pid=?, claimed=? WHERE space=? AND code=? AND data_fp=? AND seed=? AND code_version=?",
                    (self._host, os.getpid(), now, *key),
                )
                return None
            db.execute("INSERT INTO claims VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (*key, self._host, os.getpid(), now))
            return None

    def _stale(self, host: str, pid: int, claimed: float, now: float) -> bool:
        return now - claimed > self.claim_ttl or (host == self._host and not _pid_alive(pid))

    def holder(self, space: str, code: int, data_fp: str, seed: int, code_version: str) -> str | None:
        """``"host:pid"`` of the live process holding a claim on the cell, None when nobody alive does."""
        row = self._db.execute(
            "SELECT host, pid, claimed FROM claims WHERE space=? AND code=? AND data_fp=? AND seed=? AND code_version=?",
            (space, str(code), data_fp, seed, code_version),
        ).fetchone()
        if row is None or self._stale(*row, time.time()):
            return None
        return f"{row[0]}:{row[1]}"

    def claims(self) -> dict[str, list[dict[str, Any]]]:
        """Every claim, as ``{"live": [...], "stale": [...]}`` (a stale one is taken over by the next
        scorer that wants its cell): space, code, data_fp, seed, code_version, holder ``host:pid``, age_s."""
        now = time.time()
        out: dict[str, list[dict[str, Any]]] = {"live": [], "stale": []}
        for space, code, fp, seed, ver, host, pid, claimed in _fetch(
                self._db, "SELECT space, code, data_fp, seed, code_version, host, pid, claimed FROM claims "
                          "ORDER BY claimed"):
            out["stale" if self._stale(host, pid, claimed, now) else "live"].append(
                {"space": _show(space), "code": int(code) if code.isdigit() else _show(code), "data_fp": fp, "seed": seed, "code_version": ver,
                 "holder": f"{host}:{pid}", "age_s": round(now - claimed, 1)})
        return out

    # -- scores ---------------------------------------------------------------------------
    def put(self, space: str, code: int, cell_json: str, data_fp: str, seed: int, code_version: str,
            values: dict[str, float], seconds: dict[str, float] | None = None,
            errors: dict[str, str] | None = None) -> None:
        """Store a cell's scores (one transaction, each row with its checksum) and release its claim."""
        self._writable("store scores")
        now = time.time()
        seconds = {p: None if s is None else float(s) for p, s in (seconds or {}).items()}
        rows = []
        for proxy, v in values.items():
            v = float(v)
            finite = math.isfinite(v)
            rows.append((space, str(code), proxy, data_fp, int(seed), code_version, cell_json,
                         v if finite else None, None if finite else repr(v), "ok" if finite else "nonfinite",
                         seconds.get(proxy), now))
        for proxy, msg in (errors or {}).items():
            rows.append((space, str(code), proxy, data_fp, int(seed), code_version, cell_json, None, str(msg), "error",
                         seconds.get(proxy), now))
        with self._tx() as db:
            db.executemany(f"INSERT OR IGNORE INTO scores ({', '.join(_FIELDS)}, checksum) "
                           f"VALUES ({', '.join('?' * (len(_FIELDS) + 1))})", [(*r, checksum(r)) for r in rows])
            db.execute(
                "DELETE FROM claims WHERE space=? AND code=? AND data_fp=? AND seed=? AND code_version=?",
                (space, str(code), data_fp, seed, code_version),
            )

    def _select(self, where: list[str], args: list, *, table_only: bool = False,
                order: bool = False) -> list[tuple[int, tuple, Any]]:
        """``(rowid, fields, checksum)`` of the matching rows; ``table_only`` reads the table itself,
        not its index (where SQLite reads indexed fields from the index, a damaged copy in the table
        would go unseen)."""
        sql = (f"SELECT rowid, {', '.join(_FIELDS)}, {'checksum' if self.checksums else 'NULL'} FROM scores"
               + (" NOT INDEXED" if table_only else "")
               + (" WHERE " + " AND ".join(where) if where else "")
               + (" ORDER BY space, code, proxy" if order else ""))
        try:
            return [(r[0], r[1:-1], r[-1]) for r in _fetch(self._db, sql, args)]
        except sqlite3.DatabaseError as e:
            if isinstance(e, sqlite3.OperationalError) and _busy(e):
                raise
            raise StoreError(f"{self._name} is damaged: its scores cannot be read (SQLite says: {e})") from None

    def _problem(self, fields: tuple, stored_sum: Any) -> str | None:
        """Why a row is not as it was written, or None."""
        if not self.checksums:
            return _implausible(fields)
        if stored_sum is None:
            return "no checksum (implausible when its store was migrated)"
        return None if stored_sum == checksum(fields) else "checksum mismatch"

    def _damaged_error(self, bad: list[dict[str, Any]]) -> StoreError:
        named = ", ".join(f"{b['space']} cell {b['code']} {b['proxy']} ({b['problem']})" for b in bad[:_SHOWN])
        more = f" and {len(bad) - _SHOWN} more" if len(bad) > _SHOWN else ""
        how = "scoring into the store (cgnf zc score) replaces them" if self.read_only is None else \
            f"the store is read-only ({self.read_only}), so they cannot be replaced"
        return StoreError(f"{self._name} has {len(bad)} damaged score row{'s' * (len(bad) != 1)}: {named}{more}; "
                          f"they are not read: {how}")

    @staticmethod
    def _describe(rowid: int, fields: tuple, problem: str) -> dict[str, Any]:
        return {"rowid": rowid, "space": _show(fields[0]), "code": _show(fields[1]), "proxy": _show(fields[2]),
                "problem": problem}

    def done(self, space: str, data_fp: str, seed: int, code_version: str, proxies: Iterable[str],
             codes: Iterable[int] | None = None) -> set[int]:
        """Codes of cells that already have every proxy in ``proxies`` in rows that pass their
        checksum (a cell with a damaged row is not done). ``codes``: only these cells are looked at
        (cheap: a scorer asks about one cell at a time)."""
        proxies = list(dict.fromkeys(proxies))
        where = ["space=?", "data_fp=?", "seed=?", "code_version=?", "proxy IN (%s)" % ",".join("?" * len(proxies))]
        args: list[Any] = [space, data_fp, seed, code_version, *proxies]
        if codes is None:
            found = self._select(where, args)
        else:
            codes = [str(c) for c in codes]
            found = []
            for i in range(0, len(codes), 500):  # within SQLite's limit on bound values
                chunk = codes[i:i + 500]
                found += self._select(where + ["code IN (%s)" % ",".join("?" * len(chunk))], args + chunk)
        have: dict[str, set[str]] = {}
        for _, fields, stored_sum in found:
            if self._problem(fields, stored_sum) is None:
                have.setdefault(fields[1], set()).add(fields[2])
        return {int(code) for code, got in have.items() if len(got) == len(proxies)}

    def rows(self, *, space: str | None = None, data_fp: str | None = None, seed: int | None = None,
             code_version: str | None = None, proxies: Iterable[str] | None = None) -> Iterator[dict[str, Any]]:
        """Stored scores as dicts (non-finite values restored as floats): all of them, or those
        matching every given filter (selected in SQL, so a filter skips the rest cheaply).

        Every matching row is checked before the first is returned: a row that fails its checksum
        (or, in a version-1 store read without checksums, is implausible) is a :class:`StoreError`
        naming it, never a value. Without filters the table itself is read, so a damaged copy of
        an indexed field is seen too.
        """
        where, args = [], []
        for col, v in (("space", space), ("data_fp", data_fp), ("seed", seed), ("code_version", code_version)):
            if v is not None:
                where.append(f"{col}=?")
                args.append(v)
        if proxies is not None:
            proxies = list(proxies)
            where.append("proxy IN (%s)" % ",".join("?" * len(proxies)))
            args += proxies
        found = self._select(where, args, table_only=not where, order=True)
        bad = [self._describe(rowid, f, p) for rowid, f, s in found if (p := self._problem(f, s))]
        if bad:
            raise self._damaged_error(bad)
        for _, r, _ in found:
            space, code, proxy, fp, seed, ver, cell, value, text, status, seconds, created = r
            if status == "nonfinite":
                value = float(text)
            yield {"space": space, "code": int(code), "proxy": proxy, "data_fp": fp, "seed": seed,
                   "code_version": ver, "cell": json.loads(cell), "value": value, "status": status,
                   "message": text if status == "error" else None, "seconds": seconds, "created": created}

    def count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM scores").fetchone()[0])

    # -- integrity ---------------------------------------------------------------------------
    def damaged(self) -> dict[str, Any]:
        """Every score row that fails its checksum, read from the table itself, and whether the
        primary key's index agrees with the table (an index entry that does not hides a row from
        lookups, and a rescore would store its cell twice):
        ``{"rows": [{"rowid", "space", "code", "proxy", "problem"}], "index_mismatches": n}``."""
        table = self._select([], [], table_only=True)
        bad = [self._describe(rowid, f, p) for rowid, f, s in table if (p := self._problem(f, s))]
        try:  # a covering scan of the index returns the index's copies of the key fields
            index = {r[0]: r[1:] for r in _fetch(self._db, f"SELECT rowid, {', '.join(_KEY)} FROM scores "
                                                            f"INDEXED BY {_SCORES_INDEX}")}
        except sqlite3.DatabaseError as e:
            if isinstance(e, sqlite3.OperationalError) and _busy(e):
                raise
            raise StoreError(f"{self._name} is damaged: its index cannot be read (SQLite says: {e})") from None
        keys = {rowid: f[:len(_KEY)] for rowid, f, _ in table}
        mismatches = sum(index.get(rowid) != key for rowid, key in keys.items()) + len(index.keys() - keys.keys())
        return {"rows": bad, "index_mismatches": mismatches}

    def remove_damaged(self) -> dict[str, Any]:
        """Deletes the rows that fail their checksum (so that their cells are scored again) and
        rebuilds the primary key's index where it disagrees with the table (it is derived from
        the table, so nothing is lost); returns ``{"rows": [the rows deleted, as :meth:`damaged`
        names them], "index_rebuilt": bool}``. Cheap when nothing is damaged (one read, no lock);
        otherwise the check is repeated under the write lock before anything is deleted."""
        found = self.damaged()
        if not found["rows"] and not found["index_mismatches"]:
            return {"rows": [], "index_rebuilt": False}
        self._writable("remove its damaged rows")
        for attempt in range(2):
            try:
                with self._tx() as db:
                    found = self.damaged()
                    reindex = bool(found["index_mismatches"] or attempt)
                    if reindex:
                        db.execute(f"REINDEX {_SCORES_INDEX}")
                    db.executemany("DELETE FROM scores WHERE rowid=?", [(b["rowid"],) for b in found["rows"]])
                return {"rows": found["rows"], "index_rebuilt": reindex}
            except sqlite3.DatabaseError as e:
                if isinstance(e, sqlite3.OperationalError) and _busy(e):
                    raise
                if attempt or not _corrupt(e):  # a damaged key the index does not know: rebuild it first
                    raise StoreError(f"{self._name} is damaged and could not be repaired (SQLite says: {e})") from None
        raise AssertionError("unreachable")

    def check(self) -> dict[str, Any]:
        """A summary of the store's health, for ``cgnf zc check``: ``path``, ``version``,
        ``read_only`` (None or why), ``checksums`` (False: a version-1 store read without them),
        ``quick_check`` ("ok" or SQLite's findings), ``rows``, ``damaged`` (rows that fail their
        checksum: rowid, space, code, proxy, problem), ``index_mismatches``, ``claims``
        (``{"live": [...], "stale": [...]}``, each with its holder ``host:pid``), ``unreadable``
        (None, or why the rows could not be read at all) and ``ok``: True when the file is well
        formed and every row intact (claims do not count: a live one is work in progress, a stale
        one is taken over by the next scorer)."""
        problems = self.quick_check()
        out: dict[str, Any] = {"path": str(self.path), "version": self.version, "read_only": self.read_only,
                               "checksums": self.checksums, "quick_check": problems or "ok", "rows": None,
                               "damaged": [], "index_mismatches": 0, "claims": {"live": [], "stale": []},
                               "unreadable": None}
        try:
            out["rows"] = self.count()
            found = self.damaged()
            out["damaged"], out["index_mismatches"] = found["rows"], found["index_mismatches"]
            out["claims"] = self.claims()
        except (StoreError, sqlite3.DatabaseError) as e:
            if isinstance(e, sqlite3.OperationalError) and _busy(e):
                raise
            out["unreadable"] = str(e)
        out["ok"] = not problems and not out["damaged"] and not out["index_mismatches"] and not out["unreadable"]
        return out


def check_store(path: str | os.PathLike, *, claim_ttl: float = 3600.0) -> dict[str, Any]:
    """:meth:`ScoreStore.check` of the store at ``path``, opened without refusing a damaged file,
    never created (a missing file is a :class:`StoreError`) and never migrated. A file that is not a score store
    at all, or so damaged that SQLite cannot open it, is a StoreError too."""
    if not Path(path).exists():
        raise StoreError(f"{str(path)!r} does not exist")
    with ScoreStore(path, claim_ttl=claim_ttl, verify=False, migrate=False) as st:
        return st.check()
