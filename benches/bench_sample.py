"""The sampler on the shipped models: one round's flow solve (256 latents, dopri5 at the saved
tolerances; native: the whole solve in native code, torch: torchdiffeq with the PyTorch
reference dynamics), whole ``cgnf sample --n 20`` runs (fresh processes: imports and model
loading included), and ``cgnf_fast.sample(n=10000)`` per shipped space (a fresh process each;
the model loads inside the timed call, imports do not).

    python benches/bench_sample.py [--reps 4] [--threads 1] [--large 10000]

Prints one JSON line per measurement.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time

import torch

from cgnf_fast.sampling import DEFAULT_CHUNK, SamplingModel, default_model_dir, resolve_reference


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--large", type=int, default=10000, help="n of the large-sample rows (0: skip them)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    m = SamplingModel.load(default_model_dir("nb201-like"))
    flow, conds = m.flow, m.conditions
    pred = m.vae.predict([resolve_reference("best", m.space)])
    c = conds.to_flow(torch.tensor([[float(pred[a][0]) for a in conds.names]], dtype=torch.float64))
    c = c.float().expand(DEFAULT_CHUNK, -1).contiguous()
    noise = torch.randn(DEFAULT_CHUNK, flow.latent, generator=torch.Generator().manual_seed(0))
    times: dict[str, list[float]] = {"native": [], "torch": []}
    out = {}
    with torch.no_grad():
        for _ in range(args.reps):
            for be in times:
                flow.dynamics.backend = be
                t0 = time.perf_counter()
                out[be] = flow.sample(c, noise=noise)
                times[be].append(time.perf_counter() - t0)
    nat, ref = statistics.median(times["native"]), statistics.median(times["torch"])
    print(json.dumps({"bench": "flow_sample_round", "latents": DEFAULT_CHUNK, "nfe": flow.nfe, "native_s": round(nat, 4),
                      "torch_s": round(ref, 4), "ratio": round(ref / nat, 3),
                      "max_abs_diff": float((out["native"] - out["torch"]).abs().max()), "threads": args.threads,
                      "reps": args.reps, "machine": platform.machine(), "torch": torch.__version__}))
    walls = []
    for _ in range(max(1, args.reps // 2)):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "cgnf_fast", "sample", "--space", "nb201-like", "--reference", "best",
                        "--n", "20"], check=True, capture_output=True, cwd="/")
        walls.append(time.perf_counter() - t0)
    print(json.dumps({"bench": "cgnf_sample_n20_wall", "seconds": round(statistics.median(walls), 3),
                      "runs": [round(w, 3) for w in walls]}))
    for space in ("nb201-like", "nb101-like") if args.large else ():
        script = ("import json, time, cgnf_fast\n"
                  "t0 = time.perf_counter()\n"
                  f"cells = cgnf_fast.sample('best', n={args.large}, space={space!r}, seed=0)\n"
                  "import torch\n"
                  "print(json.dumps({'seconds': time.perf_counter() - t0, 'cells': len(cells), "
                  "'threads': torch.get_num_threads()}))\n")
        r = json.loads(subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True,
                                      cwd="/").stdout)
        print(json.dumps({"bench": "sample_large", "space": space, "n": args.large, "cells": r["cells"],
                          "seconds": round(r["seconds"], 2), "threads": r["threads"]}))


if __name__ == "__main__":
    main()
