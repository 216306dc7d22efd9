"""The ``cgnf`` command: ``space info|count|enumerate``, ``zc score|export``, ``train gvae|flow``,
``pipeline``, ``evaluate predictor|latent|sampler|upper-bound|transfer|all``, ``sample``,
``search``, ``cell hash``, ``zc check``.

One module per command group (:mod:`.space`, :mod:`.zc`, :mod:`.train`, :mod:`.pipeline`,
:mod:`.sample`, :mod:`.search`, :mod:`.evaluate`, :mod:`.cell`), each with its ``HELP``, an ``add_parser(sub)``
that builds its parsers and the handlers they call; what they share is in :mod:`._common`.
The options of ``train gvae``, ``train flow`` and ``pipeline`` take their defaults from the
config dataclasses they fill.

Bad input exits with status 2 and one line on stderr naming the problem; Ctrl-C exits 130 and
SIGTERM 143, both after the ``finally`` blocks ran (no ``NAME.partial`` file is left behind).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

import torch

from .._native import BUILT_WITH_CUDA, CudaUnavailable, check_device
from . import cell, evaluate, pipeline, sample, search, space, train, zc
from ._common import CLIError, resolve_space_arg

__all__ = ["CLIError", "build_parser", "main"]

#: the command groups, in the order ``cgnf --help`` lists them
GROUPS = {"space": space, "zc": zc, "train": train, "pipeline": pipeline, "sample": sample, "search": search,
          "evaluate": evaluate, "cell": cell}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``cgnf`` parser. With ``command`` (a key of :data:`GROUPS`), only that group's
    sub-parsers are built and the others are listed by name and help, so that, e.g., ``cgnf
    sample`` does not import the training configs that ``train`` reads its defaults from."""
    from .. import __version__

    p = argparse.ArgumentParser(prog="cgnf",
                                description="cgnf_fast: cells, design spaces, zero-cost scores, models and sampling.")
    cuda = "CUDA kernels" if BUILT_WITH_CUDA else "no CUDA kernels"
    p.add_argument("--version", action="version", version=f"cgnf_fast {__version__} ({cuda}; torch {torch.__version__})")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, group in GROUPS.items():
        if command is None or command == name:
            group.add_parser(sub)
        else:
            sub.add_parser(name, help=group.HELP)
    return p


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is, so that ``finally`` blocks run (``NAME.partial``
    files are removed, stores closed) before the command exits."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv[0] if argv and argv[0] in GROUPS else None)
    args = parser.parse_args(argv)
    args.argv = argv
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main else None
    try:
        resolve_space_arg(args)
        if getattr(args, "device", None) is not None:
            check_device(args.device)
        return int(args.func(args) or 0)
    except BrokenPipeError:  # e.g. `cgnf cell hash | head`
        return 0
    except OSError as e:  # the user's path and the reason, never a temporary name or a Python repr
        name = str(e.filename or "").removesuffix(".partial")
        print(f"cgnf: error: {name + ': ' if name else ''}{e.strerror or e}", file=sys.stderr)
        return 2
    except (CLIError, ValueError, CudaUnavailable) as e:
        print(f"cgnf: error: {e}", file=sys.stderr)
        return 2
    except Terminated:
        print("cgnf: terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("cgnf: interrupted", file=sys.stderr)
        return 130
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
