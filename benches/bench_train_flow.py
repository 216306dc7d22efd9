"""``cgnf train flow`` end to end, native vs torch backend, with the pipeline's flow configuration.

    python benches/bench_train_flow.py [--epochs 1] [--cells 30000] [--work DIR] [--threads 2] [--noise-seed S]
                                       [--malloc default|fixed]

What it runs: the G-VAE is the shipped nb201-like one; its "run directory" is built here (a copy of
its weights and a ``data.safetensors`` holding ``--cells`` nb201-like cells drawn with
``space.sample(n, seed=0)`` as the training cells the flow encodes, the pipeline's
``flow_max_cells`` = 30,000 by default). Then, for each backend, in a fresh process:

    cgnf train flow --gvae G --out OUT_<backend> --max-cells 30000 --epochs E --backend <backend>

with every other option at its default, which is the pipeline's flow configuration (30 epochs,
batch 256, hidden 128x128, exact divergence, dopri5 at rtol = atol = 1e-3, the adjoint). The run
is shortened to ``--epochs`` (default 1: 112 steps of 30 in the pipeline; the cosine learning-rate
schedule spans the shortened run, the same for both backends). Prints one JSON line per backend
(wall seconds of the command, its training seconds, steps, final validation NLL) and a
``train_flow`` line with ``ratio = torch / native`` of the wall and training times and the largest
difference between the two runs' NLL curves (the per-10-step loss and its moving average, same
steps and batches). With ``--noise-seed S`` it also trains the native backend with ``--seed S``
(another initialisation and batch order) and prints a ``train_flow_noise`` line: the same
differences between the two native runs, the run-to-run noise the backends' difference is to be
judged against. ``--malloc fixed`` runs both commands with glibc's mmap threshold fixed (torch at
its best: ``_timing.fix_glibc_malloc``). Timings depend on the machine; they are not tests.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _timing import FIXED_MALLOC, FIXED_MALLOC_ENV


def make_gvae_run(dest: Path, n_cells: int) -> None:
    """A G-VAE run directory for the shipped nb201-like G-VAE with ``n_cells`` sampled cells."""
    import torch

    from cgnf_fast.io import save_tensors
    from cgnf_fast.models.api import GraphVAE
    from cgnf_fast.sampling.model import default_model_dir

    src = default_model_dir("nb201-like") / "gvae"
    dest.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        shutil.copy2(f, dest / f.name)
    vae = GraphVAE.load(dest)
    cells = vae.space.sample(n_cells, seed=0)
    adj, ops = vae.codec.encode(cells)
    empty_adj, empty_ops = adj[:0], ops[:0]
    save_tensors(dest / "data.safetensors", {"unl_adj": adj.to(torch.uint8).contiguous(), "unl_ops": ops.contiguous(),
                                             "lab_adj": empty_adj.to(torch.uint8).contiguous(),
                                             "lab_ops": empty_ops.contiguous()})


def run(backend: str, gvae: Path, out: Path, epochs: int, threads: int, seed: int | None = None,
        fixed_malloc: bool = False) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), **(FIXED_MALLOC_ENV if fixed_malloc else {}))
    cmd = [sys.executable, "-m", "cgnf_fast", "train", "flow", "--gvae", str(gvae), "--out", str(out),
           "--max-cells", "30000", "--epochs", str(epochs), "--backend", backend, "--no-progress"]
    if seed is not None:
        cmd += ["--seed", str(seed)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    return {"backend": backend, "wall_s": round(wall, 1), "train_s": metrics["train_seconds_this_session"],
            "steps": metrics["steps"], "val_nll": metrics["nll"]["val"]["final"], "command": " ".join(cmd[2:])}


def history(out: Path) -> list[dict]:
    """The run's loss every 10 steps (the JSON copy of its last checkpoint)."""
    return json.loads((out / "checkpoint.json").read_text())["history"]


def curve_diff(a: list[dict], b: list[dict]) -> dict:
    """The largest differences between two runs' logged NLL curves (same steps)."""
    pairs = [(x, y) for x, y in zip(a, b) if x["step"] == y["step"]]
    return {"nll_points": len(pairs),
            "max_abs_diff_nll": max((abs(x["nll"] - y["nll"]) for x, y in pairs), default=None),
            "max_abs_diff_nll_ema": max((abs(x["nll_ema"] - y["nll_ema"]) for x, y in pairs), default=None)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=1, help="epochs of each run (the pipeline: 30)")
    ap.add_argument("--cells", type=int, default=30_000, help="cells of the G-VAE run directory built here")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads of each run")
    ap.add_argument("--work", default=None, help="directory for the runs (default: a temporary one, removed)")
    ap.add_argument("--noise-seed", type=int, default=None,
                    help="also train the native backend with this seed: the run-to-run noise of the NLL curves")
    ap.add_argument("--malloc", choices=("default", "fixed"), default="default",
                    help="fixed: both runs with glibc's mmap threshold fixed (module doc)")
    args = ap.parse_args()
    fixed = args.malloc == "fixed"
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench_train_flow_"))
    try:
        gvae = work / "gvae"
        if not (gvae / "data.safetensors").is_file():
            make_gvae_run(gvae, args.cells)
        rows = {}
        for backend in ("native", "torch"):
            out = work / f"flow_{backend}"
            shutil.rmtree(out, ignore_errors=True)
            r = run(backend, gvae, out, args.epochs, args.threads, fixed_malloc=fixed)
            r["history"] = history(out)
            rows[backend] = r
            print(json.dumps({"bench": "train_flow_run", **{k: v for k, v in r.items() if k != "history"}}), flush=True)
        hn, ht = rows["native"]["history"], rows["torch"]["history"]
        print(json.dumps({
            "bench": "train_flow", "epochs": args.epochs, "cells": args.cells, "threads": args.threads,
            "malloc": FIXED_MALLOC if fixed else "default",
            "native_wall_s": rows["native"]["wall_s"], "torch_wall_s": rows["torch"]["wall_s"],
            "ratio_wall": round(rows["torch"]["wall_s"] / rows["native"]["wall_s"], 3),
            "native_train_s": rows["native"]["train_s"], "torch_train_s": rows["torch"]["train_s"],
            "ratio_train": round(rows["torch"]["train_s"] / rows["native"]["train_s"], 3),
            **curve_diff(hn, ht),
            "final_nll_ema": {"native": hn[-1]["nll_ema"] if hn else None, "torch": ht[-1]["nll_ema"] if ht else None},
            "val_nll": {k: rows[k]["val_nll"] for k in rows},
        }), flush=True)
        if args.noise_seed is not None:
            out = work / f"flow_native_seed{args.noise_seed}"
            shutil.rmtree(out, ignore_errors=True)
            r = run("native", gvae, out, args.epochs, args.threads, seed=args.noise_seed, fixed_malloc=fixed)
            r["history"] = history(out)
            print(json.dumps({"bench": "train_flow_run", "seed": args.noise_seed,
                              **{k: v for k, v in r.items() if k != "history"}}), flush=True)
            print(json.dumps({
                "bench": "train_flow_noise", "epochs": args.epochs, "seeds": [0, args.noise_seed],
                **curve_diff(hn, r["history"]),
                "final_nll_ema": {"seed0": hn[-1]["nll_ema"] if hn else None,
                                  f"seed{args.noise_seed}": r["history"][-1]["nll_ema"] if r["history"] else None},
                "val_nll": {"seed0": rows["native"]["val_nll"], f"seed{args.noise_seed}": r["val_nll"]},
            }), flush=True)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
