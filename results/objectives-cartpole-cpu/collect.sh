#!/bin/bash
# Copy the small logs (config.yaml, eval.csv, train.csv; no checkpoints, replays or events) of
# the finished runs of a bench directory into this folder, then regenerate the report from
# those copies alone:
#   bash results/objectives-cartpole-cpu/collect.sh ~/runs/objectives-cartpole-cpu/runs
# A run counts as finished when eval.csv has the evaluation at its budget (config's env_steps).
set -eu
SRC=${1:?usage: collect.sh BENCH_RUNS_DIR}
HERE=$(cd "$(dirname "$0")" && pwd)
C=${CURLRL:-curlrl}
find "$SRC" -name eval.csv | sort | while read -r f; do
  run=$(dirname "$f")
  budget=$(sed -n 's/^env_steps: *//p' "$run/config.yaml")
  cut -d, -f3 "$f" | grep -qx "$budget" || continue   # no evaluation at the budget yet
  rel=${run#"$SRC"/}
  mkdir -p "$HERE/$rel"
  cp "$run/config.yaml" "$run/eval.csv" "$run/train.csv" "$HERE/$rel/"
  echo "copied $rel"
done
$C report "$HERE" --steps 20000 --compare published --out "$HERE/report"
