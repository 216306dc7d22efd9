"""``cgnf cell hash``: codes and hashes of single cells."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from typing import Any, TextIO

from ._common import CLIError

HELP = "single cells"


def add_parser(sub: argparse._SubParsersAction) -> None:
    cp = sub.add_parser("cell", help=HELP)
    cps = cp.add_subparsers(dest="cell_command", metavar="SUBCOMMAND", required=True)
    h = cps.add_parser(
        "hash",
        help="codes and hashes of cells read one per line (JSON {'matrix','ops'} or NB201 strings)",
        description="Reads cells one per line (a JSON object with 'matrix' and 'ops', or an NB201 "
        "string) and writes one JSON object per cell, with the same keys for every input: 'code' and "
        "'network_code' of the pruned cell, 'nb101_hash' (NB101 ops only, else null), 'nb201' (the "
        "lowest-index NB201 string of its class, or null outside NB201), and 'nb201_index' and "
        "'nb201_unique_str' (of the input's own NB201 string when it is one, else of 'nb201'; null "
        "outside NB201).",
    )
    h.add_argument("--input", "-i", help="read from this file instead of stdin")
    h.set_defaults(func=_hash)


def _read_cells(stream: TextIO) -> Iterator[tuple[int, Any, str | None]]:
    """Yields ``(line number, Cell, NB201 string or None)`` for non-blank lines."""
    from ..space import Cell, nb201

    for lineno, line in enumerate(stream, start=1):
        text = line.strip()
        if not text:
            continue
        try:
            if text.startswith("{"):
                yield lineno, Cell.from_json(text), None
            else:
                yield lineno, nb201.to_cell(text), text
        except ValueError as e:
            raise CLIError(f"line {lineno}: {e}") from None


def _hash(args: argparse.Namespace) -> int:
    from ..space import NB101_OPS, nb201

    stream = open(args.input) if args.input else sys.stdin
    try:
        for _, cell, arch in _read_cells(stream):
            pruned = cell.pruned(allow_zero=True)
            nb201_str = pruned.to_nb201()
            named = arch if arch is not None else nb201_str  # the NB201 string the index describes
            row: dict[str, Any] = {
                "code": pruned.canonical_code(),
                "network_code": pruned.network_code(),
                "nb101_hash": None,
                "nb201": nb201_str,
                "nb201_index": None if named is None else nb201.index_of(named),
                "nb201_unique_str": None if named is None else nb201.unique_str(named),
            }
            if not pruned.is_zero and all(o in NB101_OPS for o in pruned.ops[1:-1]):
                row["nb101_hash"] = pruned.nb101_hash()
            print(json.dumps(row), flush=False)
    finally:
        if args.input:
            stream.close()
    return 0
