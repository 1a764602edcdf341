#!/usr/bin/env bash
# Issue #17's device checks in one lease: the register model's and the DINOv3 models' accuracy
# (DINOv3 against transformers), the DINOv3 ViT-B/16 benchmark, and the CLIP ViT-B/16 bfloat16
# forward profiled, with and without XLA's Triton GEMMs, to see where it stands against timm.
#
#   bash experiments/zoo_gpu_checks.sh <out dir>
set -uo pipefail
out=$1
cd "$(dirname "$0")"
failed=0
bench() {  # bench <json name> <bench_vit args...>; XLA_FLAGS from the environment
  local name=$1
  shift
  echo "+ XLA_FLAGS='${XLA_FLAGS:-}' python3 bench_vit.py --out $out/$name.json $*" >&2
  python3 bench_vit.py --out "$out/$name.json" "$@" 2>&1 | grep -v "Warning\|warn(" || true
  [[ -s $out/$name.json ]] || { echo "FAILED: $name" >&2; failed=1; }
}
for model in vit_small_patch14_reg4_dinov2 dinov3_vits16; do
  bench "accuracy_$model" --model "$model" --accuracy-only
done
bench bench_vit_dinov3_vitb16 --model dinov3_vitb16 --runs 10
clip=(--model vit_base_patch16_clip_384 --dtypes bfloat16 --modes forward --runs 20)
bench bench_vit_clip_b16_bf16_trace "${clip[@]}" --trace /tmp/trace_clip
XLA_FLAGS=--xla_gpu_enable_triton_gemm=false bench bench_vit_clip_b16_bf16_no_triton_gemm "${clip[@]}"
bench bench_vit_clip_b16_bf16_xla_attention "${clip[@]}" --attention xla
exit $failed
