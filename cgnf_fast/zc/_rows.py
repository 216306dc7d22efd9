"""SQLite helpers of the score store (:mod:`cgnf_fast.zc.store`): error classes, reads that
survive damaged text, and the per-row checksum and plausibility checks."""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
from collections.abc import Iterable
from typing import Any

#: Statuses a score row may have.
STATUSES = ("ok", "nonfinite", "error")


def _code(e: sqlite3.Error) -> int | None:
    code = getattr(e, "sqlite_errorcode", None)  # Python >= 3.11
    return None if code is None else code & 0xFF


def _busy(e: sqlite3.OperationalError) -> bool:
    code = _code(e)
    if code is not None:
        return code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(e) or "busy" in str(e)


def _corrupt(e: sqlite3.Error) -> bool:
    code = _code(e)
    if code is not None:
        return code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
    return "malformed" in str(e) or "not a database" in str(e)


def _readonly(e: sqlite3.Error) -> bool:
    code = _code(e)
    if code is not None:
        return code == sqlite3.SQLITE_READONLY
    return "readonly" in str(e)


def _text(raw: bytes) -> str:
    """SQLite text as ``str`` where it is not valid UTF-8 (a damaged byte): surrogates instead of
    an exception, so that the row can be checked and named; its checksum then fails."""
    return raw.decode("utf-8", "surrogateescape")


def _fetch(db: sqlite3.Connection, sql: str, args: Iterable[Any] = ()) -> list[tuple]:
    """Every row of a query; text that is not UTF-8 comes back through :func:`_text` (read again:
    the plain decoding, in C, is faster when nothing is damaged)."""
    try:
        try:
            return db.execute(sql, tuple(args)).fetchall()
        except sqlite3.OperationalError as e:
            if "decode" not in str(e):
                raise
        db.text_factory = _text
        try:
            return db.execute(sql, tuple(args)).fetchall()
        finally:
            db.text_factory = str
    except UnicodeDecodeError as e:  # SQLite's error message quotes a damaged name
        raise sqlite3.DatabaseError(e.object.decode("ascii", "backslashreplace")) from None


def checksum(fields: tuple) -> str:
    """The checksum of a score row's ``_FIELDS`` as SQLite returns them: SHA-256 of their
    ``ascii()`` (exact for doubles, which print as the shortest text that reads back the same;
    independent of the Unicode version, since every non-ASCII character is escaped; and typed,
    so an integer or blob where a double or text was stored does not match)."""
    return hashlib.sha256(ascii(fields).encode()).hexdigest()[:32]


def _is_text(v: Any) -> bool:
    if not isinstance(v, str):
        return False
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:  # surrogates: the bytes were not UTF-8
        return False
    return True


def _implausible(fields: tuple) -> str | None:
    """Why a row without a checksum (store version 1) cannot be as written, or None."""
    space, code, proxy, fp, seed, ver, cell, value, text, status, seconds, created = fields
    for name, v in (("space", space), ("code", code), ("proxy", proxy), ("data_fp", fp), ("code_version", ver),
                    ("cell", cell), ("status", status)):
        if not _is_text(v):
            return f"{name} is not text"
    if not code.lstrip("-").isdigit():
        return "code is not an integer"
    if not isinstance(seed, int):
        return "seed is not an integer"
    if status not in STATUSES:
        return "unknown status"
    if text is not None and not _is_text(text):
        return "value_text is not text"
    if status == "ok" and not (isinstance(value, float) and math.isfinite(value) and text is None):
        return "status ok without a finite value"
    if status == "nonfinite":
        try:
            if value is not None or math.isfinite(float(text)):
                return "status nonfinite without a non-finite value"
        except (TypeError, ValueError):
            return "status nonfinite without a non-finite value"
    if status == "error" and (value is not None or text is None):
        return "status error without a message"
    if not (seconds is None or isinstance(seconds, float)) or not isinstance(created, float):
        return "seconds or created is not a number"
    try:
        if not isinstance(json.loads(cell), dict):
            return "cell is not a JSON object"
    except ValueError:
        return "cell is not JSON"
    return None


def _show(v: Any) -> str:
    """A stored field for a one-line message: printable text as is, anything else escaped."""
    s = v if isinstance(v, str) else repr(v)
    if not (_is_text(s) and s.isprintable()):
        s = ascii(s)
    return s if len(s) <= 40 else s[:37] + "..."
