#!/bin/bash
# Every objective of curlrl.objectives pretrained on one cartpole-swingup dataset (3 seeds
# each), probed on its held-out episodes, with randomly initialised encoders beside them.
# CPU scale (say so wherever the numbers are quoted): 20 random-action episodes, STEPS
# updates at batch 64 (the agent's encoder: 4 conv layers, 32 filters, 84 px crops).
#   bash results/objectives-offline/run.sh [OUT] [STEPS]
#   python results/objectives-offline/table.py OUT > results/objectives-offline/table.md
# Resumable: a finished pretrain or probe is skipped. SEEDS="0 1" / SEEDS=2 split it over two processes.
set -eu
OUT=${1:-$HOME/objectives-offline}
STEPS=${2:-400}
C=${CURLRL:-curlrl}
export OMP_NUM_THREADS=1
mkdir -p "$OUT"
D=$OUT/data
grep -qs '"complete": true' "$D/manifest.json" || \
  $C collect cartpole-swingup --episodes 20 --action-repeat 8 --seed 0 --out "$D"
OBJECTIVES=${OBJECTIVES:-"curl infonce moco byol barlow_twins swav supcon contrastive triplet npair lifted nce"}
for seed in ${SEEDS:-0 1 2}; do
  if [ ! -f "$OUT/random/seed$seed/probe.json" ]; then
    $C probe random "$D" --seed "$seed" --threads 1 --out "$OUT/random/seed$seed"
  fi
  for obj in $OBJECTIVES; do
    run=$OUT/$obj/seed$seed
    if [ ! -f "$run/probe/probe.json" ]; then
      if [ -d "$run" ]; then
        $C pretrain --resume --run-dir "$run" "steps=$STEPS"
      else
        $C pretrain "$D" "objective=$obj" "steps=$STEPS" batch_size=64 "seed=$seed" threads=1 device=cpu \
          --run-dir "$run"
      fi
      $C probe "$run" "$D" --threads 1 --out "$run/probe"
    fi
  done
done
echo "objectives-offline: all done -> python results/objectives-offline/table.py $OUT"
