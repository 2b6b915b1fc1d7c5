"""Launching runs: each one a ``curlrl train`` subprocess, in a local pool of threads or as
submitit jobs (SLURM, or submitit's local executor); progress lines while they go.

Whether a run starts, resumes or is skipped is decided from its run directory when the job
runs (:func:`execute`), not when it was queued, so a re-queued SLURM job resumes its run.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from curlrl.errors import ConfigError
from curlrl.jobs.bench.results import RunResult, run_status, settled_result
from curlrl.jobs.bench.suite import ArgumentError, RunSpec
from curlrl.jobs.rundir import RunDir

try:  # submitit re-queues a Checkpointable job after a SLURM timeout or preemption
    from submitit.helpers import Checkpointable as _Checkpointable
except ImportError:  # pragma: no cover - submitit is a dependency; local runs work without it
    _Checkpointable = object  # type: ignore[assignment,misc]

LAUNCHERS = ("local", "slurm", "submitit-local")
# A run dir without a checkpoint is moved to <run_dir><STALE_MARK><time> before a fresh start;
# `curlrl report` skips such directories.
STALE_MARK = ".stale-"

Report = Callable[[str], None]

_PROCS: set[subprocess.Popen] = set()
_PROCS_LOCK = threading.Lock()


def _auto_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _log_tail(path: str | Path, lines: int = 1) -> str:
    """The last non-empty line(s) of a log (tqdm's carriage returns split lines too)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 8192))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    parts = [p.strip() for p in text.replace("\r", "\n").split("\n") if p.strip()]
    return " | ".join(parts[-lines:])


def execute(spec: RunSpec) -> RunResult:
    """Start or resume one run in a ``curlrl train`` subprocess and wait for it.

    The run directory decides (at the time the job runs, not when it was queued): finished
    -> skipped; checkpoint present -> ``--resume`` to ``spec.env_steps``; otherwise a fresh
    start (the files of an earlier attempt that never reached a checkpoint are moved to
    ``<run_dir>.stale-<time>``, not deleted). stdout and stderr are appended to ``spec.log_path``.
    Returns its result (``outcome``: skipped / done / resumed / failed).
    """
    t0 = time.time()
    run_dir, log_path = Path(spec.run_dir), Path(spec.log_path)
    status = run_status(run_dir, spec.env_steps)
    settled = settled_result(spec, status)
    if settled is not None:
        return settled
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if spec.threads > 0:  # numpy/OpenMP pools too, not only torch's
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env.setdefault(var, str(spec.threads))
    base = [sys.executable, "-m", "curlrl.cli", "train"]
    if status.state == "partial":
        argv = base + ["--resume", "--run-dir", str(run_dir), f"env_steps={spec.env_steps}",
                       f"threads={spec.threads}"]
    else:
        overrides = list(spec.overrides)
        if spec.device == "auto":  # record the device actually used in the run's config.yaml
            overrides.append(f"device={_auto_device()}")
        if run_dir.is_dir() and any(run_dir.iterdir()):  # an attempt that died before its first checkpoint
            stale = run_dir.with_name(f"{run_dir.name}{STALE_MARK}{time.strftime('%Y%m%d-%H%M%S')}")
            os.replace(run_dir, stale)
        argv = base + [spec.task, "--run-dir", str(run_dir)] + overrides
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as log:
        action = f"resume from env step {status.env_step}" if status.state == "partial" else "start"
        log.write(f"\n=== curlrl bench: {action} {spec.name} on {socket.gethostname()} at "
                  f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n=== {' '.join(argv)}\n")
        log.flush()
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        with _PROCS_LOCK:
            _PROCS.add(proc)
        try:
            rc = proc.wait()
        finally:
            with _PROCS_LOCK:
                _PROCS.discard(proc)
    after = run_status(run_dir, spec.env_steps)
    result = RunResult.of(spec, "failed", returncode=rc, env_step=after.env_step,
                          seconds=round(time.time() - t0, 1)).read_eval()
    if rc == 0 and after.state == "done":
        result.outcome = "resumed" if status.state == "partial" else "done"
    else:
        why = f"killed by signal {-rc}" if rc < 0 else f"exit code {rc}"
        if rc == 0:
            why = f"exited at env step {after.env_step} < {spec.env_steps}"
        result.message = f"{why}; last log line: {_log_tail(log_path) or '(empty)'}"
    return result


class TrainJob(_Checkpointable):
    """The callable submitit runs on a node: :func:`execute`. As a ``Checkpointable``, a job
    hit by its SLURM time limit or preempted is re-queued with the same spec, and since
    :func:`execute` reads the run directory when it starts, the new job resumes the run."""

    def __call__(self, spec: RunSpec) -> RunResult:
        return execute(spec)


def terminate_children() -> None:
    """Stop the ``curlrl train`` processes this process started (on Ctrl-C)."""
    with _PROCS_LOCK:
        procs = list(_PROCS)
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()


@dataclass
class SlurmOptions:
    """Resources of each SLURM job (submitit parameters); None = cluster default."""

    partition: str | None = None
    time_min: int = 24 * 60           # job time limit; a timed-out job is re-queued and resumes
    gpus: int | None = None           # GPUs per job (one run per job)
    cpus: int = 4                     # CPUs per job; also the run's torch threads unless threads= is given
    mem_gb: float | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    extra: dict[str, str] = field(default_factory=dict)  # further sbatch options, e.g. {"exclude": "node3"}

    def __post_init__(self) -> None:
        if self.cpus <= 0:
            raise ArgumentError("cpus", f"cpus must be > 0, got {self.cpus}",
                                f"{{option}} must be > 0, got {self.cpus}")


def parse_time_min(text: str) -> int:
    """SLURM time ``MM``, ``HH:MM:SS`` or ``D-HH:MM:SS`` (or ``90m``, ``12h``) -> minutes."""
    t = text.strip()
    try:
        if t.endswith("m"):
            return int(t[:-1])
        if t.endswith("h"):
            return int(float(t[:-1]) * 60)
        days = 0
        if "-" in t:
            d, t = t.split("-", 1)
            days = int(d)
        parts = [int(p) for p in t.split(":")]
        if len(parts) == 1:
            minutes = parts[0]
        elif len(parts) == 2:
            minutes = parts[0] * 60 + parts[1]
        elif len(parts) == 3:
            minutes = parts[0] * 60 + parts[1] + (1 if parts[2] else 0)
        else:
            raise ValueError
        minutes += days * 24 * 60
    except ValueError:
        raise ConfigError(f"time limit {text!r}: use minutes, HH:MM:SS, D-HH:MM:SS, 90m or 12h") from None
    if minutes <= 0:
        raise ConfigError(f"time limit {text!r} must be positive")
    return minutes


def make_executor(launcher: str, folder: str | Path, threads: int, slurm: SlurmOptions | None = None):
    """A submitit executor: ``slurm`` (sbatch) or ``submitit-local`` (subprocesses, for tests)."""
    try:
        import submitit
    except ImportError:
        raise ConfigError(f"launcher {launcher!r} needs submitit (pip install submitit)") from None
    slurm = slurm or SlurmOptions()
    cluster = "slurm" if launcher == "slurm" else "local"
    try:
        executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
    except RuntimeError as exc:  # e.g. sbatch not found
        raise ConfigError(f"launcher {launcher!r}: {exc}") from None
    params: dict[str, Any] = dict(name="curlrl", timeout_min=slurm.time_min,
                                  cpus_per_task=slurm.cpus if cluster == "slurm" else max(1, threads))
    if cluster == "slurm":
        if slurm.gpus is not None:
            params["gpus_per_node"] = slurm.gpus
        if slurm.mem_gb is not None:
            params["mem_gb"] = slurm.mem_gb
        for key in ("partition", "account", "qos", "constraint"):
            if getattr(slurm, key) is not None:
                params[f"slurm_{key}"] = getattr(slurm, key)
        if slurm.extra:
            params["slurm_additional_parameters"] = dict(slurm.extra)
    executor.update_parameters(**params)
    return executor


def launch_local(specs: list[RunSpec], workers: int, on_result: Callable[[RunResult], None],
                 report: Report, progress_every: float = 300.0) -> list[RunResult]:
    """Run ``specs`` in a pool of ``workers`` threads, each waiting on its own subprocess."""
    results, running = [], {}
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        futures = {pool.submit(execute, s): s for s in specs}
        running = dict(futures)
        last = time.time()
        while running:
            done, _ = wait(list(running), timeout=5.0, return_when=FIRST_COMPLETED)
            for fut in done:
                spec = running.pop(fut)
                try:
                    res = fut.result()
                except Exception as exc:  # a bug in the launcher itself, not in the run
                    res = RunResult.of(spec, "failed", message=f"launcher error: {type(exc).__name__}: {exc}")
                results.append(res)
                on_result(res)
            if progress_every and time.time() - last >= progress_every and running:
                last = time.time()
                report(progress_line([s for f, s in running.items() if f.running()]))
    except KeyboardInterrupt:
        report("curlrl bench: interrupted; stopping runs (re-run the same command to resume them)")
        pool.shutdown(wait=False, cancel_futures=True)
        terminate_children()
        raise
    pool.shutdown(wait=True)
    return results


def launch_submitit(specs: list[RunSpec], executor, workers: int | None, on_result: Callable[[RunResult], None],
                    report: Report, poll_s: float = 1.0, progress_every: float = 300.0) -> list[RunResult]:
    """Submit ``specs`` as submitit jobs, at most ``workers`` in flight (None: all at once)."""
    pending, in_flight, results = list(specs), [], []
    try:
        _submitit_loop(pending, in_flight, results, executor, workers, on_result, report, poll_s, progress_every)
    except KeyboardInterrupt:
        if executor.cluster == "local":  # our own subprocesses: stop them
            for _, job in in_flight:
                job.cancel(check=False)
            report("curlrl bench: interrupted; jobs cancelled (re-run the same command to resume them)")
        else:
            ids = " ".join(str(job.job_id) for _, job in in_flight)
            report(f"curlrl bench: interrupted; the submitted SLURM jobs keep running ({ids}); "
                   f"`scancel {ids}` stops them. Re-run the same command later to collect and resume.")
        raise
    return results


def _submitit_loop(pending, in_flight, results, executor, workers, on_result, report, poll_s, progress_every):
    last = time.time()
    while pending or in_flight:
        while pending and (workers is None or len(in_flight) < workers):
            spec = pending.pop(0)
            job = executor.submit(TrainJob(), spec)
            report(f"  submitted {spec.name}: job {job.job_id}")
            in_flight.append((spec, job))
        time.sleep(poll_s)
        still = []
        for spec, job in in_flight:
            if not job.done():
                still.append((spec, job))
                continue
            try:
                res = job.result()
            except Exception as exc:  # the job itself died (node failure, scancel, OOM kill, ...)
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                res = RunResult.of(spec, "failed", env_step=run_status(spec.run_dir, spec.env_steps).env_step,
                                   message=f"submitit job {job.job_id} failed ({first}); see {job.paths.stderr}")
            results.append(res)
            on_result(res)
        in_flight[:] = still
        if progress_every and time.time() - last >= progress_every and in_flight:
            last = time.time()
            report(progress_line([s for s, _ in in_flight]))


def progress_line(specs: list[RunSpec]) -> str:
    """``  running: <task> seed<k> <env step of train.csv's last row>/<budget>; ...``"""
    parts = [f"{s.name} {RunDir(s.run_dir).last_train_step()}/{s.env_steps}" for s in specs]
    return "  running: " + ("; ".join(parts) if parts else "(queued)")
