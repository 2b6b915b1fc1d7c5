"""Replay buffer that stores every rendered frame once.

The env returns stacks of the last ``frame_stack`` frames; consecutive stacks share all
but one frame, so storing obs and next_obs stacks (as the reference code does) keeps
2 × frame_stack copies of each frame. Here each frame is written once into a ring of
frames, and a transition keeps the absolute index of its obs' newest frame and that
frame's position in its episode. Stacks are rebuilt at sampling time by indexing; a
stack never reaches across an episode start: frames before the first one repeat the
first frame, exactly as the env pads its stack at reset.

With ``compress=True`` each frame is kept LZ4-compressed (lossless; rendered DMC frames
shrink ~1.4-2.5x, see benchmarks/README.md) and decompressed when sampled, which costs a
few ms per batch.
"""
from __future__ import annotations

import functools
import json
import math
import os
import sys
from pathlib import Path

import numpy as np

from curlrl.errors import CheckpointError


class ReplayBuffer:
    """Uniform replay of pixel transitions, one stored frame per transition.

    Args:
        capacity: transitions kept (the oldest are dropped first).
        frame_shape: (3, H, W) of one rendered frame (uint8).
        action_dim: size of the (float32) action vector.
        frame_stack: frames per observation; obs are (3 * frame_stack, H, W).
        seed: seed of the sampling generator.
        compress: keep frames LZ4-compressed in memory (needs the ``lz4`` package).

    The frame ring holds ``capacity + capacity // 100 + frame_stack + 1`` frames: an
    episode of T transitions needs T + 1 frames, so the ring keeps ``capacity``
    transitions for episodes of 100 transitions or more (every DMC task at action
    repeat ≤ 8 qualifies) and a few fewer for shorter episodes.
    """

    def __init__(self, capacity: int, frame_shape: tuple[int, int, int], action_dim: int,
                 frame_stack: int = 3, seed: int = 0, compress: bool = False) -> None:
        if capacity < 1:
            raise ValueError(f"replay capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.frame_shape = tuple(int(v) for v in frame_shape)
        self.action_dim = int(action_dim)
        self.frame_stack = int(frame_stack)
        self.num_frames = self.capacity + self.capacity // 100 + self.frame_stack + 1
        self.compress = bool(compress)
        if self.compress:
            _lz4_block()  # fail here, not at the first add, when lz4 is missing
            self.frames: np.ndarray | list[bytes] = [b""] * self.num_frames
        else:
            self.frames = np.zeros((self.num_frames, *self.frame_shape), dtype=np.uint8)
        self.t_frame = np.zeros(self.capacity, dtype=np.int64)  # abs index of obs' newest frame
        self.t_pos = np.zeros(self.capacity, dtype=np.int32)    # its position in the episode
        self.action = np.zeros((self.capacity, self.action_dim), dtype=np.float32)
        self.reward = np.zeros(self.capacity, dtype=np.float32)
        self.not_done = np.zeros(self.capacity, dtype=np.float32)  # 0 only on termination
        self.frames_written = 0
        self.transitions_written = 0
        self.first_valid = 0
        self.episode_open = False  # does the next add continue the current episode?
        self._pos = 0  # position in its episode of the newest stored frame
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self.transitions_written - self.first_valid

    @property
    def nbytes(self) -> int:
        """Bytes held by the buffer (compressed: the bytes objects and the list's pointers)."""
        arrays = (self.t_frame, self.t_pos, self.action, self.reward, self.not_done)
        if self.compress:
            frames = sum(sys.getsizeof(f) for f in self.frames) + 8 * len(self.frames)
        else:
            frames = self.frames.nbytes
        return frames + sum(a.nbytes for a in arrays)

    def _write_frame(self, frame: np.ndarray) -> int:
        idx = self.frames_written
        self.frames[idx % self.num_frames] = _pack(frame) if self.compress else frame
        self.frames_written += 1
        return idx

    def _newest_frame(self) -> np.ndarray:
        newest = self.frames[(self.frames_written - 1) % self.num_frames]
        return _unpack(newest, self.frame_shape) if self.compress else newest

    def _decompress(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each distinct ring slot decompressed once: (frames, index of each slot in frames)."""
        unique, inverse = np.unique(slots, return_inverse=True)
        out = np.empty((len(unique), *self.frame_shape), dtype=np.uint8)
        for i, slot in enumerate(unique.tolist()):
            out[i] = _unpack(self.frames[slot], self.frame_shape)
        return out, inverse.reshape(slots.shape)

    def add(self, obs: np.ndarray, action: np.ndarray, reward: float, next_obs: np.ndarray,
            terminated: bool, truncated: bool) -> None:
        """Add one transition; obs and next_obs are (3k, H, W) uint8 stacks.

        Only the newest frame of each stack is stored (plus the first frame of an
        episode). A time-limit truncation keeps ``not_done = 1`` so the critic
        bootstraps through it; only a true termination sets it to 0.
        """
        c = self.frame_shape[0]
        if self.episode_open:
            if not np.array_equal(obs[-c:], self._newest_frame()):
                raise ValueError("replay.add: obs does not continue the previous next_obs; "
                                 "end the episode (terminated/truncated) before starting another")
            obs_idx, pos = self.frames_written - 1, self._pos
        else:
            obs_idx, pos = self._write_frame(obs[-c:]), 0
        self._write_frame(next_obs[-c:])
        self._pos = pos + 1
        ring = self.transitions_written % self.capacity
        self.t_frame[ring], self.t_pos[ring] = obs_idx, pos
        self.action[ring] = action
        self.reward[ring] = reward
        self.not_done[ring] = 0.0 if terminated else 1.0
        self.transitions_written += 1
        self.episode_open = not (terminated or truncated)
        self._advance_first_valid()

    def end_episode(self) -> None:
        """Close the current episode (the next add starts a new one), e.g. on resume."""
        self.episode_open = False

    def _oldest_frame(self, t: int) -> int:
        ring = t % self.capacity
        return int(self.t_frame[ring]) - min(self.frame_stack - 1, int(self.t_pos[ring]))

    def _advance_first_valid(self) -> None:
        # Valid transitions are a suffix: their oldest frame is still in the ring.
        lowest_frame = self.frames_written - self.num_frames
        while self.first_valid < self.transitions_written and (
                self.first_valid < self.transitions_written - self.capacity
                or self._oldest_frame(self.first_valid) < lowest_frame):
            self.first_valid += 1

    def _stack_indices(self, newest: np.ndarray, pos: np.ndarray) -> np.ndarray:
        back = np.arange(self.frame_stack - 1, -1, -1)
        return (newest[:, None] - np.minimum(back[None, :], pos[:, None])) % self.num_frames

    def sample(self, batch_size: int) -> dict[str, np.ndarray]:
        """Sample transitions uniformly.

        Returns a dict of numpy arrays: ``obs`` and ``next_obs`` (B, 3k, H, W) uint8,
        ``action`` (B, A) float32, ``reward`` (B, 1), ``not_done`` (B, 1) float32.
        """
        if len(self) == 0:
            raise ValueError("replay.sample: the buffer is empty")
        t = self.rng.integers(self.first_valid, self.transitions_written, size=batch_size)
        ring = t % self.capacity
        newest, pos = self.t_frame[ring], self.t_pos[ring].astype(np.int64)
        b, (h, w) = batch_size, self.frame_shape[1:]
        obs_slots = self._stack_indices(newest, pos)
        next_slots = self._stack_indices(newest + 1, pos + 1)
        if self.compress:  # obs and next_obs share frame_stack - 1 frames: decompress each once
            frames, where = self._decompress(np.concatenate([obs_slots, next_slots], 1))
            obs, next_obs = frames[where[:, :self.frame_stack]], frames[where[:, self.frame_stack:]]
        else:
            obs, next_obs = self.frames[obs_slots], self.frames[next_slots]
        obs, next_obs = obs.reshape(b, -1, h, w), next_obs.reshape(b, -1, h, w)
        return dict(obs=obs, action=self.action[ring], reward=self.reward[ring, None],
                    next_obs=next_obs, not_done=self.not_done[ring, None])

    # -- persistence ---------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write the valid contents and counters to ``path`` (.npz) atomically.

        A compressed buffer writes its compressed frames; :meth:`load` reads either kind
        into either kind of buffer."""
        t0, t1 = self.first_valid, self.transitions_written
        f0 = self._oldest_frame(t0) if t1 > t0 else self.frames_written
        f_idx = np.arange(f0, self.frames_written) % self.num_frames
        t_idx = np.arange(t0, t1) % self.capacity
        meta = dict(capacity=self.capacity, frame_shape=self.frame_shape, action_dim=self.action_dim,
                    frame_stack=self.frame_stack, frames_written=self.frames_written,
                    transitions_written=t1, first_valid=t0, first_frame=f0,
                    episode_open=self.episode_open, pos=self._pos,
                    rng=self.rng.bit_generator.state)
        if self.compress:
            chunks = [self.frames[i] for i in f_idx.tolist()]
            frames = dict(frames_lz4=np.frombuffer(b"".join(chunks), dtype=np.uint8),
                          frame_sizes=np.array([len(c) for c in chunks], dtype=np.int64))
        else:
            frames = dict(frames=self.frames[f_idx])
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as fh:
            np.savez(fh, **frames, t_frame=self.t_frame[t_idx], t_pos=self.t_pos[t_idx],
                     action=self.action[t_idx], reward=self.reward[t_idx], not_done=self.not_done[t_idx],
                     meta=np.array(json.dumps(meta)))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    def load(self, path: str | os.PathLike) -> None:
        """Restore contents saved by :meth:`save` into this (same-shaped) buffer."""
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                names = ["t_frame", "t_pos", "action", "reward", "not_done"]
                names += ["frames_lz4", "frame_sizes"] if "frames_lz4" in data.files else ["frames"]
                arrays = {k: data[k] for k in names}
                frames = self._frames_from_file(arrays)
        except (OSError, ValueError, KeyError, EOFError) as exc:
            raise CheckpointError(f"replay file {path} is unreadable or corrupt ({exc})") from None
        mine = dict(capacity=self.capacity, frame_shape=list(self.frame_shape),
                    action_dim=self.action_dim, frame_stack=self.frame_stack)
        theirs = {k: meta[k] for k in mine}
        if theirs != mine:
            raise CheckpointError(f"replay file {path} has shape {theirs}, expected {mine}")
        f0, t0 = meta["first_frame"], meta["first_valid"]
        slots = np.arange(f0, meta["frames_written"]) % self.num_frames
        if len(frames) != len(slots):
            raise CheckpointError(f"replay file {path} is corrupt ({len(frames)} frames, expected {len(slots)})")
        if self.compress:
            for slot, chunk in zip(slots.tolist(), frames):
                self.frames[slot] = chunk
            if len(frames):  # the newest frame is decoded by the next add(): check it now
                try:
                    _unpack(frames[-1], self.frame_shape)
                except ValueError as exc:
                    raise CheckpointError(f"replay file {path} is corrupt ({exc})") from None
        else:
            self.frames[slots] = frames
        t_idx = np.arange(t0, meta["transitions_written"]) % self.capacity
        for name in ("t_frame", "t_pos", "action", "reward", "not_done"):
            getattr(self, name)[t_idx] = arrays[name]
        self.frames_written, self.transitions_written = meta["frames_written"], meta["transitions_written"]
        self.first_valid, self.episode_open, self._pos = t0, meta["episode_open"], meta["pos"]
        self.rng.bit_generator.state = meta["rng"]

    def _frames_from_file(self, arrays: dict[str, np.ndarray]) -> np.ndarray | list[bytes]:
        """Saved frames in this buffer's storage: a uint8 array, or a list of LZ4 chunks."""
        if "frames" in arrays:
            raw = arrays["frames"]
            if raw.shape[1:] != self.frame_shape:
                raise ValueError(f"frames of shape {raw.shape[1:]}")
            return [_pack(f) for f in raw] if self.compress else raw
        ends = np.cumsum(arrays["frame_sizes"]).tolist()
        blob = arrays["frames_lz4"].tobytes()
        chunks = [blob[a:b] for a, b in zip([0, *ends[:-1]], ends)]
        if self.compress:
            return chunks
        raw = np.empty((len(chunks), *self.frame_shape), dtype=np.uint8)
        for i, chunk in enumerate(chunks):
            raw[i] = _unpack(chunk, self.frame_shape)
        return raw


@functools.cache
def _lz4_block():
    """The ``lz4.block`` module (a curlrl dependency), with a clear error when it is missing."""
    try:
        import lz4.block
    except ImportError:
        raise ImportError("replay compression needs the lz4 package: pip install lz4") from None
    return lz4.block


def _pack(frame: np.ndarray) -> bytes:
    """One uint8 frame as an LZ4 block (no size header: the frame shape gives it)."""
    return _lz4_block().compress(np.ascontiguousarray(frame, dtype=np.uint8).tobytes(), store_size=False)


def _unpack(chunk: bytes, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`_pack`; ValueError when ``chunk`` is not a frame of ``shape``."""
    lz4 = _lz4_block()
    try:
        raw = lz4.decompress(chunk, uncompressed_size=math.prod(shape))
    except lz4.LZ4BlockError as exc:
        raise ValueError(f"a frame does not decompress: {exc}") from None
    return np.frombuffer(raw, dtype=np.uint8).reshape(shape)
