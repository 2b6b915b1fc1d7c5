"""Evaluate a saved run: load its latest checkpoint, run mean-action episodes, film one."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from curlrl.jobs import config as config_mod
from curlrl.checkpoint import safe_load
from curlrl.errors import CheckpointError, ConfigError


def evaluate_run(run_dir: str | Path, episodes: int = 10, video: bool = True, device: str | None = None) -> dict:
    """Evaluate ``run_dir/checkpoints/latest.pt``; prints and returns the returns.

    Writes ``run_dir/videos/final_eval_<env_step>.mp4`` and appends nothing to eval.csv
    (that file holds the training-time evaluations only).
    """
    from curlrl.jobs.train import build, evaluate, resolve_device

    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        raise ConfigError(f"{run_dir} is not a curlrl run directory (no config.yaml)")
    if episodes < 1:
        raise ConfigError(f"episodes must be >= 1, got {episodes}")
    cfg = config_mod.resolve(None, base=config_mod.load_yaml(cfg_path),
                             overrides=[f"device={device}"] if device else None)
    state = safe_load(run_dir / "checkpoints" / "latest.pt", map_location=resolve_device(cfg.device))
    _, eval_env, agent = build(cfg, resolve_device(cfg.device), from_checkpoint=True)
    try:
        agent.load_state_dict(state["agent"])
        env_step = int(state["counters"]["env_step"])
    except (KeyError, RuntimeError, TypeError) as exc:
        raise CheckpointError(f"checkpoint in {run_dir} does not match its config ({exc})") from None
    path = run_dir / "videos" / f"final_eval_{env_step:07d}.mp4" if video else None
    returns = evaluate(agent, eval_env, episodes, cfg.seed, eval_index=10**6, video_path=path)
    result = dict(run_dir=str(run_dir), env_step=env_step, returns=returns,
                  mean=float(np.mean(returns)), std=float(np.std(returns)), video=str(path) if path else None)
    print(f"{cfg.task} @ {env_step} env steps: return {result['mean']:.1f} ± {result['std']:.1f} "
          f"over {episodes} episodes" + (f"; video {path}" if path else ""))
    print(json.dumps(result))
    return result
