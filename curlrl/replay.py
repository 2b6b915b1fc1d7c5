"""Replay buffers that store every rendered frame once.

The env returns stacks of the last ``frame_stack`` frames; consecutive stacks share all
but one frame, so storing obs and next_obs stacks (as the reference code does) keeps
2 × frame_stack copies of each frame. Here each frame is written once into a ring of
frames, and a transition keeps the absolute index of its obs' newest frame and that
frame's position in its episode. Stacks are rebuilt at sampling time by indexing; a
stack never reaches across an episode start: frames before the first one repeat the
first frame, exactly as the env pads its stack at reset.

Two storages share that bookkeeping (:class:`BaseReplayBuffer`) and give the same batch
for the same transition indices (:meth:`~BaseReplayBuffer.batch_at`):

- :class:`ReplayBuffer` keeps frames in host memory as numpy uint8, or LZ4-compressed
  with ``compress=True`` (lossless; rendered DMC frames shrink ~1.4-2.5x, see
  benchmarks/README.md, decompressed when sampled at a cost of a few ms per batch), and
  returns numpy batches.
- :class:`DeviceReplayBuffer` keeps frames on a torch device (a GPU: 100k transitions of
  3×100×100 frames ≈ 3 GB) and draws indices and assembles stacks there, returning
  torch batches on that device; the host only uploads one frame per step.

Both write the same ``.npz`` file; either storage loads a file written by either.
"""
from __future__ import annotations

import functools
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import torch

from curlrl.errors import CheckpointError

_TRANSITION_ARRAYS = ("t_frame", "t_pos", "action", "reward", "not_done")


class BaseReplayBuffer:
    """Bookkeeping shared by the replay storages: which frames make which transition.

    Holds, in host memory, the counters and the per-transition arrays (``t_frame``: the
    absolute index of the obs' newest frame; ``t_pos``: its position in its episode;
    ``action``, ``reward``, ``not_done``: 20 + 4 × action_dim bytes per transition). Subclasses store the
    frames and draw and assemble batches. Use :class:`ReplayBuffer` or
    :class:`DeviceReplayBuffer`.

    The frame ring holds ``capacity + capacity // 100 + frame_stack + 1`` frames: an
    episode of T transitions needs T + 1 frames, so the ring keeps ``capacity``
    transitions for episodes of 100 transitions or more (every DMC task at action
    repeat ≤ 8 qualifies) and a few fewer for shorter episodes.
    """

    def __init__(self, capacity: int, frame_shape: tuple[int, int, int], action_dim: int,
                 frame_stack: int = 3) -> None:
        if capacity < 1:
            raise ValueError(f"replay capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.frame_shape = tuple(int(v) for v in frame_shape)
        self.action_dim = int(action_dim)
        self.frame_stack = int(frame_stack)
        self.num_frames = self.capacity + self.capacity // 100 + self.frame_stack + 1
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

    def __len__(self) -> int:
        return self.transitions_written - self.first_valid

    # -- storage hooks (subclasses) ---------------------------------------------------
    def _write_frame(self, frame: np.ndarray) -> int:
        """Store ``frame`` (3, H, W) uint8 as the next frame; return its absolute index."""
        raise NotImplementedError

    def _newest_frame(self) -> np.ndarray:
        """The newest stored frame as a host uint8 array (add's continuity check)."""
        raise NotImplementedError

    def _transition_written(self, ring: int) -> None:
        """Called after the host arrays of ring slot ``ring`` were written."""

    def _draw(self, batch_size: int):
        """``batch_size`` uniform transition indices in [first_valid, transitions_written)."""
        raise NotImplementedError

    def batch_at(self, t) -> dict:
        """The batch of the transitions with absolute indices ``t`` (B,)."""
        raise NotImplementedError

    def _frames_to_file(self, f_idx: np.ndarray) -> dict[str, np.ndarray]:
        """The arrays that save the frames in ring slots ``f_idx`` (oldest first)."""
        raise NotImplementedError

    def _frames_from_file(self, arrays: dict[str, np.ndarray]):
        """Saved frames decoded into what :meth:`_put_frames` takes (ValueError if corrupt)."""
        raise NotImplementedError

    def _put_frames(self, slots: np.ndarray, frames) -> None:
        """Store decoded ``frames`` into ring ``slots``."""
        raise NotImplementedError

    def _rng_to_file(self) -> tuple[dict, dict[str, np.ndarray]]:
        """The sampling generator's kind and state: (meta entries, arrays)."""
        raise NotImplementedError

    def _rng_from_file(self, meta: dict, arrays: dict[str, np.ndarray]) -> None:
        """Restore the generator if the file's is of this buffer's kind; else keep this one's."""
        raise NotImplementedError

    # -- bookkeeping -------------------------------------------------------------------
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
        self._transition_written(ring)
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

    def _check_indices(self, t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=np.int64)
        if t.ndim != 1:
            raise ValueError(f"replay.batch_at: expected a 1-d array of transition indices, got shape {t.shape}")
        if t.size and (t.min() < self.first_valid or t.max() >= self.transitions_written):
            raise ValueError(f"replay.batch_at: transition indices must be in [first_valid, transitions_written)"
                             f" = [{self.first_valid}, {self.transitions_written})")
        return t

    def sample(self, batch_size: int) -> dict:
        """Sample ``batch_size`` transitions uniformly: ``batch_at`` of uniform indices.

        Keys and shapes: ``obs`` and ``next_obs`` (B, 3k, H, W) uint8, ``action`` (B, A),
        ``reward`` (B, 1) and ``not_done`` (B, 1) float32 (numpy arrays or device tensors,
        depending on the storage).
        """
        if len(self) == 0:
            raise ValueError("replay.sample: the buffer is empty")
        return self.batch_at(self._draw(batch_size))

    def sample_windows(self, batch_size: int, group: int, window: int) -> dict:
        """A batch drawn as ``batch_size // group`` groups of ``group`` transitions of one
        episode window (supervised-contrastive objectives: several positives per anchor).

        Each group starts at a uniform transition t0; its other members are t0 + d with d
        uniform in [-window, window], kept if t0 + d is a stored transition of t0's episode,
        else t0 again. Returns :meth:`batch_at`'s batch plus ``episode`` (the absolute index of
        each transition's episode start: equal within an episode, distinct across episodes)
        and ``time`` (its position in the episode), both (B,) int64.
        """
        if len(self) == 0:
            raise ValueError("replay.sample_windows: the buffer is empty")
        if group < 1 or batch_size % group:
            raise ValueError(f"replay.sample_windows: group ({group}) must divide batch_size ({batch_size})")
        t0 = np.asarray(torch.as_tensor(self._draw(batch_size // group)).cpu(), dtype=np.int64)
        d = self._draw_offsets((len(t0), group - 1), window)
        t = t0[:, None] + d
        pos0 = self.t_pos[t0 % self.capacity].astype(np.int64)
        inside = (t >= self.first_valid) & (t < self.transitions_written)
        t = np.where(inside, t, t0[:, None])
        same = self.t_pos[t % self.capacity].astype(np.int64) == pos0[:, None] + (t - t0[:, None])
        t = np.concatenate([t0[:, None], np.where(same, t, t0[:, None])], axis=1).reshape(-1)
        pos = self.t_pos[t % self.capacity].astype(np.int64)
        batch = self.batch_at(t)
        batch["episode"], batch["time"] = t - pos, pos
        return batch

    def _draw_offsets(self, shape: tuple[int, int], window: int) -> np.ndarray:
        """Uniform integers in [-window, window] of ``shape`` from the sampling generator."""
        raise NotImplementedError

    # -- persistence ---------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write the valid contents and counters to ``path`` (.npz) atomically.

        Every storage writes the same format (raw frames as ``frames``, compressed ones as
        ``frames_lz4`` + ``frame_sizes``); :meth:`load` reads any of them into any storage."""
        t0, t1 = self.first_valid, self.transitions_written
        f0 = self._oldest_frame(t0) if t1 > t0 else self.frames_written
        f_idx = np.arange(f0, self.frames_written) % self.num_frames
        t_idx = np.arange(t0, t1) % self.capacity
        rng_meta, rng_arrays = self._rng_to_file()
        meta = dict(capacity=self.capacity, frame_shape=self.frame_shape, action_dim=self.action_dim,
                    frame_stack=self.frame_stack, frames_written=self.frames_written,
                    transitions_written=t1, first_valid=t0, first_frame=f0,
                    episode_open=self.episode_open, pos=self._pos, **rng_meta)
        frames = self._frames_to_file(f_idx)
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as fh:
            np.savez(fh, **frames, **rng_arrays, **{k: getattr(self, k)[t_idx] for k in _TRANSITION_ARRAYS},
                     meta=np.array(json.dumps(meta)))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    def load(self, path: str | os.PathLike) -> None:
        """Restore contents saved by :meth:`save` (by any storage) into this same-shaped buffer.

        The sampling generator's state is restored when the file was written by the same
        kind of generator (host numpy, or torch on the same device type); otherwise this
        buffer keeps drawing from its own seed."""
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                names = list(_TRANSITION_ARRAYS)
                names += ["frames_lz4", "frame_sizes"] if "frames_lz4" in data.files else ["frames"]
                names += [k for k in ("rng_state",) if k in data.files]
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
        t_idx = np.arange(t0, meta["transitions_written"]) % self.capacity
        if any(len(arrays[name]) != len(t_idx) for name in _TRANSITION_ARRAYS):
            raise CheckpointError(f"replay file {path} is corrupt (transition arrays of the wrong length)")
        try:
            self._put_frames(slots, frames)
        except ValueError as exc:
            raise CheckpointError(f"replay file {path} is corrupt ({exc})") from None
        for name in _TRANSITION_ARRAYS:
            getattr(self, name)[t_idx] = arrays[name]
        self.frames_written, self.transitions_written = meta["frames_written"], meta["transitions_written"]
        self.first_valid, self.episode_open, self._pos = t0, meta["episode_open"], meta["pos"]
        self._loaded(t_idx)
        self._rng_from_file(meta, arrays)

    def _loaded(self, t_idx: np.ndarray) -> None:
        """Called after :meth:`load` wrote the host arrays of ring slots ``t_idx``."""


class ReplayBuffer(BaseReplayBuffer):
    """Uniform replay of pixel transitions in host memory, one stored frame per transition.

    Args:
        capacity: transitions kept (the oldest are dropped first).
        frame_shape: (3, H, W) of one rendered frame (uint8).
        action_dim: size of the (float32) action vector.
        frame_stack: frames per observation; obs are (3 * frame_stack, H, W).
        seed: seed of the sampling generator (numpy).
        compress: keep frames LZ4-compressed in memory (needs the ``lz4`` package).

    Batches are numpy arrays; the agent moves them to its device. See
    :class:`BaseReplayBuffer` for the size of the frame ring.
    """

    def __init__(self, capacity: int, frame_shape: tuple[int, int, int], action_dim: int,
                 frame_stack: int = 3, seed: int = 0, compress: bool = False) -> None:
        super().__init__(capacity, frame_shape, action_dim, frame_stack)
        self.compress = bool(compress)
        if self.compress:
            _lz4_block()  # fail here, not at the first add, when lz4 is missing
            self.frames: np.ndarray | list[bytes] = [b""] * self.num_frames
        else:
            self.frames = np.zeros((self.num_frames, *self.frame_shape), dtype=np.uint8)
        self.rng = np.random.default_rng(seed)

    @property
    def nbytes(self) -> int:
        """Bytes held by the buffer (compressed: the bytes objects and the list's pointers)."""
        if self.compress:
            frames = sum(sys.getsizeof(f) for f in self.frames) + 8 * len(self.frames)
        else:
            frames = self.frames.nbytes
        return frames + sum(getattr(self, k).nbytes for k in _TRANSITION_ARRAYS)

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

    def _stack_indices(self, newest: np.ndarray, pos: np.ndarray) -> np.ndarray:
        back = np.arange(self.frame_stack - 1, -1, -1)
        return (newest[:, None] - np.minimum(back[None, :], pos[:, None])) % self.num_frames

    def _draw(self, batch_size: int) -> np.ndarray:
        return self.rng.integers(self.first_valid, self.transitions_written, size=batch_size)

    def _draw_offsets(self, shape: tuple[int, int], window: int) -> np.ndarray:
        return self.rng.integers(-window, window + 1, size=shape)

    def batch_at(self, t: np.ndarray) -> dict[str, np.ndarray]:
        """The transitions with absolute indices ``t`` (B,) in [first_valid, transitions_written).

        Returns numpy arrays: ``obs`` and ``next_obs`` (B, 3k, H, W) uint8, ``action``
        (B, A) float32, ``reward`` (B, 1), ``not_done`` (B, 1) float32.
        """
        t = self._check_indices(t)
        ring = t % self.capacity
        newest, pos = self.t_frame[ring], self.t_pos[ring].astype(np.int64)
        b, (h, w) = len(t), self.frame_shape[1:]
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

    def _frames_to_file(self, f_idx: np.ndarray) -> dict[str, np.ndarray]:
        if not self.compress:
            return dict(frames=self.frames[f_idx])
        chunks = [self.frames[i] for i in f_idx.tolist()]
        return dict(frames_lz4=np.frombuffer(b"".join(chunks), dtype=np.uint8),
                    frame_sizes=np.array([len(c) for c in chunks], dtype=np.int64))

    def _frames_from_file(self, arrays: dict[str, np.ndarray]) -> np.ndarray | list[bytes]:
        """Saved frames in this buffer's storage: a uint8 array, or a list of LZ4 chunks."""
        if self.compress and "frames_lz4" in arrays:
            return _lz4_chunks(arrays)
        raw = _raw_frames(arrays, self.frame_shape)
        return [_pack(f) for f in raw] if self.compress else raw

    def _put_frames(self, slots: np.ndarray, frames: np.ndarray | list[bytes]) -> None:
        if not self.compress:
            self.frames[slots] = frames
            return
        if len(frames):  # the newest frame is decoded by the next add(): check it before storing
            _unpack(frames[-1], self.frame_shape)
        for slot, chunk in zip(slots.tolist(), frames):
            self.frames[slot] = chunk

    def _rng_to_file(self) -> tuple[dict, dict[str, np.ndarray]]:
        return dict(rng_kind="numpy", rng=self.rng.bit_generator.state), {}

    def _rng_from_file(self, meta: dict, arrays: dict[str, np.ndarray]) -> None:
        if meta.get("rng_kind", "numpy") == "numpy":  # files without rng_kind predate the device storage
            self.rng.bit_generator.state = meta["rng"]


class DeviceReplayBuffer(BaseReplayBuffer):
    """Uniform replay whose frames live on a torch device, where batches are drawn and built.

    Args:
        capacity: transitions kept (the oldest are dropped first).
        frame_shape: (3, H, W) of one rendered frame (uint8).
        action_dim: size of the (float32) action vector.
        frame_stack: frames per observation; obs are (3 * frame_stack, H, W).
        seed: seed of the sampling generator (a ``torch.Generator`` on ``device``).
        device: where frames are stored and batches built (a GPU; ``"cpu"`` works too).

    Each frame is stored once as uint8 on ``device`` (3×100×100: 30,000 bytes, so 100k
    transitions take ≈ 3.0 GB there), plus a packed (A + 4) × int32 record per transition
    (ring slot of the obs' newest frame, its position in the episode, action, reward,
    not_done). :meth:`add` uploads each new frame and record (asynchronously, through
    pinned memory on CUDA); :meth:`sample` draws the indices and gathers the stacks on the
    device without waiting for it, and returns torch tensors on ``device`` with the keys,
    shapes and dtypes of :meth:`ReplayBuffer.sample`. The host keeps the bookkeeping
    (20 + 4 × action_dim bytes per transition) and a copy of the newest frame for add's
    continuity check.
    """

    def __init__(self, capacity: int, frame_shape: tuple[int, int, int], action_dim: int,
                 frame_stack: int = 3, seed: int = 0, device: str | torch.device = "cuda") -> None:
        super().__init__(capacity, frame_shape, action_dim, frame_stack)
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"DeviceReplayBuffer: device {str(self.device)!r} is not available")
        self.frames = torch.zeros((self.num_frames, *self.frame_shape), dtype=torch.uint8, device=self.device)
        self.records = torch.zeros((self.capacity, self.action_dim + 4), dtype=torch.int32, device=self.device)
        self._back = torch.arange(self.frame_stack - 1, -1, -1, device=self.device)
        self._newest = np.zeros(self.frame_shape, dtype=np.uint8)
        # Not `seed` itself: the agent seeds its crop generator on the same device with it,
        # and two generators with one seed would draw indices and crop offsets from the same bits.
        self.generator = torch.Generator(self.device).manual_seed(_derived_seed(seed))

    @property
    def nbytes(self) -> int:
        """Bytes held on the device (frames + records) plus the host bookkeeping arrays."""
        host = sum(getattr(self, k).nbytes for k in _TRANSITION_ARRAYS) + self._newest.nbytes
        return self.frames.nbytes + self.records.nbytes + host

    def _upload(self, dst: torch.Tensor, src: np.ndarray) -> None:
        """Copy ``src`` into ``dst`` without the host waiting for the device.

        From pageable memory the driver may wait for the stream to drain; a pinned copy
        does not, and PyTorch's pinned-memory cache keeps the block until the copy ran."""
        host = torch.from_numpy(np.ascontiguousarray(src))
        if dst.is_cuda:
            host = host.pin_memory()
        dst.copy_(host, non_blocking=True)

    def _write_frame(self, frame: np.ndarray) -> int:
        idx = self.frames_written
        self._newest = np.array(frame, dtype=np.uint8)  # a copy: the env may reuse its array
        self._upload(self.frames[idx % self.num_frames], self._newest)
        self.frames_written += 1
        return idx

    def _newest_frame(self) -> np.ndarray:
        return self._newest

    def _pack_records(self, ring: np.ndarray) -> np.ndarray:
        """Host rows of ``records`` for ring slots ``ring``: floats stored by their bits."""
        rec = np.empty((len(ring), self.action_dim + 4), dtype=np.int32)
        rec[:, 0] = self.t_frame[ring] % self.num_frames
        rec[:, 1] = self.t_pos[ring]
        floats = rec[:, 2:].view(np.float32)
        floats[:, :self.action_dim] = self.action[ring]
        floats[:, -2], floats[:, -1] = self.reward[ring], self.not_done[ring]
        return rec

    def _transition_written(self, ring: int) -> None:
        self._upload(self.records[ring:ring + 1], self._pack_records(np.array([ring])))

    def _draw(self, batch_size: int) -> torch.Tensor:
        return torch.randint(self.first_valid, self.transitions_written, (batch_size,),
                             generator=self.generator, device=self.device)

    def _draw_offsets(self, shape: tuple[int, int], window: int) -> np.ndarray:
        return torch.randint(-window, window + 1, shape, generator=self.generator, device=self.device).cpu().numpy()

    def batch_at(self, t: torch.Tensor | np.ndarray) -> dict[str, torch.Tensor]:
        """The transitions with absolute indices ``t`` (B,) in [first_valid, transitions_written).

        ``t`` is a host array (checked) or an int64 tensor on the device (not checked: that
        would make the host wait). Returns tensors on the device: ``obs`` and ``next_obs``
        (B, 3k, H, W) uint8, ``action`` (B, A) float32, ``reward`` (B, 1), ``not_done``
        (B, 1) float32. Nothing here waits for the device.
        """
        if not isinstance(t, torch.Tensor):
            t = torch.from_numpy(self._check_indices(t)).to(self.device)
        rec = self.records[t % self.capacity]
        newest, pos = rec[:, :1].long(), rec[:, 1:2].long()
        obs_slots = (newest - torch.minimum(self._back, pos)) % self.num_frames
        next_slots = (newest + 1 - torch.minimum(self._back, pos + 1)) % self.num_frames
        b, (h, w) = len(t), self.frame_shape[1:]
        floats = rec[:, 2:].view(torch.float32)
        a = self.action_dim
        return dict(obs=self.frames[obs_slots].view(b, -1, h, w), action=floats[:, :a].contiguous(),
                    reward=floats[:, a:a + 1].contiguous(), next_obs=self.frames[next_slots].view(b, -1, h, w),
                    not_done=floats[:, a + 1:].contiguous())

    _CHUNK = 1024  # frames per transfer in save/load: bounds the temporary memory on the device

    def _frames_to_file(self, f_idx: np.ndarray) -> dict[str, np.ndarray]:
        out = np.empty((len(f_idx), *self.frame_shape), dtype=np.uint8)
        for i in range(0, len(f_idx), self._CHUNK):
            idx = torch.from_numpy(f_idx[i:i + self._CHUNK]).to(self.device)
            out[i:i + len(idx)] = self.frames[idx].cpu().numpy()
        return dict(frames=out)

    def _frames_from_file(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        return _raw_frames(arrays, self.frame_shape)

    def _put_frames(self, slots: np.ndarray, frames: np.ndarray) -> None:
        for i in range(0, len(slots), self._CHUNK):
            idx = torch.from_numpy(slots[i:i + self._CHUNK]).to(self.device)
            self.frames[idx] = torch.from_numpy(frames[i:i + self._CHUNK]).to(self.device)
        if len(frames):
            self._newest = np.array(frames[-1])

    def _loaded(self, t_idx: np.ndarray) -> None:
        for i in range(0, len(t_idx), 65536):
            ring = t_idx[i:i + 65536]
            self.records[torch.from_numpy(ring).to(self.device)] = \
                torch.from_numpy(self._pack_records(ring)).to(self.device)

    def _rng_to_file(self) -> tuple[dict, dict[str, np.ndarray]]:
        return dict(rng_kind=f"torch-{self.device.type}"), dict(rng_state=self.generator.get_state().numpy())

    def _rng_from_file(self, meta: dict, arrays: dict[str, np.ndarray]) -> None:
        if meta.get("rng_kind") == f"torch-{self.device.type}" and "rng_state" in arrays:
            self.generator.set_state(torch.from_numpy(arrays["rng_state"].copy()))


def _derived_seed(seed: int) -> int:
    """A 63-bit seed derived from ``seed`` for the device replay's generator."""
    return int(np.random.SeedSequence([seed, 0x2E91A7]).generate_state(1, np.uint64)[0] >> 1)


def _lz4_chunks(arrays: dict[str, np.ndarray]) -> list[bytes]:
    """The LZ4 chunks of a file's ``frames_lz4`` / ``frame_sizes``."""
    ends = np.cumsum(arrays["frame_sizes"]).tolist()
    blob = arrays["frames_lz4"].tobytes()
    return [blob[a:b] for a, b in zip([0, *ends[:-1]], ends)]


def _raw_frames(arrays: dict[str, np.ndarray], frame_shape: tuple[int, ...]) -> np.ndarray:
    """A file's frames as one uint8 array (N, *frame_shape); ValueError when they do not fit."""
    if "frames" in arrays:
        raw = arrays["frames"]
        if raw.shape[1:] != tuple(frame_shape) or raw.dtype != np.uint8:
            raise ValueError(f"frames of shape {raw.shape[1:]} ({raw.dtype})")
        return raw
    chunks = _lz4_chunks(arrays)
    raw = np.empty((len(chunks), *frame_shape), dtype=np.uint8)
    for i, chunk in enumerate(chunks):
        raw[i] = _unpack(chunk, frame_shape)
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
