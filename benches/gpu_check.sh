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
  python -c "import sys, torch; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"
  command -v nvcc && nvcc --version | tail -2
  nproc
} >> "$S" 2>&1

t0=$SECONDS
if ! timeout 300 python -m pip install --no-build-isolation --no-deps . > "$OUT/build.log" 2>&1; then
  say "build failed after $((SECONDS - t0)) s"
  tail -40 "$OUT/build.log"
  exit 1
fi
say "build: $((SECONDS - t0)) s"
(cd / && python -c "import cgnf_fast; print(cgnf_fast._C.build_config(), 'cuda_available', cgnf_fast.cuda_available())") 2>&1 | tee -a "$S"

# 1. every CUDA entry point once against the CPU (seconds)
run_step smoke 90 "$S" python benches/cuda_smoke.py

# 2. the CUDA tests: every test with "cuda" in its id (DEVICE_PARAMS' cuda variants, incl. the full
#    nb101 count on both devices; test_gin_cuda_*, test_cnf_cuda_*, *_cuda). Run from the repo root with
#    plain pytest (python -m pytest would put the source tree, without _C, first on sys.path). Newer
#    numpy/torch there may warn where this project's pins do not: warnings stay warnings for this run.
run_step tests 200 "$OUT/tests.txt" pytest -q -rfE --tb=short -p no:cacheprovider -k cuda \
  -W default::DeprecationWarning -W default::FutureWarning python_tests
tail -3 "$OUT/tests.txt" | tee -a "$S"
grep -E "^(FAILED|ERROR)" "$OUT/tests.txt" | head -30 | tee -a "$S"

# 3. benchmarks on the GPU, then the counts on this machine's CPU (same machine: the count ratio)
run_step bench_dag_cuda 150 "$J" python benches/bench_dag.py --device cuda --counts nb101,nb101-like,nb201-like
run_step bench_gnn_cuda 90 "$J" python benches/bench_gnn.py --device cuda --batch 1000,16384,65536 --reps 10
# the same with TF32 Linear layers (both backends): how much of the stack the aggregation is
run_step bench_gnn_cuda_tf32 60 "$J" python benches/bench_gnn.py --device cuda --batch 16384 --reps 10 --matmul-precision high
run_step bench_cnf_cuda 90 "$J" python benches/bench_cnf.py --device cuda --batch 20,256,1000,4096 --reps 10 --skip-exact-over 0
run_step bench_dag_cpu 90 "$J" python benches/bench_dag.py --device cpu --no-ops --counts nb101,nb101-like
# the GPU counts against the CPU path's exact numbers (README; nb201-like: 102 s on the 2-core CPU)
python - "$J" <<'PY' 2>&1 | tee -a "$S"
import json, sys
want = {"nb101": (509607936, 373754169, 423624, 423624), "nb101-like": (509607936, 473253435, 18991191, 18991191),
        "nb201-like": (1099511627776, 1052315906048, 26847162083, 7493734118)}
keys = ("labeled", "valid", "unique", "unique_networks")
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r.get("op") == "space_count" and r.get("space") in want:
        got = tuple(r.get(k) for k in keys)
        verdict = "ok" if got == want[r["space"]] else f"MISMATCH (want {want[r['space']]})"
        print(f"count {r['space']} on {r.get('device')}: {got} {r.get('seconds')} s: {verdict}" + (f" {r['error']}" if "error" in r else ""))
PY

# 4. compute-sanitizer over the smoke program (memory errors, then shared-memory races)
if command -v compute-sanitizer > /dev/null; then
  for tool in memcheck racecheck; do
    echo "== $tool" >> "$Z"
    run_step "sanitizer_$tool" 120 "$Z" compute-sanitizer --tool "$tool" --error-exitcode 3 python benches/cuda_smoke.py
    grep -E "ERROR SUMMARY|RACECHECK SUMMARY|[0-9]+ failed" "$Z" | tail -2 | tee -a "$S"
  done
else
  say "compute-sanitizer: not found"
fi
say "total: $SECONDS s"
