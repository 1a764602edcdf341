#!/usr/bin/env bash
# Stage II before/after: bench_finetune.py run against another tree (e.g. `git archive <commit>`
# unpacked) and this one, alternately (B A, A B, ...), each in its own process, so that drift over
# the lease falls on both. The other tree is imported through PYTHONPATH, so this needs a machine
# where fit3d_jax is not installed (the device).
#
#   bash experiments/ab_finetune.sh <other tree> <out dir> <rounds> [bench_finetune.py options]
set -euo pipefail
other=$1 out=$2 rounds=$3
shift 3
for round in $(seq 1 "$rounds"); do
  order="before after"
  if (( round % 2 == 0 )); then order="after before"; fi
  for which in $order; do
    tree=$PWD
    if [[ $which == before ]]; then tree=$other; fi
    echo "== round $round: $which ($tree)"
    PYTHONPATH="$tree${PYTHONPATH:+:$PYTHONPATH}" python3 experiments/bench_finetune.py \
      --out "$out/bench_finetune_${which}_${round}.json" --work "/tmp/ab_finetune_$which" "$@"
  done
done
