"""What a search maximises: a table of measured values, or a function of the user's.

**Table** (:class:`TableObjective`): a CSV with one key column and one value column. The key is
an NB201 string (a column named ``arch``, or any column whose every value is one, such as
NB201's ``cellstr``) or an official NB201 index (a column named ``index``, or ``arch`` holding
integers, as the NB201 tables of ``CGNF_DATA_DIR`` do). Rows of one string are repeated
measurements and are averaged (NaN and empty values skipped). A cell's value is the **mean over
its network class**: the mean of the string means of every string in the table whose pruned
cell builds the same network (each string weighs the same, however many rows it has), so no
method gains by finding a luckier copy of a network already measured. The optimum is the best
class mean. A table must cover every network of the space except the zero network (no input ->
output path), which may have no value; querying it is then a failed query.

**Callable** (:class:`CallableObjective`): ``f(cell) -> float``, the user's training or
measurement. Results are cached by network in a score store when one is given, so a killed
search resumes where it stopped; an ``f`` that raises or returns NaN records a failure that the
search steps past.

Values are always maximised inside the search: ``direction="min"`` negates them on the way in
and back on the way out.
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..space import Cell
from .domain import NB201Domain, nb201_domain

__all__ = ["CallableObjective", "ObjectiveError", "ProtocolObjective", "TableObjective", "DIRECTIONS"]

DIRECTIONS = ("max", "min")
#: Table cells read as missing values (NaN): what pandas and R write for them.
_MISSING = ("", "nan", "na", "n/a", "null", "none")


class ObjectiveError(ValueError):
    """A table or objective the search cannot use (one line naming what is wrong)."""


def _check_direction(direction: str) -> float:
    if direction not in DIRECTIONS:
        raise ObjectiveError(f"direction must be 'max' or 'min', got {direction!r}")
    return 1.0 if direction == "max" else -1.0


class TableObjective:
    """Class means of one column of a CSV table over NAS-Bench-201 (module doc).

    ``values[c]`` is the (signed, so larger is better) mean of network class ``c``; ``optimum``
    the best class mean in the table's own units and direction.
    """

    def __init__(self, path: str | os.PathLike, column: str, direction: str = "max",
                 domain: NB201Domain | None = None) -> None:
        self.sign = _check_direction(direction)
        self.direction = direction
        self.path = Path(path)
        self.column = column
        self.domain = domain or nb201_domain()
        if not self.path.is_file():
            raise ObjectiveError(f"--table {path}: no such file")
        raw = self.path.read_bytes()
        self.fingerprint = hashlib.sha256(raw + f"\0{column}".encode()).hexdigest()[:16]
        header, rows = _read_csv(self.path, raw)
        if column not in header:
            raise ObjectiveError(f"--table {path}: no column {column!r}; its columns: {', '.join(header)}")
        key_col, to_index = _key_column(header, rows, self.path)
        self.key_column = key_col
        ki, vi = header.index(key_col), header.index(column)
        sums = np.zeros(self.domain.size)
        counts = np.zeros(self.domain.size)
        for lineno, row in rows:
            if len(row) != len(header):
                raise ObjectiveError(f"--table {path}: line {lineno} has {len(row)} fields, the header {len(header)}")
            idx = to_index(row[ki], lineno)
            try:
                v = math.nan if row[vi].lower() in _MISSING else float(row[vi])
            except ValueError:
                raise ObjectiveError(f"--table {path}: line {lineno}: {column} is not a number: "
                                     f"{row[vi]!r}") from None
            if math.isinf(v):
                raise ObjectiveError(f"--table {path}: line {lineno}: {column} is infinite")
            if not math.isnan(v):
                sums[idx] += v
                counts[idx] += 1
        self._class_means(sums, counts)

    def _class_means(self, sums: np.ndarray, counts: np.ndarray) -> None:
        dom = self.domain
        have = counts > 0
        string_mean = np.divide(sums, counts, out=np.zeros_like(sums), where=have)
        csum = np.bincount(dom.class_of[have], weights=string_mean[have], minlength=dom.num_classes)
        ccount = np.bincount(dom.class_of[have], minlength=dom.num_classes)
        # The network of the 341 strings with no input -> output path may have no value (zero-cost
        # columns have none): querying it is then a failed query. Every other network needs one.
        missing = np.flatnonzero((ccount == 0) & (np.arange(dom.num_classes) != dom.zero_class))
        if len(missing):
            ex = ", ".join(dom.arch(dom.representative[c]) for c in missing[:2])
            raise ObjectiveError(f"--table {self.path}: column {self.column!r} has no value for {len(missing)} of the "
                                 f"{dom.num_classes - 1:,} NB201 networks with an input -> output path (for example "
                                 f"{ex}); a table must cover the space")
        with np.errstate(invalid="ignore", divide="ignore"):
            self.class_means = np.where(ccount > 0, csum / np.maximum(ccount, 1), np.nan)  # [classes], table units
        self.values = self.sign * self.class_means  # larger is better
        self.optimum = float(self.sign * np.nanmax(self.values))
        self.strings = int(have.sum())

    def __call__(self, item: int) -> float:
        """The class mean of an item (an official index), in the table's units."""
        return float(self.class_means[self.domain.network(item)])

    def describe(self) -> str:
        return (f"{self.column} of {self.path.name} ({self.direction}; keys: {self.key_column}; class means over "
                f"{self.domain.num_classes:,} networks from {self.strings:,} strings; optimum {self.optimum:.4f})")


def _read_csv(path: Path, raw: bytes) -> tuple[list[str], list[tuple[int, list[str]]]]:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ObjectiveError(f"--table {path}: not a UTF-8 CSV file") from None
    reader = csv.reader(text.splitlines())
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise ObjectiveError(f"--table {path}: the file is empty") from None
    except csv.Error as e:
        raise ObjectiveError(f"--table {path}: not a CSV file ({e})") from None
    try:
        rows = [(n, [x.strip() for x in r]) for n, r in enumerate(reader, start=2) if r]
    except csv.Error as e:
        raise ObjectiveError(f"--table {path}: not a CSV file ({e})") from None
    if not rows:
        raise ObjectiveError(f"--table {path}: no rows under the header")
    return header, rows


def _key_column(header: list[str], rows: list[tuple[int, list[str]]],
                path: Path) -> tuple[str, Callable[[str, int], int]]:
    """The key column and a function from its text to an official index (module doc)."""
    from ..space import nb201

    def is_arch(col: int) -> bool:
        return all(len(r) > col and r[col].startswith("|") for _, r in rows[:50])

    def is_int(col: int) -> bool:
        return all(len(r) > col and r[col].lstrip("-").isdigit() for _, r in rows[:50])

    def from_arch(text: str, lineno: int) -> int:
        try:
            return nb201.index_of(text)
        except ValueError as e:
            raise ObjectiveError(f"--table {path}: line {lineno}: {text!r} is not an NB201 cell ({e})") from None

    def from_index(text: str, lineno: int) -> int:
        try:
            i = int(text)
        except ValueError:
            i = -1
        if not 0 <= i < nb201.NUM_ARCHS:
            raise ObjectiveError(f"--table {path}: line {lineno}: {text!r} is not an NB201 index (0..15624)")
        return i

    if "arch" in header and is_arch(header.index("arch")):
        return "arch", from_arch
    strings = [h for i, h in enumerate(header) if is_arch(i)]
    if strings:
        return strings[0], from_arch
    for name in ("index", "arch"):
        if name in header and is_int(header.index(name)):
            return name, from_index
    raise ObjectiveError(f"--table {path}: no key column: name one 'arch' (NB201 strings) or 'index' (official "
                         f"NB201 indices); its columns: {', '.join(header)}")


class CallableObjective:
    """``f(cell) -> float`` of the user's (module doc); ``name`` identifies it in a score store."""

    def __init__(self, f: Callable[[Cell], float], direction: str = "max", name: str | None = None) -> None:
        if not callable(f):
            raise ObjectiveError(f"the objective must be callable, got {type(f).__name__}")
        self.sign = _check_direction(direction)
        self.direction = direction
        self.f = f
        self.name = name or getattr(f, "name", None) or \
            f"{getattr(f, '__module__', '')}.{getattr(f, '__qualname__', type(f).__name__)}"
        self.fingerprint = hashlib.sha256(self.name.encode()).hexdigest()[:16]
        self.optimum: float | None = None

    def evaluate(self, cell: Cell) -> tuple[float | None, str | None]:
        """``(value, None)``, or ``(None, why)`` when ``f`` raised or gave a non-finite value."""
        try:
            v = float(self.f(cell))
        except Exception as e:  # noqa: BLE001 -- the user's code: any failure is recorded, never fatal
            return None, f"{type(e).__name__}: {e}"
        if not math.isfinite(v):
            return None, f"the objective returned {v}"
        return v, None

    def describe(self) -> str:
        what = self.f.describe() if callable(getattr(self.f, "describe", None)) else self.name
        return f"{what} ({self.direction})"


class ProtocolObjective:
    """``f(cell)``: the cell's network (NB201's skeleton) trained on a task with one of
    ``cgnf evaluate``'s protocols (``cpu-small``, ...); its test metric. Picklable, so Ray
    workers can run it."""

    def __init__(self, protocol: str, task: str = "cifar10", seed: int = 0, device: str = "cpu",
                 skeleton: str = "nb201") -> None:
        from ..evaluate.protocol import get_protocol
        from ..evaluate.tasks import load_task

        self.skeleton = skeleton
        self.protocol = get_protocol(protocol, space=skeleton)
        self.task = load_task(task, self.protocol)
        self.seed, self.device = seed, device
        self.direction = "min" if self.task.objective == "min" else "max"
        #: what identifies its results in a score store
        self.name = f"protocol:{self.protocol.key(skeleton)}:task:{self.task.fingerprint()}:seed:{seed}"

    def __call__(self, cell: Cell) -> float:
        from ..evaluate.protocol import train_cell

        return float(train_cell(cell, self.skeleton, self.task, self.protocol, seed=self.seed,
                                device=self.device).metric)

    def describe(self) -> str:
        return f"{self.task.describe()}; {self.protocol.describe()}"


def as_objective(objective: Any, direction: str = "max") -> TableObjective | CallableObjective:
    """A table objective as it is, or a callable wrapped."""
    if isinstance(objective, (TableObjective, CallableObjective)):
        return objective
    return CallableObjective(objective, direction)
