"""Benchmarks: one ``curlrl train`` per (task, seed), on this machine or through SLURM.

Layout of a benchmark directory ``OUT``::

    runs/<task>/seed<k>/     an ordinary run directory (config.yaml, eval.csv, checkpoints/, ...)
    logs/<task>/seed<k>.log  stdout and stderr of every attempt at that run, appended
    submitit/                submitit's own job files (slurm and submitit-local launchers)
    bench.csv                the last summary table

Each run is a separate ``python -m curlrl.cli train`` process, so a crash in one run
cannot take the others down. Whether a run is finished, interrupted or new is read from
its run directory alone (:func:`run_status`): running the same command again skips the
finished runs, resumes the interrupted ones from their last checkpoint and starts the rest.
"""
from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence


from curlrl.jobs import config as config_mod
from curlrl.errors import ConfigError, CurlrlError
from curlrl.jobs.host import usable_cpus
from curlrl.jobs.published import PLANET_TASKS

try:  # submitit re-queues a Checkpointable job after a SLURM timeout or preemption
    from submitit.helpers import Checkpointable as _Checkpointable
except ImportError:  # pragma: no cover - submitit is a dependency; local runs work without it
    _Checkpointable = object  # type: ignore[assignment,misc]

LAUNCHERS = ("local", "slurm", "submitit-local")
# A run dir without a checkpoint is moved to <run_dir><STALE_MARK><time> before a fresh start;
# `curlrl report` skips such directories.
STALE_MARK = ".stale-"
# Keys a resumed run may change; any other difference from the saved config is reported.
_RESUME_KEYS = {"env_steps", "threads", "device", "seed", "task"}


@dataclass
class Suite:
    """Tasks x seeds at a budget of ``env_steps`` environment steps, plus config overrides."""

    name: str
    tasks: list[str]
    env_steps: int
    seeds: list[int]
    overrides: dict[str, Any] = field(default_factory=dict)             # every run
    task_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # per task


# The PlaNet benchmark of the CURL paper, at its two budgets; 10 seeds as in the paper.
SUITES: dict[str, Suite] = {
    "planet100k": Suite("planet100k", list(PLANET_TASKS), 100_000, list(range(10))),
    "planet500k": Suite("planet500k", list(PLANET_TASKS), 500_000, list(range(10))),
}
_SUITE_KEYS = {"name", "tasks", "env_steps", "seeds", "overrides", "task_overrides"}


def load_suite(name_or_file: str) -> Suite:
    """A built-in suite (``planet100k``, ``planet500k``) or a YAML suite file::

        name: my-suite            # optional, default: the file name
        tasks: [cartpole-swingup, walker-walk]
        env_steps: 100000
        seeds: 5                  # 5 -> seeds 0..4, or an explicit list [0, 3, 7]
        overrides: {batch_size: 128}          # optional, config keys for every run
        task_overrides:                       # optional, per task
          walker-walk: {batch_size: 256}
    """
    if name_or_file in SUITES:
        s = SUITES[name_or_file]
        return Suite(s.name, list(s.tasks), s.env_steps, list(s.seeds), dict(s.overrides), dict(s.task_overrides))
    path = Path(name_or_file)
    if not path.is_file():
        raise ConfigError(f"suite {name_or_file!r} is neither a built-in suite ({', '.join(SUITES)}) "
                          f"nor a suite file")
    data = config_mod.load_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"suite file {path}: expected a mapping with keys tasks, env_steps, seeds")
    unknown = set(data) - _SUITE_KEYS
    if unknown:
        raise ConfigError(f"suite file {path}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_SUITE_KEYS)}")
    for key in ("tasks", "env_steps"):
        if key not in data:
            raise ConfigError(f"suite file {path}: missing key {key!r}")
    tasks = data["tasks"]
    if isinstance(tasks, str):
        tasks = [tasks]
    if not isinstance(tasks, list) or not tasks or not all(isinstance(t, str) for t in tasks):
        raise ConfigError(f"suite file {path}: 'tasks' must be a non-empty list of task names")
    env_steps = data["env_steps"]
    if isinstance(env_steps, float) and env_steps.is_integer():
        env_steps = int(env_steps)
    if not isinstance(env_steps, int) or isinstance(env_steps, bool) or env_steps <= 0:
        raise ConfigError(f"suite file {path}: 'env_steps' must be a positive integer, got {env_steps!r}")
    overrides = data.get("overrides") or {}
    task_overrides = data.get("task_overrides") or {}
    if not isinstance(overrides, dict) or not isinstance(task_overrides, dict) or \
            not all(isinstance(v, dict) for v in task_overrides.values()):
        raise ConfigError(f"suite file {path}: 'overrides' must map config keys to values and "
                          f"'task_overrides' tasks to such mappings")
    stray = set(task_overrides) - set(tasks)
    if stray:
        raise ConfigError(f"suite file {path}: task_overrides for task(s) not in 'tasks': {sorted(stray)}")
    return Suite(str(data.get("name") or path.stem), list(tasks), env_steps, parse_seeds(data.get("seeds", 5), str(path)),
                 dict(overrides), {k: dict(v) for k, v in task_overrides.items()})


def parse_seeds(value: Any, source: str = "seeds") -> list[int]:
    """``5`` -> [0..4]; a list of ints -> itself (duplicates rejected).

    ``source`` names where ``value`` came from in error messages.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        if value <= 0:
            raise ConfigError(f"{source}: the number of seeds must be > 0, got {value}")
        return list(range(value))
    if isinstance(value, list) and value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        if len(set(value)) != len(value):
            raise ConfigError(f"{source}: duplicate seeds in {value}")
        return list(value)
    raise ConfigError(f"{source}: 'seeds' must be a count or a list of integers, got {value!r}")


def _scalar(value: Any) -> str:
    """A config value as the text of a ``key=value`` override (parsed back as YAML)."""
    return value if isinstance(value, str) else json.dumps(value)


# -- status of a run directory -----------------------------------------------------------

@dataclass
class RunStatus:
    """What the run directory says: ``new`` (no checkpoint), ``partial`` (checkpoint below the
    budget: resume it), ``done`` (checkpoint at or past the budget) or ``corrupt``."""

    state: str
    env_step: int = 0
    message: str = ""


def checkpoint_env_step(run_dir: str | Path) -> int | None:
    """Env step stored in ``run_dir/checkpoints/latest.pt``; None without a checkpoint.

    Raises CheckpointError for an unreadable one."""
    from curlrl.checkpoint import safe_load
    from curlrl.errors import CheckpointError

    path = Path(run_dir) / "checkpoints" / "latest.pt"
    if not path.exists():
        return None
    state = safe_load(path, mmap=True)  # only the counters are read, not the weights
    try:
        return int(state["counters"]["env_step"])
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"checkpoint {path} has no env_step counter") from None


def run_status(run_dir: str | Path, env_steps: int) -> RunStatus:
    """Classify ``run_dir`` against a budget of ``env_steps`` environment steps."""
    from curlrl.errors import CheckpointError

    try:
        step = checkpoint_env_step(run_dir)
    except CheckpointError as exc:
        return RunStatus("corrupt", 0, str(exc))
    if step is None:
        return RunStatus("new")
    return RunStatus("done" if step >= env_steps else "partial", step)


def last_eval(run_dir: str | Path) -> tuple[int, float] | None:
    """(env_step, mean return) of the last evaluation in ``run_dir/eval.csv``."""
    path = Path(run_dir) / "eval.csv"
    if not path.is_file():
        return None
    by_step: dict[int, list[float]] = {}
    try:
        with open(path, newline="") as fh:
            for row in csv.DictReader(fh):
                by_step.setdefault(int(row["env_step"]), []).append(float(row["return"]))
    except (KeyError, ValueError, OSError):
        return None
    if not by_step:
        return None
    step = max(by_step)
    return step, sum(by_step[step]) / len(by_step[step])


# -- planning --------------------------------------------------------------------------

@dataclass
class RunSpec:
    """One (task, seed) run of a benchmark; plain data, so submitit can pickle it."""

    task: str
    seed: int
    run_dir: str
    log_path: str
    overrides: list[str]     # key=value for a fresh start (seed and env_steps included)
    env_steps: int           # budget: the run is finished when its checkpoint reaches it
    threads: int
    device: str
    state: str = "new"       # planned: new / partial / done / corrupt
    start_step: int = 0
    note: str = ""

    @property
    def name(self) -> str:
        return f"{self.task} seed{self.seed}"


def plan(suite: Suite, out: str | Path, overrides: Sequence[str] = (), tasks: Sequence[str] | None = None,
         seeds: int | None = None, default_threads: int = 1) -> list[RunSpec]:
    """The runs of ``suite`` under ``out``, each config resolved (and so checked) up front.

    ``overrides`` (command-line ``key=value``) win over the suite's; ``threads`` is
    ``default_threads`` unless the suite or the command line sets it.
    """
    out = Path(out)
    cli = config_mod.parse_overrides(list(overrides))
    for key in ("seed", "task"):
        if key in cli or key in suite.overrides:
            raise ConfigError(f"bench sets {key!r} itself: choose the {key}s in the suite or with the {key}s "
                              f"argument, not as a config override")
    task_list = list(tasks) if tasks else list(suite.tasks)
    if len(set(task_list)) != len(task_list):
        raise ConfigError(f"the tasks name a task twice: {task_list}")
    seed_list = parse_seeds(seeds) if seeds is not None else list(suite.seeds)
    from curlrl.envs.dmc import parse_task

    for task in task_list:  # an unknown task is a mistake to report now, not N failed runs later
        parse_task(task)
    specs = []
    for task in task_list:
        values: dict[str, Any] = {"env_steps": suite.env_steps}
        values.update(suite.overrides)
        values.update(suite.task_overrides.get(task, {}))
        values.update(cli)
        values.setdefault("threads", default_threads)
        for seed in seed_list:
            items = [f"{k}={_scalar(v)}" for k, v in values.items()] + [f"seed={seed}"]
            cfg = config_mod.resolve(task, None, items)  # raises ConfigError naming the key
            run_dir = out / "runs" / task / f"seed{seed}"
            spec = RunSpec(task, seed, str(run_dir), str(out / "logs" / task / f"seed{seed}.log"), items,
                           cfg.env_steps, cfg.threads, cfg.device)
            status = run_status(run_dir, cfg.env_steps)
            spec.state, spec.start_step, spec.note = status.state, status.env_step, status.message
            if status.state in ("partial", "done"):
                spec.note = _config_drift(run_dir, cfg)
            specs.append(spec)
    return specs


def _config_drift(run_dir: Path, cfg) -> str:
    """Keys where the saved run config differs from the one this bench would start."""
    saved_path = run_dir / "config.yaml"
    if not saved_path.is_file():
        return ""
    try:
        saved = config_mod.load_yaml(saved_path)
    except CurlrlError:
        return ""
    now = config_mod.to_dict(cfg)
    diff = [f"{k}={saved[k]!r} (bench: {now[k]!r})" for k in now
            if k in saved and k not in _RESUME_KEYS and saved[k] != now[k]]
    return ("keeps its saved config: " + ", ".join(diff)) if diff else ""


# -- running one run (on this machine or on a SLURM node) --------------------------------

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


def execute(spec: RunSpec) -> dict[str, Any]:
    """Start or resume one run in a ``curlrl train`` subprocess and wait for it.

    The run directory decides (at the time the job runs, not when it was queued): finished
    -> skipped; checkpoint present -> ``--resume`` to ``spec.env_steps``; otherwise a fresh
    start (the files of an earlier attempt that never reached a checkpoint are moved to
    ``<run_dir>.stale-<time>``, not deleted). stdout and stderr are appended to ``spec.log_path``.
    Returns a result dict (``outcome``: skipped / done / resumed / failed).
    """
    t0 = time.time()
    run_dir, log_path = Path(spec.run_dir), Path(spec.log_path)
    result = dict(task=spec.task, seed=spec.seed, run_dir=spec.run_dir, log=spec.log_path, outcome="failed",
                  returncode=None, env_step=0, last_eval=None, seconds=0.0, message="")
    status = run_status(run_dir, spec.env_steps)
    if status.state == "corrupt":
        result.update(message=f"{status.message}; move the run dir away to restart it")
        return result
    if status.state == "done":
        result.update(outcome="skipped", env_step=status.env_step)
        _add_eval(result)
        return result
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
    result.update(returncode=rc, env_step=after.env_step, seconds=round(time.time() - t0, 1))
    _add_eval(result)
    if rc == 0 and after.state == "done":
        result["outcome"] = "resumed" if status.state == "partial" else "done"
    else:
        why = f"killed by signal {-rc}" if rc < 0 else f"exit code {rc}"
        if rc == 0:
            why = f"exited at env step {after.env_step} < {spec.env_steps}"
        result["message"] = f"{why}; last log line: {_log_tail(log_path) or '(empty)'}"
    return result


def _add_eval(result: dict[str, Any]) -> None:
    ev = last_eval(result["run_dir"])
    if ev is not None:
        result["last_eval"] = ev[1]
        result["last_eval_step"] = ev[0]


class TrainJob(_Checkpointable):
    """The callable submitit runs on a node: :func:`execute`. As a ``Checkpointable``, a job
    hit by its SLURM time limit or preempted is re-queued with the same spec, and since
    :func:`execute` reads the run directory when it starts, the new job resumes the run."""

    def __call__(self, spec: RunSpec) -> dict[str, Any]:
        return execute(spec)


def terminate_children() -> None:
    """Stop the ``curlrl train`` processes this process started (on Ctrl-C)."""
    with _PROCS_LOCK:
        procs = list(_PROCS)
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()


# -- launchers ---------------------------------------------------------------------------

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


Report = Callable[[str], None]


def launch_local(specs: list[RunSpec], workers: int, on_result: Callable[[dict], None],
                 report: Report, progress_every: float = 300.0) -> list[dict]:
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
                    res = dict(task=spec.task, seed=spec.seed, run_dir=spec.run_dir, log=spec.log_path,
                               outcome="failed", returncode=None, env_step=0, last_eval=None, seconds=0.0,
                               message=f"launcher error: {type(exc).__name__}: {exc}")
                results.append(res)
                on_result(res)
            if progress_every and time.time() - last >= progress_every and running:
                last = time.time()
                report(_progress_line([s for f, s in running.items() if f.running()]))
    except KeyboardInterrupt:
        report("curlrl bench: interrupted; stopping runs (re-run the same command to resume them)")
        pool.shutdown(wait=False, cancel_futures=True)
        terminate_children()
        raise
    pool.shutdown(wait=True)
    return results


def launch_submitit(specs: list[RunSpec], executor, workers: int | None, on_result: Callable[[dict], None],
                    report: Report, poll_s: float = 1.0, progress_every: float = 300.0) -> list[dict]:
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
                res = dict(task=spec.task, seed=spec.seed, run_dir=spec.run_dir, log=spec.log_path,
                           outcome="failed", returncode=None, env_step=run_status(spec.run_dir, spec.env_steps).env_step,
                           last_eval=None, seconds=0.0,
                           message=f"submitit job {job.job_id} failed ({first}); see {job.paths.stderr}")
            results.append(res)
            on_result(res)
        in_flight[:] = still
        if progress_every and time.time() - last >= progress_every and in_flight:
            last = time.time()
            report(_progress_line([s for s, _ in in_flight]))


def _progress_line(specs: list[RunSpec]) -> str:
    parts = []
    for s in specs:
        step = _last_train_step(s.run_dir)
        parts.append(f"{s.name} {step}/{s.env_steps}")
    return "  running: " + ("; ".join(parts) if parts else "(queued)")


def _last_train_step(run_dir: str) -> int:
    path = Path(run_dir) / "train.csv"
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 4096))
            lines = [ln for ln in fh.read().decode("utf-8", "replace").splitlines() if ln.strip()]
        return int(lines[-1].split(",")[2]) if len(lines) > 1 else 0
    except (OSError, ValueError, IndexError):
        return 0


# -- the whole benchmark -----------------------------------------------------------------

SUMMARY_COLUMNS = ["task", "seed", "outcome", "env_step", "last_eval", "seconds", "log", "message"]


def run_bench(suite: Suite, out: str | Path, overrides: Sequence[str] = (), tasks: Sequence[str] | None = None,
              seeds: int | None = None, workers: int | None = None, launcher: str = "local",
              slurm: SlurmOptions | None = None, report: Report = print, progress_every: float = 300.0) -> list[dict]:
    """Plan, launch and summarise a benchmark; returns one result dict per run.

    ``workers`` defaults to ``max(1, cores // 4)`` for the local launchers (so each run gets
    a few threads) and to unlimited for slurm. A run that fails does not stop the others.
    """
    if launcher not in LAUNCHERS:
        raise ConfigError(f"launcher must be one of {', '.join(LAUNCHERS)}, got {launcher!r}")
    if workers is not None and workers <= 0:
        raise ConfigError(f"workers must be > 0, got {workers}")
    out = Path(out)
    n_workers = workers if workers is not None else (None if launcher == "slurm" else max(1, usable_cpus() // 4))
    slurm = slurm or SlurmOptions()
    # threads: the local launchers share this machine's cores; a SLURM job has its own CPUs
    default_threads = slurm.cpus if launcher == "slurm" else max(1, usable_cpus() // (n_workers or 1))
    specs = plan(suite, out, overrides, tasks, seeds, default_threads=default_threads)
    report(_plan_table(suite, specs, launcher, n_workers, out))
    todo = [s for s in specs if s.state not in ("done", "corrupt")]
    results: list[dict] = []
    for s in specs:
        if s.state == "done":
            results.append(dict(task=s.task, seed=s.seed, run_dir=s.run_dir, log=s.log_path, outcome="skipped",
                                returncode=None, env_step=s.start_step, last_eval=None, seconds=0.0, message=""))
            _add_eval(results[-1])
        elif s.state == "corrupt":
            results.append(dict(task=s.task, seed=s.seed, run_dir=s.run_dir, log=s.log_path, outcome="failed",
                                returncode=None, env_step=0, last_eval=None, seconds=0.0,
                                message=f"{s.note}; move the run dir away to restart it"))
    total, counter = len(todo), [0]
    lock = threading.Lock()

    def on_result(res: dict) -> None:
        with lock:
            counter[0] += 1
            ev = "" if res.get("last_eval") is None else f" eval {res['last_eval']:.1f}"
            report(f"[{counter[0]}/{total}] {res['outcome']:<8} {res['task']} seed{res['seed']} "
                   f"env step {res['env_step']}{ev} ({_duration(res['seconds'])})"
                   + (f" -- log: {res['log']}" if res["outcome"] == "failed" else ""))

    if todo:
        if launcher == "local":
            results += launch_local(todo, n_workers or 1, on_result, report, progress_every)
        else:
            executor = make_executor(launcher, out / "submitit", todo[0].threads, slurm)
            results += launch_submitit(todo, executor, n_workers, on_result, report,
                                       poll_s=1.0 if launcher != "slurm" else 15.0, progress_every=progress_every)
    order = {(s.task, s.seed): i for i, s in enumerate(specs)}
    results.sort(key=lambda r: order[(r["task"], r["seed"])])
    write_summary(results, out / "bench.csv")
    report(summary_table(results))
    return results


def _plan_table(suite: Suite, specs: list[RunSpec], launcher: str, workers: int | None, out: Path) -> str:
    counts = {k: sum(s.state == k for s in specs) for k in ("new", "partial", "done", "corrupt")}
    lines = [f"curlrl bench: suite {suite.name}, {len(specs)} runs ({len({s.task for s in specs})} tasks x "
             f"{len({s.seed for s in specs})} seeds) to {specs[0].env_steps if specs else 0} env steps -> {out}",
             f"  launcher {launcher}, workers {workers or 'unlimited'}, threads per run {specs[0].threads if specs else 0}; "
             f"to start {counts['new']}, to resume {counts['partial']}, finished {counts['done']}"
             + (f", corrupt {counts['corrupt']}" if counts["corrupt"] else "")]
    for s in specs:
        if s.state == "partial":
            lines.append(f"  resume {s.name} from env step {s.start_step}" + (f" ({s.note})" if s.note else ""))
        elif s.state == "done" and s.note:
            lines.append(f"  finished {s.name} ({s.note})")
    return "\n".join(lines)


def summary_table(results: list[dict]) -> str:
    """Fixed-width table: task, seed, outcome, env step, last eval, time, log; then one
    line per failure and a count of outcomes."""
    header = ["task", "seed", "result", "env steps", "last eval", "time", "log"]
    rows = [[r["task"], str(r["seed"]), r["outcome"], str(r["env_step"]),
             "-" if r.get("last_eval") is None else f"{r['last_eval']:.1f}",
             _duration(r["seconds"]) if r["seconds"] else "-", r["log"]] for r in results]
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths))] + [fmt.format(*row) for row in rows]
    counts = {k: sum(r["outcome"] == k for r in results) for k in ("done", "resumed", "skipped", "failed")}
    lines.append(f"curlrl bench: {len(results)} runs: {counts['done']} done, {counts['resumed']} resumed, "
                 f"{counts['skipped']} already finished, {counts['failed']} failed")
    for r in results:
        if r["outcome"] == "failed":
            lines.append(f"FAILED {r['task']} seed{r['seed']}: {r['message']} (log: {r['log']})")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def write_summary(results: list[dict], path: Path) -> None:
    """``bench.csv``: the summary table of the last invocation (atomic rewrite)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=SUMMARY_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(results)
    os.replace(tmp, path)
