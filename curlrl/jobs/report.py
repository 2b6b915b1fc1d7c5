"""Benchmark reports: per-task tables, rliable aggregates, plots, published numbers.

Input: run directories (searched recursively for ``eval.csv`` next to ``config.yaml``) or
CSVs written by :func:`export_csv`. The score of a run at an env step is the mean return
over the evaluation episodes logged at **exactly** that env step; a run without an
evaluation there is listed as missing, never interpolated. Aggregates use scores
normalised by /1000 (DMC returns lie in 0..1000) and rliable's stratified bootstrap.
"""
from __future__ import annotations

import csv
import datetime as _dt
import math
import os
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from curlrl.errors import CurlrlError
from curlrl.jobs.published import PUBLISHED, PUBLISHED_SEEDS, SOURCE, published

SCORE_SCALE = 1000.0          # DMC returns are in [0, 1000]
DEFAULT_STEPS = (100_000, 500_000)
# One row per (run, evaluation): the mean return over its episodes is all a score needs.
EXPORT_COLUMNS = ["algo", "task", "seed", "env_step", "episodes", "return", "batch_size", "device",
                  "env_steps", "non_paper", "source"]
METRICS = ("IQM", "median", "mean", "optimality gap")


class ReportError(CurlrlError):
    """No runs found, or an unreadable eval.csv / exported CSV."""


@dataclass
class RunRecord:
    """One training run's evaluations and the settings a reader needs to judge them."""

    algo: str
    task: str
    seed: int
    source: str                      # run directory or exported CSV it came from
    batch_size: int | None = None
    device: str = "?"
    env_steps: int | None = None     # the run's budget
    non_paper: list[str] = field(default_factory=list)   # e.g. "batch_size=16 (paper 512)"
    evals: dict[int, list[float]] = field(default_factory=dict)  # env_step -> episode returns

    def score(self, env_step: int) -> float | None:
        """Mean return of the evaluation at exactly ``env_step`` (None if there is none)."""
        returns = self.evals.get(env_step)
        return float(np.mean(returns)) if returns else None

    @property
    def last_step(self) -> int | None:
        return max(self.evals) if self.evals else None


# -- loading ---------------------------------------------------------------------------

def algorithm_name(cfg: dict[str, Any]) -> str:
    """"curl" for curl=true with CURL's objective (the default), "sac+NAME" for another
    auxiliary objective (objective=NAME), "pixel_sac_crop" for curl=false (SAC + random crop).

    A run whose config sets ``label`` (e.g. a bench variant) is reported under that name
    instead, unless the report is given labels."""
    if not cfg.get("curl", True):
        return "pixel_sac_crop"
    objective = cfg.get("objective", "curl")
    return "curl" if objective == "curl" else f"sac+{objective}"


# Keys added after runs were recorded whose absence means the paper's value: every run of a
# curlrl without ``objective`` trained CURL's, with CURL's random crop.
_IMPLIED = {"objective": "curl", "augment": "crop"}


def non_paper_settings(cfg: dict[str, Any]) -> list[str]:
    """Keys of a run config that differ from the reference's settings for its task.

    The reference is the shipped per-task config with the default agent, which is the
    reference code's update (``encoder_adam=reference``, ``update_mode=exact``, no
    mixed precision). Each difference reads ``key=value (paper X)``; a key the run's
    config does not record (written by an older curlrl) reads ``key not recorded (paper X)``,
    except a key whose paper value is the empty string or None: such a key names an opt-in
    source (``encoder_init``, ``encoder_module``) or an objective's own setting that a curlrl
    without the key could not use; and ``objective``, which such a curlrl always ran as curl.
    No learning-relevant key is exempt; only operational keys (device, threads, env_steps,
    eval/checkpoint cadence, memory layout, ...) are ignored. An empty paper value reads
    ``none``."""
    from curlrl.jobs import config as config_mod

    task = cfg.get("task")
    try:
        paper = config_mod.to_dict(config_mod.resolve(task))
    except CurlrlError:
        return [f"task {task!r} has no shipped config to compare with"]
    out = []
    compared = config_mod.compared_keys()  # all but operational keys and curl (it names the algorithm)
    for key, ref in paper.items():
        if key not in compared:
            continue
        if key not in cfg and key not in _IMPLIED:
            if ref not in ("", None):
                out.append(f"{key} not recorded (paper {ref})")
            continue
        val = cfg.get(key, _IMPLIED.get(key))
        same = math.isclose(float(val), float(ref)) if isinstance(ref, float) and isinstance(val, (int, float)) \
            else val == ref
        if not same:
            out.append(f"{key}={val} (paper {ref if ref not in ('', None) else 'none'})")
    return out


def _read_rows(path: Path) -> list[dict[str, str]]:
    from curlrl.jobs.logs import read_rows

    try:
        return read_rows(path)
    except CurlrlError as exc:
        raise ReportError(str(exc)) from None


def _load_run_dir(eval_csv: Path, label: str | None, warn: list[str]) -> RunRecord | None:
    from curlrl.jobs.rundir import RunDir

    run = RunDir(eval_csv.parent)
    cfg: dict[str, Any] = {}
    if run.is_run():
        cfg = run.read_config()
    else:
        warn.append(f"{run}: no config.yaml; algorithm, batch size and device unknown")
    try:
        rows = run.read_csv(run.EVAL_CSV)
        if not rows:
            warn.append(f"{run}: eval.csv has no evaluations yet; skipped")
            return None
        evals = run.evals()
        task = cfg.get("task") or rows[0]["task"]
        seed = int(cfg.get("seed", rows[0]["seed"]))
    except CurlrlError as exc:
        raise ReportError(str(exc)) from None
    except (KeyError, ValueError) as exc:
        raise ReportError(f"{eval_csv} is not a curlrl eval.csv ({exc})") from None
    algo = label or cfg.get("label") or (algorithm_name(cfg) if cfg else "unknown")
    return RunRecord(algo=algo, task=task, seed=seed,
                     source=str(run), batch_size=cfg.get("batch_size"), device=str(cfg.get("device", "?")),
                     env_steps=cfg.get("env_steps"), non_paper=non_paper_settings(cfg) if cfg else ["config unknown"],
                     evals=evals)


def _load_export(path: Path, label: str | None) -> list[RunRecord]:
    rows = _read_rows(path)
    missing = [c for c in ("algo", "task", "seed", "env_step", "return") if rows and c not in rows[0]]
    if missing:
        raise ReportError(f"{path} is not a curlrl report export (missing columns {missing}); "
                          f"an export is what export_csv writes: columns {', '.join(EXPORT_COLUMNS)}")
    runs: dict[tuple, RunRecord] = {}
    try:
        for row in rows:
            key = (row["algo"], row["task"], int(row["seed"]), row.get("source") or str(path))
            run = runs.get(key)
            if run is None:
                bs = row.get("batch_size")
                env_steps = row.get("env_steps")
                run = runs[key] = RunRecord(
                    algo=label or row["algo"], task=row["task"], seed=int(row["seed"]), source=f"{path}:{key[3]}",
                    batch_size=int(bs) if bs else None, device=row.get("device") or "?",
                    env_steps=int(env_steps) if env_steps else None,
                    non_paper=[s for s in (row.get("non_paper") or "").split("; ") if s])
            step = int(row["env_step"])
            if step in run.evals:
                raise ReportError(f"{path}: two rows for {row['algo']} {row['task']} seed {row['seed']} "
                                  f"at env step {step}")
            run.evals[step] = [float(row["return"])]  # already the mean over the eval episodes
    except ValueError as exc:
        raise ReportError(f"{path}: bad value ({exc})") from None
    return list(runs.values())


def load_runs(paths: Sequence[str | Path], labels: Sequence[str] | None = None) -> tuple[list[RunRecord], list[str]]:
    """All runs under ``paths`` (dirs searched recursively, or exported CSVs) and warnings.

    ``labels``: none, one for all paths, or one per path; replaces the algorithm name.
    Runs with the same (algorithm, task, seed) seen twice are kept once (the first)."""
    labels = list(labels or [])
    if len(labels) not in (0, 1, len(paths)):
        raise ReportError(f"{len(labels)} labels for {len(paths)} paths: give one label or one per path")
    warn: list[str] = []
    runs: list[RunRecord] = []
    for i, p in enumerate(paths):
        label = labels[i] if len(labels) == len(paths) and labels else (labels[0] if labels else None)
        path = Path(p)
        if path.is_file():
            runs += _load_export(path, label)
        elif path.is_dir():
            # skip attempts that `curlrl bench` set aside (<run>.stale-<time>: died before a checkpoint)
            found = sorted(ev for ev in path.rglob("eval.csv")
                           if not any(".stale-" in part for part in ev.relative_to(path).parts))
            if not found:
                warn.append(f"{path}: no eval.csv found below it")
            for ev in found:
                run = _load_run_dir(ev, label, warn)
                if run is not None:
                    runs.append(run)
        else:
            raise ReportError(f"{path} does not exist")
    seen: dict[tuple, RunRecord] = {}
    for run in runs:
        key = (run.algo, run.task, run.seed)
        if key in seen:
            warn.append(f"duplicate run {run.algo} {run.task} seed {run.seed}: kept {seen[key].source}, "
                        f"ignored {run.source} (label the paths to tell algorithms apart)")
        else:
            seen[key] = run
    if not seen:
        raise ReportError(f"no runs with evaluations found in {', '.join(map(str, paths))}")
    return list(seen.values()), warn


def export_csv(runs: Iterable[RunRecord], path: str | Path) -> int:
    """Write ``runs`` as one small CSV that ``curlrl report FILE`` reads back; returns rows.

    One row per (run, evaluation) with the mean return over its episodes, plus the settings
    the report shows (batch size, device, budget, non-paper settings, source run dir)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=EXPORT_COLUMNS)
        writer.writeheader()
        for run in sorted(runs, key=lambda r: (r.algo, r.task, r.seed)):
            for step in sorted(run.evals):
                writer.writerow(dict(algo=run.algo, task=run.task, seed=run.seed, env_step=step,
                                     episodes=len(run.evals[step]), **{"return": f"{run.score(step):.6g}"},
                                     batch_size=run.batch_size or "", device=run.device,
                                     env_steps=run.env_steps or "", non_paper="; ".join(run.non_paper),
                                     source=run.source))
                n += 1
    os.replace(tmp, path)
    return n


# -- statistics ------------------------------------------------------------------------

def iqm(x: np.ndarray) -> float:
    """Interquartile mean: the 25%-trimmed mean of all entries (rliable's aggregate_iqm)."""
    from scipy import stats

    return float(stats.trim_mean(np.asarray(x, dtype=float).ravel(), proportiontocut=0.25, axis=None))


def task_stats(returns: Sequence[float]) -> dict[str, float]:
    """Mean, std (population, ddof=0, as in the paper's ± columns) and IQM of one task's runs."""
    x = np.asarray(returns, dtype=float)
    return dict(n=len(x), mean=float(x.mean()), std=float(x.std()), iqm=iqm(x))


def bootstrap_ci(values: np.ndarray, reps: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the mean of ``values`` (one value: that value twice)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return float(values.mean()), float(values.mean())
    idx = np.random.default_rng(seed).integers(0, len(values), (reps, len(values)))
    means = values[idx].mean(1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def aggregate_metrics(scores: np.ndarray) -> np.ndarray:
    """IQM, median, mean, optimality gap of a (runs x tasks) matrix of normalised scores."""
    from rliable import metrics

    return np.array([metrics.aggregate_iqm(scores), metrics.aggregate_median(scores),
                     metrics.aggregate_mean(scores), metrics.aggregate_optimality_gap(scores)])


class _seeded_global_rng:
    """rliable 1.2.0's StratifiedBootstrap draws from numpy's *global* RNG (its random_state
    argument only reaches arch), so seed that for reproducible CIs, then put it back."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def __enter__(self) -> None:
        self.state = np.random.get_state()
        np.random.seed(self.seed)
        self.warn = warnings.catch_warnings()
        self.warn.__enter__()
        warnings.simplefilter("ignore")  # arch warns about tiny samples; the report states n

    def __exit__(self, *exc) -> None:
        self.warn.__exit__(*exc)
        np.random.set_state(self.state)


def interval_estimates(score_dict: dict[str, Any], func, reps: int, seed: int):
    """rliable's stratified bootstrap: (points, 95% percentile CIs), reproducible for a seed."""
    from rliable import library as rly

    with _seeded_global_rng(seed):
        return rly.get_interval_estimates(score_dict, func, reps=reps, random_state=np.random.RandomState(seed))


def score_matrix(runs: list[RunRecord], tasks: list[str], env_step: int) -> tuple[np.ndarray | None, list[str]]:
    """(runs x tasks) normalised scores at ``env_step``, for rliable.

    rliable needs the same number of runs per task: with unequal counts the lowest seeds up
    to the smallest count are used, and the note says so. None if a task has no score."""
    per_task = []
    for task in tasks:
        scored = sorted((r.seed, r.score(env_step)) for r in runs if r.task == task and r.score(env_step) is not None)
        if not scored:
            return None, [f"{task} has no run with an evaluation at env step {env_step}"]
        per_task.append([s for _, s in scored])
    n = min(len(s) for s in per_task)
    notes = []
    if any(len(s) != n for s in per_task):
        notes.append(f"unequal runs per task ({', '.join(f'{t}: {len(s)}' for t, s in zip(tasks, per_task))}); "
                     f"the aggregate uses the {n} lowest seeds of each task")
    return np.array([s[:n] for s in per_task]).T / SCORE_SCALE, notes


# -- the report ------------------------------------------------------------------------

def _fmt_ci(point: float, lo: float, hi: float) -> str:
    return f"{point:.3f} [{lo:.3f}, {hi:.3f}]"


def _ordered(values: Iterable[str], order: Sequence[str] = ()) -> list[str]:
    vals = set(values)
    return [v for v in order if v in vals] + sorted(vals - set(order))


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)  # Agg canvas: no display, no global pyplot state
    return fig


def make_report(paths: Sequence[str | Path], out: str | Path, labels: Sequence[str] | None = None,
                steps: Sequence[int] = DEFAULT_STEPS, compare_published: bool = False, reps: int = 5000,
                seed: int = 0, export: str | Path | None = None) -> Path:
    """Write ``out/report.md`` and PNG plots for the runs under ``paths``; returns the .md path."""
    from curlrl.jobs.published import PLANET_TASKS

    runs, warn = load_runs(paths, labels)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if export:
        export_csv(runs, export)
    algos = _ordered((r.algo for r in runs), ("curl", "pixel_sac_crop"))
    tasks = _ordered((r.task for r in runs), PLANET_TASKS)
    by = defaultdict(list)
    for r in runs:
        by[(r.algo, r.task)].append(r)
    for v in by.values():
        v.sort(key=lambda r: r.seed)
    md: list[str] = ["# curlrl benchmark report", ""]
    md += [f"Generated {_dt.datetime.now().strftime('%Y-%m-%d %H:%M')} from {', '.join(f'`{p}`' for p in paths)}: "
           f"{len(runs)} runs, {len(algos)} algorithm(s), {len(tasks)} task(s).", "",
           "- **Score** of a run at an env step: the mean return over the evaluation episodes logged at "
           "*exactly* that environment step (env steps = agent steps x action repeat). A run without an "
           "evaluation there is reported as missing, never interpolated.",
           "- Aggregates use normalised scores (return / 1000) over runs x tasks: IQM, median, mean and "
           f"optimality gap (1 - score, clipped at 0), with 95% stratified bootstrap CIs (rliable, {reps} "
           f"replications, percentile method, seed {seed}). Per-task ± is the std over runs (ddof=0).", ""]
    if warn:
        md += ["**Warnings**", ""] + [f"- {w}" for w in warn] + [""]

    md += _settings_section(algos, tasks, by)
    present = [s for s in steps if any(r.score(s) is not None for r in runs)]
    absent = [s for s in steps if s not in present]
    if absent:
        last = sorted({r.last_step for r in runs if r.last_step is not None})
        md += [f"**No run has an evaluation at env step {', '.join(map(str, absent))}** "
               f"(last evaluations of the runs: {', '.join(map(str, last[:12]))}{' ...' if len(last) > 12 else ''}). "
               "Ask for other steps to report them.", ""]
    for step in present:
        md += _per_task_section(algos, tasks, by, step)
        md += _aggregate_section(algos, tasks, by, step, out, reps, seed)
    if len(algos) > 1 and present:
        md += _improvement_section(algos, tasks, by, present, reps, seed)
    if present:
        md += _profile_section(algos, tasks, by, present, out, min(reps, 2000), seed)
    md += _curve_section(algos, tasks, by, out, min(reps, 1000), seed, compare_published)
    if compare_published:
        md += _published_section(algos, tasks, by, [s for s in steps if s in DEFAULT_STEPS] or list(DEFAULT_STEPS))
    path = out / "report.md"
    path.write_text("\n".join(md) + "\n")
    return path


def _settings_section(algos, tasks, by) -> list[str]:
    md = ["## Runs and settings", "",
          "| algorithm | task | seeds | batch size | device | budget (env steps) | last eval step "
          "| non-paper settings |",
          "|---|---|---|---|---|---|---|---|"]
    flagged = total = 0
    for algo in algos:
        for task in tasks:
            runs = by.get((algo, task), [])
            if not runs:
                continue
            total += len(runs)
            flagged += sum(bool(r.non_paper) for r in runs)
            seeds = ", ".join(str(r.seed) for r in runs)
            bss = ", ".join(sorted({str(r.batch_size) for r in runs}))
            devs = ", ".join(sorted({r.device for r in runs}))
            budgets = ", ".join(sorted({str(r.env_steps) for r in runs}))
            lasts = sorted({r.last_step for r in runs})
            last = str(lasts[0]) if len(lasts) == 1 else f"{lasts[0]}..{lasts[-1]}"
            np_set = sorted({s for r in runs for s in r.non_paper})
            flag = ("⚠ " + "; ".join(np_set)) if np_set else "paper settings"
            md.append(f"| {algo} | {task} | {len(runs)} ({seeds}) | {bss} | {devs} | {budgets} | {last} | {flag} |")
    md += ["", f"{flagged} of {total} runs used settings that differ from the paper's (⚠ above): their scores "
               "are not directly comparable with published numbers. The paper used batch size 512 and 10 seeds; "
               "device `auto` means the run did not record which device it resolved to.", ""]
    return md


def _per_task_section(algos, tasks, by, step) -> list[str]:
    md = [f"## Per-task scores at env step {step}", "",
          "Per seed: each run's score (seed: score). CI: 95% percentile-bootstrap interval of the mean over "
          "the seeds scored (resampling runs; with few seeds a rough guide, not a test).", "",
          "| task | algorithm | runs | per seed | mean ± std | mean [95% CI over seeds] | IQM | missing runs |",
          "|---|---|---|---|---|---|---|---|"]
    for task in tasks:
        for algo in algos:
            runs = by.get((algo, task), [])
            if not runs:
                continue
            at_step = [(r, r.score(step)) for r in runs]
            scored = [x for _, x in at_step if x is not None]
            per_seed = " · ".join(f"{r.seed}: {x:.1f}" for r, x in at_step if x is not None)
            missing = [f"seed {r.seed} (last eval {r.last_step})" for r, x in at_step if x is None]
            if scored:
                st = task_stats(scored)
                lo, hi = bootstrap_ci(np.array(scored))
                cell = (f"{st['mean']:.1f} ± {st['std']:.1f}", f"{st['mean']:.1f} [{lo:.1f}, {hi:.1f}]",
                        f"{st['iqm']:.1f}")
            else:
                per_seed, cell = "-", ("missing", "missing", "missing")
            md.append(f"| {task} | {algo} | {len(scored)}/{len(runs)} | {per_seed} | {cell[0]} | {cell[1]} | "
                      f"{cell[2]} | {', '.join(missing) if missing else '-'} |")
    return md + [""]


def _matrices(algos, tasks, by, step) -> tuple[dict[str, np.ndarray], dict[str, list[str]], dict[str, list[str]]]:
    """Per algorithm: the score matrix over the tasks it has scores for, those tasks, notes."""
    mats, used, notes = {}, {}, {}
    for algo in algos:
        have = [t for t in tasks if any(r.score(step) is not None for r in by.get((algo, t), []))]
        notes[algo] = [f"no score at env step {step} for {t}" for t in tasks if by.get((algo, t)) and t not in have]
        if not have:
            continue
        mat, n = score_matrix([r for t in have for r in by[(algo, t)]], have, step)
        mats[algo], used[algo] = mat, have
        notes[algo] += n
    return mats, used, notes


def _aggregate_section(algos, tasks, by, step, out: Path, reps, seed) -> list[str]:
    mats, used, notes = _matrices(algos, tasks, by, step)
    if not mats:
        return []
    points, cis = interval_estimates(mats, aggregate_metrics, reps, seed)
    md = [f"### Aggregate at env step {step} (normalised scores, 95% CIs)", "",
          "| algorithm | tasks | runs per task | IQM | median | mean | optimality gap |",
          "|---|---|---|---|---|---|---|"]
    for algo in mats:
        cells = [_fmt_ci(points[algo][i], cis[algo][0][i], cis[algo][1][i]) for i in range(len(METRICS))]
        md.append(f"| {algo} | {len(used[algo])} | {mats[algo].shape[0]} | " + " | ".join(cells) + " |")
    for algo, ns in notes.items():
        md += [f"- {algo}: {n}" for n in ns]
    if any(set(used[a]) != set(tasks) for a in used):
        md.append("- Algorithms aggregated over different task sets are not comparable; see the tasks column.")
    fig = _figure(12, 1.0 + 0.5 * len(mats))
    axes = fig.subplots(1, len(METRICS), sharey=True)
    for i, (ax, metric) in enumerate(zip(axes, METRICS)):
        for j, algo in enumerate(mats):
            lo, hi = cis[algo][0][i], cis[algo][1][i]
            ax.barh(j, hi - lo, left=lo, height=0.6, color=f"C{j}", alpha=0.6)
            ax.plot([points[algo][i]] * 2, [j - 0.3, j + 0.3], color="k", lw=2)
        ax.set_title(metric)
        ax.set_xlabel("normalised score")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(mats)), list(mats))
    fig.suptitle(f"Aggregate metrics at {step} env steps (95% stratified bootstrap CIs)")
    fig.tight_layout()
    name = f"aggregate_{step}.png"
    fig.savefig(out / name)
    return md + ["", f"![aggregate metrics at {step}]({name})", ""]


def _improvement_section(algos, tasks, by, steps, reps, seed) -> list[str]:
    from rliable import metrics

    md = ["## Probability of improvement", "",
          "P(X > Y): probability that a run of X scores higher than a run of Y on a task, averaged over the "
          "tasks both have (Mann-Whitney U statistic; 95% independent stratified bootstrap CIs). "
          "P(Y > X) = 1 - P(X > Y) up to ties.", "",
          "| env step | X | Y | tasks | P(X > Y) [95% CI] |", "|---|---|---|---|---|"]
    for step in steps:
        for i, x in enumerate(algos):
            for y in algos[i + 1:]:
                common = [t for t in tasks if any(r.score(step) is not None for r in by.get((x, t), []))
                          and any(r.score(step) is not None for r in by.get((y, t), []))]
                if not common:
                    md.append(f"| {step} | {x} | {y} | 0 | no common task with scores |")
                    continue
                mx, _ = score_matrix([r for t in common for r in by[(x, t)]], common, step)
                my, _ = score_matrix([r for t in common for r in by[(y, t)]], common, step)
                key = f"{x},{y}"
                pt, ci = interval_estimates({key: (mx, my)}, metrics.probability_of_improvement, reps, seed)
                md.append(f"| {step} | {x} | {y} | {len(common)} | "
                          f"{_fmt_ci(float(pt[key]), float(ci[key][0][0]), float(ci[key][1][0]))} |")
    return md + [""]


def _profile_section(algos, tasks, by, steps, out: Path, reps, seed) -> list[str]:
    from rliable import library as rly

    md = ["## Performance profiles", "",
          "Fraction of runs (over all tasks) with a normalised score above τ; shaded: 95% CIs.", ""]
    taus = np.linspace(0.0, 1.0, 101)
    for step in steps:
        mats, _, _ = _matrices(algos, tasks, by, step)
        if not mats:
            continue
        with _seeded_global_rng(seed):
            prof, prof_ci = rly.create_performance_profile(mats, taus, reps=reps)
        fig = _figure(6, 4)
        ax = fig.subplots()
        for j, algo in enumerate(mats):
            ax.plot(taus, prof[algo], color=f"C{j}", label=algo)
            ax.fill_between(taus, prof_ci[algo][0], prof_ci[algo][1], color=f"C{j}", alpha=0.2)
        ax.set_xlabel("normalised score τ")
        ax.set_ylabel("fraction of runs with score > τ")
        ax.set_title(f"Performance profile at {step} env steps")
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        name = f"performance_profile_{step}.png"
        fig.savefig(out / name)
        md += [f"![performance profile at {step}]({name})", ""]
    return md


def _curve_section(algos, tasks, by, out: Path, reps, seed, compare_published: bool) -> list[str]:
    md = ["## Sample efficiency", "",
          "IQM of normalised scores over runs x tasks at each env step where every run of the algorithm "
          "was evaluated (shaded: 95% stratified bootstrap CIs); then mean ± std return per task.", ""]
    fig = _figure(6, 4)
    ax = fig.subplots()
    for j, algo in enumerate(algos):
        runs = [r for t in tasks for r in by.get((algo, t), [])]
        algo_tasks = [t for t in tasks if by.get((algo, t))]
        common = sorted(set.intersection(*(set(r.evals) for r in runs))) if runs else []
        if not common:
            md.append(f"- {algo}: its runs share no evaluation step; no curve.")
            continue
        mats = {str(s): score_matrix(runs, algo_tasks, s)[0] for s in common}
        points, cis = interval_estimates(mats, lambda x: np.array([iqm(x)]), reps, seed)
        y = np.array([points[str(s)][0] for s in common])
        lo = np.array([cis[str(s)][0][0] for s in common])
        hi = np.array([cis[str(s)][1][0] for s in common])
        ax.plot(common, y, marker="o", ms=3, color=f"C{j}", label=f"{algo} ({len(algo_tasks)} tasks)")
        ax.fill_between(common, lo, hi, color=f"C{j}", alpha=0.2)
        if len(runs) != len([r for r in runs if r.last_step == runs[0].last_step]):
            md.append(f"- {algo}: runs end at different steps; the curve stops at the last step all share "
                      f"({common[-1]}).")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("IQM normalised score")
    ax.set_title("Sample efficiency")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "sample_efficiency.png")
    md += ["![sample efficiency](sample_efficiency.png)", ""]

    cols = min(3, len(tasks))
    rows = math.ceil(len(tasks) / cols)
    fig = _figure(4.5 * cols, 3.2 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax, task in zip(axes, tasks):
        for j, algo in enumerate(algos):
            runs = by.get((algo, task), [])
            if not runs:
                continue
            steps = sorted(set.union(*(set(r.evals) for r in runs)))
            vals = [[r.score(s) for r in runs if r.score(s) is not None] for s in steps]
            mean = np.array([np.mean(v) for v in vals])
            std = np.array([np.std(v) for v in vals])
            ax.plot(steps, mean, color=f"C{j}", label=f"{algo} (n={len(runs)})")
            ax.fill_between(steps, mean - std, mean + std, color=f"C{j}", alpha=0.2)
        if compare_published:
            for k, name in enumerate(PUBLISHED):
                for step, (m, s) in PUBLISHED[name].get(task, {}).items():
                    ax.errorbar([step], [m], yerr=[s], fmt="s", ms=4, color=f"C{len(algos) + k}", capsize=2,
                                label=name if step == 100_000 else None)
        ax.set_title(task)
        ax.set_xlabel("environment steps")
        ax.set_ylabel("return")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes[len(tasks):]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(out / "per_task_curves.png")
    return md + ["![per-task curves](per_task_curves.png)", ""]


def _published_section(algos, tasks, by, steps) -> list[str]:
    names = list(PUBLISHED)
    md = ["## Published results", "", f"Source: {SOURCE}", "",
          "Ours: mean ± std over our runs at exactly that env step (runs: scored / total). Mind the ⚠ "
          "settings above: runs with a smaller batch or fewer seeds than the paper's are not a replication.", ""]
    for step in steps:
        md += [f"### {step} env steps", "",
               "| task | " + " | ".join(f"ours: {a}" for a in algos) + " | " +
               " | ".join(f"{n}" + (f" ({PUBLISHED_SEEDS[n]} seeds)" if PUBLISHED_SEEDS[n] else "")
                          for n in names) + " |",
               "|---|" + "---|" * (len(algos) + len(names))]
        for task in _ordered(set(tasks) | set(PUBLISHED["CURL"]), list(PUBLISHED["CURL"])):
            ours = []
            for algo in algos:
                runs = by.get((algo, task), [])
                scored = [r.score(step) for r in runs if r.score(step) is not None]
                if not runs:
                    ours.append("-")
                elif not scored:
                    ours.append(f"missing (0/{len(runs)})")
                else:
                    st = task_stats(scored)
                    ours.append(f"{st['mean']:.0f} ± {st['std']:.0f} ({len(scored)}/{len(runs)})")
            pubs = []
            for n in names:
                p = published(n, task, step)
                pubs.append(f"{p[0]:.0f} ± {p[1]:.0f}" if p else "-")
            md.append(f"| {task} | " + " | ".join(ours + pubs) + " |")
        md.append("")
    return md
