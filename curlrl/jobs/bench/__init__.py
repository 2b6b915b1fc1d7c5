"""Benchmarks: one ``curlrl train`` per (task, seed), on this machine or through SLURM.

Layout of a benchmark directory ``OUT``::

    runs/<task>/seed<k>/     an ordinary run directory (config.yaml, eval.csv, checkpoints/, ...)
    logs/<task>/seed<k>.log  stdout and stderr of every attempt at that run, appended
                             (a suite with variants: runs/<variant>/<task>/seed<k>, logs likewise)
    submitit/                submitit's own job files (slurm and submitit-local launchers)
    bench.csv                the last summary table

Each run is a separate ``python -m curlrl.cli train`` process, so a crash in one run
cannot take the others down. Whether a run is finished, interrupted or new is read from
its run directory alone (:func:`run_status`): running the same command again skips the
finished runs, resumes the interrupted ones from their last checkpoint and starts the rest.

By job: :mod:`.suite` (suites, planning), :mod:`.launch` (running the runs),
:mod:`.results` (run status, results, the summary); :func:`run_bench` does all three.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Sequence

from curlrl.errors import ConfigError
from curlrl.jobs.bench.launch import (LAUNCHERS, STALE_MARK, STOP_SIGNALS, STOP_WAIT_S, BenchStopped, Report,
                                      SlurmOptions, TrainJob, execute, launch_local, launch_submitit, make_executor,
                                      parse_time_min, progress_line, stop_children, stopped_by,
                                      terminate_children)
from curlrl.jobs.bench.results import (SUMMARY_COLUMNS, RunResult, RunStatus, duration, run_status,
                                       settled_result, summary_table, variant_table, write_summary)
from curlrl.jobs.bench.suite import (ENCODER_MODES, SUITES, ArgumentError, RunSpec, Suite, encoder_suite, load_suite,
                                     parse_seeds, plan, plan_table)
from curlrl.jobs.host import usable_cpus

__all__ = ["ENCODER_MODES", "LAUNCHERS", "STALE_MARK", "STOP_SIGNALS", "STOP_WAIT_S", "SUITES", "SUMMARY_COLUMNS",
           "ArgumentError", "BenchStopped", "RunResult", "RunSpec", "RunStatus", "SlurmOptions", "Suite", "TrainJob",
           "encoder_suite",
           "execute", "launch_local", "launch_submitit", "load_suite", "make_executor", "parse_seeds",
           "parse_time_min", "plan", "progress_line", "run_bench", "run_status", "stop_children", "stopped_by",
           "summary_table", "terminate_children", "variant_table", "write_summary"]


def run_bench(suite: Suite, out: str | Path, overrides: Sequence[str] = (), tasks: Sequence[str] | None = None,
              seeds: int | None = None, workers: int | None = None, launcher: str = "local",
              slurm: SlurmOptions | None = None, report: Report = print,
              progress_every: float = 300.0, variants: Sequence[str] | None = None) -> list[RunResult]:
    """Plan, launch and summarise a benchmark; returns one result per run, in plan order.

    A suite with variants (or the ``variants`` chosen from them) runs each over every task and
    seed and ends with them side by side (:func:`variant_table`).

    ``workers`` defaults to ``max(1, cores // 4)`` for the local launchers (so each run gets
    a few threads) and to unlimited for slurm. A run that fails does not stop the others.
    Mistakes in the arguments raise before anything is written (:class:`ArgumentError`
    names the argument).
    """
    if launcher not in LAUNCHERS:
        raise ConfigError(f"launcher must be one of {', '.join(LAUNCHERS)}, got {launcher!r}")
    if workers is not None and workers <= 0:
        raise ArgumentError("workers", f"workers must be > 0, got {workers}", f"{{option}} must be > 0, got {workers}")
    out = Path(out)
    n_workers = workers if workers is not None else (None if launcher == "slurm" else max(1, usable_cpus() // 4))
    slurm = slurm or SlurmOptions()
    # threads: the local launchers share this machine's cores; a SLURM job has its own CPUs
    default_threads = slurm.cpus if launcher == "slurm" else max(1, usable_cpus() // (n_workers or 1))
    specs = plan(suite, out, overrides, tasks, seeds, default_threads=default_threads, variants=variants)
    report(plan_table(suite, specs, launcher, n_workers, out))
    todo = [s for s in specs if s.state not in ("done", "corrupt")]
    # finished and corrupt runs, as planned (a corrupt run's note is the checkpoint's error)
    settled = (settled_result(s, RunStatus(s.state, s.start_step, s.note)) for s in specs)
    results = [r for r in settled if r is not None]
    total, counter = len(todo), [0]
    lock = threading.Lock()

    def on_result(res: RunResult) -> None:
        with lock:
            counter[0] += 1
            ev = "" if res.last_eval is None else f" eval {res.last_eval:.1f}"
            report(f"[{counter[0]}/{total}] {res.outcome:<8} {res.name} "
                   f"env step {res.env_step}{ev} ({duration(res.seconds)})"
                   + (f" -- log: {res.log}" if res.outcome == "failed" else ""))

    if todo:
        if launcher == "local":
            results += launch_local(todo, n_workers or 1, on_result, report, progress_every)
        else:
            executor = make_executor(launcher, out / "submitit", todo[0].threads, slurm)
            results += launch_submitit(todo, executor, n_workers, on_result, report,
                                       poll_s=1.0 if launcher != "slurm" else 15.0, progress_every=progress_every)
    order = {s.name: i for i, s in enumerate(specs)}
    results.sort(key=lambda r: order[r.name])
    write_summary(results, out / "bench.csv")
    report(summary_table(results))
    if any(s.variant for s in specs):
        report(variant_table(results))
        report(f"curlrl bench: full report (per-task tables, aggregates, curves): curlrl report {out / 'runs'} "
               f"--steps {','.join(str(b) for b in sorted({s.env_steps for s in specs}))} --out REPORT_DIR")
    return results
