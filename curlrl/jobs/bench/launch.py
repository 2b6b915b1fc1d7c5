"""Launching runs: each one a ``curlrl train`` subprocess, in a local pool of threads or as
submitit jobs (SLURM, or submitit's local executor); progress lines while they go.

Whether a run starts, resumes or is skipped is decided from its run directory when the job
runs (:func:`execute`), not when it was queued, so a re-queued SLURM job resumes its run.

Requeue (slurm, submitit-local): submitit signals the job process (SIGUSR2 by default,
``slurm_signal_delay_s`` = :attr:`SlurmOptions.signal_delay_s` seconds before the time limit,
and on preemption); :meth:`TrainJob.checkpoint` then stops the ``curlrl train`` child with
SIGUSR1 (it finishes its step, writes a checkpoint and exits; older versions just die and
leave their last periodic checkpoint), waits for it at most :data:`STOP_WAIT_S` seconds
(then SIGKILL), and hands submitit the same spec to requeue. The requeued job resumes from
the checkpoint. The child ignores submitit's own signal, which SLURM sends to every process
of the job step.
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from curlrl.errors import ConfigError, first_line
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
# reentrant: stop_children() takes it in a signal handler, which may have interrupted the
# main thread while it held the lock
_PROCS_LOCK = threading.RLock()

# `curlrl train` stops cleanly on these: finishes its step, checkpoints, exits 128 + signum.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
# How long a requeued job's checkpoint() waits for the child to write its checkpoint and exit
# before SIGKILL; SlurmOptions.signal_delay_s must leave room for it before SLURM's own kill.
STOP_WAIT_S = 120.0


# Set while a local bench stops (a signal, Ctrl-C): no queued run starts any more.
_STOPPING = threading.Event()


class BenchStopped(Exception):
    """A local bench got SIGTERM or SIGUSR1: its running ``curlrl train`` children were
    stopped with the same signal (each checkpoints its current step) and no queued run started."""

    def __init__(self, sig: signal.Signals) -> None:
        super().__init__(f"stopped by {sig.name}")
        self.signal = sig


@contextlib.contextmanager
def _stop_on_signals() -> Any:
    """In the main thread: SIGTERM and SIGUSR1 raise :class:`BenchStopped` there (as SIGINT
    raises KeyboardInterrupt); elsewhere (a test's thread) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        _STOPPING.set()
        raise BenchStopped(signal.Signals(signum))

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGUSR1)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


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


def stopped_by(returncode: int | None) -> signal.Signals | None:
    """The stop signal (:data:`STOP_SIGNALS`) a ``curlrl train`` exit code reports: 128 + signum
    when it stopped cleanly, -signum when the signal killed it; None otherwise."""
    for sig in STOP_SIGNALS:
        if returncode in (128 + sig, -sig):
            return sig
    return None


def _ignoring(signals: tuple[int, ...]) -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child ignore ``signals`` (an ignored signal stays ignored across exec)."""
    if not signals:
        return None

    def preexec() -> None:
        for sig in signals:
            signal.signal(sig, signal.SIG_IGN)

    return preexec


def execute(spec: RunSpec, ignore_signals: tuple[int, ...] = ()) -> RunResult:
    """Start or resume one run in a ``curlrl train`` subprocess and wait for it.

    The run directory decides (at the time the job runs, not when it was queued): finished
    -> skipped; checkpoint present -> ``--resume`` to ``spec.env_steps``; otherwise a fresh
    start (the files of an earlier attempt that never reached a checkpoint are moved to
    ``<run_dir>.stale-<time>``, not deleted). stdout and stderr are appended to ``spec.log_path``.
    Returns its result (``outcome``: skipped / done / resumed / failed). A run stopped by a
    signal before its budget is ``failed`` with a message that says so and where it resumes.
    ``ignore_signals``: signals the child ignores (in a submitit job: submitit's requeue signal).
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
        with _PROCS_LOCK:  # a stop takes the lock too: it sees this child, or this sees the stop
            if _STOPPING.is_set():
                log.write("=== curlrl bench: not started: the bench is stopping\n")
                return RunResult.of(spec, "failed", env_step=status.env_step,
                                    message="not started: the bench was stopped (re-run the command to start it)")
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                    preexec_fn=_ignoring(ignore_signals))
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
        sig = stopped_by(rc)
        if sig is not None and after.state == "partial":
            why = f"stopped by {sig.name} at env step {after.env_step} (re-run to resume)"
        elif rc == 0:
            why = f"exited at env step {after.env_step} < {spec.env_steps}"
        result.message = f"{why}; last log line: {_log_tail(log_path) or '(empty)'}"
    return result


def _submitit_signal() -> int:
    """The signal submitit requeues on (``SUBMITIT_PREEMPT_SIGNAL``, USR2 by default)."""
    return getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), signal.SIGUSR2)


def _log_line(path: str | Path, text: str) -> None:
    try:
        with open(path, "a") as fh:
            fh.write(f"=== curlrl bench: {text} at {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    except OSError:
        pass


def stop_children(sig: int | None, wait_s: float = STOP_WAIT_S) -> list[int]:
    """Send ``sig`` (None: none) to the running ``curlrl train`` children and wait up to
    ``wait_s`` seconds for them to exit, then SIGKILL those left. Returns their exit codes.

    Reaps with ``os.waitpid`` rather than ``Popen.wait``: it is called from a signal handler
    that may have interrupted a ``Popen.wait`` holding the Popen's lock.
    """
    with _PROCS_LOCK:
        procs = [p for p in _PROCS if p.returncode is None]
    for proc in procs:
        if sig is not None:
            try:
                os.kill(proc.pid, sig)
            except ProcessLookupError:
                pass
    codes = []
    for proc in procs:
        deadline = time.time() + wait_s
        while True:
            try:
                pid, status = os.waitpid(proc.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere
                codes.append(proc.returncode if proc.returncode is not None else 0)
                break
            if pid == proc.pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                codes.append(proc.returncode)
                break
            if time.time() >= deadline:
                proc.kill()
                deadline = float("inf")
            time.sleep(0.1)
    return codes


class TrainJob(_Checkpointable):
    """The callable submitit runs on a node: :func:`execute`. As a ``Checkpointable``, a job
    hit by its SLURM time limit or preempted is re-queued with the same spec, and since
    :func:`execute` reads the run directory when it starts, the new job resumes the run.

    On submitit's signal, :meth:`checkpoint` stops the ``curlrl train`` child with SIGUSR1
    (it writes a checkpoint and exits) and returns the same call for submitit to requeue.
    If SLURM has just sent SIGTERM to the whole job (preemption), the child got it too and is
    already stopping: it is not signalled a second time (a second signal makes it exit at once).
    """

    def __init__(self, stop_wait_s: float = STOP_WAIT_S) -> None:
        self.stop_wait_s = stop_wait_s
        self._sigterm_at: float | None = None

    def __call__(self, spec: RunSpec) -> RunResult:
        self._watch_sigterm()
        result = execute(spec, ignore_signals=(_submitit_signal(),))
        if result.outcome == "failed" and stopped_by(result.returncode) is not None:
            # SLURM preempts by signalling every process of the job: the child stopped on
            # SIGTERM before submitit's requeue signal came. Wait for that signal (checkpoint()
            # then requeues at once) rather than end the job as failed.
            deadline = time.time() + self.stop_wait_s
            while time.time() < deadline:
                time.sleep(1.0)
        return result

    def _watch_sigterm(self) -> None:
        """Note the time of SIGTERMs to this process, then pass them on to submitit's handler."""
        if threading.current_thread() is not threading.main_thread():
            return
        previous = signal.getsignal(signal.SIGTERM)

        def on_sigterm(signum, frame):
            self._sigterm_at = time.time()
            if callable(previous):
                previous(signum, frame)

        signal.signal(signal.SIGTERM, on_sigterm)

    def checkpoint(self, spec: RunSpec):  # called by submitit in its signal handler
        from submitit.helpers import DelayedSubmission

        recent_term = self._sigterm_at is not None and time.time() - self._sigterm_at < self.stop_wait_s
        codes = stop_children(None if recent_term else signal.SIGUSR1, self.stop_wait_s)
        how = "already stopping on SIGTERM" if recent_term else "sent SIGUSR1"
        _log_line(spec.log_path, f"job signalled (time limit or preemption): curlrl train {how}, "
                                 f"exit codes {codes or '(none running)'}; requeued")
        return DelayedSubmission(TrainJob(self.stop_wait_s), spec)


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
    # seconds before the time limit that submitit's signal comes (sbatch --signal=USR2@N): time
    # for curlrl train to finish its step and write a checkpoint (STOP_WAIT_S at most) and requeue
    signal_delay_s: int = 180

    def __post_init__(self) -> None:
        if self.cpus <= 0:
            raise ArgumentError("cpus", f"cpus must be > 0, got {self.cpus}",
                                f"{{option}} must be > 0, got {self.cpus}")
        if self.signal_delay_s <= 0:
            raise ArgumentError("signal_delay_s", f"signal_delay_s must be > 0, got {self.signal_delay_s}",
                                f"{{option}} must be > 0, got {self.signal_delay_s}")


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
        params["slurm_signal_delay_s"] = slurm.signal_delay_s
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
    """Run ``specs`` in a pool of ``workers`` threads, each waiting on its own subprocess.

    SIGTERM or SIGUSR1 to this process (when it runs in the main thread) stops the running
    children with the same signal, waits for their checkpoints (:func:`stop_children`),
    starts no queued run and raises :class:`BenchStopped`; Ctrl-C terminates the children."""
    results: list[RunResult] = []
    pool = ThreadPoolExecutor(max_workers=workers)
    _STOPPING.clear()
    try:
        with _stop_on_signals():
            _local_loop(pool, specs, results, on_result, report, progress_every)
    except BenchStopped as stop:
        for sig in (signal.SIGTERM, signal.SIGUSR1):  # a second signal must not cut the stop short
            signal.signal(sig, signal.SIG_IGN)
        report(f"curlrl bench: {stop}; stopping the runs (each checkpoints its current step), starting no other")
        pool.shutdown(wait=False, cancel_futures=True)
        codes = stop_children(stop.signal)
        report(f"curlrl bench: runs stopped (exit codes {codes or '(none running)'}); "
               f"re-run the same command to resume them")
        raise
    except KeyboardInterrupt:
        _STOPPING.set()
        report("curlrl bench: interrupted; stopping runs (re-run the same command to resume them)")
        pool.shutdown(wait=False, cancel_futures=True)
        terminate_children()
        raise
    finally:
        _STOPPING.clear()
    pool.shutdown(wait=True)
    return results


def _local_loop(pool, specs, results, on_result, report, progress_every) -> None:
    running = {pool.submit(execute, s): s for s in specs}
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
                first = first_line(exc)
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
