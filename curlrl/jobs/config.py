"""Typed training configuration: dataclass defaults <- YAML files <- ``key=value`` overrides.

Every key is checked: an unknown key (with a suggestion), a value of the wrong type or
an impossible value raises :class:`ConfigError` naming the key.
"""
from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from curlrl.agents.curl_sac import CAPTURE, ENCODER_ADAM, AgentConfig
from curlrl.errors import ConfigError


@dataclass
class TrainConfig(AgentConfig):
    """Everything a training run needs. All ``*_steps`` / ``*_every`` counts are
    **environment steps** (physics steps after action repeat), like the paper's 100k/500k.
    One agent step = ``action_repeat`` env steps = at most one update."""

    task: str = "cartpole-swingup"   # dm_control suite DOMAIN-TASK
    seed: int = 0                    # seeds torch, numpy, envs, replay and crops
    device: str = "auto"             # "auto" (cuda if available), "cpu", "cuda", "cuda:1"
    threads: int = 0                 # torch CPU threads; 0 = all cores
    env_steps: int = 100_000         # training budget
    init_steps: int | None = None    # random-action seed phase before updates begin; None: 1000 agent
                                     # steps (1000 x action_repeat env steps), the paper's for every task
    action_repeat: int = 4           # env steps per agent step (per task: 8 cartpole, 2 finger/walker, 4 others)
    image_size: int = 100            # rendered frame size before the crop
    frame_stack: int = 3             # frames per observation (3 -> 9 channels)
    batch_size: int = 512            # paper setting; 128 in the reference run script and on CPU
    replay_capacity: int = 100_000   # transitions
    replay_storage: str = "auto"     # where frames live and batches are built: "host" (RAM, numpy; the agent
                                     # copies each batch to its device), "device" (uint8 frames on the run's
                                     # device, 30 KB per transition at 100x100: 100k ~ 3 GB of GPU memory;
                                     # indices drawn and stacks gathered there), "auto": device on CUDA, else host
    replay_compress: bool = True     # host storage only: LZ4-compress stored frames (lossless): less RAM for a
                                     # little decompression per batch (figures: benchmarks/README.md); device
                                     # storage keeps raw frames and ignores it
    eval_every: int = 10_000         # evaluate at every multiple of this (and at 0 and at the end)
    eval_episodes: int = 10          # deterministic (mean-action) episodes per evaluation
    checkpoint_every: int = 10_000   # checkpoint at the first episode end at or after each multiple
    save_replay: bool = True         # store the replay with checkpoints for an exact resume
    video: bool = True               # write an mp4 of the first episode of each evaluation
    log_every_updates: int = 0       # also log update metrics every N updates (0: once per episode)
    encoder_init: str = ""           # start the critic encoder from an exported .safetensors (curlrl export)
    freeze_conv: bool = False        # keep the conv trunk fixed (ATC-style); only heads and MLPs learn


_FIELD_TYPES = {f.name: f.type for f in fields(TrainConfig)}
_TYPES = {"int": int, "float": float, "bool": bool, "str": str}
SEED_AGENT_STEPS = 1000              # the paper's random-action phase, in agent steps


def _check_type(key: str, value: Any, field_types: dict[str, Any] = _FIELD_TYPES) -> Any:
    declared = field_types[key]
    if isinstance(declared, str) and declared.endswith(" | None"):
        if value is None:  # "null" in YAML: the field's documented default rule
            return None
        declared = declared[:-len(" | None")]
    want = _TYPES[declared] if isinstance(declared, str) else declared
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


def _check_key(key: str, field_types: dict[str, Any] = _FIELD_TYPES) -> None:
    if key not in field_types:
        close = difflib.get_close_matches(key, list(field_types), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown config key {key!r}{hint}")


def apply(cfg: Any, values: dict[str, Any], source: str) -> Any:
    """Return ``cfg`` (a TrainConfig or any config dataclass) with ``values`` applied,
    each key and type checked."""
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: expected a mapping of config keys, got {type(values).__name__}")
    field_types = {f.name: f.type for f in fields(cfg)}
    updates = {}
    for key, value in values.items():
        _check_key(str(key), field_types)
        updates[key] = _check_type(key, value, field_types)
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


def validate(cfg: TrainConfig) -> TrainConfig:
    """Fill the fields left to a rule (``None``), then reject impossible values, naming the key."""
    if cfg.init_steps is None:
        cfg = dataclasses.replace(cfg, init_steps=SEED_AGENT_STEPS * cfg.action_repeat)
    if cfg.curl_lr is None:
        cfg = dataclasses.replace(cfg, curl_lr=cfg.encoder_lr)
    positive = ["env_steps", "action_repeat", "image_size", "frame_stack", "batch_size", "replay_capacity",
                "eval_every", "checkpoint_every", "crop_size", "feature_dim", "num_layers", "num_filters",
                "hidden_dim", "actor_update_every", "target_update_every"]
    for key in positive:
        if getattr(cfg, key) <= 0:
            raise ConfigError(f"config key {key!r} must be > 0, got {getattr(cfg, key)}")
    for key in ["init_steps", "eval_episodes", "threads", "log_every_updates"]:
        if getattr(cfg, key) < 0:
            raise ConfigError(f"config key {key!r} must be >= 0, got {getattr(cfg, key)}")
    for key in ["critic_tau", "encoder_tau"]:
        if not 0.0 < getattr(cfg, key) <= 1.0:
            raise ConfigError(f"config key {key!r} must be in (0, 1], got {getattr(cfg, key)}")
    for key in ["discount", "actor_beta", "critic_beta", "alpha_beta"]:
        if not 0.0 <= getattr(cfg, key) < 1.0:
            raise ConfigError(f"config key {key!r} must be in [0, 1), got {getattr(cfg, key)}")
    for key in ["actor_lr", "critic_lr", "encoder_lr", "curl_lr", "alpha_lr", "init_temperature"]:
        if getattr(cfg, key) <= 0:
            raise ConfigError(f"config key {key!r} must be > 0, got {getattr(cfg, key)}")
    if cfg.crop_size > cfg.image_size:
        raise ConfigError(f"config key 'crop_size' ({cfg.crop_size}) must be <= image_size ({cfg.image_size})")
    if cfg.crop_size < 2 * cfg.num_layers + 3:
        raise ConfigError(f"config key 'crop_size' ({cfg.crop_size}) is too small for {cfg.num_layers} conv layers")
    for key in ["env_steps", "eval_every", "init_steps", "checkpoint_every"]:
        if getattr(cfg, key) % cfg.action_repeat:
            raise ConfigError(f"config key {key!r} ({getattr(cfg, key)}) must be a multiple of "
                              f"action_repeat ({cfg.action_repeat}): env steps advance by action_repeat")
    if cfg.update_mode not in ("fused", "exact"):
        raise ConfigError(f"config key 'update_mode' must be 'fused' or 'exact', got {cfg.update_mode!r}")
    if cfg.encoder_adam not in ENCODER_ADAM:
        raise ConfigError(f"config key 'encoder_adam' must be one of {', '.join(ENCODER_ADAM)}, "
                          f"got {cfg.encoder_adam!r}")
    if cfg.replay_storage not in ("auto", "host", "device"):
        raise ConfigError(f"config key 'replay_storage' must be auto, host or device, got {cfg.replay_storage!r}")
    if cfg.amp not in ("off", "bf16"):
        raise ConfigError(f"config key 'amp' must be 'off' or 'bf16', got {cfg.amp!r}")
    if cfg.capture not in CAPTURE:
        raise ConfigError(f"config key 'capture' must be one of {', '.join(CAPTURE)}, got {cfg.capture!r}")
    if cfg.capture == "cudagraphs" and cfg.device == "cpu":
        raise ConfigError("config key 'capture' = 'cudagraphs' needs a CUDA device (device=cuda or auto)")
    if cfg.update_mode == "fused" and cfg.curl and cfg.encoder_adam != "shared":
        raise ConfigError(f"config key 'update_mode' = 'fused' needs encoder_adam=shared (it sums the critic "
                          f"and CURL losses into one gradient), got encoder_adam={cfg.encoder_adam}")
    if cfg.log_std_min >= cfg.log_std_max:
        raise ConfigError("config keys 'log_std_min' must be < 'log_std_max'")
    dev = cfg.device
    if not (dev in ("auto", "cpu", "cuda") or dev.startswith("cuda:") or dev == "mps"):
        raise ConfigError(f"config key 'device' must be auto, cpu, cuda or cuda:N, got {dev!r}")
    return cfg


def resolve(task: str | None, config_file: str | None = None, overrides: list[str] | None = None,
            base: dict[str, Any] | None = None) -> TrainConfig:
    """Build a config: defaults <- ``configs/<task>.yaml`` <- ``config_file`` <- overrides.

    ``base`` (a saved run's config) replaces the first two layers when resuming.
    """
    cfg = TrainConfig()
    if base is not None:
        cfg = apply(cfg, base, "saved run config")
    else:
        if task is not None:
            cfg = dataclasses.replace(cfg, task=task)
        cfg = apply(cfg, task_config(cfg.task), f"configs/{cfg.task}.yaml")
    if config_file:
        cfg = apply(cfg, load_yaml(config_file), config_file)
    cfg = apply(cfg, parse_overrides(overrides or []), "command line")
    if task is not None and cfg.task != task:
        raise ConfigError(f"config key 'task' ({cfg.task!r}) contradicts the task argument ({task!r})")
    return validate(cfg)


def to_dict(cfg: TrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
