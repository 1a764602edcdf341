#!/usr/bin/env bash
# The stage II half of xla_flag_ab.sh alone: a short bench_finetune.py run without and with one XLA flag,
# alternating, in one lease.
#
#   bash experiments/xla_flag_ab_finetune.sh <out dir> <flag>
set -uo pipefail
out=$1 flag=$2
cd "$(dirname "$0")"
for variant in default flag default flag; do
  export XLA_FLAGS=""
  [[ $variant == flag ]] && export XLA_FLAGS="$flag"
  n=$(ls "$out" | grep -c "bench_finetune_$variant" || true)
  python3 bench_finetune.py --out "$out/bench_finetune_${variant}_$n.json" --work /tmp/bf --scenes 2 --views 40 --steps 300 \
    --short-steps 100 --no-breakdown > /dev/null 2>&1
  python3 -c "import json,sys; print(sys.argv[1], json.load(open(sys.argv[1]))['views_per_second'])" "$out/bench_finetune_${variant}_$n.json"
done
