"""Typed training configuration: dataclass defaults <- YAML files <- ``key=value`` overrides.

Every field is declared once, with its help text and checks beside it
(:func:`curlrl.options.option`); this module is the engine that reads those
declarations. Every key is checked: an unknown key (with a suggestion), a value of the
wrong type or an impossible value raises :class:`ConfigError` naming the key.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import operator
import re
import textwrap
import types
import typing
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from curlrl.agents.curl_sac import AgentConfig
from curlrl.agents.der import DerConfig, curl_weight_for
from curlrl.augment import parse_views
from curlrl.errors import ConfigError
from curlrl.objectives import check_auxiliary, objective_options
from curlrl.options import EncoderConfig, option


@dataclass
class RuntimeConfig:
    """Where and how a job runs: the fields every job (train, pretrain) shares."""

    seed: int = option(0, "seeds every random source of the run: network init, environments or data sampling, "
                          "replay and crops", operational=True, resumable=True)
    device: str = option("auto", "torch device: auto (cuda if available), cpu, cuda or cuda:N",
                         pattern=r"auto|cpu|cuda|cuda:\d+|mps", must="auto, cpu, cuda or cuda:N",
                         operational=True, resumable=True)
    threads: int = option(0, "torch CPU threads; 0: all cores", check=">= 0", operational=True, resumable=True)


@dataclass
class TrainConfig(RuntimeConfig, AgentConfig):
    """Everything a training run needs. All ``*_steps`` / ``*_every`` counts are
    **environment steps** (physics steps after action repeat), like the paper's 100k/500k.
    One agent step = ``action_repeat`` env steps = at most one update."""

    task: str = option("cartpole-swingup", "dm_control suite task, DOMAIN-TASK", operational=True, resumable=True)
    env_steps: int = option(100_000, "training budget in env steps", check="> 0", operational=True, resumable=True)
    init_steps: int | None = option(
        None, "env steps of random actions before updates begin; None: 1000 agent steps (1000 x action_repeat "
              "env steps), the paper's for every task", check=">= 0")
    action_repeat: int = option(4, "env steps per agent step (CURL: 8 cartpole, 2 finger and walker, 4 others)",
                                check="> 0")
    image_size: int = option(100, "side of the rendered square frames, before the crop", check="> 0")
    frame_stack: int = option(3, "frames per observation (3 -> 9 channels)", check="> 0")
    batch_size: int = option(512, "transitions per update: the paper's setting; 128 in the reference run script "
                                  "and on CPU", check="> 0")
    replay_capacity: int = option(100_000, "transitions the replay keeps", check="> 0")
    replay_storage: str = option(
        "auto", "where frames live and batches are built: host (RAM, numpy; the agent copies each batch to its "
                "device), device (uint8 frames on the run's device, 30 KB per transition at 100x100: 100k ~ 3 GB "
                "of GPU memory; indices drawn and stacks gathered there), auto: device on CUDA, else host",
        choices=("auto", "host", "device"), must="auto, host or device", operational=True)
    replay_compress: bool = option(
        True, "host storage only: LZ4-compress stored frames (lossless): less RAM for a little decompression per "
              "batch (figures: benchmarks/README.md); device storage keeps raw frames and ignores it",
        operational=True)
    eval_every: int = option(10_000, "evaluate at every multiple of this many env steps (and at 0 and at the end)",
                             check="> 0", operational=True)
    eval_episodes: int = option(10, "deterministic (mean-action) episodes per evaluation", check=">= 0")
    checkpoint_every: int = option(10_000, "checkpoint at the first episode end at or after each multiple of "
                                           "this many env steps", check="> 0", operational=True)
    save_replay: bool = option(True, "store the replay with checkpoints for an exact resume", operational=True)
    video: bool = option(True, "write an mp4 of the first episode of each evaluation", operational=True)
    label: str = option("", "the run's name in reports (curlrl report, bench): a variant's name, e.g. frozen or "
                            "finetuned; empty: the algorithm, curl or pixel_sac_crop", pattern=r"[A-Za-z0-9_.+-]*",
                        must="letters, digits and _ . + - only", operational=True, resumable=True)
    log_every_updates: int = option(0, "also log update metrics every N updates (0: once per episode)",
                                    check=">= 0", operational=True)
    encoder_init: str = option("", "start the critic encoder from an exported .safetensors encoder (curlrl "
                                   "export); empty: random init")
    encoder_module: str = option(
        "", "a bring-your-own trunk, package.module:factory (the factory returns a curlrl.encoder.ForeignEncoder), "
            "used instead of the conv stack: the Linear+LayerNorm heads, CURL and SAC sit on its features; it runs "
            "in eval mode, and with freeze_conv=true it stays fixed; empty: curlrl's conv stack",
        pattern=r"|[A-Za-z_][\w.]*:[A-Za-z_]\w*", must="empty or package.module:factory")
    freeze_conv: bool = option(False, "keep the conv trunk fixed (ATC-style); only heads and MLPs learn")


ATARI_PREFIX = "atari-"


@dataclass
class AtariConfig(RuntimeConfig, DerConfig):
    """Everything an Atari-100k run needs: DER's hyperparameters (:class:`DerConfig`) and the
    run's. Step counts are **agent steps** (one action = 4 frames of the game), the unit of
    Atari-100k's budget (100k agent steps = 400k frames); curlrl's logs put them in the
    ``env_step`` column (``frames`` beside it)."""

    task: str = option("atari-boxing", "atari-GAME, one of the 26 Atari-100k games (e.g. atari-pong)",
                       operational=True, resumable=True)
    env_steps: int = option(100_000, "training budget in agent steps (Atari-100k: 100k = 400k frames)", check="> 0",
                            operational=True, resumable=True)
    curl_weight: float | None = option(
        None, "weight of the CURL loss; None: curl_rainbow's per game (0.01 for pong, boxing, private_eye and "
              "freeway, else 1; the paper says 0.05 for those)", check=">= 0")
    beta_anneal_updates: int | None = option(
        None, "updates over which the IS exponent grows linearly to 1; None: env_steps - learn_start (Kaixhin's "
              "T_max - learn_start)", check="> 0")
    eval_every: int = option(10_000, "evaluate (eval_episodes episodes, noise off, epsilon eval_epsilon) at every "
                                     "multiple of this many agent steps", check="> 0", operational=True)
    eval_episodes: int = option(10, "episodes per evaluation during training (CURL's protocol reports the best "
                                    "of these evaluations)", check=">= 0")
    final_eval_episodes: int = option(100, "episodes of the final evaluation at the end of the run (rliable's "
                                           "protocol reports it)", check=">= 0")
    checkpoint_every: int = option(10_000, "checkpoint at every multiple of this many agent steps (mid-game "
                                           "too: the console's state is saved)", check="> 0", operational=True)
    replay_capacity: int = option(100_000, "transitions the prioritised replay keeps (DER: the whole run)",
                                  check="> 0")
    save_replay: bool = option(True, "store the replay with checkpoints for an exact resume (0.7 GB at 100k)",
                               operational=True)
    noop_max: int = option(30, "a game reset is followed by 0 .. noop_max-1 no-op frames", check=">= 0")
    max_frames: int = option(108_000, "frames per game before it is truncated (27k agent steps)", check="> 0")
    label: str = option("", "the run's name in reports: a variant's name; empty: curl or der",
                        pattern=r"[A-Za-z0-9_.+-]*", must="letters, digits and _ . + - only", operational=True,
                        resumable=True)

    def __post_init__(self) -> None:  # checked by validate_atari, after the layers are applied
        pass


def is_atari(task: str | None) -> bool:
    return isinstance(task, str) and task.lower().startswith(ATARI_PREFIX)


def der_config(cfg: AtariConfig) -> DerConfig:
    """The agent's hyperparameters of an Atari run (its checks run again there)."""
    return DerConfig(**{f.name: getattr(cfg, f.name) for f in fields(DerConfig)})


def validate_atari(cfg: AtariConfig) -> AtariConfig:
    """Fill the rules (``curl_weight``), check every field, then the cross-field rules."""
    from curlrl.envs.atari import parse_game  # no ale-py import: the name check only

    game = parse_game(cfg.task)
    cfg = dataclasses.replace(cfg, task=ATARI_PREFIX + game)
    if cfg.curl_weight is None:
        cfg = dataclasses.replace(cfg, curl_weight=curl_weight_for(game))
    if cfg.beta_anneal_updates is None and isinstance(cfg.env_steps, int) and isinstance(cfg.learn_start, int):
        cfg = dataclasses.replace(cfg, beta_anneal_updates=max(1, cfg.env_steps - cfg.learn_start))
    cfg = check_fields(cfg)
    der_config(cfg)  # DerConfig's own cross-field checks: v_min < v_max, the objective DER can run
    if cfg.batch_size > cfg.replay_capacity:
        raise ConfigError(f"config key 'batch_size' ({cfg.batch_size}) must be <= replay_capacity "
                          f"({cfg.replay_capacity})")
    return cfg


SEED_AGENT_STEPS = 1000              # the paper's random-action phase, in agent steps
_TYPES = (int, float, bool, str)
_COMPARE = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}
_INTERVAL = re.compile(r"in ([\[(])(\S+), (\S+)([\])])")


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    """``{key: declared type}`` of a config dataclass, annotations resolved (``int | None`` included)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls)}


def _check_type(key: str, value: Any, declared: Any) -> Any:
    """``value`` as the ``declared`` type (YAML's ``1e-3`` strings read as numbers, ``1e5`` as an
    int for step counts), or a :class:`ConfigError` naming the key."""
    if typing.get_origin(declared) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(declared) if a is not type(None)]
        if value is None and len(args) < len(typing.get_args(declared)):
            return None  # "null" in YAML: the field's documented default rule
        (declared,) = args
    want = declared
    if want not in _TYPES:
        raise TypeError(f"config key {key!r} is declared {want!r}; config types are {_TYPES}")
    if want in (int, float) and isinstance(value, str):
        try:  # YAML reads 1e-3 (no dot) as a string
            value = float(value)
        except ValueError:
            pass
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if want is int and isinstance(value, float) and value.is_integer() and key.endswith(("steps", "every", "capacity")):
        return int(value)  # allow 1e5 for step counts
    if not isinstance(value, want) or (want is int and isinstance(value, bool)):
        raise ConfigError(f"config key {key!r} must be {want.__name__}, got {value!r} ({type(value).__name__})")
    return value


def _check_key(key: str, known: Any) -> None:
    if key not in known:
        close = difflib.get_close_matches(key, list(known), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown config key {key!r}{hint}")


def apply(cfg: Any, values: dict[str, Any], source: str) -> Any:
    """Return ``cfg`` (a TrainConfig or any config dataclass) with ``values`` applied,
    each key and type checked."""
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: expected a mapping of config keys, got {type(values).__name__}")
    field_types = _field_types(type(cfg))
    updates = {}
    for key, value in values.items():
        _check_key(str(key), field_types)
        updates[key] = _check_type(key, value, field_types[key])
    return dataclasses.replace(cfg, **updates)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["batch_size=128", "curl=false"]`` -> typed dict (values parsed as YAML scalars)."""
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            out[key.strip()] = raw
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    return data or {}


def task_config(task: str) -> dict[str, Any]:
    """The shipped per-task settings (``configs/<task>.yaml``), or {} for other tasks."""
    res = resources.files("curlrl.configs") / f"{task}.yaml"
    return load_yaml(str(res)) if res.is_file() else {}


def _holds(check: str, value: Any) -> bool:
    """Whether ``value`` meets a declared ``check`` ("> 0", ">= 2", "in (0, 1]", ...)."""
    interval = _INTERVAL.fullmatch(check)
    if interval:
        lo_bracket, lo, hi, hi_bracket = interval.groups()
        above = value > float(lo) if lo_bracket == "(" else value >= float(lo)
        below = value < float(hi) if hi_bracket == ")" else value <= float(hi)
        return above and below
    op, _, bound = check.partition(" ")
    if op not in _COMPARE:
        raise ValueError(f"unknown config check {check!r}")
    return _COMPARE[op](value, float(bound))


def _must(meta: dict[str, Any]) -> str:
    if meta["must"]:
        return meta["must"]
    choices = meta["choices"]
    if len(choices) == 2:
        return f"{choices[0]!r} or {choices[1]!r}"
    return "one of " + ", ".join(map(str, choices))


def check_fields(cfg: Any) -> Any:
    """Check every field of a config dataclass against its declaration (type, ``check``,
    ``choices``, ``pattern``); return ``cfg`` with its values as the declared types."""
    cfg = apply(cfg, {f.name: getattr(cfg, f.name) for f in fields(cfg)}, "config")
    for f in fields(cfg):
        value, meta = getattr(cfg, f.name), f.metadata
        if value is None or not meta:
            continue
        if meta["check"] and not _holds(meta["check"], value):
            raise ConfigError(f"config key {f.name!r} must be {meta['check']}, got {value}")
        if (meta["choices"] and value not in meta["choices"]) or \
                (meta["pattern"] and not re.fullmatch(meta["pattern"], value)):
            near = difflib.get_close_matches(str(value), list(map(str, meta["choices"] or ())), n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise ConfigError(f"config key {f.name!r} must be {_must(meta)}, got {value!r}{hint}")
    return cfg


def check_encoder(cfg: EncoderConfig) -> None:
    """Cross-field checks of the encoder fields (any config that has them)."""
    if cfg.crop_size < 2 * cfg.num_layers + 3:
        raise ConfigError(f"config key 'crop_size' ({cfg.crop_size}) is too small for {cfg.num_layers} conv layers")
    objective_options(cfg)  # refuses a key of another objective
    try:
        parse_views(cfg.augment)
    except ValueError as exc:
        raise ConfigError(f"config key 'augment': {exc}") from None
    if "cutout" in cfg.augment and cfg.crop_size < 10:
        raise ConfigError(f"config key 'augment' uses cutout (10 to 30 px) but crop_size is {cfg.crop_size}")


def validate(cfg: TrainConfig) -> TrainConfig:
    """Fill the fields left to a rule (``None``), then reject impossible values, naming the key."""
    if cfg.init_steps is None:
        cfg = dataclasses.replace(cfg, init_steps=SEED_AGENT_STEPS * cfg.action_repeat)
    if cfg.curl_lr is None:
        cfg = dataclasses.replace(cfg, curl_lr=cfg.encoder_lr)
    cfg = check_fields(cfg)
    if cfg.crop_size > cfg.image_size:
        raise ConfigError(f"config key 'crop_size' ({cfg.crop_size}) must be <= image_size ({cfg.image_size})")
    check_encoder(cfg)
    for key in ["env_steps", "eval_every", "init_steps", "checkpoint_every"]:
        if getattr(cfg, key) % cfg.action_repeat:
            raise ConfigError(f"config key {key!r} ({getattr(cfg, key)}) must be a multiple of "
                              f"action_repeat ({cfg.action_repeat}): env steps advance by action_repeat")
    if cfg.capture == "cudagraphs" and cfg.device == "cpu":
        raise ConfigError("config key 'capture' = 'cudagraphs' needs a CUDA device (device=cuda or auto)")
    check_auxiliary(cfg, cfg.curl, cfg.batch_size)
    if cfg.update_mode == "fused" and cfg.curl and cfg.objective != "curl":
        raise ConfigError(f"config key 'update_mode' = 'fused' sums CURL's loss into the critic's and does not "
                          f"apply to objective={cfg.objective}")
    if cfg.update_mode == "fused" and cfg.curl and cfg.encoder_adam != "shared":
        raise ConfigError(f"config key 'update_mode' = 'fused' needs encoder_adam=shared (it sums the critic "
                          f"and CURL losses into one gradient), got encoder_adam={cfg.encoder_adam}")
    if cfg.encoder_module and cfg.encoder_init:
        raise ConfigError(f"config keys 'encoder_module' and 'encoder_init' exclude each other: the module's "
                          f"factory brings its own weights (got {cfg.encoder_module!r} and {cfg.encoder_init!r})")
    if cfg.encoder_module and cfg.amp == "bf16":
        raise ConfigError("config key 'amp' = 'bf16' runs curlrl's conv stack under autocast and does not apply to "
                          "a bring-your-own trunk (encoder_module): use amp=off")
    if cfg.log_std_min >= cfg.log_std_max:
        raise ConfigError("config keys 'log_std_min' must be < 'log_std_max'")
    return cfg


def _keys(cls: type, flag: str) -> frozenset[str]:
    return frozenset(f.name for f in fields(cls) if f.metadata.get(flag))


def operational_keys(cls: type = TrainConfig) -> frozenset[str]:
    """Keys that do not change what a run learns at a given env step (task, seed, device,
    budget, cadence, logging, memory layout)."""
    return _keys(cls, "operational")


def compared_keys(cls: type = TrainConfig) -> frozenset[str]:
    """Keys a report compares with the paper's setting: all but the operational ones and
    ``curl``, which names the algorithm instead."""
    return _keys(cls, "compare")


def resumable_keys(cls: type = TrainConfig) -> frozenset[str]:
    """Keys a resumed or re-planned run may change; a difference in any other key from the
    saved config is worth reporting (the run keeps its saved value)."""
    return _keys(cls, "resumable")


def _type_name(declared: Any) -> str:
    args = typing.get_args(declared)
    return " | ".join("None" if a is type(None) else a.__name__ for a in args) if args else declared.__name__


def explain(cfg: Any, width: int = 88) -> str:
    """The resolved config as YAML, each key under a comment giving its type, checks and
    meaning; operational keys are marked. Loading the text back gives :func:`to_dict`."""
    types_ = _field_types(type(cfg))
    lines = ["# Each key's type, checks and meaning are in the comment above it. operational: does not",
             "# change what a run learns at a given env step (reports do not compare it with the paper)."]
    for f in fields(cfg):
        meta = f.metadata
        facts = [_type_name(types_[f.name])]
        if meta.get("check"):
            facts.append(meta["check"])
        if meta.get("choices") or meta.get("pattern"):
            facts.append(_must(meta))
        if meta.get("operational"):
            facts.append("operational")
        lines.append("")
        lines.extend(textwrap.wrap(f"{f.name} ({'; '.join(facts)}): {meta.get('help', '')}", width,
                                   initial_indent="# ", subsequent_indent="#   "))
        lines.append(yaml.safe_dump({f.name: getattr(cfg, f.name)}, sort_keys=False).rstrip("\n"))
    return "\n".join(lines) + "\n"


def resolve(task: str | None, config_file: str | None = None, overrides: list[str] | None = None,
            base: dict[str, Any] | None = None) -> TrainConfig | AtariConfig:
    """Build a config: defaults <- ``configs/<task>.yaml`` <- ``config_file`` <- overrides.

    An ``atari-GAME`` task gives an :class:`AtariConfig`, any other a :class:`TrainConfig`.
    ``base`` (a saved run's config) replaces the first two layers when resuming. Without
    ``task``, the task named last by ``overrides`` or ``config_file`` picks the task layer.
    """
    file_values = load_yaml(config_file) if config_file else {}
    override_values = parse_overrides(overrides or [])
    named = task
    if named is None:  # the task named last picks the kind of run
        for layer in (base, file_values, override_values):
            if isinstance(layer, dict) and isinstance(layer.get("task"), str):
                named = layer["task"]
    atari = is_atari(named)
    cfg = AtariConfig() if atari else TrainConfig()
    if base is not None:
        cfg = apply(cfg, base, "saved run config")
    else:
        for layer in (file_values, override_values):
            if task is None and isinstance(layer, dict) and isinstance(layer.get("task"), str):
                cfg = dataclasses.replace(cfg, task=layer["task"])
        if task is not None:
            cfg = dataclasses.replace(cfg, task=task)
        cfg = apply(cfg, task_config(cfg.task), f"configs/{cfg.task}.yaml")
    if config_file:
        cfg = apply(cfg, file_values, config_file)
    cfg = apply(cfg, override_values, "command line")
    if task is not None and cfg.task != task:
        raise ConfigError(f"config key 'task' ({cfg.task!r}) contradicts the task argument ({task!r})")
    if is_atari(cfg.task) != atari:
        raise ConfigError(f"config key 'task' ({cfg.task!r}) changes the kind of run: an Atari game and a "
                          f"DeepMind Control task take different keys; name the task as the command's argument")
    return validate_atari(cfg) if atari else validate(cfg)


def to_dict(cfg: TrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
