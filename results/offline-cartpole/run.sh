#!/bin/bash
# The issue-14 comparison: random vs CURL- vs ATC-pretrained encoders on cartpole-swingup.
set -x
export OMP_NUM_THREADS=1
C=~/cmpenv/bin/curlrl
D=~/offline-cmp
cd $D
[ -f $D/data-random/manifest.json ] && grep -q '"complete": true' $D/data-random/manifest.json || \
  $C collect cartpole-swingup --episodes 30 --action-repeat 8 --seed 0 --out $D/data-random
[ -f $D/data-expert/manifest.json ] && grep -q '"complete": true' $D/data-expert/manifest.json || \
  $C collect cartpole-swingup --episodes 12 --policy ~/runs/cartpole-reference-b128-seed1 --seed 1 --out $D/data-expert
$C pretrain $D/data-random steps=1500 batch_size=64 threads=1 device=cpu --run-dir $D/pre-curl
$C pretrain $D/data-random positive=temporal steps=1500 batch_size=64 threads=1 device=cpu --run-dir $D/pre-atc
for e in curl atc; do
  $C probe $D/pre-$e $D/data-random --threads 1 --out $D/probe-$e $( [ $e = curl ] && echo --with-random )
done
for e in random pre-curl pre-atc; do
  spec=$e; [ $e != random ] && spec=$D/$e
  $C bc $spec $D/data-expert --demos 10 --seeds 3 --episodes 10 --threads 1 --out $D/bc-$e
done
echo ALL DONE
