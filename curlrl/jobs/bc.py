"""Behaviour cloning from a frozen encoder: the representation test of R3M / VC-1 (CortexBench).

A small policy (MLP on the frozen encoder's features of centre-cropped frame stacks) is
fitted to the actions of ``demos`` demonstration episodes of a dataset (``curlrl collect
--policy RUN`` makes expert-ish ones; V-D4RL's have actions too), then rolled out in the
DeepMind Control task with the mean action. Each seed re-initialises and re-fits the policy
and runs its own evaluation episodes; the report gives the per-seed mean returns, their mean
and a 95% bootstrap confidence interval over seeds.

Which demonstrations: the first ``demos`` episodes of the dataset in name order (collection
order for curlrl's datasets), the same for every seed and every encoder compared.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from curlrl.augment import center_crop
from curlrl.checkpoint import atomic_write_text
from curlrl.errors import ConfigError, DatasetError
from curlrl.jobs.report import bootstrap_ci


def _policy(feature_dim: int, action_dim: int, hidden: int) -> nn.Module:
    return nn.Sequential(nn.Linear(feature_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, action_dim), nn.Tanh())


def behaviour_clone(spec: str, data_dir: str | Path, task: str | None = None, demos: int = 10,
                    episodes: int = 10, seeds: int = 3, steps: int = 2000, batch_size: int = 256,
                    lr: float = 1e-3, hidden_dim: int = 256, data_format: str = "auto", image_size: int = 0,
                    action_repeat: int | None = None, out: str | Path | None = None, threads: int = 0,
                    quiet: bool = False, frame_stack: int = 3, crop_size: int = 84, encoder_seed: int = 0) -> dict:
    """Fit and roll out a BC policy on the frozen encoder ``spec`` (as :func:`curlrl.jobs.probe.run_probe`
    takes it: a run dir, an export, ``"random"`` (``frame_stack``, ``crop_size``, ``encoder_seed``)
    or a bring-your-own factory); returns (and writes to ``out``/bc.json and bc.md) the results."""
    from curlrl.datasets import load_dataset
    from curlrl.envs import make_env
    from curlrl.jobs.episodes import episode_seed
    from curlrl.jobs.export import load_encoder

    for name, value, low in (("demos", demos, 1), ("episodes", episodes, 1), ("seeds", seeds, 1), ("steps", steps, 1),
                             ("batch_size", batch_size, 1), ("hidden_dim", hidden_dim, 1)):
        if value < low:
            raise ConfigError(f"{name} must be >= {low}, got {value}")
    if threads:
        torch.set_num_threads(threads)
    data = load_dataset(data_dir, data_format, image_size)
    if data.action is None:
        raise DatasetError(f"behaviour cloning needs actions, and dataset {data_dir} "
                           f"({data.manifest.get('format', 'curlrl')} format) has none")
    if demos > len(data.names):
        raise DatasetError(f"dataset {data_dir} holds {len(data.names)} episodes, fewer than demos={demos}")
    task = task or data.manifest.get("task")
    if not task:
        raise ConfigError(f"dataset {data_dir} does not name its task: give the task to roll the policy out in")
    repeat = action_repeat or data.manifest.get("action_repeat")
    if not repeat:
        raise ConfigError(f"dataset {data_dir} does not record its action repeat: give the one it was made with")
    if spec == "random":
        from curlrl.jobs.export import random_loaded

        loaded = random_loaded((3 * frame_stack, crop_size, crop_size), encoder_seed)
    else:
        loaded = load_encoder(spec)
    enc = loaded.encoder.eval().requires_grad_(False)
    c, size, _ = enc.obs_shape
    if size > data.image_size:
        raise DatasetError(f"the encoder's input crop ({size}) is larger than the dataset's frames "
                           f"({data.image_size}x{data.image_size})")
    from curlrl.jobs.probe import features

    frames = data.frame_indices(np.arange(demos))
    frames = frames[~np.isnan(data.action[frames]).any(1)]  # frames followed by an action
    x = torch.from_numpy(features(enc, data, frames)).float()
    y = torch.from_numpy(data.action[frames]).float()
    env = make_env(task, image_size=data.image_size, action_repeat=int(repeat), frame_stack=c // 3, seed=0)
    if env.action_space.shape[0] != y.shape[1]:
        raise DatasetError(f"the dataset's actions have {y.shape[1]} dimensions, {task}'s have "
                           f"{env.action_space.shape[0]}")
    per_seed, losses = [], []
    try:
        for seed in range(seeds):
            gen = torch.Generator().manual_seed(seed)
            with torch.random.fork_rng():
                torch.manual_seed(seed)
                policy = _policy(x.shape[1], y.shape[1], hidden_dim)
            opt = torch.optim.Adam(policy.parameters(), lr=lr)
            for _ in range(steps):
                i = torch.randint(0, len(x), (min(batch_size, len(x)),), generator=gen)
                loss = ((policy(x[i]) - y[i]) ** 2).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            losses.append(float(loss.detach()))
            returns = []
            for ep in range(episodes):
                obs, _ = env.reset(seed=episode_seed(seed, ep, salt=2))
                done, total = False, 0.0
                while not done:
                    with torch.no_grad():
                        z = enc(center_crop(torch.from_numpy(obs)[None], size))
                        action = policy(z.float())[0].numpy()
                    obs, reward, terminated, truncated, _ = env.step(action)
                    total += reward
                    done = terminated or truncated
                returns.append(total)
            per_seed.append(float(np.mean(returns)))
            if not quiet:
                print(f"curlrl bc: {loaded.source}: seed {seed}: return {per_seed[-1]:.1f} "
                      f"(train MSE {losses[-1]:.4f})")
    finally:
        env.close()
    lo, hi = bootstrap_ci(np.array(per_seed))
    result = dict(encoder=loaded.source, data_dir=str(data_dir), task=task, demos=demos,
                  demo_transitions=len(frames), episodes_per_seed=episodes, seeds=seeds, steps=steps,
                  per_seed_return=[round(r, 2) for r in per_seed], mean_return=round(float(np.mean(per_seed)), 2),
                  ci95=[round(lo, 2), round(hi, 2)], final_train_mse=[round(v, 5) for v in losses])
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "bc.md", markdown([result]))
        atomic_write_text(out / "bc.json", json.dumps(result, indent=2) + "\n")
    if not quiet:
        print(f"curlrl bc: {task}, {demos} demos: return {result['mean_return']:.1f} "
              f"[95% CI {lo:.1f}, {hi:.1f}] over {seeds} seeds x {episodes} episodes")
    return result


def markdown(results: list[dict]) -> str:
    lines = ["| encoder | task | demos | seeds x episodes | mean return | 95% CI (over seeds) |",
             "|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['encoder']} | {r['task']} | {r['demos']} | {r['seeds']} x {r['episodes_per_seed']} | "
                     f"{r['mean_return']:.1f} | [{r['ci95'][0]:.1f}, {r['ci95'][1]:.1f}] |")
    return "\n".join(lines) + "\n"
