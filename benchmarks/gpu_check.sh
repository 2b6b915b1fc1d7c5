#!/usr/bin/env bash
# The GPU checks of issue 3 in one command, for a machine with a CUDA build of PyTorch
# (e.g. a lent device machine, which has python3 + torch but no dm_control and no network):
#   bash benchmarks/gpu_check.sh [OUT_DIR]
# 1. the agent and core tests on the GPU (the CUDA-only ones are skipped elsewhere),
# 2. update speed at batch 128 and 512 for exact and fused, float32 and amp=bf16
#    (synthetic frames: no renderer or dm_control needed), each line also in OUT_DIR,
# 3. if lz4 is importable, the largest batch again with the LZ4 replay training uses.
# Learning runs on the GPU need dm_control & co. installed: see docs/benchmarking.md.
# PYTHON, DEVICE (default cuda), BATCHES (default "128 512") and UPDATES (default 30)
# can be overridden, e.g. DEVICE=cpu BATCHES=8 UPDATES=2 for a dry run.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-gpu-check}
PYTHON=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
BATCHES=${BATCHES:-128 512}
UPDATES=${UPDATES:-30}
mkdir -p "$OUT_DIR"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
status=0

{
  date -u
  command -v nvidia-smi >/dev/null && nvidia-smi -L
  "$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda,
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU visible')"
} 2>&1 | tee "$OUT_DIR/machine.txt"

if "$PYTHON" -c "import pytest" 2>/dev/null; then
  "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_agent.py tests/test_core.py 2>&1 \
    | tee "$OUT_DIR/tests.txt" || status=1
else
  echo "pytest is not installed for $PYTHON: tests skipped" | tee "$OUT_DIR/tests.txt"
fi

for batch in $BATCHES; do
  for amp in off bf16; do
    "$PYTHON" benchmarks/update_speed.py --device "$DEVICE" --batch-size "$batch" --mode exact,fused \
      --amp "$amp" --updates "$UPDATES" 2>&1 | tee -a "$OUT_DIR/update_speed.txt" || status=1
  done
done
# training samples from an LZ4 replay on the CPU (~50 ms per batch of 512 on a 2-core CPU):
# the same timing with it shows whether sampling, not the GPU, bounds a training step
last_batch=${BATCHES##* }
"$PYTHON" -c "import lz4" 2>/dev/null && "$PYTHON" benchmarks/update_speed.py --device "$DEVICE" \
  --batch-size "$last_batch" --mode exact,fused --compress --updates "$UPDATES" 2>&1 \
  | tee -a "$OUT_DIR/update_speed.txt"
exit $status
