"""Suites (tasks x seeds at a budget) and planning: which runs a benchmark has, each config
resolved up front, and what each run directory already holds."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from curlrl.errors import ConfigError, CurlrlError
from curlrl.jobs import config as config_mod
from curlrl.jobs.bench.results import run_status
from curlrl.jobs.published import PLANET_TASKS
from curlrl.jobs.rundir import RunDir


class ArgumentError(ConfigError):
    """A bad argument of :func:`plan`, :func:`parse_seeds` or ``run_bench``, worded for a
    Python caller. ``argument`` names the parameter; :meth:`for_option` words the same
    mistake for a front end that exposes it as an option (the CLI's ``--seeds``)."""

    def __init__(self, argument: str, message: str, option_message: str) -> None:
        super().__init__(message)
        self.argument = argument
        self._option_message = option_message  # "{option}" stands for the option's name

    def for_option(self, option: str) -> str:
        return self._option_message.replace("{option}", option)


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
    try:
        seeds = parse_seeds(data.get("seeds", 5))
    except ConfigError as exc:  # the file's key, not an argument: a plain ConfigError naming the file
        raise ConfigError(f"suite file {path}: {exc}") from None
    return Suite(str(data.get("name") or path.stem), list(tasks), env_steps, seeds,
                 dict(overrides), {k: dict(v) for k, v in task_overrides.items()})


def parse_seeds(value: Any) -> list[int]:
    """``5`` -> [0..4]; a list of ints -> itself (duplicates rejected). ArgumentError otherwise."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value <= 0:
            raise ArgumentError("seeds", f"the number of seeds must be > 0, got {value}",
                                f"{{option}} must be > 0, got {value}")
        return list(range(value))
    if isinstance(value, list) and value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        if len(set(value)) != len(value):
            raise ArgumentError("seeds", f"duplicate seeds in {value}", f"{{option}} names a seed twice: {value}")
        return list(value)
    raise ArgumentError("seeds", f"'seeds' must be a count or a list of integers, got {value!r}",
                        f"{{option}} must be a count or a list of integers, got {value!r}")


def _scalar(value: Any) -> str:
    """A config value as the text of a ``key=value`` override (parsed back as YAML)."""
    return value if isinstance(value, str) else json.dumps(value)


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
    ``default_threads`` unless the suite or the command line sets it. Nothing is written.
    """
    out = Path(out)
    cli = config_mod.parse_overrides(list(overrides))
    for key in ("seed", "task"):
        if key in cli or key in suite.overrides:
            raise ArgumentError(f"{key}s", f"bench sets {key!r} itself: choose the {key}s in the suite or with "
                                f"the {key}s argument, not as a config override",
                                f"bench sets {key!r} itself: use {{option}} (or the suite file) instead of {key}=")
    task_list = list(tasks) if tasks else list(suite.tasks)
    if len(set(task_list)) != len(task_list):
        raise ArgumentError("tasks", f"the tasks name a task twice: {task_list}",
                            f"{{option}} lists a task twice: {task_list}")
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
    try:
        saved = RunDir(run_dir).read_config()
    except CurlrlError:  # no config.yaml, or not a mapping: nothing to compare
        return ""
    now = config_mod.to_dict(cfg)
    diff = [f"{k}={saved[k]!r} (bench: {now[k]!r})" for k in now
            if k in saved and k not in config_mod.resumable_keys() and saved[k] != now[k]]
    return ("keeps its saved config: " + ", ".join(diff)) if diff else ""


def plan_table(suite: Suite, specs: list[RunSpec], launcher: str, workers: int | None, out: Path) -> str:
    """What a bench invocation is about to do: counts of runs to start, resume and skip."""
    counts = {k: sum(s.state == k for s in specs) for k in ("new", "partial", "done", "corrupt")}
    lines = [f"curlrl bench: suite {suite.name}, {len(specs)} runs ({len({s.task for s in specs})} tasks x "
             f"{len({s.seed for s in specs})} seeds) to {specs[0].env_steps if specs else 0} env steps -> {out}",
             f"  launcher {launcher}, workers {workers or 'unlimited'}, "
             f"threads per run {specs[0].threads if specs else 0}; "
             f"to start {counts['new']}, to resume {counts['partial']}, finished {counts['done']}"
             + (f", corrupt {counts['corrupt']}" if counts["corrupt"] else "")]
    for s in specs:
        if s.state == "partial":
            lines.append(f"  resume {s.name} from env step {s.start_step}" + (f" ({s.note})" if s.note else ""))
        elif s.state == "done" and s.note:
            lines.append(f"  finished {s.name} ({s.note})")
    return "\n".join(lines)
