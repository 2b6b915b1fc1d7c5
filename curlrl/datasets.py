"""Offline datasets of pixel episodes: the format, writing and loading it, sampling stacks.

Pure numpy (core): :func:`curlrl.jobs.collect.collect` makes datasets from DMC with this module.

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

:func:`load_dataset` also reads outside pixel data (videos, image folders, V-D4RL files)
through :mod:`curlrl.readers`; those have no true state, and actions/rewards only where the
source has them.
"""
from __future__ import annotations

import json
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from curlrl.checkpoint import atomic_file, atomic_write_text
from curlrl.errors import ConfigError, DatasetError, first_line, write_error

MANIFEST = "manifest.json"
KEYS = ("pixels", "state", "action", "reward")


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    """(Re)write ``folder/manifest.json`` atomically; a dataset's writer calls it after every episode."""
    try:
        atomic_write_text(Path(folder) / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    except OSError as exc:
        raise write_error(Path(folder) / MANIFEST, exc) from None


def holds_dataset(folder: str | Path) -> bool:
    """Whether ``folder`` already holds a dataset (a manifest or any episode file)."""
    folder = Path(folder)
    return (folder / MANIFEST).exists() or any(folder.glob("episode_*.npz"))


def episode_path(folder: Path, index: int) -> Path:
    """``folder/episode_00012.npz``: episode files sort in collection order."""
    return Path(folder) / f"episode_{index:05d}.npz"


def save_episode(path: Path, pixels: np.ndarray, state: np.ndarray, action: np.ndarray,
                 reward: np.ndarray) -> None:
    """One episode as a compressed ``.npz``, atomically (temp file + fsync + rename)."""
    try:
        with atomic_file(path, "wb") as fh:
            np.savez_compressed(fh, pixels=pixels.astype(np.uint8), state=state.astype(np.float32),
                                action=action.astype(np.float32), reward=reward.astype(np.float32))
    except OSError as exc:  # the dataset keeps its whole episodes; this one leaves no temp file
        raise write_error(path, exc) from None


# -- loading ---------------------------------------------------------------------------
@dataclass
class Episodes:
    """A loaded dataset: all episodes' frames concatenated, with episode boundaries.

    ``frames`` (N, 3, H, W) uint8; ``state`` (N, S) float32, or None when the source has no
    true state; ``episode`` (N,) episode index of each frame; ``start`` / ``end`` (E,) first /
    one-past-last frame index of each episode; ``names`` (E,) file names; ``manifest`` the
    manifest (or, for outside data, its format and resize rule). ``action`` (N, A) and
    ``reward`` (N,) float32, where the source has them: row f holds the action taken after
    frame f and the reward for it (NaN on each episode's last frame); otherwise None.
    """

    frames: np.ndarray
    state: np.ndarray | None
    episode: np.ndarray
    start: np.ndarray
    end: np.ndarray
    names: list[str]
    manifest: dict
    action: np.ndarray | None = None
    reward: np.ndarray | None = None
    source: np.ndarray | None = None  # (E,) which dataset each episode came from (concat_datasets)

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
        first = first_line(exc)
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


def _per_frame(per_transition: list[np.ndarray]) -> np.ndarray:
    """Per-episode (T, ...) arrays -> one (sum of T+1, ...) array aligned with the frames, the
    row of each episode's last frame NaN."""
    rows = [np.concatenate([a.astype(np.float32), np.full((1, *a.shape[1:]), np.nan, np.float32)])
            for a in per_transition]
    return np.concatenate(rows)


def _assemble(frames: list[np.ndarray], names: list[str], manifest: dict, states=None, actions=None,
              rewards=None) -> Episodes:
    lengths = [len(f) for f in frames]
    end = np.cumsum(lengths)
    start = end - np.asarray(lengths)
    episode = np.repeat(np.arange(len(frames)), lengths)
    return Episodes(np.concatenate(frames), None if states is None else np.concatenate(states), episode, start,
                    end, names, manifest, None if actions is None else _per_frame(actions),
                    None if rewards is None else _per_frame(rewards))


def load_dataset(data_dir: str | Path, format: str = "auto", image_size: int = 0) -> Episodes:
    """Load a dataset folder of any format in :data:`curlrl.readers.FORMATS` (``"auto"``:
    detected from the folder); DatasetError on any problem, naming the file.

    ``image_size`` > 0 brings every frame to that size by :data:`curlrl.readers.RESIZE_RULE`;
    0 keeps the stored size (outside data must then be square and of one size)."""
    from curlrl import readers

    data_dir = Path(data_dir)
    fmt = readers.detect_format(data_dir) if format == "auto" else format
    if fmt not in readers.FORMATS:
        raise DatasetError(f"dataset format {format!r} is not one of auto, {', '.join(readers.FORMATS)}")
    if fmt == "curlrl":
        data = _load_curlrl(data_dir)
        if image_size and image_size != data.image_size:
            data.frames = readers.fit_frames(data.frames.transpose(0, 2, 3, 1), image_size)
            data.manifest = dict(data.manifest, image_size=image_size, resize=readers.RESIZE_RULE)
        return data
    episodes = readers.read_episodes(data_dir, fmt, image_size)
    with_actions = all(e.action is not None for e in episodes)
    manifest = dict(format=fmt, image_size=int(episodes[0].frames.shape[-1]), resize=readers.RESIZE_RULE,
                    episodes=len(episodes))
    return _assemble([e.frames for e in episodes], [e.name for e in episodes], manifest,
                     actions=[e.action for e in episodes] if with_actions else None,
                     rewards=[e.reward for e in episodes] if with_actions else None)


def _load_curlrl(data_dir: Path) -> Episodes:
    """Every ``*.npz`` episode of a folder ``curlrl collect`` wrote."""
    if not data_dir.is_dir():
        raise DatasetError(f"dataset directory {data_dir} does not exist")
    paths = sorted(p for p in data_dir.glob("*.npz") if not p.name.startswith("."))
    if not paths:
        raise DatasetError(f"dataset directory {data_dir} holds no episodes (*.npz); "
                           f"collect some into it first (curlrl collect)")
    manifest = {}
    if (data_dir / MANIFEST).is_file():
        try:
            manifest = json.loads((data_dir / MANIFEST).read_text())
        except (OSError, ValueError):
            raise DatasetError(f"{data_dir / MANIFEST} is not valid JSON") from None
    frames, states, actions, rewards, first = [], [], [], [], None
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
        actions.append(arr["action"])
        rewards.append(arr["reward"])
    if manifest.get("image_size") not in (None, frames[0].shape[-1]):
        raise DatasetError(f"{data_dir / MANIFEST} says image_size {manifest['image_size']} but the "
                           f"episodes hold {frames[0].shape[-1]}x{frames[0].shape[-1]} frames")
    return _assemble(frames, [p.name for p in paths], manifest, states, actions, rewards)


def concat_datasets(parts: list[Episodes], labels: list[str]) -> Episodes:
    """Several loaded datasets as one (frames must have one size: load them with one
    ``image_size``). ``source`` (E,) gives each episode's dataset; episode names are
    prefixed with its label. State, actions and rewards stay only if every part has them,
    with one shape."""
    if len(parts) == 1:
        return parts[0]
    sizes = {p.frames.shape[1:] for p in parts}
    if len(sizes) > 1:
        listed = ", ".join(f"{lab}: {p.image_size}x{p.image_size}" for lab, p in zip(labels, parts))
        raise DatasetError(f"the datasets have different frame sizes ({listed}); give one image size for all")

    def joined(key: str):
        arrays = [getattr(p, key) for p in parts]
        if any(a is None for a in arrays) or len({a.shape[1:] for a in arrays}) > 1:
            return None
        return np.concatenate(arrays)

    lengths = [len(p.frames) for p in parts]
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    counts = [len(p.names) for p in parts]
    first_episode = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return Episodes(
        frames=np.concatenate([p.frames for p in parts]), state=joined("state"),
        episode=np.concatenate([p.episode + e for p, e in zip(parts, first_episode)]),
        start=np.concatenate([p.start + o for p, o in zip(parts, offsets)]),
        end=np.concatenate([p.end + o for p, o in zip(parts, offsets)]),
        names=[f"{lab}/{n}" for lab, p in zip(labels, parts) for n in p.names],
        manifest=dict(sources={lab: p.manifest for lab, p in zip(labels, parts)}),
        action=joined("action"), reward=joined("reward"),
        source=np.repeat(np.arange(len(parts)), counts))


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
