"""The ``cgnf`` command. Subcommands: ``space info``, ``cell hash`` (more come with later work).

Bad input exits with status 2 and one line on stderr naming the problem.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any, TextIO


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


def _space_info(args: argparse.Namespace) -> int:
    from .space import nb201, spaces

    sp = spaces.get(args.space)
    info = sp.info()
    if isinstance(sp, spaces.NB201Space):
        t0 = time.perf_counter()
        cells = [sp.cell(i) for i in range(nb201.NUM_ARCHS)]
        info["classes"] = {
            "structural": len({c.canonical_code() for c in cells}),
            "network": len({c.network_code() for c in cells}),
            "nb201_unique_str": len({nb201.unique_str(a) for a in nb201.all_archs()}),
            "zero_cells": sum(c.is_zero for c in cells),
        }
        info["seconds"] = round(time.perf_counter() - t0, 3)
    if args.json:
        print(json.dumps(info))
        return 0
    width = max(len(k) for k in info)
    for k, v in info.items():
        if isinstance(v, dict):
            print(f"{k:<{width}}  " + ", ".join(f"{kk}={vv:,}" for kk, vv in v.items()))
        elif isinstance(v, list):
            print(f"{k:<{width}}  {', '.join(map(str, v))}")
        elif isinstance(v, int) and not isinstance(v, bool):
            print(f"{k:<{width}}  {v:,}")
        else:
            print(f"{k:<{width}}  {v}")
    return 0


def _read_cells(stream: TextIO) -> Iterator[tuple[int, Any, str | None]]:
    """Yields ``(line number, Cell, NB201 string or None)`` for non-blank lines."""
    from .space import Cell, nb201

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


def _cell_hash(args: argparse.Namespace) -> int:
    from .space import NB101_OPS, nb201

    stream = open(args.input) if args.input else sys.stdin
    try:
        for _, cell, arch in _read_cells(stream):
            pruned = cell.pruned(allow_zero=True)
            row: dict[str, Any] = {
                "code": pruned.canonical_code(),
                "network_code": pruned.network_code(),
                "nb101_hash": None,
                "nb201": pruned.to_nb201(),
            }
            if not pruned.is_zero and all(o in NB101_OPS for o in pruned.ops[1:-1]):
                row["nb101_hash"] = pruned.nb101_hash()
            if arch is not None:
                row["nb201_index"] = nb201.index_of(arch)
                row["nb201_unique_str"] = nb201.unique_str(arch)
            print(json.dumps(row), flush=False)
    finally:
        if args.input:
            stream.close()
    return 0


def _build_parser() -> argparse.ArgumentParser:
    from .space import spaces

    p = argparse.ArgumentParser(prog="cgnf", description="cgnf_fast: cells, design spaces and (soon) sampling.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    sp = sub.add_parser("space", help="design spaces")
    sps = sp.add_subparsers(dest="space_command", metavar="SUBCOMMAND", required=True)
    info = sps.add_parser("info", help="describe a design space (vocabulary, limits, sizes)")
    info.add_argument("space", help=f"one of: {', '.join(spaces.names())}")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.set_defaults(func=_space_info)

    cp = sub.add_parser("cell", help="single cells")
    cps = cp.add_subparsers(dest="cell_command", metavar="SUBCOMMAND", required=True)
    h = cps.add_parser(
        "hash",
        help="codes and hashes of cells read one per line (JSON {'matrix','ops'} or NB201 strings)",
        description="Reads cells one per line (a JSON object with 'matrix' and 'ops', or an NB201 "
        "string) and writes one JSON object per cell: canonical code and network code of the pruned "
        "cell, NB101 hash (NB101 ops only), and the NB201 string of its class (or null).",
    )
    h.add_argument("--input", "-i", help="read from this file instead of stdin")
    h.set_defaults(func=_cell_hash)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (CLIError, ValueError, FileNotFoundError) as e:
        print(f"cgnf: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `cgnf cell hash | head`
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
