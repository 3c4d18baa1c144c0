#!/usr/bin/env bash
# The first thing to run on a GPU node, in one go (under 8 minutes on an H100/H200): install the package
# (offline), the CUDA tests, every benchmark with --device cuda, and a short `medq-synth run` with a tiny random
# hf model in bf16. Tables go to benchmarks/results/*_cuda.md/json (and are copied to $OUT when the device
# tool sets it); the step log to benchmarks/results/gpu_check_cuda.log. A step that fails or overruns its
# time box is reported and the script goes on; the exit status is non-zero if any step failed.
# Missing packages on the GPU image travel as wheels in .whl/ (see the device README); this script installs
# them first when the folder is there. The image lacks kornia (+ kornia_rs: generic degradations), monai
# (a baseline), pydicom and nibabel (real test images), sigpy (+ numba, llvmlite, PyWavelets: Poisson masks,
# birdcage coils) and torchvision (generic_throughput's baseline; without it those rows time ours alone);
# TorchIO needs SimpleITK (~50 MB), more than a call carries, so mri_bench then times ours without it.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . || exit 1
mkdir -p benchmarks/results
LOG=benchmarks/results/gpu_check_cuda.log
: > "$LOG"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee -a "$LOG"
status=0
step() {          # step SECONDS NAME COMMAND...: time-boxed, logged, never stops the script
  local box=$1 name=$2; shift 2
  local t0=$SECONDS
  echo "== $name" | tee -a "$LOG"
  timeout "$box" "$@" 2>&1 | tail -40 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  echo "== $name: exit $rc in $((SECONDS - t0)) s" | tee -a "$LOG"
  [ "$rc" -eq 0 ] || status=1
}
step 100 "CUDA tests" python3 -m pytest -q -p no:cacheprovider -k cuda tests/
step 80 "ct_bench" python3 benchmarks/ct_bench.py --device cuda --repeats 2
step 60 "mri_bench" python3 benchmarks/mri_bench.py --device cuda --repeats 3
step 40 "us_bench" python3 benchmarks/us_bench.py --device cuda --repeats 3
step 40 "generic_throughput" python3 benchmarks/generic_throughput.py --device cuda --repeats 3
step 30 "metrics_bench" python3 benchmarks/metrics_bench.py --device cuda --repeats 3
step 50 "eval_throughput" python3 benchmarks/eval_throughput.py --device cuda --limit 12
TINY=/tmp/medq_tiny_qwen2_vl
step 50 "run, tiny hf model, bf16" bash -c "python3 -c \"from tests.tiny_vlm import build; build('qwen2_vl', '$TINY')\" \
  && python3 -m medq_synth run --model hf:$TINY --dtype bfloat16 --device cuda --limit 8 --no-progress \
     --bootstrap 100 --out /tmp/medq_gpu_run > benchmarks/results/run_tiny_hf_cuda.md; rc=\$?; \
     cat benchmarks/results/run_tiny_hf_cuda.md; exit \$rc"
if python3 -c "import ray" 2>/dev/null; then
  step 150 "scale_bench (ray)" python3 benchmarks/scale_bench.py --device cuda --rounds 1
else
  echo "== scale_bench: ray is not on this image (its wheel is over the carry limit); not measured" | tee -a "$LOG"
fi
if [ -n "${OUT:-}" ]; then cp benchmarks/results/*_cuda* "$OUT"/ 2>/dev/null; fi
exit $status
