"""``curlrl plot``: the evaluation return of one or more training runs against env steps, with
the scale to read it by: the random policy's return on the task and the published results.

For many runs and tasks with aggregates and confidence intervals use ``curlrl report``; this
is the picture of a single run (the first command of the README ends by drawing it).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from curlrl.checkpoint import atomic_file
from curlrl.errors import ConfigError, write_error
from curlrl.jobs.logs import read_rows
from curlrl.jobs.published import PUBLISHED, random_policy
from curlrl.jobs.published_atari import ATARI_PUBLISHED, game_of
from curlrl.jobs.rundir import RunDir

CURVE_PNG = "eval_curve.png"
# the published algorithms drawn as reference lines (the paper's CURL and its pixel SAC)
REFERENCES = ("CURL", "pixel SAC")


@dataclass
class Curve:
    """One run's evaluations: env steps, mean and std of the episodes' returns at each."""

    label: str
    task: str
    steps: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    episodes: int


def read_curve(run_dir: str | Path, label: str | None = None) -> Curve:
    """The evaluation curve of a training run; ConfigError if it is not one or has none yet."""
    run = RunDir(run_dir)
    cfg = run.read_config()
    if "task" not in cfg:  # a pretraining run's config names its data, not a task
        raise ConfigError(f"{run.path} is a pretraining run: it has no evaluation returns to plot")
    path = run.csv_path(RunDir.EVAL_CSV)
    if not path.is_file():
        raise ConfigError(f"{run.path} has no {RunDir.EVAL_CSV} yet: it is written at the run's first evaluation")
    by_step: dict[int, list[float]] = {}
    try:
        for row in read_rows(path):
            by_step.setdefault(int(row["env_step"]), []).append(float(row["return"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{path} is not a curlrl evaluation log ({type(exc).__name__}: {exc})") from None
    if not by_step:
        raise ConfigError(f"{path} holds no evaluation yet")
    steps = np.array(sorted(by_step))
    returns = [by_step[s] for s in steps]
    name = label or f"{cfg['task']} seed {cfg.get('seed', '?')}"
    return Curve(name, str(cfg["task"]), steps, np.array([np.mean(r) for r in returns]),
                 np.array([np.std(r) for r in returns]), min(len(r) for r in returns))


def curve_text(curve: Curve, last: int = 8) -> str:
    """The curve as one compact line (its last ``last`` evaluations): ``0: 2.0 | 2000: 35.7 | ...``."""
    pairs = list(zip(curve.steps.tolist(), curve.mean.tolist()))
    shown = pairs[-last:]
    text = " | ".join(f"{s}: {m:.1f}" for s, m in shown)
    return ("... | " if len(pairs) > len(shown) else "") + text


def random_text(task: str) -> str | None:
    ref = random_policy(task)
    if ref is None:
        return None
    mean, std, episodes, repeat = ref
    return f"{mean:.0f} ± {std:.0f} ({episodes} episodes of uniformly random actions, action repeat {repeat})"


def plot_curves(curves: Sequence[Curve], out: str | Path) -> Path:
    """Draw ``curves`` (one panel per task) with the random policy's return (line and ± std band)
    and the published 100k/500k results as labelled reference lines; writes ``out`` (PNG)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out = Path(out)
    tasks = list(dict.fromkeys(c.task for c in curves))
    fig = Figure(figsize=(6.4 * len(tasks), 4.2), dpi=100)
    FigureCanvasAgg(fig)
    axes = np.atleast_1d(fig.subplots(1, len(tasks), squeeze=False)).ravel()
    for ax, task in zip(axes, tasks):
        mine = [c for c in curves if c.task == task]
        for j, c in enumerate(mine):
            ax.plot(c.steps, c.mean, marker="o", ms=3, color=f"C{j}",
                    label=f"{c.label} (mean of {c.episodes} eval episodes)")
            ax.fill_between(c.steps, c.mean - c.std, c.mean + c.std, color=f"C{j}", alpha=0.15)
        ref = random_policy(task)
        if ref is not None:
            mean, std = ref[0], ref[1]
            ax.axhline(mean, color="grey", lw=1.2, ls="--", label=f"random actions: {mean:.0f} ± {std:.0f}")
            ax.axhspan(mean - std, mean + std, color="grey", alpha=0.12)
        k = len(mine)
        atari = ATARI_PUBLISHED.get(game_of(task)) if task.startswith("atari-") else None
        if atari is not None:  # Atari: the random and human scores, the paper's CURL and DER at 100k
            for name, value in (("random", atari.random), ("CURL (paper, best of evaluations)", atari.curl),
                                ("DER (paper)", atari.der), ("CURL re-run by rliable (final)", atari.rliable_final)):
                ax.axhline(value, color="grey" if name == "random" else f"C{k}", lw=1,
                           ls="--" if name == "random" else ":",
                           label=f"{name}: {value:g}" if name == "random" else f"{name} at 100k: {value:g}")
                k += name != "random"
        for name in REFERENCES:
            for step, (m, s) in sorted(PUBLISHED.get(name, {}).get(task, {}).items()):
                ax.axhline(m, color=f"C{k}", lw=1, ls=":", label=f"{name} (paper) at {step // 1000}k: {m} ± {s}")
                k += 1
        ax.set_title(task)
        ax.set_xlabel("agent steps (4 frames each)" if task.startswith("atari-") else "environment steps")
        ax.set_ylabel("evaluation return")
        ax.set_ylim(bottom=min(0.0, float(min((c.mean - c.std).min() for c in mine))))  # the bands too
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(out, "wb", fsync=False) as fh:
            fig.savefig(fh, format="png")
    except OSError as exc:
        raise write_error(out, exc) from None
    return out


def plot_runs(run_dirs: Sequence[str | Path], out: str | Path | None = None,
              labels: Sequence[str] | None = None) -> Path:
    """``curlrl plot``: read each run's curve and draw them; ``out`` defaults to
    ``RUN_DIR/eval_curve.png`` for one run and ``eval_curves.png`` here for several."""
    if not run_dirs:
        raise ConfigError("plot needs at least one run directory")
    if labels and len(labels) != len(run_dirs):
        raise ConfigError(f"{len(labels)} labels for {len(run_dirs)} run directories: give one per run or none")
    curves = [read_curve(d, labels[i] if labels else None) for i, d in enumerate(run_dirs)]
    if out is None:
        out = Path(run_dirs[0]) / CURVE_PNG if len(run_dirs) == 1 else Path("eval_curves.png")
    return plot_curves(curves, out)
