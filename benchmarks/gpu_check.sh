#!/usr/bin/env bash
# The GPU node's one script: install the package (offline), run the CUDA tests, then the CT and MRI
# benchmarks; tables go to benchmarks/results/ (and are copied to $OUT when the device tool sets it).
# Missing packages on the GPU image travel as wheels in .whl/ (see the device README); this script installs
# them first when the folder is there. The image lacks kornia (+ kornia_rs: generic degradations), monai
# (a baseline), pydicom and nibabel (real test images) and sigpy (+ numba, llvmlite, PyWavelets: Poisson masks,
# birdcage coils); TorchIO needs SimpleITK (~50 MB), more than the 64 MiB a call carries next to the rest, so
# mri_bench then times ours without the TorchIO baselines (it says so per row).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
status=0
python3 -m pytest -q -p no:cacheprovider -k cuda tests/ || status=1
python3 benchmarks/ct_bench.py --repeats 3 || status=1
python3 benchmarks/mri_bench.py --repeats 5 || status=1
python3 benchmarks/us_bench.py --repeats 5 || status=1
if [ -n "${OUT:-}" ]; then cp benchmarks/results/*gpu* "$OUT"/ 2>/dev/null; fi
exit $status
