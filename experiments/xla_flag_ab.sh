#!/usr/bin/env bash
# A/B of one XLA flag in one lease: the CLIP ViT-B/16 and DINOv2 ViT-S/14 benchmarks against timm
# (every cell; the CLIP bfloat16 forward profiled) and a short stage II run, without and with it.
#
#   bash experiments/xla_flag_ab.sh <out dir> <flag, e.g. --xla_gpu_enable_triton_gemm=false>
set -uo pipefail
out=$1 flag=$2
cd "$(dirname "$0")"
failed=0
check() { [[ -s $1 ]] || { echo "FAILED: $1" >&2; failed=1; }; }
for variant in default flag; do
  export XLA_FLAGS=""
  [[ $variant == flag ]] && export XLA_FLAGS="$flag"
  echo "=== XLA_FLAGS='$XLA_FLAGS'" >&2
  python3 bench_vit.py --model vit_base_patch16_clip_384 --runs 10 --trace "/tmp/trace_$variant" \
    --out "$out/bench_vit_clip_b16_$variant.json" 2>&1 | grep -v "Warning\|warn(\|cupti\|CUPTI" || true
  check "$out/bench_vit_clip_b16_$variant.json"
  python3 bench_vit.py --model vit_small_patch14_dinov2 --runs 10 --out "$out/bench_vit_s14_$variant.json" 2>&1 | grep -v "Warning\|warn(" || true
  check "$out/bench_vit_s14_$variant.json"
  python3 bench_finetune.py --out "$out/bench_finetune_$variant.json" --work /tmp/bf --scenes 2 --views 40 --steps 300 \
    --short-steps 100 --no-breakdown 2>&1 | tail -4
  check "$out/bench_finetune_$variant.json"
done
exit $failed
