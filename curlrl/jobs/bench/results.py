"""Each run of a benchmark: its plan (:class:`RunSpec`), its status read from the run
directory, the typed result of an attempt, and the summary (table on the terminal,
``bench.csv`` on disk). Imports nothing of the suite (``suite.py`` imports this)."""
from __future__ import annotations

import csv
import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from curlrl.errors import CheckpointError
from curlrl.jobs.rundir import RunDir


def run_name(variant: str, task: str, seed: int) -> str:
    """``task seedK``, or ``variant/task seedK`` in a suite with variants."""
    return f"{variant + '/' if variant else ''}{task} seed{seed}"


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
    variant: str = ""        # the suite's variant ("" for a suite without variants)

    @property
    def name(self) -> str:
        return run_name(self.variant, self.task, self.seed)


@dataclass
class RunStatus:
    """What the run directory says: ``new`` (no checkpoint), ``partial`` (checkpoint below the
    budget: resume it), ``done`` (checkpoint at or past the budget) or ``corrupt``."""

    state: str
    env_step: int = 0
    message: str = ""


def run_status(run_dir: str | Path, env_steps: int) -> RunStatus:
    """Classify ``run_dir`` against a budget of ``env_steps`` environment steps.

    A run is done when its checkpoint is at the budget *and* its evaluations there are done:
    a checkpoint written at the budget before the last evaluation (a run killed while it
    evaluated) is partial, and a resume evaluates (an Atari run: also its final evaluation)."""
    try:
        counters = RunDir(run_dir).checkpoint_counters()
    except CheckpointError as exc:
        return RunStatus("corrupt", 0, str(exc))
    if counters is None:
        return RunStatus("new")
    step = counters["env_step"]
    evaluated = counters.get("next_eval", env_steps + 1) > env_steps and counters.get("final_done_at", step) >= step
    return RunStatus("done" if step >= env_steps and evaluated else "partial", step)


@dataclass
class RunResult:
    """One run's outcome in one bench invocation: ``done`` (trained to the budget from the
    start), ``resumed`` (from a checkpoint to the budget), ``skipped`` (already finished) or
    ``failed`` (``message`` says why, ``log`` holds the run's output)."""

    task: str
    seed: int
    outcome: str
    env_step: int = 0                    # the checkpoint's env step after the attempt
    last_eval: float | None = None       # mean return of the last evaluation
    seconds: float = 0.0                 # wall time of this attempt
    log: str = ""
    message: str = ""
    run_dir: str = ""
    returncode: int | None = None        # of the `curlrl train` process; None if none ran
    last_eval_step: int | None = None    # env step of ``last_eval``
    variant: str = ""                    # the suite's variant ("" without variants)
    budget: int = 0                      # the run's env_steps

    @classmethod
    def of(cls, spec: RunSpec, outcome: str, **fields) -> RunResult:
        """A result for ``spec``'s run (variant, task, seed, budget, run dir and log taken from it)."""
        return cls(spec.task, spec.seed, outcome, run_dir=spec.run_dir, log=spec.log_path, variant=spec.variant,
                   budget=spec.env_steps, **fields)

    @property
    def name(self) -> str:
        return run_name(self.variant, self.task, self.seed)

    def read_eval(self) -> RunResult:
        """Fill ``last_eval`` and ``last_eval_step`` from the run directory's eval log; returns self."""
        ev = RunDir(self.run_dir).last_eval()
        if ev is not None:
            self.last_eval_step, self.last_eval = ev
        return self


def settled_result(spec: RunSpec, status: RunStatus) -> RunResult | None:
    """The result of a run that is not to be launched: finished (``skipped``) or corrupt
    (``failed``); None for a run to start or resume."""
    if status.state == "done":
        return RunResult.of(spec, "skipped", env_step=status.env_step).read_eval()
    if status.state == "corrupt":
        return RunResult.of(spec, "failed", message=f"{status.message}; move the run dir away to restart it")
    return None


SUMMARY_COLUMNS = ["task", "seed", "outcome", "env_step", "last_eval", "seconds", "log", "message", "variant"]


def _fixed_width(header: list[str], rows: list[list[str]]) -> list[str]:
    """Header, rule and rows as left-aligned columns two spaces apart."""
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return [fmt.format(*header).rstrip(), fmt.format(*("-" * w for w in widths))] + \
        [fmt.format(*row).rstrip() for row in rows]


def summary_table(results: list[RunResult]) -> str:
    """Fixed-width table: (variant,) task, seed, outcome, env step, last eval, time, log;
    then one line per failure and a count of outcomes."""
    header = ["task", "seed", "result", "env steps", "last eval", "time", "log"]
    rows = [[r.task, str(r.seed), r.outcome, str(r.env_step), "-" if r.last_eval is None else f"{r.last_eval:.1f}",
             duration(r.seconds) if r.seconds else "-", r.log] for r in results]
    if any(r.variant for r in results):
        header, rows = ["variant", *header], [[r.variant, *row] for r, row in zip(results, rows)]
    lines = _fixed_width(header, rows)
    counts = {k: sum(r.outcome == k for r in results) for k in ("done", "resumed", "skipped", "failed")}
    lines.append(f"curlrl bench: {len(results)} runs: {counts['done']} done, {counts['resumed']} resumed, "
                 f"{counts['skipped']} already finished, {counts['failed']} failed")
    for r in results:
        if r.outcome == "failed":
            lines.append(f"FAILED {r.name}: {r.message} (log: {r.log})")
    return "\n".join(lines)


def variant_table(results: list[RunResult]) -> str:
    """The variants side by side: one row per task, one column per variant, each cell the
    mean return of the evaluation at the runs' budget over the seeds that reached it, its
    95% bootstrap interval over seeds and ``n`` (``m/n`` when only m of n runs have it)."""
    from curlrl.jobs.report import bootstrap_ci

    variants = list(dict.fromkeys(r.variant for r in results))
    tasks = list(dict.fromkeys(r.task for r in results))
    rows = []
    for task in tasks:
        row = [task]
        for variant in variants:
            runs = [r for r in results if r.task == task and r.variant == variant]
            scores = [r.last_eval for r in runs if r.last_eval is not None and r.last_eval_step == r.budget]
            if not scores:
                row.append(f"- (0/{len(runs)})")
                continue
            lo, hi = bootstrap_ci(scores)
            n = f"{len(scores)}" if len(scores) == len(runs) else f"{len(scores)}/{len(runs)}"
            row.append(f"{sum(scores) / len(scores):.1f} [{lo:.1f}, {hi:.1f}] (n={n})")
        rows.append(row)
    budgets = sorted({r.budget for r in results})
    at = ", ".join(str(b) for b in budgets)
    return "\n".join([f"curlrl bench: variants side by side: mean eval return at {at} env steps "
                      f"[95% bootstrap CI over seeds] (n seeds)", *_fixed_width(["task", *variants], rows)])


def duration(seconds: float) -> str:
    """``42s``, ``17m`` or ``3.5h``."""
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def write_summary(results: list[RunResult], path: Path) -> None:
    """``bench.csv``: the summary table of the last invocation (atomic rewrite)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=SUMMARY_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(dataclasses.asdict(r) for r in results)
    os.replace(tmp, path)
