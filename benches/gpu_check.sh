#!/usr/bin/env bash
# One prepared GPU check, run by the device tool on a machine with an NVIDIA GPU and no network:
#   bash benches/gpu_check.sh            (OUT defaults to ./gpu_out)
# Builds, runs every CUDA entry point against the CPU once, the CUDA tests, the benchmarks on the
# GPU (and the counts on that machine's CPU for the ratios), then compute-sanitizer over the
# smoke program. Each step has a time limit and the whole run stays within BUDGET seconds (the
# device tool's calls stop at 600 s). Everything lands in $OUT, in six files (the tool returns
# at most eight), written as the steps go, so a run stopped early still returns what it did:
#   summary.txt    environment, build config, smoke lines, test summary and failures, each
#                  step's exit status and seconds, the count checks, sanitizer verdicts
#   build.log      pip's build output
#   tests.txt      the CUDA tests' full output
#   bench.jsonl    every benchmark row (JSON lines)
#   stderr.txt     the steps' stderr, each after a "== step" line
#   sanitizer.txt  compute-sanitizer's reports
set -uo pipefail
export PYTHONUNBUFFERED=1
export PATH="$PATH:/usr/local/cuda/bin"
PY="${PY:-python3}"  # the image's interpreter (the one with torch)
OUT="${OUT:-gpu_out}"
BUDGET="${BUDGET:-560}"
mkdir -p "$OUT"
S="$OUT/summary.txt"; E="$OUT/stderr.txt"; J="$OUT/bench.jsonl"; Z="$OUT/sanitizer.txt"
: > "$S"; : > "$E"; : > "$J"; : > "$Z"
say() { echo "$*" | tee -a "$S"; }
# run_step NAME LIMIT DEST CMD...: CMD with at most LIMIT seconds (less if the budget is short),
# stdout appended to DEST, stderr to stderr.txt; its status and time go to the summary.
run_step() {
  local name=$1 limit=$2 dest=$3; shift 3
  local left=$((BUDGET - SECONDS))
  if ((left < 15)); then say "$name: skipped (budget spent)"; return 0; fi
  ((limit > left)) && limit=$left
  echo "== $name" >> "$E"
  local t0=$SECONDS
  timeout "$limit" "$@" >> "$dest" 2>> "$E"
  local rc=$?
  say "$name: rc=$rc in $((SECONDS - t0)) s (limit $limit s)$( ((rc == 124)) && echo ', TIMED OUT')"
  return $rc
}

{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv || true
  "$PY" -c "import sys, torch; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"
  command -v nvcc && nvcc --version | tail -2
  nproc
} >> "$S" 2>&1

t0=$SECONDS
# CGNF_ENABLE_CUDA=ON: a build that cannot find nvcc fails here instead of quietly building CPU-only
if ! CGNF_ENABLE_CUDA=ON timeout 300 "$PY" -m pip install --no-build-isolation --no-deps . > "$OUT/build.log" 2>&1; then
  say "build failed after $((SECONDS - t0)) s"
  tail -40 "$OUT/build.log"
  exit 1
fi
say "build: $((SECONDS - t0)) s"
(cd / && "$PY" -c "import cgnf_fast; print(cgnf_fast._C.build_config(), 'cuda_available', cgnf_fast.cuda_available())") 2>&1 | tee -a "$S"
if ! (cd / && "$PY" -c "import cgnf_fast, sys; sys.exit(0 if cgnf_fast.cuda_available() else 1)"); then
  say "the built package sees no usable CUDA device: stopping"
  exit 1
fi

# 1. every CUDA entry point once against the CPU (seconds)
run_step smoke 90 "$S" "$PY" benches/cuda_smoke.py

# 2. the CUDA tests: every test with "cuda" in its id (DEVICE_PARAMS' cuda variants, incl. the full
#    nb101 count on both devices; test_gin_cuda_*, test_cnf_cuda_*, *_cuda), not the host emulations
#    of the kernels (CI runs those). -P: the source tree (without _C) stays off sys.path. Newer
#    numpy/torch there may warn where this project's pins do not: warnings stay warnings for this run.
run_step tests 200 "$OUT/tests.txt" "$PY" -P -m pytest -q -rfEs --tb=short -p no:cacheprovider \
  -k "cuda and not emulat" -W default python_tests
tail -3 "$OUT/tests.txt" | tee -a "$S"
grep -E "^(FAILED|ERROR)" "$OUT/tests.txt" | head -30 | tee -a "$S"

# the sampler on the GPU (the flow's solves through torchdiffeq with the CUDA dynamics)
run_step sample_cuda 60 "$S" "$PY" -P -c "
import time, cgnf_fast
t0 = time.perf_counter(); cells = cgnf_fast.sample('best', n=200, seed=0, device='cuda')
codes = {c.network_code for c in cells}
print(f'sample on cuda: {len(cells)} cells, {len(codes)} distinct networks, {time.perf_counter() - t0:.2f} s')
assert len(cells) == 200 == len(codes)"

# 3. benchmarks on the GPU, then the counts on this machine's CPU (same machine: the count ratio);
#    BENCH=0 skips them (a rerun after a fix)
if [[ "${BENCH:-1}" == 1 ]]; then
run_step bench_dag_cuda 150 "$J" "$PY" benches/bench_dag.py --device cuda --rounds 2 --counts nb101,nb101-like,nb201-like
run_step bench_gnn_cuda 90 "$J" "$PY" benches/bench_gnn.py --device cuda --batch 1000,16384,65536 --reps 10
# the same with TF32 matmuls: how much of the stack's time the Linear layers are (it also puts the
# reference's bmm aggregation on TF32; the native kernel stays float32)
run_step bench_gnn_cuda_tf32 60 "$J" "$PY" benches/bench_gnn.py --device cuda --batch 16384 --reps 10 --matmul-precision high
run_step bench_cnf_cuda 90 "$J" "$PY" benches/bench_cnf.py --device cuda --batch 20,256,1000,4096 --reps 10 --skip-exact-over 0
run_step bench_dag_cpu 120 "$J" "$PY" benches/bench_dag.py --device cpu --no-ops --counts nb101,nb101-like,nb201-like
# the GPU counts against the CPU path's exact numbers (README; nb201-like: 102 s on the 2-core CPU)
"$PY" - "$J" <<'PY' 2>&1 | tee -a "$S"
import json, sys
want = {"nb101": (509607936, 373754169, 423624, 423624), "nb101-like": (509607936, 473253435, 18991191, 18991191),
        "nb201-like": (1099511627776, 1052315906048, 26847162083, 7493734118)}
keys = ("labeled", "valid", "unique", "unique_networks")
seen = set()
for line in open(sys.argv[1]):
    try:
        r = json.loads(line)
    except json.JSONDecodeError:
        continue
    if r.get("op") == "space_count" and r.get("space") in want:
        seen.add((r["space"], r.get("device")))
        got = tuple(r.get(k) for k in keys)
        verdict = "ok" if got == want[r["space"]] else f"MISMATCH (want {want[r['space']]})"
        print(f"count {r['space']} on {r.get('device')}: {got} {r.get('seconds')} s: {verdict}" + (f" {r['error']}" if "error" in r else ""))
for dev in ("cuda", "cpu"):
    for space in want:
        if (space, dev) not in seen:
            print(f"count {space} on {dev}: missing (timed out or not run)")
PY
fi

# 4. compute-sanitizer over the smoke program (memory errors, then shared-memory races)
if command -v compute-sanitizer > /dev/null; then
  for tool in memcheck racecheck; do
    echo "== $tool" >> "$Z"
    # no caching allocator: an out-of-bounds access into a neighbouring tensor of one segment shows
    run_step "sanitizer_$tool" 120 "$Z" env PYTORCH_NO_CUDA_MEMORY_CACHING=1 \
      compute-sanitizer --tool "$tool" --error-exitcode 3 "$PY" benches/cuda_smoke.py
    grep -E "ERROR SUMMARY|RACECHECK SUMMARY|[0-9]+ failed" "$Z" | tail -2 | tee -a "$S"
  done
else
  say "compute-sanitizer: not found"
fi
say "total: $SECONDS s"
