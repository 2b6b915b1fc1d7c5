"""Atari-100k reports: per-game scores under both protocols, human-normalised IQM with
stratified-bootstrap CIs, and the published numbers beside them.

``curlrl report RUN_DIRS...`` comes here when the runs are Atari runs (``atari-*`` tasks).

Two protocols, always named:

- **final** (rliable's, Agarwal et al. 2021): a run's score is the mean of its final
  evaluation (``final_eval.csv``: 100 games at the end of the run);
- **best** (CURL's paper): a run's score is the best of its evaluations during training
  (``eval.csv``: 10 games at every 10k agent steps). It is biased upwards: the max of
  noisy estimates.

Human-normalised score HNS = (score - random) / (human - random) with rliable's reference
scores; IQM = the 25%-trimmed mean over all runs x games, with rliable's stratified bootstrap.
"""
from __future__ import annotations

import datetime as _dt
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from curlrl.errors import CurlrlError
from curlrl.jobs.published_atari import ATARI_IQM, ATARI_PUBLISHED, game_of, hns


class AtariReportError(CurlrlError):
    """No Atari runs, runs of both kinds mixed, or an unreadable log."""


@dataclass
class AtariRun:
    algo: str
    task: str
    seed: int
    source: str
    budget: int
    departures: list[str] = field(default_factory=list)  # settings that differ from the shipped config
    evals: dict[int, list[float]] = field(default_factory=dict)   # agent step -> scores (eval.csv)
    final: dict[int, list[float]] = field(default_factory=dict)   # agent step -> scores (final_eval.csv)

    def final_score(self) -> float | None:
        """Mean of the final evaluation at the run's budget (None before the run ends)."""
        scores = self.final.get(self.budget)
        return float(np.mean(scores)) if scores else None

    def best_score(self) -> float | None:
        """The best mean over the evaluations during training up to the budget (CURL's protocol)."""
        means = [np.mean(v) for s, v in self.evals.items() if v and s <= self.budget]
        return float(max(means)) if means else None

    @property
    def finished(self) -> bool:
        return self.final_score() is not None


def _by_step(rows: list[dict[str, str]], path: Path) -> dict[int, list[float]]:
    out: dict[int, list[float]] = {}
    try:
        for r in rows:
            out.setdefault(int(r["env_step"]), []).append(float(r["return"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise AtariReportError(f"{path} is not a curlrl evaluation log ({exc})") from None
    return out


def run_dirs_below(paths: Sequence[str | Path]) -> list[Path]:
    """Every run directory (an ``eval.csv`` beside a ``config.yaml``) under ``paths``."""
    found = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(ev.parent for ev in p.rglob("eval.csv") if (ev.parent / "config.yaml").is_file()
                            and not any(".stale-" in part for part in ev.relative_to(p).parts))
    return found


def is_atari_run(run_dir: Path) -> bool:
    from curlrl.jobs.config import is_atari
    from curlrl.jobs.rundir import RunDir

    try:
        return is_atari(RunDir(run_dir).read_config().get("task"))
    except CurlrlError:
        return False


def load_atari_runs(paths: Sequence[str | Path], labels: Sequence[str] | None = None) -> list[AtariRun]:
    """The Atari runs under ``paths`` (``labels``: one for all paths or one per path)."""
    from curlrl.jobs.logs import read_rows
    from curlrl.jobs.rundir import RunDir

    labels = list(labels or [])
    if len(labels) not in (0, 1, len(paths)):
        raise AtariReportError(f"{len(labels)} labels for {len(paths)} paths: give one label or one per path")
    runs: dict[tuple, AtariRun] = {}
    for i, p in enumerate(paths):
        label = labels[i] if len(labels) == len(paths) and labels else (labels[0] if labels else None)
        for d in run_dirs_below([p]):
            cfg = RunDir(d).read_config()
            algo = label or cfg.get("label") or ("curl" if cfg.get("curl", True) else "der")
            run = AtariRun(algo, str(cfg["task"]), int(cfg.get("seed", 0)), str(d), int(cfg["env_steps"]),
                           departures(cfg))
            run.evals = _by_step(read_rows(d / "eval.csv"), d / "eval.csv")
            if (d / "final_eval.csv").is_file():
                run.final = _by_step(read_rows(d / "final_eval.csv"), d / "final_eval.csv")
            runs.setdefault((run.algo, run.task, run.seed), run)
    if not runs:
        raise AtariReportError(f"no Atari runs found in {', '.join(map(str, paths))}")
    return list(runs.values())


def departures(cfg: dict) -> list[str]:
    """The learning-relevant keys of an Atari run's config that differ from its game's shipped
    config (DER's and curl_rainbow's settings), ``key=value (paper X)``; ``curl`` names the
    agent and is not listed, the budget is listed when it is not the benchmark's 100k."""
    from curlrl.jobs import config as config_mod

    try:
        paper = config_mod.to_dict(config_mod.resolve(cfg.get("task")))
    except CurlrlError:
        return [f"task {cfg.get('task')!r} has no shipped config"]
    compared = config_mod.compared_keys(config_mod.AtariConfig)
    out = [f"{k}={cfg[k]} (paper {paper[k]})" for k in paper
           if k in compared and k != "curl" and k in cfg and cfg[k] != paper[k]]
    if cfg.get("env_steps") != paper["env_steps"]:
        out.append(f"env_steps={cfg.get('env_steps')} (benchmark {paper['env_steps']})")
    return out


def _mean_std(values: list[float]) -> str:
    if not values:
        return "–"
    x = np.asarray(values)
    return f"{x.mean():.1f} ± {x.std():.1f} ({len(x)})" if len(x) > 1 else f"{x[0]:.1f} (1)"


def _iqm_ci(scores: dict[str, np.ndarray], reps: int, seed: int) -> dict[str, tuple[float, float, float]]:
    """rliable's IQM with 95% stratified-bootstrap CIs of each (runs x games) HNS matrix."""
    from rliable import metrics

    from curlrl.jobs.report import interval_estimates

    usable = {k: v for k, v in scores.items() if v.size}
    if not usable:
        return {}
    points, cis = interval_estimates(usable, lambda x: np.array([metrics.aggregate_iqm(x)]), reps, seed)
    return {k: (float(points[k][0]), float(cis[k][0][0]), float(cis[k][1][0])) for k in usable}


def _matrix(runs: list[AtariRun], games: list[str], protocol: str) -> tuple[np.ndarray, list[str]]:
    """(runs x games) HNS of finished runs; rliable needs equal runs per game: the lowest seeds."""
    per_game = []
    for g in games:
        scored = sorted((r.seed, r.final_score() if protocol == "final" else r.best_score())
                        for r in runs if r.task == g and r.finished)
        per_game.append([hns(g, s) for _, s in scored if s is not None])
    if not per_game or min(map(len, per_game)) == 0:
        return np.zeros((0, 0)), []
    n = min(map(len, per_game))
    notes = [] if all(len(s) == n for s in per_game) else [f"unequal finished runs per game: the {n} lowest seeds each"]
    return np.array([s[:n] for s in per_game]).T, notes


def make_atari_report(paths: Sequence[str | Path], out: str | Path, labels: Sequence[str] | None = None,
                      compare_published: bool = True, reps: int = 5000, seed: int = 0) -> Path:
    """Write ``out/report.md`` (and ``out/atari_curves.png``) for the Atari runs under ``paths``."""
    runs = load_atari_runs(paths, labels)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    algos = sorted({r.algo for r in runs}, key=lambda a: (a not in ("curl", "der"), a))
    games = sorted({r.task for r in runs})
    by = defaultdict(list)
    for r in runs:
        by[(r.algo, r.task)].append(r)
    md = ["# curlrl Atari-100k report", "",
          f"Generated {_dt.datetime.now().strftime('%Y-%m-%d %H:%M')} from {', '.join(f'`{p}`' for p in paths)}: "
          f"{len(runs)} runs ({sum(r.finished for r in runs)} finished), {len(algos)} agent(s), {len(games)} game(s).",
          "",
          "- **final** (rliable's protocol): a run's score is the mean raw game score of its final evaluation "
          "(noise off, epsilon 0.001; 100 games, unless Settings lists final_eval_episodes) at its budget. "
          "**best** (CURL's paper): the best of its evaluations during training (the benchmark's: 10 games "
          "every 10k agent steps; see each run's eval.csv), an upward-biased maximum of noisy estimates.",
          "- Per game: mean ± std over finished runs (n). HNS = (score - random) / (human - random). IQM: the "
          f"25%-trimmed mean of HNS over runs x games, 95% stratified-bootstrap CI (rliable, {reps} "
          f"replications, seed {seed}).", ""]
    md += ["## Settings", "", "| agent | game | seeds | departures from DER's / curl_rainbow's settings |",
           "|---|---|---|---|"]
    for (a, g), rs in sorted(by.items()):
        notes = sorted({d for r in rs for d in r.departures})
        md.append(f"| {a} | {g} | {', '.join(str(r.seed) for r in sorted(rs, key=lambda r: r.seed))} | "
                  f"{'; '.join(notes) or 'none'} |")
    md.append("")
    unfinished = [r for r in runs if not r.finished]
    if unfinished:
        md += ["**Unfinished runs** (no final evaluation yet; their best-so-far is not used): " +
               ", ".join(f"{r.algo} {r.task} seed {r.seed} (last eval at {max(r.evals) if r.evals else 0})"
                         for r in unfinished), ""]
    head = ["game"] + [f"{a} {p}" for a in algos for p in ("final", "best")]
    if compare_published:
        head += ["paper CURL (best, 20 seeds)", "paper DER", "rliable CURL final (100 runs)", "random", "human"]
    md += ["## Per game (raw scores at each run's budget; the published ones at 100k)", "",
           "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for g in games:
        cells = [g]
        for a in algos:
            done = [r for r in by[(a, g)] if r.finished]
            cells += [_mean_std([r.final_score() for r in done]), _mean_std([r.best_score() for r in done])]
        if compare_published:
            p = ATARI_PUBLISHED[game_of(g)]
            cells += [f"{p.curl:g} ± {p.curl_std:g}", f"{p.der:g}", f"{p.rliable_final:g}", f"{p.random:g}",
                      f"{p.human:g}"]
        md.append("| " + " | ".join(cells) + " |")
    md += [""] + _per_run_section(algos, games, by)
    md += ["## Aggregate: IQM of human-normalised scores", ""]
    scores, notes, played = {}, [], {}
    common = [g for g in games if all(any(r.finished for r in by[(a, g)]) for a in algos)]
    for a in algos:  # over the games every agent finished (a fair comparison), else its own games
        own = common or [g for g in games if any(r.finished for r in by[(a, g)])]
        for protocol in ("final", "best"):
            m, n = _matrix([r for r in runs if r.algo == a], own, protocol)
            scores[f"{a} ({protocol})"], played[f"{a} ({protocol})"] = m, own
            notes += n
    if not common and len(algos) > 1:
        notes.append("no game has finished runs of every agent: each IQM is over that agent's own games")
    iqms = _iqm_ci(scores, reps, seed)
    md += ["| agent (protocol) | IQM [95% CI] | runs x games | games |", "|---|---|---|---|"]
    for k, m in scores.items():
        names = ", ".join(game_of(g) for g in played[k]) or "none finished"
        if k in iqms:
            pt, lo, hi = iqms[k]
            md.append(f"| {k} | {pt:.3f} [{lo:.3f}, {hi:.3f}] | {m.shape[0]} x {m.shape[1]} | {names} |")
        else:
            md.append(f"| {k} | – | 0 | {names} |")
    md += [""] + [f"- {n}" for n in dict.fromkeys(notes)]
    if compare_published:
        ref = [hns(g, ATARI_PUBLISHED[game_of(g)].curl) for g in games]
        md += ["", "Published, over all 26 games (not these games alone; not comparable one to one): " +
               "; ".join(f"{k} {v[0]:.3f}" + (f" [{v[1]:.3f}, {v[2]:.3f}]" if v[1] is not None else "")
                         for k, v in ATARI_IQM.items()) + ".",
               f"For these {len(games)} game(s), the paper's CURL means give a mean HNS of {np.mean(ref):.3f} "
               f"(per-game means, not runs: no IQM)."]
    png = _curves(runs, algos, games, out, compare_published)
    md += ["", f"![evaluation curves]({png.name})", ""]
    path = out / "report.md"
    path.write_text("\n".join(md) + "\n")
    return path


def _step_text(step: int) -> str:
    return f"{step / 1000:g}k" if step >= 1000 else str(step)


def _per_run_section(algos, games, by) -> list[str]:
    """One row per run (its evaluation curve, final and best), then per agent and game the mean of
    the finished runs with its 95% percentile-bootstrap interval over seeds."""
    from curlrl.jobs.report import bootstrap_ci

    md = ["## Per run", "",
          "Evaluations: mean raw score of the games of each evaluation during training (agent step: score). "
          "The last rows of each agent and game: the mean over its finished runs, with a 95% percentile-bootstrap "
          "interval over seeds (resampling runs; with few seeds a rough guide, not a test).", "",
          "| agent | game | seed | evaluations | final | best |", "|---|---|---|---|---|---|"]
    for a in algos:
        for g in games:
            rs = sorted(by.get((a, g), []), key=lambda r: r.seed)
            if not rs:
                continue
            for r in rs:
                curve = " · ".join(f"{_step_text(s)}: {np.mean(v):.1f}" for s, v in sorted(r.evals.items()) if v)
                final, best = r.final_score(), r.best_score()
                md.append(f"| {a} | {g} | {r.seed} | {curve or '–'} | "
                          f"{'–' if final is None else f'{final:.1f}'} | {'–' if best is None else f'{best:.1f}'} |")
            done = [r for r in rs if r.finished]
            if done:
                cells = []
                for scores in ([r.final_score() for r in done], [r.best_score() for r in done]):
                    lo, hi = bootstrap_ci(np.array(scores, dtype=float))
                    cells.append(f"{np.mean(scores):.1f} [{lo:.1f}, {hi:.1f}]")
                md.append(f"| {a} | {g} | mean of {len(done)} [95% CI] | | {cells[0]} | {cells[1]} |")
    return md + [""]


def _curves(runs, algos, games, out: Path, compare_published: bool) -> Path:
    """Evaluation score against agent steps per game: each agent's mean over seeds, each seed faint."""
    from curlrl.jobs.report import _figure

    cols = min(3, len(games))
    rows = (len(games) + cols - 1) // cols
    fig = _figure(5 * cols, 3.6 * rows)
    colors = dict(zip(algos, ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"] * 4))
    for i, g in enumerate(games):
        ax = fig.add_subplot(rows, cols, i + 1)
        for a in algos:
            rs = [r for r in runs if r.algo == a and r.task == g]
            if not rs:
                continue
            steps = sorted({s for r in rs for s in r.evals})
            for r in rs:
                xs = sorted(r.evals)
                ax.plot(xs, [np.mean(r.evals[s]) for s in xs], color=colors[a], alpha=0.25, lw=1)
            mean = [np.mean([np.mean(r.evals[s]) for r in rs if s in r.evals]) for s in steps]
            ax.plot(steps, mean, color=colors[a], lw=2, label=f"{a} ({len(rs)} seeds)")
        if compare_published:
            p = ATARI_PUBLISHED[game_of(g)]
            ax.axhline(p.curl, color="tab:blue", ls="--", lw=1, label="paper CURL (best)")
            ax.axhline(p.der, color="tab:orange", ls="--", lw=1, label="paper DER")
            ax.axhline(p.random, color="grey", ls=":", lw=1, label="random")
        ax.set_title(g)
        ax.set_xlabel("agent steps")
        ax.set_ylabel("score")
        ax.legend(fontsize=7)
    fig.tight_layout()
    png = out / "atari_curves.png"
    fig.savefig(png)
    return png
