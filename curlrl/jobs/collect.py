"""Collect an offline dataset from a DMC task (format: :mod:`curlrl.datasets`).

The acting policy is uniform random actions or the agent of a train run (loaded through
:class:`curlrl.jobs.rundir.RunDir`, as evaluation loads it).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from curlrl.datasets import episode_path, holds_dataset, save_episode, write_manifest
from curlrl.errors import ConfigError
from curlrl.jobs import config as config_mod
from curlrl.jobs.progress import progress_bar
from curlrl.jobs.rundir import RunDir


def collect(task: str, episodes: int, out: str | Path, policy: str = "random", image_size: int | None = None,
            action_repeat: int | None = None, seed: int = 0, quiet: bool = False) -> dict:
    """Collect ``episodes`` episodes of ``task`` into the folder ``out``; returns the manifest.

    ``policy`` is ``"random"`` (uniform actions in [-1, 1]) or a train run directory, whose
    agent acts with sampled actions on frame stacks; its image size, action repeat and
    frame stack are used (passing other values is an error). Without a policy,
    ``image_size`` defaults to 100 and ``action_repeat`` to the task's (configs/<task>.yaml).
    """
    from curlrl.envs import make_env

    if episodes < 1:
        raise ConfigError(f"episodes must be >= 1, got {episodes}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output folder {out} is a file")
    if holds_dataset(out):
        raise ConfigError(f"{out} already holds a dataset; choose another folder")
    run_cfg, frame_stack = None, 1
    if policy != "random":
        run_cfg = _policy_config(policy, task, image_size, action_repeat)
        frame_stack, image_size, action_repeat = run_cfg.frame_stack, run_cfg.image_size, run_cfg.action_repeat
    if action_repeat is None:
        action_repeat = int(config_mod.task_config(task).get("action_repeat", 1))
    image_size = 100 if image_size is None else image_size
    if image_size < 1 or action_repeat < 1:
        raise ConfigError(f"image_size and action_repeat must be >= 1, got {image_size} and {action_repeat}")
    env = make_env(task, image_size, action_repeat, frame_stack, seed=seed)
    agent = _policy_agent(policy, run_cfg, env, seed) if run_cfg is not None else None
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    manifest = dict(task=task, image_size=image_size, action_repeat=action_repeat,
                    frame_stack=frame_stack if agent is not None else None,
                    policy="random" if agent is None else str(Path(policy).resolve()), seed=seed,
                    episodes=0, episodes_requested=episodes, transitions=0, state_names=env.state_names,
                    complete=False)
    bar = progress_bar(episodes, "episode", quiet)
    returns = []
    for ep in range(episodes):
        obs, info = env.reset(seed=seed * 1_000_003 + ep)
        pixels, states, actions, rewards = [obs[-3:]], [info["state"]], [], []
        done = False
        while not done:
            if agent is None:
                action = rng.uniform(-1.0, 1.0, env.action_space.shape).astype(np.float32)
            else:
                action = agent.act(obs, sample=True).astype(np.float32)
            obs, reward, terminated, truncated, info = env.step(action)
            pixels.append(obs[-3:])  # the newest frame of the stack
            states.append(info["state"])
            actions.append(action)
            rewards.append(reward)
            done = terminated or truncated
        save_episode(episode_path(out, ep), np.stack(pixels), np.stack(states),
                     np.stack(actions), np.asarray(rewards, dtype=np.float32))
        returns.append(float(np.sum(rewards)))
        manifest.update(episodes=ep + 1, transitions=manifest["transitions"] + len(actions),
                        mean_return=float(np.mean(returns)), complete=ep + 1 == episodes)
        write_manifest(out, manifest)
        bar.update(1)
        bar.set_postfix(ret=f"{returns[-1]:.1f}", refresh=False)
    bar.close()
    env.close()
    if not quiet:
        print(f"curlrl: wrote {episodes} episodes ({manifest['transitions']} transitions, "
              f"mean return {manifest['mean_return']:.1f}) to {out}")
    return manifest


def _policy_config(run_dir: str, task: str, image_size: int | None, action_repeat: int | None):
    """The TrainConfig of a train run used as the collecting policy (checked against the task)."""
    run = RunDir(run_dir)
    if not run.is_run():
        raise ConfigError(f"policy {run_dir} is neither 'random' nor a curlrl train run directory "
                          f"(no {RunDir.CONFIG})")
    cfg = config_mod.resolve(None, base=run.read_config(), overrides=["device=cpu"])
    if cfg.task != task:
        raise ConfigError(f"policy {run_dir} was trained on {cfg.task}, not {task}")
    for name, given, used in (("image_size", image_size, cfg.image_size),
                              ("action_repeat", action_repeat, cfg.action_repeat)):
        if given is not None and given != used:
            raise ConfigError(f"{name} {given} differs from the policy's {used} (from {run.config_path})")
    return cfg


def _policy_agent(run_dir: str, cfg, env, seed: int):
    """The trained agent of a train run, on the CPU; its sampled actions are seeded by ``seed``."""
    import torch

    from curlrl.jobs.train import load_agent

    agent, _ = load_agent(RunDir(run_dir), cfg, env.observation_space.shape, env.action_space.shape[0],
                          torch.device("cpu"))
    torch.manual_seed(seed)  # the policy noise comes from torch's global RNG
    return agent
