"""Evaluation of a saved run (``curlrl eval``); the episodes themselves are :mod:`curlrl.jobs.episodes`."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from curlrl.errors import CheckpointError, ConfigError
from curlrl.jobs.episodes import evaluate
from curlrl.jobs.rundir import TRAIN_KIND, RunDir


def evaluate_run(run_dir: str | Path, episodes: int = 10, video: bool = True, device: str | None = None) -> dict:
    """Evaluate the agent in the checkpoint of the run in ``run_dir``; prints and returns the returns.

    Writes the video of the first episode to the run's videos/ (``final_eval_<env_step>.mp4``)
    and appends nothing to eval.csv (that file holds the evaluations made while training).
    The agent's weights come from the checkpoint only: its ``encoder_init`` file is not read.
    """
    from curlrl.jobs import config as config_mod
    from curlrl.jobs.host import resolve_device
    from curlrl.jobs.train import build_env, check_device, load_agent

    run = RunDir(run_dir)
    base = run.read_config()
    if episodes < 1:
        raise ConfigError(f"episodes must be >= 1, got {episodes}")
    run.expect_kind(TRAIN_KIND)  # a pretraining run says so, rather than failing on its config keys
    cfg = config_mod.resolve(None, base=base, overrides=[f"device={device}"] if device else None)
    if isinstance(cfg, config_mod.AtariConfig):
        from curlrl.jobs.atari import evaluate_atari_run

        result = evaluate_atari_run(run, cfg, episodes, video)
        print(f"{cfg.task} @ {result['env_step']} agent steps: score {result['mean']:.1f} ± {result['std']:.1f} "
              f"over {episodes} games" + (f"; video {result['video']}" if result["video"] else ""))
        print(json.dumps(result))
        return result
    torch_device = resolve_device(cfg.device)
    check_device(cfg, torch_device)
    eval_env = build_env(cfg, evaluation=True)
    agent, state = load_agent(run, cfg, eval_env.observation_space.shape, eval_env.action_space.shape[0],
                              torch_device)
    try:
        env_step = int(state["counters"]["env_step"])
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"checkpoint {run.checkpoint_path} has no env_step counter") from None
    path = run.video_path(env_step, final=True) if video else None
    returns = evaluate(agent, eval_env, episodes, cfg.seed, eval_index=10**6, video_path=path)
    result = dict(run_dir=str(run), env_step=env_step, returns=returns,
                  mean=float(np.mean(returns)), std=float(np.std(returns)), video=str(path) if path else None)
    print(f"{cfg.task} @ {env_step} env steps: return {result['mean']:.1f} ± {result['std']:.1f} "
          f"over {episodes} episodes" + (f"; video {path}" if path else ""))
    print(json.dumps(result))
    return result
