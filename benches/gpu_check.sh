#!/usr/bin/env bash
# One prepared GPU check (run by the device tool on a machine with an NVIDIA GPU, no network):
# build, run the CUDA-parametrised tests, then the benchmarks on the GPU; everything lands in $OUT.
#   bash benches/gpu_check.sh            (OUT defaults to ./gpu_out)
set -uo pipefail
OUT="${OUT:-gpu_out}"
mkdir -p "$OUT"
{
  nvidia-smi || true
  python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"
} > "$OUT/env.txt" 2>&1

pip install --no-build-isolation --no-deps . > "$OUT/build.log" 2>&1 || { echo "build failed"; tail -50 "$OUT/build.log"; exit 1; }
(cd / && python -c "import cgnf_fast; print(cgnf_fast._C.build_config(), cgnf_fast.cuda_available())") | tee "$OUT/build_config.txt"

# CUDA == CPU: every test with a cuda parameter (or "cuda" in its name: test_gnn_op.py's
# test_gin_cuda_*, test_cnf_op.py's test_cnf_cuda_*), plus the full nb101 count on both devices.
pytest -q -k "cuda or devices_agree" python_tests 2>&1 | tee "$OUT/tests_cuda.txt" | tail -5

python benches/bench_dag.py --device cuda --counts nb101,nb101-like,nb201-like > "$OUT/bench_cuda.jsonl" 2> "$OUT/bench_cuda.err"
python benches/bench_dag.py --device cpu --counts nb101,nb101-like > "$OUT/bench_cpu.jsonl" 2> "$OUT/bench_cpu.err"
# GIN aggregation: encoder stack and op alone, native vs PyTorch reference on the GPU.
python benches/bench_gnn.py --device cuda --batch 1000,16384,65536 --reps 10 > "$OUT/bench_gnn_cuda.jsonl" 2> "$OUT/bench_gnn_cuda.err"
# CNF dynamics: one evaluation (with and without the exact divergence) and a sampling solve,
# native vs PyTorch reference on the GPU.
python benches/bench_cnf.py --device cuda --batch 20,256,1000,4096 --reps 10 --skip-exact-over 0 > "$OUT/bench_cnf_cuda.jsonl" 2> "$OUT/bench_cnf_cuda.err"
tail -n +1 "$OUT"/bench_*.jsonl
