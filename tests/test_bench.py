"""``curlrl bench`` end to end on the CPU with tiny budgets, through both launchers.

One session fixture trains 2 tasks x 2 seeds to 800 env steps with the local process pool,
then asks the submitit local executor for 1600 env steps (so every run resumes from its
checkpoint), then re-runs the command (everything is skipped). The report on those runs
is checked here too. threads=1 per run, at most 2 workers.
"""
from __future__ import annotations

import contextlib
import csv
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import HANG_TIMEOUT_S, cli_error

from curlrl.jobs import bench
from curlrl.cli import main
from curlrl.errors import ConfigError
from curlrl.jobs.rundir import TRAIN_COLUMNS, RunDir

TASKS = ["cartpole-swingup", "ball_in_cup-catch"]
# Small everything: 64 px frames, 16-sample batches, one eval episode at 0, 800 and 1600.
TINY = ["init_steps=400", "eval_every=800", "checkpoint_every=400", "eval_episodes=1", "batch_size=16",
        "replay_capacity=1000", "image_size=64", "crop_size=56", "video=false", "threads=1"]


def _cli(argv: list[str]) -> tuple[int, str]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        rc = main(argv)
    return rc, buf.getvalue()


@pytest.fixture(scope="session")
def bench_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    suite = bench.load_suite("planet100k")
    lines: list[str] = []
    local = bench.run_bench(suite, out, ["env_steps=800", *TINY], TASKS, seeds=2, workers=2, launcher="local",
                            report=lines.append, progress_every=0)
    sub = bench.run_bench(suite, out, ["env_steps=1600", *TINY], TASKS, seeds=2, workers=2,
                          launcher="submitit-local", report=lines.append, progress_every=0)
    rc, text = _cli(["bench", "--tasks", *TASKS, "--seeds", "2", "--workers", "2", "--out", str(out),
                     "env_steps=1600", *TINY])
    return dict(out=out, local=local, submitit=sub, rerun_rc=rc, rerun_text=text, lines=lines)


def _eval_steps(run_dir: Path) -> list[int]:
    rows = (run_dir / "eval.csv").read_text().splitlines()[1:]
    return [int(r.split(",")[2]) for r in rows]


def test_local_launcher_trains_every_task_and_seed(bench_runs):
    out, results = bench_runs["out"], bench_runs["local"]
    assert [(r.task, r.seed, r.outcome) for r in results] == \
        [(t, s, "done") for t in TASKS for s in (0, 1)], "\n".join(bench_runs["lines"])
    for task in TASKS:
        for seed in (0, 1):
            run_dir = out / "runs" / task / f"seed{seed}"
            cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
            assert (cfg["task"], cfg["seed"], cfg["batch_size"], cfg["threads"]) == (task, seed, 16, 1)
            assert cfg["device"] == "cpu"  # "auto" is resolved and recorded by the bench
            log = out / "logs" / task / f"seed{seed}.log"
            assert "=== curlrl bench: start" in log.read_text()
    assert any("4 runs: 4 done, 0 resumed" in ln for ln in bench_runs["lines"])


def test_submitit_local_resumes_interrupted_runs(bench_runs):
    out, results = bench_runs["out"], bench_runs["submitit"]
    assert {r.outcome for r in results} == {"resumed"}, "\n".join(bench_runs["lines"])
    assert len(results) == 4
    assert (out / "submitit").is_dir()
    for task in TASKS:
        for seed in (0, 1):
            run_dir = out / "runs" / task / f"seed{seed}"
            assert RunDir(run_dir).checkpoint_env_step() == 1600
            assert _eval_steps(run_dir) == [0, 800, 1600]  # each eval once, none lost or repeated
            assert "resume from env step 800" in (out / "logs" / task / f"seed{seed}.log").read_text()


def test_rerun_skips_finished_runs(bench_runs):
    assert bench_runs["rerun_rc"] == 0
    text = bench_runs["rerun_text"]
    assert "0 done, 0 resumed, 4 already finished, 0 failed" in text
    assert text.count("skipped") == 4
    assert "finished 4" in text
    summary = (bench_runs["out"] / "bench.csv").read_text().splitlines()
    assert summary[0].startswith("task,seed,outcome") and len(summary) == 5


def test_run_status_reads_the_run_dir(bench_runs, tmp_path):
    run_dir = bench_runs["out"] / "runs" / "cartpole-swingup" / "seed0"
    assert bench.run_status(run_dir, 1600).state == "done"
    st = bench.run_status(run_dir, 3200)
    assert (st.state, st.env_step) == ("partial", 1600)
    assert bench.run_status(tmp_path / "nothing", 100).state == "new"
    bad = tmp_path / "bad" / "checkpoints"
    bad.mkdir(parents=True)
    (bad / "latest.pt").write_bytes(b"not a checkpoint")
    st = bench.run_status(tmp_path / "bad", 100)
    assert st.state == "corrupt" and "corrupt" in st.message
    # a real checkpoint cut short (status maps the file rather than reading it)
    real = RunDir(run_dir).checkpoint_path.read_bytes()
    (bad / "latest.pt").write_bytes(real[: len(real) // 2])
    st = bench.run_status(tmp_path / "bad", 100)
    assert st.state == "corrupt" and "corrupt" in st.message


@pytest.mark.parametrize("counters, state", [
    (dict(env_step=1000, next_eval=1000), "partial"),     # checkpointed at the budget, killed while evaluating
    (dict(env_step=1000, next_eval=1500), "done"),
    (dict(env_step=1000, next_eval=2000, final_done_at=-1), "partial"),   # Atari: the final evaluation to do
    (dict(env_step=1000, next_eval=2000, final_done_at=1000), "done"),
    (dict(env_step=800, next_eval=1000), "partial"),
])
def test_a_run_is_done_only_once_its_evaluations_at_the_budget_are(tmp_path, counters, state):
    from curlrl.jobs.rundir import TRAIN_KIND

    RunDir(tmp_path / "r").save_checkpoint({"kind": TRAIN_KIND, "version": 1, "counters": counters})
    st = bench.run_status(tmp_path / "r", 1000)
    assert (st.state, st.env_step) == (state, counters["env_step"])


def test_report_on_bench_runs(bench_runs, tmp_path):
    out = tmp_path / "report"
    rc, text = _cli(["report", str(bench_runs["out"]), "--steps", "800,1600,100000", "--compare", "published",
                     "--reps", "200", "--out", str(out), "--export-csv", str(tmp_path / "r.csv")])
    assert rc == 0, text
    md = (out / "report.md").read_text()
    assert "## Per-task scores at env step 1600" in md
    assert "| cartpole-swingup | curl | 2/2 |" in md and "| ball_in_cup-catch | curl | 2/2 |" in md
    assert "### Aggregate at env step 1600" in md
    row = next(ln for ln in md.splitlines() if ln.startswith("| curl | 2 | 2 |"))
    assert row.count("[") == 4  # IQM, median, mean, optimality gap, each with a CI
    assert "No run has an evaluation at env step 100000" in md
    assert "⚠ batch_size=16 (paper 512)" in md and "| 16 | cpu |" in md
    assert "582 ± 146" in md  # published CURL cartpole 100k, side by side
    for png in ("aggregate_1600.png", "performance_profile_1600.png", "sample_efficiency.png", "per_task_curves.png"):
        assert (out / png).stat().st_size > 1000
    rc, text = _cli(["report", str(tmp_path / "r.csv"), "--steps", "800,1600", "--reps", "200",
                     "--out", str(tmp_path / "again")])
    assert rc == 0, text
    again = (tmp_path / "again" / "report.md").read_text()
    table = [ln for ln in md.splitlines() if ln.startswith("| cartpole-swingup | curl |")]
    assert table and all(ln in again for ln in table)


def test_failed_run_is_reported(tmp_path):
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA to make device=cuda fail")
    # an earlier attempt that died before its first checkpoint: set aside, not mixed in
    old = tmp_path / "b" / "runs" / "cartpole-swingup" / "seed0"
    old.mkdir(parents=True)
    (old / "eval.csv").write_text("task,seed,env_step,agent_step,updates,eval_episode,return,wall_s\n")
    rc, text = _cli(["bench", "--tasks", "cartpole-swingup", "--seeds", "1", "--workers", "1",
                     "--out", str(tmp_path / "b"), "env_steps=800", *TINY, "device=cuda"])
    stale = list(old.parent.glob("seed0.stale-*"))
    assert len(stale) == 1 and (stale[0] / "eval.csv").exists()
    assert rc == 1, text
    fail = [ln for ln in text.splitlines() if ln.startswith("FAILED cartpole-swingup seed0")]
    assert len(fail) == 1 and "exit code 2" in fail[0] and "no CUDA device" in fail[0]
    assert str(tmp_path / "b" / "logs" / "cartpole-swingup" / "seed0.log") in fail[0]
    assert "1 failed" in text


def test_user_mistakes_exit_2_before_launching(tmp_path, capsys):
    cli_error(capsys, ["bench", "--out", str(tmp_path / "x"), "batch_sise=16"], "batch_sise")
    assert not (tmp_path / "x").exists()
    cli_error(capsys, ["bench", "--out", str(tmp_path / "x"), "--suite", "nope"])
    cli_error(capsys, ["bench", "--out", str(tmp_path / "x"), "seed=3"], "--seeds")
    cli_error(capsys, ["bench", "--out", str(tmp_path / "x"), "--workers", "0"])


def test_suite_file_and_plan(tmp_path):
    path = tmp_path / "suite.yaml"
    path.write_text("tasks: [cartpole-swingup, walker-walk]\nenv_steps: 20000\nseeds: [3, 5]\n"
                    "overrides: {batch_size: 128}\ntask_overrides:\n  walker-walk: {batch_size: 64}\n")
    suite = bench.load_suite(str(path))
    assert (suite.name, suite.tasks, suite.env_steps, suite.seeds) == ("suite", ["cartpole-swingup", "walker-walk"],
                                                                       20000, [3, 5])
    specs = bench.plan(suite, tmp_path / "out", ["eval_every=4000"], default_threads=2)
    assert [(s.task, s.seed) for s in specs] == [("cartpole-swingup", 3), ("cartpole-swingup", 5),
                                                 ("walker-walk", 3), ("walker-walk", 5)]
    assert all(s.state == "new" and s.env_steps == 20000 and s.threads == 2 for s in specs)
    assert "batch_size=128" in specs[0].overrides and "batch_size=64" in specs[2].overrides
    assert specs[1].run_dir == str(tmp_path / "out" / "runs" / "cartpole-swingup" / "seed5")
    # the command line wins over the suite; threads= from the user wins over the default
    specs = bench.plan(suite, tmp_path / "out", ["batch_size=32", "threads=3", "env_steps=8000"], ["walker-walk"], 1)
    assert [(s.seed, s.env_steps, s.threads) for s in specs] == [(0, 8000, 3)]
    assert "batch_size=32" in specs[0].overrides and "batch_size=64" not in specs[0].overrides
    for bad, msg in [("tasks: []\nenv_steps: 10", "tasks"), ("tasks: [a]\nenv_steps: 10\nfoo: 1", "foo"),
                     ("tasks: [a]", "env_steps"), ("tasks: [a]\nenv_steps: 10\nseeds: 0", "seeds"),
                     ("tasks: [a]\nenv_steps: 10\ntask_overrides: {b: {}}", "b")]:
        path.write_text(bad)
        with pytest.raises(ConfigError, match=msg):
            bench.load_suite(str(path))
    assert bench.load_suite("planet500k").env_steps == 500_000
    assert len(bench.load_suite("planet100k").tasks) == 6


def test_parse_time_and_slurm_executor(tmp_path, monkeypatch):
    assert bench.parse_time_min("90") == 90
    assert bench.parse_time_min("02:30:00") == 150
    assert bench.parse_time_min("1-00:00:00") == 1440
    assert bench.parse_time_min("12h") == 720
    with pytest.raises(ConfigError):
        bench.parse_time_min("soon")
    # submitit only looks for `srun` on the PATH: a stub lets us render the sbatch script here
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "srun").write_text("#!/bin/sh\nexit 1\n")
    (stub / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{stub}{os.pathsep}{os.environ['PATH']}")
    opts = bench.SlurmOptions(partition="gpu", time_min=600, gpus=1, cpus=8, account="rl", extra={"exclude": "n3"})
    ex = bench.make_executor("slurm", tmp_path / "s", threads=8, slurm=opts)
    script = ex._executor._make_submission_file_text("python job.py", "uid")
    for line in ("--partition=gpu", "--time=600", "--cpus-per-task=8", "--gpus-per-node=1", "--account=rl",
                 "--exclude=n3", "--signal=USR2@180"):
        assert f"#SBATCH {line}" in script


@pytest.mark.slow
def test_bench_resumes_after_kill_9(tmp_path):
    """Kill the whole bench (launcher and its training process) right after the run's
    checkpoint at env step 1000, as a node dying would; a second bench resumes it."""
    out = tmp_path / "b"
    argv = [sys.executable, "-m", "curlrl.cli", "bench", "--tasks", "cartpole-swingup", "--seeds", "1",
            "--workers", "1", "--out", str(out), "env_steps=1600", *TINY]
    proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                          env={**os.environ, "CURLRL_FAULT": "checkpoint:1000:KILL:group"}, timeout=HANG_TIMEOUT_S)
    assert proc.returncode == -signal.SIGKILL
    run_dir = out / "runs" / "cartpole-swingup" / "seed0"
    assert RunDir(run_dir).checkpoint_env_step() == 1000
    rc, text = _cli(["bench", "--tasks", "cartpole-swingup", "--seeds", "1", "--workers", "1",
                     "--out", str(out), "env_steps=1600", *TINY])
    assert rc == 0, text
    assert "1 resumed" in text
    assert _eval_steps(run_dir) == [0, 800, 1600]


def test_unknown_task_is_refused_up_front(tmp_path, capsys):
    cli_error(capsys, ["bench", "--tasks", "cartpole-swingup", "walker-fly", "--out", str(tmp_path / "x")],
              "walker-fly")
    assert not (tmp_path / "x").exists()


def test_progress_line_reads_train_csv_by_header(tmp_path):
    """The env step comes from the column named env_step, wherever it stands."""
    cols = list(TRAIN_COLUMNS)
    i, j = cols.index("env_step"), cols.index("agent_step")
    cols[i], cols[j] = cols[j], cols[i]  # agent_step now stands where env_step used to
    run_dir = tmp_path / "runs" / "cartpole-swingup" / "seed0"
    run_dir.mkdir(parents=True)
    rows = [dict(task="cartpole-swingup", seed=0, env_step=env_step, agent_step=env_step // 8, updates=0)
            for env_step in (400, 800, 1200)]
    with open(run_dir / "train.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=cols, restval="")
        writer.writeheader()
        writer.writerows(rows)
    specs = [bench.RunSpec("cartpole-swingup", seed, str(tmp_path / "runs" / "cartpole-swingup" / f"seed{seed}"),
                           str(tmp_path / f"seed{seed}.log"), [], 1600, 1, "cpu") for seed in (0, 1)]
    assert bench.progress_line(specs) == "  running: cartpole-swingup seed0 1200/1600; cartpole-swingup seed1 0/1600"
    assert bench.progress_line([]) == "  running: (queued)"


def test_argument_mistakes_name_the_flag_only_in_the_cli(tmp_path, capsys):
    with pytest.raises(bench.ArgumentError) as info:
        bench.SlurmOptions(cpus=0)
    assert (info.value.argument, str(info.value)) == ("cpus", "cpus must be > 0, got 0")
    cli_error(capsys, ["bench", "--out", str(tmp_path / "x"), "--cpus", "0"], "--cpus must be > 0, got 0")
    # seeds from a suite file are the file's mistake, not --seeds'
    path = tmp_path / "suite.yaml"
    path.write_text("tasks: [cartpole-swingup]\nenv_steps: 1000\nseeds: 0\n")
    line = cli_error(capsys, ["bench", "--out", str(tmp_path / "x"), "--suite", str(path)],
                     f"suite file {path}: the number of seeds must be > 0")
    assert "--seeds" not in line, line
    assert not (tmp_path / "x").exists()


def _submitit_tasks(folder: Path) -> list[int]:
    """Pids of the submitit job processes (``python -m submitit.core._submit FOLDER``) of ``folder``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"submitit.core._submit" in argv and str(folder).encode() in argv:
            pids.append(int(entry.name))
    return pids


def test_submitit_job_requeues_on_its_signal_and_resumes(tmp_path, monkeypatch):
    """A submitit-local job signalled (as SLURM does at the time limit or on preemption) stops
    its `curlrl train`, is requeued, resumes from the checkpoint and is counted once.

    The signal comes from the training process itself, right after its checkpoint at env step
    1000, to its parent (the submitit job) and then to itself, as SLURM signals every process
    of a job: the child must ignore it (it would die of USR2 otherwise) and be stopped by the
    job with SIGUSR1 instead."""
    out = tmp_path / "b"
    run_dir = out / "runs" / "cartpole-swingup" / "seed0"
    monkeypatch.setenv("CURLRL_FAULT", "checkpoint:1000:USR2:job")  # submitit's requeue signal
    lines: list[str] = []
    results = bench.run_bench(bench.load_suite("planet100k"), out, ["env_steps=1600", *TINY],
                              ["cartpole-swingup"], seeds=1, workers=1, launcher="submitit-local",
                              report=lines.append, progress_every=0)
    text = "\n".join(lines)
    assert [(r.outcome, r.env_step) for r in results] == [("resumed", 1600)], text
    assert "1 runs: 0 done, 1 resumed, 0 already finished, 0 failed" in text
    log = (out / "logs" / "cartpole-swingup" / "seed0.log").read_text()
    assert "job signalled (time limit or preemption)" in log and "requeued" in log
    resumed_from = [int(ln.split("resume from env step ")[1].split()[0])
                    for ln in log.splitlines() if "resume from env step" in ln]
    assert len(resumed_from) == 1 and 1000 <= resumed_from[0] < 1600, log
    assert RunDir(run_dir).checkpoint_env_step() == 1600
    assert _eval_steps(run_dir) == [0, 800, 1600]  # no evaluation lost or repeated
    with open(run_dir / "train.csv", newline="") as fh:
        steps = [int(row["env_step"]) for row in csv.DictReader(fh)]
    # one row per episode: the rows written before the signal are kept, none is repeated
    assert steps and steps == sorted(set(steps)) and steps[0] <= resumed_from[0], steps


def test_stop_signal_exit_codes():
    assert bench.stopped_by(143) == signal.SIGTERM and bench.stopped_by(-signal.SIGUSR1) == signal.SIGUSR1
    assert bench.stopped_by(130) == signal.SIGINT and bench.stopped_by(138) == signal.SIGUSR1
    assert bench.stopped_by(0) is None and bench.stopped_by(1) is None and bench.stopped_by(-9) is None


def test_stop_children_waits_for_a_clean_stop_then_kills(monkeypatch):
    """stop_children: a child that stops cleanly on SIGUSR1 (the contract of `curlrl train`)
    is waited for; one that ignores it is killed once the wait is over. (The clean child's wait
    is a hang guard: no clock decides which of the two happens.)"""
    from curlrl.jobs.bench import launch

    clean = ("import signal, sys, time\n"
             "signal.signal(signal.SIGUSR1, lambda s, f: (time.sleep(0.5), sys.exit(128 + s)))\n"
             "print('ready', flush=True)\n"
             "time.sleep(60)\n")
    deaf = ("import signal, time\nsignal.signal(signal.SIGUSR1, signal.SIG_IGN)\n"
            "print('ready', flush=True)\ntime.sleep(60)\n")
    monkeypatch.setattr(launch, "_PROCS", set())
    for code, wait_s, expected in [(clean, float(HANG_TIMEOUT_S), [128 + signal.SIGUSR1]),
                                   (deaf, 1.0, [-signal.SIGKILL])]:
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        launch._PROCS.add(proc)
        assert bench.stop_children(signal.SIGUSR1, wait_s) == expected
        assert proc.returncode == expected[0]
        launch._PROCS.discard(proc)
        proc.stdout.close()
    assert bench.stop_children(signal.SIGUSR1, 1.0) == []


def test_train_job_checkpoint_returns_the_same_call(tmp_path, monkeypatch):
    """TrainJob.checkpoint stops the child with SIGUSR1 -- unless SLURM's SIGTERM just reached
    the whole job (the child is already stopping: a second signal would cut its checkpoint
    short) -- notes it in the run's log and hands submitit the same spec to requeue."""
    from curlrl.jobs.bench import launch

    spec = bench.RunSpec("cartpole-swingup", 0, str(tmp_path / "run"), str(tmp_path / "seed0.log"), [], 1600, 1,
                         "cpu")
    # dies of SIGUSR1 (no handler); told to on its stdin, it exits 143, like a train stopping on SIGTERM
    child = "import sys\nprint('ready', flush=True)\nsys.stdin.readline()\nsys.exit(143)\n"
    monkeypatch.setattr(launch, "_PROCS", set())
    for already_stopping, code, how in [(False, -signal.SIGUSR1, "sent SIGUSR1"),
                                        (True, 143, "already stopping on SIGTERM")]:
        proc = subprocess.Popen([sys.executable, "-c", child], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                text=True)
        assert proc.stdout.readline().strip() == "ready"
        launch._PROCS.add(proc)
        job = bench.TrainJob(stop_wait_s=HANG_TIMEOUT_S)  # a hang guard: the child exits on its own or by USR1
        if already_stopping:  # SLURM's SIGTERM reached the job (and the child, which is now stopping)
            job._sigterm_at = time.time()
            proc.stdin.write("stop\n")
            proc.stdin.flush()
        delayed = job.checkpoint(spec)
        assert proc.returncode == code
        assert isinstance(delayed.function, bench.TrainJob) and delayed.args == (spec,)
        assert f"curlrl train {how}, exit codes [{code}]; requeued" in Path(spec.log_path).read_text()
        launch._PROCS.discard(proc)
        proc.stdin.close()
        proc.stdout.close()
