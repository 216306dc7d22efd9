"""``cgnf sample``: new cells around a reference under target attributes, as a table."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from ._common import DEVICE_HELP, NO_PROGRESS_HELP, CLIError, check_outputs, check_png, reference_arg, space_help

HELP = "new cells around a reference under target attributes (prints a table)"
#: Table rows printed when --out holds every cell (a large --n prints these and a summary).
TABLE_ROWS = 50
MODEL_HELP = "model directory with gvae/ and flow/ (default: the installed pretrained one)"


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..sampling import DEFAULT_OVERSAMPLE, shipped_spaces
    from ..sampling.model import shipped_attributes

    sm = sub.add_parser(
        "sample", help=HELP,
        description="Draws N distinct new cells around a reference with a trained G-VAE + conditional flow "
        "(--model DIR: a directory with gvae/ and flow/ sub-directories, from `cgnf train gvae --out DIR/gvae` "
        "and `cgnf train flow --gvae DIR/gvae --out DIR/flow`). Conditions: ATTR=VALUE with VALUE a number "
        "(store units; params/flops in millions or with K/M/G), a relative change of the reference's predicted "
        "value (+10%, -5%) or a bound (<=0.8M, >=1.2M; params/flops bounds filter on exact counts).")
    sm.add_argument("--space", default="nb201-like", help=space_help(
        f" (default nb201-like); pretrained models ship for {', '.join(shipped_spaces())}, other spaces need "
        f"--model DIR"))
    sm.add_argument("--reference", default="best", help="'best', an NB201 string, or a JSON cell "
                    "{\"matrix\": ..., \"ops\": ...} (default best)")
    sm.add_argument("--n", type=int, default=20, help="distinct cells to return (default 20)")
    sm.add_argument("--seed", type=int, default=0, help="seed of the draws (default %(default)s)")
    attrs = "; ".join(f"{sp}: {', '.join(shipped_attributes(sp))}" for sp in shipped_spaces())
    sm.add_argument("--condition", action="append", metavar="ATTR=VALUE",
                    help=f"e.g. synflow=+10%% or 'params=<=0.8M'; repeatable or comma-separated. ATTR is one of "
                    f"the model's attributes (shipped models: {attrs})")
    sm.add_argument("--temperature", type=float, default=1.0, help="std of the flow's base noise (default 1)")
    sm.add_argument("--oversample", type=float, default=DEFAULT_OVERSAMPLE,
                    help="candidates drawn per returned cell; the N closest to the condition are kept "
                    "(default %(default)g; 1 keeps the first N drawn)")
    sm.add_argument("--novel-only", action="store_true", help="drop cells inside the seed space")
    sm.add_argument("--model", help=MODEL_HELP)
    sm.add_argument("--unverified", action="store_true",
                    help="load --model DIR without checking its files' sha256 (for a directory with no model.json "
                    "whose runs recorded none: trained by an older version or put together by hand)")
    sm.add_argument("--out", help="write the cells as a JSON list here")
    sm.add_argument("--png", help="draw the cells as a grid of DAGs here (needs matplotlib)")
    sm.add_argument("--device", default="cpu", help=DEVICE_HELP)
    sm.add_argument("--no-progress", action="store_true",
                    help=NO_PROGRESS_HELP + " (shown only when sampling takes over a second)")
    sm.set_defaults(func=_sample)


def _write_json_list_atomic(path: str, rows: list[Any]) -> None:
    """A JSON list, one element per line, written to ``PATH.partial`` and renamed into place."""
    from ..io import write_text_atomic

    write_text_atomic(path, "[\n" + ",\n".join(json.dumps(r) for r in rows) + "\n]\n")


def _sample(args: argparse.Namespace) -> int:
    from ..sampling import draw_cells, parse_condition_args, sample_with_info

    check_png(args.png)
    check_outputs(("--out", args.out), ("--png", args.png))
    condition = parse_condition_args(args.condition or [])
    reference = reference_arg(args.reference)
    model: Any = args.model
    if args.unverified:
        from .._native import check_device
        from ..sampling import SamplingModel

        if args.model is None:
            raise CLIError("--unverified needs --model DIR (the installed models are always checked)")
        check_device(args.device)
        model = SamplingModel.load(args.model, device=args.device, verify=False)
    t0 = time.perf_counter()
    cells, info = sample_with_info(reference, condition or None, n=args.n, space=args.space,
                                   temperature=args.temperature, seed=args.seed, novel_only=args.novel_only,
                                   device=args.device, model=model, oversample=args.oversample,
                                   progress=not args.no_progress)
    seconds = time.perf_counter() - t0
    png_tmp = None
    if args.png:  # drawn first, both files renamed into place only once everything succeeded
        png_tmp = args.png + ".drawing" + os.path.splitext(args.png)[1]  # (same suffix: same format)
        draw_cells(cells, png_tmp, key_attribute=next(iter(condition), None) if condition else None,
                   reference=info["reference"], title=_picture_title(args, cells, info))
    try:
        if args.out:
            _write_json_list_atomic(args.out, [c.to_json() for c in cells])
        if png_tmp:
            os.replace(png_tmp, args.png)
    finally:
        if png_tmp and os.path.exists(png_tmp):
            os.unlink(png_tmp)
    _print_table(args, cells, info, condition, seconds)
    for flag, path in (("--out", args.out), ("--png", args.png)):
        if path:
            print(f"wrote {path}", file=sys.stderr)
    return 0


def _picture_title(args: argparse.Namespace, cells: list, info: dict[str, Any]) -> str:
    """What was asked, for the picture's heading."""
    from ..sampling import cell_text

    ref = info["reference_nb201"] or cell_text(info["reference"])
    asked = ", ".join(f"{t.attribute}={t.text}" for t in info["condition"].values())  # as --condition spells it
    return (f"{len(cells)} cells sampled from {args.space} (seed {args.seed}) around the reference {ref}\n"
            + (f"condition: {asked}" if asked else "condition: none (the reference's predicted attributes)")
            + ("; novel only" if args.novel_only else ""))


def _print_table(args: argparse.Namespace, cells: list, info: dict[str, Any], condition: dict, seconds: float) -> None:
    from ..sampling import COUNT_ATTRIBUTES, cell_text

    def fmt(a: str, v: float) -> str:
        return f"{v:.4f}M" if a in COUNT_ATTRIBUTES else f"{v:.4g}"

    ref = info["reference_nb201"] or cell_text(info["reference"])
    print(f"reference  {ref}")
    print("predicted  " + ", ".join(f"{a}={fmt(a, v)}" for a, v in info["reference_predicted"].items()))
    tg = ", ".join(f"{a}={fmt(a, v)}" + (f" ({info['condition'][a].text})" if a in info["condition"] else "")
                   for a, v in info["targets"].items())
    filters = [t for t in info["condition"].values() if t.attribute in COUNT_ATTRIBUTES
               and t.kind in ("at_most", "at_least")]
    if filters:
        tg += "; filters on exact counts: " + ", ".join(f"{t.attribute}{t.text}" for t in filters)
    print(f"targets    {tg}")
    print(f"drew       {info['drawn']} latents in {info['rounds']} round(s), {seconds:.1f} s: {info['repaired']} "
          f"repaired, {info['invalid']} invalid, {info['duplicates']} duplicates"
          + (f", {info['in_seed_space_dropped']} in the seed space dropped" if args.novel_only else "")
          + (f", {info['outside_bounds']} outside the bounds" if filters else ""))
    attrs = list(cells[0].predicted) if cells else []
    names = [f"pred {a}" for a in attrs]
    widths = [max(10, len(n)) for n in names]
    print()  # a header over the two column groups: "#  seed" is 9 wide, params + FLOPs 20
    print((" " * 11 + "exact counts".center(20) + "  " + "G-VAE predictions".center(sum(widths) + 2 * len(widths) - 2)
           ).rstrip())
    print("  ".join([f"{'#':>3}", f"{'seed':>4}", f"{'params':>9}", f"{'FLOPs':>9}"]
                    + [f"{n:>{w}}" for n, w in zip(names, widths)] + ["cell"]))
    shown = cells if args.out is None or len(cells) <= TABLE_ROWS else cells[:TABLE_ROWS]
    for i, c in enumerate(shown, start=1):
        seed_mark = "-" if c.in_seed_space is None else ("yes" if c.in_seed_space else "no")
        row = [f"{i:>3}", f"{seed_mark:>4}", f"{c.params / 1e6:>8.4f}M", f"{c.flops / 1e6:>8.2f}M"]
        row += [f"{fmt(a, c.predicted[a]):>{w}}" for a, w in zip(attrs, widths)]
        row.append(c.nb201 or cell_text(c.cell))
        print("  ".join(row))
    if len(shown) < len(cells):
        print(f"... {len(cells) - len(shown):,} more cells in {args.out} (all {len(cells):,} are there)")
    print(f"\nexact counts: parameters and FLOPs (one 32x32 image) of the network the cell builds; pred: the "
          f"G-VAE's predictions (params/flops in millions); seed: inside the seed space ({info['seed_space'] or 'none'})")
