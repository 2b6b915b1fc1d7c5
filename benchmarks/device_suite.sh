#!/usr/bin/env bash
# Everything curlrl wants from a lent GPU machine in one command that ends within BUDGET_S
# (default 540 s = 9 minutes), each step time-boxed (see benchmarks/README.md,
# "On a lent GPU machine"). Build the bundle first, here: bash scripts/device_bundle.sh 3.12
#   OUT=DIR bash benchmarks/device_suite.sh                 # on the device (carry .bundle)
#   DEVICE=cpu OUT=DIR bash benchmarks/device_suite.sh      # dry run: same steps, tiny budgets
# Steps, in order: install (the bundle's wheels into a temporary site; the machine's own
# torch; EGL loaders when DEVICE is a GPU; curlrl assembled from the tree), preflight
# (imports, one rendered frame), tests (agent/core/replay, the CUDA-only ones included),
# table (update_speed.py: batch x exact,fused x amp off|bf16 x capture off|compile), env
# (env_speed.py with rendering), learn (cartpole-swingup seeds in parallel at the paper's
# settings, stopped at the deadline), report (curlrl report --compare published).
# Writes OUT/summary.md and OUT/results.tar.gz (logs, tables, eval/train CSVs, the report).
# Overrides: PYTHON (python3), BUNDLE (.bundle), BUDGET_S, STEPS (a subset of the steps
# above, install and preflight always run), SEEDS, THREADS, ENV_STEPS, BATCHES, UPDATES.
set -uo pipefail   # no -e: a failed step is recorded in the summary and the suite goes on
cd "$(dirname "$0")/.."
REPO=$PWD
START=$SECONDS

[[ -n ${OUT:-} ]] || { echo "device_suite: set OUT to the folder for the results (on the device: OUT=\$OUT)" >&2; exit 2; }
PYTHON=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
BUNDLE=${BUNDLE:-$REPO/.bundle}
BUDGET_S=${BUDGET_S:-540}
STEPS=${STEPS-tests table env learn report}
NCPU=$(getconf _NPROCESSORS_ONLN)   # not nproc: it follows OMP_NUM_THREADS
if [[ $DEVICE == cuda* ]]; then
  GPU=1
  BATCHES=${BATCHES:-128 512}; UPDATES=${UPDATES:-20}; WARMUP=3
  ENV_AGENT_STEPS=300
  SEEDS=${SEEDS:-$(( NCPU / 3 < 2 ? 2 : (NCPU / 3 > 8 ? 8 : NCPU / 3) ))}
  ENV_STEPS=${ENV_STEPS:-100000}
  TRAIN_ARGS=""                      # the paper's settings: configs/cartpole-swingup.yaml (batch 512)
  REPORT_REPS=5000
  CAP_OFF=60; CAP_COMPILE=90; TABLE_BUDGET=180; TESTS_CAP=120
else
  GPU=0
  BATCHES=${BATCHES:-8 16}; UPDATES=${UPDATES:-2}; WARMUP=1
  ENV_AGENT_STEPS=20
  SEEDS=${SEEDS:-2}
  ENV_STEPS=${ENV_STEPS:-400}
  # tiny: 25 random agent steps, 25 updates at batch 8, evaluations at 0, 200 and 400 env steps
  TRAIN_ARGS="batch_size=8 init_steps=200 eval_every=200 eval_episodes=1 replay_capacity=1000 checkpoint_every=400"
  REPORT_REPS=200
  CAP_OFF=60; CAP_COMPILE=90; TABLE_BUDGET=150; TESTS_CAP=120
fi
THREADS=${THREADS:-$(( NCPU / SEEDS > 2 ? NCPU / SEEDS - 1 : 1 ))}
REPORT_RESERVE=75                     # seconds kept after the learning runs for the report and packing

WORK=$(mktemp -d "${TMPDIR:-/tmp}/device_suite.XXXXXX")
RES=$WORK/results
mkdir -p "$RES/logs" "$OUT"
STATUS=$RES/steps.md
printf '| step | outcome | seconds |\n|---|---|---|\n' > "$STATUS"
export PYTHONUNBUFFERED=1

left() { echo $(( BUDGET_S - (SECONDS - START) )); }
say() { printf '[%4ds] %s\n' $(( SECONDS - START )) "$*"; }
# step NAME CAP CMD...: run CMD under `timeout` (the smaller of CAP and the time left before
# the report's reserve), its output in logs/NAME.txt; record the outcome.
step() {
  local name=$1 cap=$2; shift 2
  local t0=$SECONDS limit rc
  limit=$(( $(left) - REPORT_RESERVE ))
  (( limit > cap )) && limit=$cap
  if (( limit < 5 )); then
    say "$name: skipped (no time left)"; echo "| $name | skipped: no time left | 0 |" >> "$STATUS"; return 1
  fi
  # through bash -c: CMD may be one of the step functions below (exported with export -f)
  timeout --kill-after=10 "$limit" bash -c '"$@"' "$name" "$@" > "$RES/logs/$name.txt" 2>&1
  rc=$?
  local outcome="ok"
  (( rc == 124 || rc == 137 )) && outcome="timeout after ${limit}s"
  (( rc != 0 && rc != 124 && rc != 137 )) && outcome="failed (exit $rc)"
  echo "| $name | $outcome | $(( SECONDS - t0 )) |" >> "$STATUS"
  say "$name: $outcome ($(( SECONDS - t0 ))s)"
  if [[ $outcome != ok ]]; then tail -n 15 "$RES/logs/$name.txt" | sed 's/^/    /'; fi
  return $rc
}
wants() { [[ " $STEPS " == *" $1 "* ]]; }

# ---------------------------------------------------------------- install
install() {
  set -e
  ls "$BUNDLE"/*.whl >/dev/null 2>&1 || { echo "no wheels in $BUNDLE: run 'bash scripts/device_bundle.sh 3.12' here first and carry .bundle"; exit 1; }
  local want have
  want=$(cat "$BUNDLE/PYTHON_VERSION" 2>/dev/null || echo "python ?")
  have=$("$PYTHON" -c 'import sys; print("python %d.%d" % sys.version_info[:2])')
  [[ $want == "$have" ]] || { echo "the bundle is for $want but $PYTHON is $have: rebuild it with scripts/device_bundle.sh"; exit 1; }
  "$PYTHON" -m pip install -q --disable-pip-version-check --no-index --no-deps --no-compile --no-cache-dir \
    --target "$WORK/site" "$BUNDLE"/*.whl
  # rliable 1.2.0 needs arch < 8, and arch 7 does not import under pandas 3
  if ! "$PYTHON" -c 'import sys, pandas; sys.exit(int(pandas.__version__.split(".")[0]) >= 3)' 2>/dev/null; then
    "$PYTHON" -m pip install -q --disable-pip-version-check --no-index --no-deps --no-compile --no-cache-dir \
      --target "$WORK/site" "$BUNDLE"/pandas2/*.whl
    echo "this machine's pandas is 3 or newer (or missing): installed $(cd "$BUNDLE/pandas2" && echo *.whl)"
  fi
  if (( GPU )); then
    for f in "$BUNDLE"/gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
  fi
  # curlrl from the tree, laid out as the wheel installs it (agents/ -> curlrl/agents, ...)
  mkdir -p "$WORK/pkg"
  cp -r "$REPO/curlrl" "$WORK/pkg/curlrl"
  for sub in agents envs configs; do cp -r "$REPO/$sub" "$WORK/pkg/curlrl/$sub"; done
  find "$WORK/pkg" -name __pycache__ -prune -exec rm -rf {} +
  echo "installed $(ls "$BUNDLE"/*.whl | wc -l) wheels into $WORK/site; curlrl assembled in $WORK/pkg"
}
# PYTHONSAFEPATH: neither the working directory nor a script's folder goes on sys.path, so
# `curlrl` is the assembled package, never the tree's curlrl/ (which lacks agents and envs)
export PYTHONSAFEPATH=1 PYTHONPATH="$WORK/pkg:$WORK/site:$REPO/benchmarks${PYTHONPATH:+:$PYTHONPATH}"
if (( GPU )); then
  export MUJOCO_GL=${MUJOCO_GL:-egl}
  nv_egl=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
  [[ -z ${__EGL_VENDOR_LIBRARY_FILENAMES:-} && -f $nv_egl ]] && export __EGL_VENDOR_LIBRARY_FILENAMES=$nv_egl
fi

export REPO WORK RES BUNDLE PYTHON DEVICE GPU BATCHES UPDATES WARMUP CAP_OFF CAP_COMPILE TABLE_BUDGET \
  ENV_AGENT_STEPS SEEDS THREADS ENV_STEPS TRAIN_ARGS
export -f install
say "device_suite: DEVICE=$DEVICE, budget ${BUDGET_S}s, steps: install preflight $STEPS; work dir $WORK"
{
  command -v nvidia-smi >/dev/null && nvidia-smi -L
  echo "cpus: $NCPU"
  "$PYTHON" -c 'import sys, torch; print("python", sys.version.split()[0], "| torch", torch.__version__, "| cuda",
      torch.version.cuda, "|", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU visible")'
} > "$RES/machine.txt" 2>&1
cat "$RES/machine.txt"
if ! step install 120 install; then
  echo "device_suite: install failed: the other steps are skipped" >&2
  STEPS=""
fi

# ---------------------------------------------------------------- preflight
preflight() {
  "$PYTHON" - <<'EOF'
import importlib, os
for name in ["torch", "numpy", "yaml", "curlrl", "curlrl.agents", "curlrl.envs", "mujoco", "dm_control",
             "gymnasium", "lz4", "rliable.library", "arch.bootstrap", "submitit", "pandas", "matplotlib", "tensorboard", "pytest"]:
    mod = importlib.import_module(name)
    print(f"{name:12s} {getattr(mod, '__version__', '')}")
from curlrl.envs import make_env
# the six PlaNet tasks load and render from the slimmed dm_control wheel
for task in ["cartpole-swingup", "finger-spin", "walker-walk", "cheetah-run", "reacher-easy", "ball_in_cup-catch"]:
    obs, _ = make_env(task, 100, 2, frame_stack=3, seed=0).reset(seed=0)
    print(f"{task}: rendered {tuple(obs.shape)} {obs.dtype}, mean pixel {obs.mean():.1f}")
print("MUJOCO_GL =", os.environ.get("MUJOCO_GL"))
EOF
}
export -f preflight
[[ -n $STEPS ]] && step preflight 120 preflight

# ---------------------------------------------------------------- tests
if wants tests; then
  step tests "$TESTS_CAP" "$PYTHON" -m pytest -q -p no:cacheprovider -o addopts="" -rs \
    tests/test_agent.py tests/test_core.py tests/test_replay.py tests/test_device_replay.py
fi

# ---------------------------------------------------------------- table
update_table() {
  local log=$RES/logs/update_speed_runs.txt t_end=$(( SECONDS + TABLE_BUDGET )) capture_ok=0
  : > "$log"
  "$PYTHON" benchmarks/update_speed.py --help 2>/dev/null | grep -q -- '--capture' && capture_ok=1
  for batch in $BATCHES; do for amp in off bf16; do for capture in off compile; do
    local head="### batch=$batch mode=exact,fused amp=$amp capture=$capture" cap=$CAP_OFF args=()
    [[ $capture == compile ]] && cap=$CAP_COMPILE
    if (( capture_ok )); then args=(--capture "$capture")
    elif [[ $capture != off ]]; then echo "$head status=unsupported(update_speed.py_has_no_--capture)" >> "$log"; continue
    fi
    local remaining=$(( t_end - SECONDS ))
    (( remaining < cap )) && cap=$remaining
    if (( cap < 10 )); then echo "$head status=skipped(table_budget)" >> "$log"; continue; fi
    local out rc
    out=$(timeout --kill-after=5 "$cap" "$PYTHON" benchmarks/update_speed.py --device "$DEVICE" --batch-size "$batch" \
          --mode exact,fused --amp "$amp" --updates "$UPDATES" --warmup "$WARMUP" "${args[@]}" 2>&1)
    rc=$?
    local status=ok
    (( rc == 124 || rc == 137 )) && status="timeout(${cap}s)"
    (( rc != 0 && rc != 124 && rc != 137 )) && status="failed(exit_$rc)"
    printf '%s status=%s\n%s\n' "$head" "$status" "$out" >> "$log"
    echo "$head status=$status"
  done; done; done
  "$PYTHON" benchmarks/device_suite.py table "$log" > "$RES/update_speed.md"
  cat "$RES/update_speed.md"
}
export -f update_table
if wants table; then step table $(( TABLE_BUDGET + 20 )) update_table; fi

# ---------------------------------------------------------------- env
env_speed() {
  local task rc=0
  for task in cartpole-swingup walker-walk; do
    "$PYTHON" benchmarks/env_speed.py --task "$task" --action-repeat "$( [[ $task == walker-walk ]] && echo 2 || echo 8 )" \
      --agent-steps "$ENV_AGENT_STEPS" || rc=1
  done
  return $rc
}
export -f env_speed
if wants env; then step env 90 env_speed; fi

# ---------------------------------------------------------------- learn
learn() {
  local limit=$1 seed pids=() runs=$RES/runs/cartpole-swingup
  mkdir -p "$runs"
  echo "cartpole-swingup seeds 0..$(( SEEDS - 1 )) in parallel, threads=$THREADS each, stopped after ${limit}s"
  for (( seed = 0; seed < SEEDS; seed++ )); do
    ( timeout --signal=INT --kill-after=20 "$limit" "$PYTHON" -m curlrl.cli train cartpole-swingup seed=$seed \
        device="$DEVICE" video=false threads="$THREADS" save_replay=false env_steps="$ENV_STEPS" $TRAIN_ARGS \
        --run-dir "$runs/seed$seed" > "$runs/seed$seed.log" 2>&1
      echo $? > "$runs/seed$seed.rc" ) &
    pids+=($!)
  done
  wait "${pids[@]}"
  "$PYTHON" benchmarks/device_suite.py learning "$RES/runs" "$ENV_STEPS" | tee "$RES/learning.md"
  grep -q "| none |" "$RES/learning.md" && return 1 || return 0
}
export -f learn
if wants learn; then
  limit=$(( $(left) - REPORT_RESERVE - 25 ))   # 25 s for the runs to stop at the signal and the table
  if (( limit >= 10 )); then
    step learn $(( limit + 25 )) learn "$limit"
  else
    echo "| learn | skipped: no time left | 0 |" >> "$STATUS"; say "learn: skipped (no time left)"
  fi
fi

# ---------------------------------------------------------------- report
if wants report && [[ -d $RES/runs ]]; then
  report_steps=$("$PYTHON" benchmarks/device_suite.py report-steps "$RES/runs" "$ENV_STEPS")
  REPORT_RESERVE=15 step report 60 "$PYTHON" -m curlrl.cli report "$RES/runs" --compare published --steps "$report_steps" \
    --reps "$REPORT_REPS" --out "$RES/report"
fi

# ---------------------------------------------------------------- summary and packing
{
  echo "# curlrl device suite"
  echo
  echo "DEVICE=$DEVICE, budget ${BUDGET_S}s, ended after $(( SECONDS - START ))s. Machine:"
  echo; echo '```'; cat "$RES/machine.txt"; echo '```'; echo
  echo "## Steps"; echo; cat "$STATUS"; echo
  if [[ -f $RES/update_speed.md ]]; then
    echo "## Update speed (benchmarks/update_speed.py, $UPDATES timed updates, medians)"; echo
    cat "$RES/update_speed.md"; echo
  fi
  if [[ -f $RES/logs/env.txt ]]; then
    echo "## Env speed with rendering (benchmarks/env_speed.py, MUJOCO_GL=${MUJOCO_GL:-auto})"; echo
    echo '```'; grep -E '^(# task|ms_per_agent_step)' "$RES/logs/env.txt"; echo '```'; echo
  fi
  if [[ -f $RES/learning.md ]]; then
    echo "## Learning: cartpole-swingup, $SEEDS seeds in parallel, env_steps=$ENV_STEPS $TRAIN_ARGS"; echo
    cat "$RES/learning.md"; echo
  fi
  if [[ -f $RES/report/report.md ]]; then
    echo "## curlrl report (results/report/report.md in results.tar.gz)"; echo
    sed -n '/^## /,$p' "$RES/report/report.md" | head -n 80; echo
  fi
  echo "Logs, the tables, each run's eval.csv/train.csv/config.yaml and the report: results.tar.gz."
} > "$RES/summary.md"
"$PYTHON" benchmarks/device_suite.py pack "$RES" "$RES/summary.md" "$OUT"
sed '/^## curlrl report/,$d' "$RES/summary.md"
say "device_suite: done; $OUT holds summary.md and results.tar.gz"
failed=$(grep -cE '\| (failed|timeout)' "$STATUS")
rm -rf "$WORK"
(( failed == 0 ))
