"""A local `curlrl bench` told to stop (SIGTERM, as a shell's `kill` or a session's end):
its running `curlrl train` stops with a checkpoint, no queued run starts, and the same
command resumes. The signal comes from the run itself at a chosen transition
(`CURLRL_FAULT`), so no clock decides what was written first."""
import csv
import os
import signal
import subprocess
import sys

from conftest import HANG_TIMEOUT_S

from curlrl.jobs.rundir import RunDir

TINY = ["init_steps=400", "eval_every=800", "checkpoint_every=400", "eval_episodes=1", "batch_size=16",
        "replay_capacity=1000", "image_size=64", "crop_size=56", "video=false", "threads=1"]


def _evals(run_dir):
    with open(run_dir / "eval.csv", newline="") as fh:
        return [int(r["env_step"]) for r in csv.DictReader(fh)]


def test_sigterm_to_a_local_bench_checkpoints_its_run_starts_no_other_and_the_same_command_resumes(tmp_path):
    out = tmp_path / "b"
    argv = [sys.executable, "-m", "curlrl.cli", "bench", "--tasks", "cartpole-swingup", "--seeds", "2",
            "--workers", "1", "--out", str(out), "env_steps=1600", *TINY]
    # right after seed 0's evaluation at 800 env steps, its parent -- the bench -- gets SIGTERM
    res = subprocess.run(argv, capture_output=True, text=True, timeout=HANG_TIMEOUT_S,
                         env={**os.environ, "CURLRL_FAULT": "eval:800:TERM:parent"})
    text = res.stdout + res.stderr
    assert res.returncode == 128 + signal.SIGTERM, text
    assert "curlrl bench: stopped by SIGTERM; run the same command again to resume" in res.stderr
    runs = out / "runs" / "cartpole-swingup"
    step = RunDir(runs / "seed0").checkpoint_env_step()
    assert 800 <= step < 1600, step  # the run's own stop checkpoint, not a periodic one
    log = (out / "logs" / "cartpole-swingup" / "seed0.log").read_text()
    assert f"stopped by SIGTERM at env step {step}" in log, log
    assert not (runs / "seed1").exists(), "a queued run started while the bench was stopping"

    res = subprocess.run(argv, capture_output=True, text=True, timeout=HANG_TIMEOUT_S)
    text = res.stdout + res.stderr
    assert res.returncode == 0, text
    assert "2 runs: 1 done, 1 resumed, 0 already finished, 0 failed" in text, text
    assert _evals(runs / "seed0") == _evals(runs / "seed1") == [0, 800, 1600]
