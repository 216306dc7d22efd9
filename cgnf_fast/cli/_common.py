"""What every ``cgnf`` command group shares: the user-error type, argument types, output checks,
help fragments and the defaults of a config dataclass."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import tempfile
import math
from pathlib import Path
from typing import Any


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


DEVICE_HELP = "torch device: cpu, cuda or cuda:N (default cpu)"
NO_PROGRESS_HELP = "no progress bar on stderr"
JSON_HELP = "print one JSON object"


def space_help(suffix: str = "") -> str:
    """``one of: <the built-in spaces>`` (+ ``suffix``)."""
    from ..space import spaces

    return f"one of: {', '.join(spaces.names())}{suffix}"


def add_space_arg(p: argparse.ArgumentParser) -> None:
    """SPACE as a positional argument or as ``--space SPACE`` (the spelling the other commands
    use); :func:`resolve_space_arg` merges them after parsing."""
    p.add_argument("space", nargs="?", help=space_help(" (or --space SPACE)"))
    p.add_argument("--space", dest="space_flag", metavar="SPACE", help="the same as the positional SPACE")


def resolve_space_arg(args: argparse.Namespace) -> None:
    """``args.space`` from the positional or the ``--space`` spelling (:func:`add_space_arg`)."""
    if not hasattr(args, "space_flag"):
        return
    if args.space is not None and args.space_flag is not None and args.space != args.space_flag:
        raise CLIError(f"the space is given twice and differently ({args.space!r} and --space {args.space_flag!r})")
    args.space = args.space if args.space is not None else args.space_flag
    if args.space is None:
        raise CLIError(f"a space is required: {space_help()} (positional or --space)")


IMAGE_BATCH_HELP = ("images per proxy evaluation, the first N of the embedded CIFAR-10 batch or of --images "
                    "(default %(default)s: what the shipped models' labels used)")


def add_alias(p: argparse.ArgumentParser, old: str, dest: str, **kwargs: Any) -> None:
    """An old spelling of an option, still accepted but not shown in ``--help`` (one spelling
    per concept is listed)."""
    p.add_argument(old, dest=dest, help=argparse.SUPPRESS, default=argparse.SUPPRESS, **kwargs)


def config_defaults(cls: type) -> dict[str, Any]:
    """Field name -> default of a config dataclass (``default_factory`` called; fields without a
    default left out): what the options mapped to its fields default to."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def config_kwargs(cls: type, args: argparse.Namespace) -> dict[str, Any]:
    """The parsed options named after a field of the config dataclass ``cls`` (``dest``), by field."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}


def nonneg_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {v}")
    return v


def pos_int(text: str) -> int:
    v = nonneg_int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {v}")
    return v


def lr_or_none(text: str) -> float | None:
    if text.strip().lower() == "none":
        return None
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a learning rate or 'none', got {text!r}") from None
    if not math.isfinite(v) or v < 0:
        raise argparse.ArgumentTypeError(f"a learning rate is a finite number >= 0, got {text!r}")
    return v


def int_list(text: str) -> list[int]:
    try:
        v = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not v:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    return v


def name_list(text: str) -> list[str]:
    """Comma-separated names, blanks dropped."""
    return [a.strip() for a in text.split(",") if a.strip()]


def seeds_arg(text: str) -> list[int]:
    """``--seeds``: distinct comma-separated integers (checked by the command, not the parser)."""
    try:
        seeds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise CLIError(f"--seeds: expected comma-separated integers, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise CLIError(f"--seeds: expected distinct comma-separated integers, got {text!r}")
    return seeds


def reference_arg(text: str) -> Any:
    """``--reference``: ``best``, an NB201 string, or a JSON cell ``{"matrix": ..., "ops": ...}``."""
    if not text.lstrip().startswith("{"):
        return text
    from ..space import Cell

    try:
        return Cell.from_json(text)
    except (ValueError, TypeError) as e:
        raise CLIError(f"--reference: {e}") from None


def check_outputs(*outputs: tuple[str, str | None]) -> None:
    """Refuses, before any work, an output file (flag, path) that cannot be written: a folder
    given as the file, a folder that does not exist, one this process cannot create files in, or
    an existing file it cannot replace. Messages name the flag and the user's path."""
    for flag, path in outputs:
        if not path:
            continue
        p = Path(path)
        if p.is_dir() or path.endswith(("/", os.sep)) or p.name in ("", ".", ".."):
            raise CLIError(f"{flag} {path}: is a folder; give a file name")
        folder = p.resolve().parent
        if not folder.is_dir():
            raise CLIError(f"{flag} {path}: the folder {folder} does not exist")
        try:  # the files are written next to their target and renamed into place: probe that
            with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{p.name}.", suffix=".probe"):
                pass
        except OSError as e:
            raise CLIError(f"{flag} {path}: cannot write files in {folder} ({e.strerror or e})") from None
        if p.exists() and not os.access(p, os.W_OK):
            raise CLIError(f"{flag} {path}: the file exists and cannot be replaced (no write permission)")


def check_png(png: str | None) -> None:
    """Refuses ``--png`` without matplotlib, or with a suffix no picture format has, before any work."""
    if png and importlib.util.find_spec("matplotlib") is None:
        raise CLIError("--png needs matplotlib: pip install 'cgnf_fast[plot]'")
    if png:
        from ..sampling.drawing import figure_format

        try:
            figure_format(png)
        except ValueError as e:
            raise CLIError(f"--png {e}") from None
