#!/usr/bin/env bash
# Issue #32's device run, from the repository root on the device machine: carried wheels, the CUDA
# kernels, the GPU checks of the channel-chunked rasterizer, then bench_lift rows (arguments are
# passed on; results and logs go to $OUT). E.g.
#   bash experiments/lift_gpu.sh --backbones 1 --densify-grad-threshold 5e-5 --trace /tmp/trace
set -euo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -m fit3d_jax.kernels build --cuda -j 16 > "$OUT/kernels_build.log" 2>&1 || { tail -30 "$OUT/kernels_build.log"; exit 1; }
python3 -m pytest -q -p no:cacheprovider --runslow -m "gpu or not gpu" tests/test_rasterizer.py -k "chunks or channel_counts or gradients_match_reference" 2>&1 | tail -3
cd experiments
python3 bench_lift.py --out "$OUT/bench_lift.json" --work /tmp/bench_lift "$@" 2>&1 | grep -v "^WARNING\|^I1\|^W1" | tee "$OUT/bench_lift.log"
