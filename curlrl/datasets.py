"""Offline datasets of pixel episodes: collect them from DMC, load and check them, sample stacks.

A dataset is a folder::

    manifest.json          task, image_size, action_repeat, frame_stack of the policy, episodes,
                           transitions, state_names, policy, seed (rewritten after every episode)
    episode_00000.npz      pixels (T+1, 3, H, W) uint8   single frames, not stacks
                           state  (T+1, S) float32       true physics state (probe targets)
                           action (T, A) float32         in [-1, 1]
                           reward (T,) float32           summed over the action repeat
    ...

Every file is written to a hidden temp file and renamed, so a killed ``collect`` leaves
only whole episodes (and a manifest that counts them). Loading ignores hidden files.
"""
from __future__ import annotations

import json
import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from curlrl.checkpoint import atomic_write_text
from curlrl.errors import ConfigError, DatasetError
from curlrl.jobs.progress import progress_bar

MANIFEST = "manifest.json"
KEYS = ("pixels", "state", "action", "reward")


def write_json_atomic(path: Path, data: Any) -> None:
    """JSON to a hidden temp file in the same folder, then rename over ``path``."""
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def save_episode(path: Path, pixels: np.ndarray, state: np.ndarray, action: np.ndarray,
                 reward: np.ndarray) -> None:
    """One episode as a compressed ``.npz``, atomically (temp file + fsync + rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        np.savez_compressed(fh, pixels=pixels.astype(np.uint8), state=state.astype(np.float32),
                            action=action.astype(np.float32), reward=reward.astype(np.float32))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _state_names(env) -> list[str]:
    """Names of the flattened ``info["state"]`` entries, e.g. ``position[0]``."""
    try:
        spec = env.unwrapped._env.observation_spec()
    except AttributeError:
        return []
    names = []
    for key, arr in spec.items():
        size = int(np.prod(arr.shape)) if arr.shape else 1
        names += [key] if size == 1 else [f"{key}[{i}]" for i in range(size)]
    return names


def collect(task: str, episodes: int, out: str | Path, policy: str = "random", image_size: int | None = None,
            action_repeat: int | None = None, seed: int = 0, quiet: bool = False) -> dict:
    """Collect ``episodes`` episodes of ``task`` into ``out`` (see the module docstring).

    ``policy`` is ``"random"`` (uniform actions in [-1, 1]) or a train run directory, whose
    agent acts with sampled actions on frame stacks; its image size, action repeat and
    frame stack are used (passing other values is an error). Returns the manifest.
    """
    from curlrl.jobs import config as config_mod
    from curlrl.envs import make_env

    if episodes < 1:
        raise ConfigError(f"episodes must be >= 1, got {episodes}")
    out = Path(out)
    if (out / MANIFEST).exists() or any(out.glob("episode_*.npz")):
        raise ConfigError(f"{out} already holds a dataset; choose another folder")
    run_cfg, frame_stack = None, 1
    if policy != "random":
        run_cfg = _policy_config(policy, task, image_size, action_repeat)
        frame_stack, image_size, action_repeat = run_cfg.frame_stack, run_cfg.image_size, run_cfg.action_repeat
    if action_repeat is None:
        action_repeat = int(config_mod.task_config(task).get("action_repeat", 1))
    image_size = image_size or 100
    if image_size < 1 or action_repeat < 1:
        raise ConfigError(f"image_size and action_repeat must be >= 1, got {image_size} and {action_repeat}")
    env = make_env(task, image_size, action_repeat, frame_stack, seed=seed)
    agent = _policy_agent(policy, run_cfg, env) if run_cfg is not None else None
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    manifest = dict(task=task, image_size=image_size, action_repeat=action_repeat,
                    frame_stack=frame_stack if agent is not None else None,
                    policy="random" if agent is None else str(Path(policy).resolve()), seed=seed,
                    episodes=0, episodes_requested=episodes, transitions=0, state_names=_state_names(env),
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
        save_episode(out / f"episode_{ep:05d}.npz", np.stack(pixels), np.stack(states),
                     np.stack(actions), np.asarray(rewards, dtype=np.float32))
        returns.append(float(np.sum(rewards)))
        manifest.update(episodes=ep + 1, transitions=manifest["transitions"] + len(actions),
                        mean_return=float(np.mean(returns)), complete=ep + 1 == episodes)
        write_json_atomic(out / MANIFEST, manifest)
        bar.update(1)
        bar.set_postfix(ret=f"{returns[-1]:.1f}", refresh=False)
    bar.close()
    if not quiet:
        print(f"curlrl: wrote {episodes} episodes ({manifest['transitions']} transitions, "
              f"mean return {manifest['mean_return']:.1f}) to {out}")
    return manifest


def _policy_config(run_dir: str, task: str, image_size: int | None, action_repeat: int | None):
    """The TrainConfig of a train run used as the collecting policy (checked against the task)."""
    from curlrl.jobs import config as config_mod

    cfg_path = Path(run_dir) / "config.yaml"
    if not cfg_path.is_file():
        raise ConfigError(f"policy {run_dir} is neither 'random' nor a curlrl train run directory (no config.yaml)")
    cfg = config_mod.resolve(None, base=config_mod.load_yaml(cfg_path), overrides=["device=cpu"])
    if cfg.task != task:
        raise ConfigError(f"policy {run_dir} was trained on {cfg.task}, not {task}")
    for name, given, used in (("image_size", image_size, cfg.image_size),
                              ("action_repeat", action_repeat, cfg.action_repeat)):
        if given is not None and given != used:
            raise ConfigError(f"{name} {given} differs from the policy's {used} (from {cfg_path})")
    return cfg


def _policy_agent(run_dir: str, cfg, env):
    """The trained agent of a train run, on the CPU (loaded as ``curlrl eval`` does)."""
    import torch

    from curlrl.checkpoint import safe_load
    from curlrl.errors import CheckpointError
    from curlrl.jobs.train import build_agent

    path = Path(run_dir) / "checkpoints" / "latest.pt"
    state = safe_load(path)
    torch.manual_seed(0)
    agent = build_agent(cfg, env.observation_space.shape, env.action_space.shape[0], torch.device("cpu"),
                        from_checkpoint=True)
    try:
        agent.load_state_dict(state["agent"])
    except (KeyError, RuntimeError, TypeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"checkpoint {path} does not match its run's config ({first})") from None
    return agent


# -- loading ---------------------------------------------------------------------------
@dataclass
class Episodes:
    """A loaded dataset: all episodes' frames concatenated, with episode boundaries.

    ``frames`` (N, 3, H, W) uint8; ``state`` (N, S) float32; ``episode`` (N,) episode
    index of each frame; ``start`` / ``end`` (E,) first / one-past-last frame index of
    each episode; ``names`` (E,) file names; ``manifest`` the manifest (or {}).
    """

    frames: np.ndarray
    state: np.ndarray
    episode: np.ndarray
    start: np.ndarray
    end: np.ndarray
    names: list[str]
    manifest: dict

    @property
    def image_size(self) -> int:
        return int(self.frames.shape[-1])

    def stacks(self, index: np.ndarray, frame_stack: int) -> np.ndarray:
        """(B, 3 * frame_stack, H, W) uint8 stacks ending at frame ``index`` (oldest first).

        Stacks never cross episodes: at an episode's start the first frame is repeated,
        as the env does at reset.
        """
        index = np.asarray(index)
        back = np.arange(frame_stack - 1, -1, -1)
        idx = np.maximum(index[:, None] - back[None, :], self.start[self.episode[index]][:, None])
        b, (c, h, w) = len(index), self.frames.shape[1:]
        return self.frames[idx].reshape(b, frame_stack * c, h, w)

    def frame_indices(self, episodes: np.ndarray) -> np.ndarray:
        """All frame indices of the given episodes."""
        return np.concatenate([np.arange(self.start[e], self.end[e]) for e in episodes]) \
            if len(episodes) else np.zeros(0, dtype=np.int64)


def _fail(path: Path, why: str) -> DatasetError:
    return DatasetError(f"dataset episode {path} {why}")


def load_episode(path: Path) -> dict[str, np.ndarray]:
    """One episode's arrays, checked for keys, dtypes and consistent lengths."""
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in KEYS if k not in data.files]
            if missing:
                raise _fail(path, f"lacks {', '.join(missing)} (has {', '.join(data.files) or 'nothing'})")
            arrays = {k: data[k] for k in KEYS}
    except DatasetError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError, zlib.error) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _fail(path, f"is corrupt or truncated ({first})") from None
    px, st, ac, rw = (arrays[k] for k in KEYS)
    if px.dtype != np.uint8 or px.ndim != 4 or px.shape[1] != 3:
        raise _fail(path, f"has pixels {px.dtype} {px.shape}, expected uint8 (T+1, 3, H, W)")
    t = px.shape[0] - 1
    if t < 1:
        raise _fail(path, "has no transitions")
    if st.ndim != 2 or st.shape[0] != t + 1:
        raise _fail(path, f"has state {st.shape}, expected ({t + 1}, S) for {t + 1} frames")
    if ac.ndim != 2 or ac.shape[0] != t or rw.shape != (t,):
        raise _fail(path, f"has action {ac.shape} / reward {rw.shape}, expected ({t}, A) / ({t},)")
    return arrays


def load_dataset(data_dir: str | Path) -> Episodes:
    """Load every ``*.npz`` episode of ``data_dir``; DatasetError on any problem."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DatasetError(f"dataset directory {data_dir} does not exist")
    paths = sorted(p for p in data_dir.glob("*.npz") if not p.name.startswith("."))
    if not paths:
        raise DatasetError(f"dataset directory {data_dir} holds no episodes (*.npz); "
                           f"make one with `curlrl collect TASK --episodes N --out {data_dir}`")
    manifest = {}
    if (data_dir / MANIFEST).is_file():
        try:
            manifest = json.loads((data_dir / MANIFEST).read_text())
        except (OSError, ValueError):
            raise DatasetError(f"{data_dir / MANIFEST} is not valid JSON") from None
    frames, states, lengths, first = [], [], [], None
    for path in paths:
        arr = load_episode(path)
        shapes = dict(frame=arr["pixels"].shape[1:], state=arr["state"].shape[1:], action=arr["action"].shape[1:])
        if first is None:
            first = (path, shapes)
        elif shapes != first[1]:
            diff = [f"{k} {tuple(shapes[k])} vs {tuple(first[1][k])}" for k in shapes if shapes[k] != first[1][k]]
            raise DatasetError(f"dataset episodes have mismatched shapes: {path.name} and {first[0].name} "
                               f"differ in {'; '.join(diff)}")
        frames.append(arr["pixels"])
        states.append(arr["state"].astype(np.float32))
        lengths.append(len(arr["pixels"]))
    if manifest.get("image_size") not in (None, frames[0].shape[-1]):
        raise DatasetError(f"{data_dir / MANIFEST} says image_size {manifest['image_size']} but the "
                           f"episodes hold {frames[0].shape[-1]}x{frames[0].shape[-1]} frames")
    end = np.cumsum(lengths)
    start = end - np.asarray(lengths)
    episode = np.repeat(np.arange(len(paths)), lengths)
    return Episodes(np.concatenate(frames), np.concatenate(states), episode, start, end,
                    [p.name for p in paths], manifest)


def split_episodes(num_episodes: int, holdout: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) episode indices, split by episode with a seeded permutation.

    ``pretrain`` and ``probe`` use the same call, so by default the probe's held-out
    episodes were never seen by pretraining either.
    """
    if not 0.0 <= holdout < 1.0:
        raise ConfigError(f"holdout fraction must be in [0, 1), got {holdout}")
    n_test = int(round(holdout * num_episodes))
    if holdout > 0:
        n_test = min(max(n_test, 1), num_episodes - 1)
    perm = np.random.default_rng(seed).permutation(num_episodes)
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])
