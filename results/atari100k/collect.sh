#!/bin/bash
# Copy the small logs of Atari-100k runs (config.yaml, eval.csv, final_eval.csv, train.csv;
# no checkpoints, no events) from a bench directory into results/atari100k/runs, then
# regenerate the report from those copies alone:
#   bash results/atari100k/collect.sh ~/runs/atari100k-cpu/runs
# `curlrl report results/atari100k/runs --compare published --out results/atari100k/report`
# reads the copies as it reads run directories. Only finished runs are copied: a run writes
# final_eval.csv's header when it starts and its rows at the end.
set -eu
SRC=${1:?usage: collect.sh BENCH_RUNS_DIR}
HERE=$(cd "$(dirname "$0")" && pwd)
C=${CURLRL:-curlrl}
find "$SRC" -name final_eval.csv | while read -r f; do
  [ "$(wc -l < "$f")" -gt 1 ] || continue   # header only: the run has not finished
  run=$(dirname "$f")
  rel=${run#"$SRC"/}
  mkdir -p "$HERE/runs/$rel"
  cp "$run/config.yaml" "$run/eval.csv" "$run/final_eval.csv" "$run/train.csv" "$HERE/runs/$rel/"
  echo "copied $rel"
done
$C report "$HERE/runs" --compare published --out "$HERE/report"
