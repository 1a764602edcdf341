#!/usr/bin/env bash
# Issue #16's device check: the whole chain on synthetic rooms, ending in concat probes that run
# FiT3D's full pipeline (live augmentation with the backbones in the step, no feature cache, the
# protocol's test-time inference), segmentation and depth. Shortened schedules; everything else
# is the protocol.
#
#   bash experiments/probe_full_pipeline.sh <weights> <work dir> <out dir> <probe iterations>
set -euo pipefail
weights=$1 work=$2 out=$3 iterations=$4
main() {
  local start=$SECONDS
  echo "+ python3 -m fit3d_jax.main $*" >&2
  python3 -m fit3d_jax.main "$@"
  echo "  $((SECONDS - start)) s" >&2
}
main --config=configs/generate_rooms.py --config.output_dir="$work/rooms" --config.num_rooms=3 --config.first_seed=0 \
  --config.width=320 --config.height=216 --config.num_train=24 --config.num_test=4
main --config=configs/lift.py --config.scenes="$work/rooms" --config.output_dir="$work/lift" --config.weights="$weights" \
  --config.budget=quick --config.progress=False
main --config=configs/finetune.py --config.store="$work/lift/store" --config.output_dir="$work/finetune" --config.weights="$weights" \
  --config.recipe.epochs=3.0 --config.progress=False
for task in segmentation depth; do
  extra=()
  if [[ $task == segmentation ]]; then  # the rooms resized as the protocol resizes, sliding windows
    extra=(--config.augment.scale="(2048, 512)" --config.evaluation.mode=slide)
  fi
  main --config=configs/probe_synthetic.py:$task --config.weights="$weights" --config.assembly=concat \
    --config.finetuned="$work/finetune/checkpoints" --config.cache_features=False --config.schedule.iterations="$iterations" \
    --config.schedule.warmup_iterations=$((iterations / 10)) --config.schedule.batch_size=16 --config.log_every=100 \
    --config.output_dir="$work/probe_$task" --config.progress=False "${extra[@]}"
  cp "$work/probe_$task/metrics.json" "$out/probe_full_pipeline_${task}.json"
done
