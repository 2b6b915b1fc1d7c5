#!/bin/bash
# Copy the small logs of Atari-100k runs (config.yaml, eval.csv, final_eval.csv, train.csv;
# no checkpoints, no events) from a bench directory into results/atari100k/runs, then
# regenerate the report from those copies alone:
#   bash results/atari100k/collect.sh ~/runs/atari100k-cpu/runs
# `curlrl report results/atari100k/runs --compare published --out results/atari100k/report`
# reads the copies as it reads run directories. Only finished runs (a final_eval.csv) are copied.
set -eu
SRC=${1:?usage: collect.sh BENCH_RUNS_DIR}
HERE=$(cd "$(dirname "$0")" && pwd)
C=${CURLRL:-curlrl}
find "$SRC" -name final_eval.csv | while read -r f; do
  run=$(dirname "$f")
  rel=${run#"$SRC"/}
  mkdir -p "$HERE/runs/$rel"
  cp "$run/config.yaml" "$run/eval.csv" "$run/final_eval.csv" "$run/train.csv" "$HERE/runs/$rel/"
  echo "copied $rel"
done
$C report "$HERE/runs" --compare published --out "$HERE/report"
