"""Suites (tasks x seeds at a budget) and planning: which runs a benchmark has, each config
resolved up front, and what each run directory already holds."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from curlrl.errors import ConfigError, CurlrlError
from curlrl.jobs import config as config_mod
from curlrl.jobs.bench.results import RunSpec, run_status  # noqa: F401 (RunSpec: re-exported)
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
    # named variants compared side by side: name -> config overrides (each run also gets label=name)
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)


# The PlaNet benchmark of the CURL paper, at its two budgets; 10 seeds as in the paper.
SUITES: dict[str, Suite] = {
    "planet100k": Suite("planet100k", list(PLANET_TASKS), 100_000, list(range(10))),
    "planet500k": Suite("planet500k", list(PLANET_TASKS), 500_000, list(range(10))),
}
_SUITE_KEYS = {"name", "tasks", "env_steps", "seeds", "overrides", "task_overrides", "variants"}
VARIANT_NAME = re.compile(r"[A-Za-z0-9_.+-]+")  # a variant's name is a folder name and the runs' label


def load_suite(name_or_file: str) -> Suite:
    """A built-in suite (``planet100k``, ``planet500k``) or a YAML suite file::

        name: my-suite            # optional, default: the file name
        tasks: [cartpole-swingup, walker-walk]
        env_steps: 100000
        seeds: 5                  # 5 -> seeds 0..4, or an explicit list [0, 3, 7]
        overrides: {batch_size: 128}          # optional, config keys for every run
        task_overrides:                       # optional, per task
          walker-walk: {batch_size: 256}
        variants:                             # optional: settings compared side by side,
          frozen: {encoder_init: enc.safetensors, freeze_conv: true}   # each over every task x seed
          finetuned: {encoder_init: enc.safetensors}
          scratch: {}

    With variants, the runs go to ``runs/<variant>/<task>/seed<k>`` and each run's config
    gets ``label=<variant>``, the name reports show it under.
    """
    if name_or_file in SUITES:
        s = SUITES[name_or_file]
        return Suite(s.name, list(s.tasks), s.env_steps, list(s.seeds), dict(s.overrides), dict(s.task_overrides),
                     {k: dict(v) for k, v in s.variants.items()})
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
    variants = data.get("variants") or {}
    if not isinstance(variants, dict) or not all(isinstance(v, dict) or v is None for v in variants.values()):
        raise ConfigError(f"suite file {path}: 'variants' must map variant names to config overrides "
                          f"(an empty mapping {{}} for the defaults)")
    try:
        check_variant_names(list(variants))
    except ConfigError as exc:
        raise ConfigError(f"suite file {path}: {exc}") from None
    return Suite(str(data.get("name") or path.stem), list(tasks), env_steps, seeds,
                 dict(overrides), {k: dict(v) for k, v in task_overrides.items()},
                 {str(k): dict(v or {}) for k, v in variants.items()})


def check_variant_names(names: Sequence[Any]) -> None:
    """ConfigError unless every name is a non-empty folder-safe string (letters, digits, _ . + -)."""
    for name in names:
        if not isinstance(name, str) or not VARIANT_NAME.fullmatch(name) or name in (".", ".."):
            raise ConfigError(f"variant name {name!r}: use letters, digits and _ . + - only "
                              f"(it names a folder and the runs' label)")


ENCODER_MODES = ("frozen", "finetuned", "scratch")  # the variants of encoder_suite


def encoder_suite(encoder: str, task: str, env_steps: int, seeds: int | list[int] = 5,
                  modes: Sequence[str] = ENCODER_MODES) -> Suite:
    """Online RL from a pretrained encoder, as variants of one suite on one task:
    ``frozen`` (its conv trunk fixed; heads, CURL's W and SAC learn), ``finetuned`` (all of it
    learns, from its weights) and ``scratch`` (the default agent from a random init).

    ``encoder``: an encoder export (``.safetensors``, given to ``encoder_init``) or a
    bring-your-own ``package.module:factory`` (given to ``encoder_module``). Paths are made
    absolute, since the runs may start in another directory.
    """
    if not modes or len(set(modes)) != len(modes) or any(m not in ENCODER_MODES for m in modes):
        raise ArgumentError("modes", f"modes {list(modes)}: choose each once from {list(ENCODER_MODES)}",
                            f"{{option}} {','.join(modes)}: choose each once from {', '.join(ENCODER_MODES)}")
    path = Path(encoder)
    if path.exists():
        if not path.is_file() or path.suffix != ".safetensors":
            raise ConfigError(f"encoder {encoder}: give an encoder export (.safetensors; curlrl export RUN_DIR "
                              f"makes one from a run) or a package.module:factory")
        weights: dict[str, Any] = {"encoder_init": str(path.resolve())}
    elif ":" in encoder and path.suffix != ".safetensors":
        weights = {"encoder_module": encoder}
    else:
        raise ConfigError(f"encoder {encoder} does not exist")
    variants = {"frozen": {**weights, "freeze_conv": True}, "finetuned": dict(weights), "scratch": {}}
    return Suite(f"encoder-rl-{task}", [task], env_steps, parse_seeds(seeds),
                 variants={m: variants[m] for m in modes})


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


def scalar_text(value: Any) -> str:
    """A config value as the text of a ``key=value`` override (parsed back as YAML)."""
    return value if isinstance(value, str) else json.dumps(value)


def plan(suite: Suite, out: str | Path, overrides: Sequence[str] = (), tasks: Sequence[str] | None = None,
         seeds: int | None = None, default_threads: int = 1, variants: Sequence[str] | None = None) -> list[RunSpec]:
    """The runs of ``suite`` under ``out``, each config resolved (and so checked) up front.

    ``overrides`` (command-line ``key=value``) win over the suite's, but may not set a key
    that a variant sets (that would erase the difference the variants are compared on);
    ``threads`` is ``default_threads`` unless the suite or the command line sets it.
    ``variants`` picks some of the suite's variants (default: all). Nothing is written.
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
    variant_list = _pick_variants(suite, variants)
    for name in variant_list:
        clash = sorted(set(cli) & (set(suite.variants[name]) | {"label"}))  # label: the variant's name
        if clash:
            raise ArgumentError("overrides", f"the override(s) {clash} would replace what variant {name!r} sets; "
                                f"change the suite's variants instead",
                                f"{', '.join(k + '=' for k in clash)} would replace what variant {name!r} sets; "
                                f"change the suite's variants instead")
    from curlrl.envs.atari import parse_game
    from curlrl.envs.dmc import parse_task

    for task in task_list:  # an unknown task is a mistake to report now, not N failed runs later
        parse_game(task) if config_mod.is_atari(task) else parse_task(task)
    specs = []
    for variant in variant_list or [""]:
        for task in task_list:
            values: dict[str, Any] = {"env_steps": suite.env_steps}
            values.update(suite.overrides)
            values.update(suite.task_overrides.get(task, {}))
            if variant:
                values["label"] = variant
                values.update(suite.variants[variant])
            values.update(cli)
            values.setdefault("threads", default_threads)
            sub = Path(variant, task) if variant else Path(task)
            for seed in seed_list:
                items = [f"{k}={scalar_text(v)}" for k, v in values.items()] + [f"seed={seed}"]
                try:
                    cfg = config_mod.resolve(task, None, items)  # raises ConfigError naming the key
                except ConfigError as exc:
                    if not variant:
                        raise
                    raise ConfigError(f"variant {variant!r}: {exc}") from None
                run_dir = out / "runs" / sub / f"seed{seed}"
                spec = RunSpec(task, seed, str(run_dir), str(out / "logs" / sub / f"seed{seed}.log"), items,
                               cfg.env_steps, cfg.threads, cfg.device, variant=variant)
                status = run_status(run_dir, cfg.env_steps)
                spec.state, spec.start_step, spec.note = status.state, status.env_step, status.message
                if status.state in ("partial", "done"):
                    spec.note = _config_drift(run_dir, cfg)
                specs.append(spec)
    return specs


def _pick_variants(suite: Suite, names: Sequence[str] | None) -> list[str]:
    """The suite's variants to run: all of them, or ``names`` (each one of the suite's)."""
    if names is None:
        return list(suite.variants)
    if not suite.variants:
        raise ArgumentError("variants", f"suite {suite.name!r} has no variants to choose from",
                            f"{{option}}: suite {suite.name!r} has no variants to choose from")
    unknown = [n for n in names if n not in suite.variants]
    if unknown or len(set(names)) != len(names) or not names:
        raise ArgumentError("variants", f"variants {list(names)}: choose each once from {list(suite.variants)}",
                            f"{{option}} {','.join(names)}: choose each once from {', '.join(suite.variants)}")
    return list(names)


def _config_drift(run_dir: Path, cfg) -> str:
    """Keys where the saved run config differs from the one this bench would start."""
    try:
        saved = RunDir(run_dir).read_config()
    except CurlrlError:  # no config.yaml, or not a mapping: nothing to compare
        return ""
    now = config_mod.to_dict(cfg)
    diff = [f"{k}={saved[k]!r} (bench: {now[k]!r})" for k in now
            if k in saved and k not in config_mod.resumable_keys(type(cfg)) and saved[k] != now[k]]
    return ("keeps its saved config: " + ", ".join(diff)) if diff else ""


def plan_table(suite: Suite, specs: list[RunSpec], launcher: str, workers: int | None, out: Path) -> str:
    """What a bench invocation is about to do: counts of runs to start, resume and skip."""
    counts = {k: sum(s.state == k for s in specs) for k in ("new", "partial", "done", "corrupt")}
    variants = list(dict.fromkeys(s.variant for s in specs if s.variant))
    by_variant = f"{_count(len(variants), 'variant')} ({', '.join(variants)}) x " if variants else ""
    lines = [f"curlrl bench: suite {suite.name}, {_count(len(specs), 'run')} ({by_variant}"
             f"{_count(len({s.task for s in specs}), 'task')} x {_count(len({s.seed for s in specs}), 'seed')}) "
             f"to {specs[0].env_steps if specs else 0} env steps -> {out}",
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


def _count(n: int, noun: str) -> str:
    """``1 task``, ``2 tasks``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"
