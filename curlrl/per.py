"""Prioritised n-step replay for discrete-action agents on frame stacks (DER / Rainbow).

Pure numpy (core: no torch, no gymnasium, no agent). What Kaixhin/Rainbow's and
curl_rainbow's ``memory.py`` do, with these properties:

- Each frame is stored once (uint8, e.g. 84x84), in a ring of *slots*. A slot holds the
  newest frame of one observation and, when an action was taken from it, that action and
  its reward; the last observation of an episode gets a slot of its own (the bootstrap
  frame of a truncated episode). Stacks are rebuilt when sampled and never reach across an
  episode start: frames before an episode's first frame repeat that frame, as the env pads
  its stack at a reset (so :meth:`PrioritizedReplay.add` refuses a first observation whose
  frames differ: the stack it would rebuild is not the one the agent saw).
- n-step returns stop at an episode's end. ``R = sum_{k<m} gamma^k r_{t+k}`` with
  ``m = min(n, steps left in the episode)``; the batch's ``discount`` is ``gamma^m`` and
  ``next_obs`` the observation m steps on, except after a termination inside the window,
  where ``discount = 0``. A truncation (time limit) is not a termination: it bootstraps from
  the last observation with ``gamma^m``. (Kaixhin's memory treats every episode end as
  terminal.)
- A transition enters the sum tree once its window is known (n steps later, or at its
  episode's end), at the running maximum priority (``max p^alpha`` ever set, 1 at first).
- Proportional sampling with stratified segments: the total priority is cut into
  ``batch_size`` equal segments and one transition drawn uniformly by mass in each.
- Importance-sampling weights ``(N * P(i))^-beta`` normalised by the batch maximum, with N
  the number of transitions that can be sampled.
- :meth:`~PrioritizedReplay.state_dict` holds every array, the counters and the sampling
  RNG (numpy arrays and plain numbers, ``np.savez``-able), so a resume draws what an
  uninterrupted run draws.

Capacity: the ring keeps ``capacity + capacity // 100 + frame_stack + n_step`` slots, so
``capacity`` transitions fit when episodes are at least 100 steps long; once it is full the
oldest slots are overwritten and their transitions leave the tree. DER's "unbounded"
memory is capacity = the run's 100k agent steps (Kaixhin README).
"""
from __future__ import annotations

import json

import numpy as np

from curlrl.errors import CheckpointError, ConfigError, DivergenceError


class SumTree:
    """A binary sum tree over ``size`` non-negative leaves (float64), vectorised.

    Internal nodes are always recomputed from their two children (never updated by
    deltas), so they are an exact function of the leaves: no drift over millions of
    updates, and a tree rebuilt from its leaves is bit-identical.
    """

    def __init__(self, size: int) -> None:
        self.size = int(size)
        self.leaf0 = 1 << max(0, (self.size - 1).bit_length())  # first leaf in the 1-based heap
        self.nodes = np.zeros(2 * self.leaf0, dtype=np.float64)

    @property
    def total(self) -> float:
        return float(self.nodes[1])

    @property
    def leaves(self) -> np.ndarray:
        return self.nodes[self.leaf0:self.leaf0 + self.size]

    def set(self, index: np.ndarray, values: np.ndarray) -> None:
        """Set leaves ``index`` to ``values`` (a later duplicate index wins) and their ancestors."""
        i = np.asarray(index, dtype=np.int64) + self.leaf0
        self.nodes[i] = values
        i = np.unique(i >> 1)
        while i[0] >= 1:
            self.nodes[i] = self.nodes[2 * i] + self.nodes[2 * i + 1]
            if i[0] == 1:
                break
            i = np.unique(i >> 1)

    def rebuild(self) -> None:
        """Recompute every internal node from the leaves."""
        width = self.leaf0
        while width > 1:
            parents = np.arange(width // 2, width)
            self.nodes[parents] = self.nodes[2 * parents] + self.nodes[2 * parents + 1]
            width //= 2

    def find(self, mass: np.ndarray) -> np.ndarray:
        """The leaf where each cumulative ``mass`` in [0, total) falls (always a leaf > 0)."""
        u = np.asarray(mass, dtype=np.float64).copy()
        i = np.ones(len(u), dtype=np.int64)
        while i[0] < self.leaf0:
            left = self.nodes[2 * i]
            # the right child's mass only when it has some: rounding may leave u >= left at an empty right
            go_left = (u < left) | (self.nodes[2 * i + 1] <= 0.0)
            u = np.where(go_left, u, u - left)
            i = 2 * i + (~go_left)
        return i - self.leaf0


class PrioritizedReplay:
    """Prioritised n-step replay storing each frame once (module docstring).

    Args:
        capacity: transitions to keep (the ring has a few more slots, see the module docstring).
        frame_shape: one frame's shape, e.g. (84, 84); an observation is (frame_stack, *frame_shape).
        frame_stack: frames per observation.
        n_step: the return's horizon n (DER: 20).
        discount: gamma (0.99).
        alpha: the priority exponent: P(i) is proportional to p_i^alpha (DER: 0.5).
        seed: seeds the sampling RNG.
    """

    def __init__(self, capacity: int, frame_shape: tuple[int, ...] = (84, 84), frame_stack: int = 4,
                 n_step: int = 20, discount: float = 0.99, alpha: float = 0.5, seed: int = 0) -> None:
        for name, value, ok in (("capacity", capacity, capacity >= 1), ("frame_stack", frame_stack, frame_stack >= 1),
                                ("n_step", n_step, n_step >= 1), ("discount", discount, 0.0 <= discount <= 1.0),
                                ("alpha", alpha, alpha >= 0.0)):
            if not ok:
                rule = "in [0, 1]" if name == "discount" else (">= 0" if name == "alpha" else ">= 1")
                raise ConfigError(f"replay {name} must be {rule}, got {value}")
        self.capacity = int(capacity)
        self.frame_shape = tuple(int(v) for v in frame_shape)
        self.frame_stack, self.n_step = int(frame_stack), int(n_step)
        self.discount, self.alpha = float(discount), float(alpha)
        self.slots = self.capacity + self.capacity // 100 + self.frame_stack + self.n_step
        s = self.slots
        self.frames = np.zeros((s, *self.frame_shape), dtype=np.uint8)
        self.action = np.zeros(s, dtype=np.int64)
        self.reward = np.zeros(s, dtype=np.float32)
        self.pos = np.zeros(s, dtype=np.int64)          # the frame's position in its episode
        self.terminated = np.zeros(s, dtype=bool)       # the transition from this slot terminated
        self.ended = np.zeros(s, dtype=bool)            # ... ended its episode (terminated or truncated)
        self.n_return = np.zeros(s, dtype=np.float32)   # filled when the transition enters the tree
        self.n_steps = np.zeros(s, dtype=np.int64)      # m: steps to the bootstrap frame
        self.n_discount = np.zeros(s, dtype=np.float32)  # gamma^m, or 0 after a termination
        self.in_tree = np.zeros(s, dtype=bool)
        self.tree = SumTree(s)
        self.max_priority = 1.0  # running max of p^alpha
        self.written = 0         # slots written (absolute; slot g lives at g % slots)
        self.transitions_written = 0  # add() calls, ever (a checkpoint's replay is matched by it)
        self.episode_open = False
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        """Transitions that can be sampled now."""
        return int(self.in_tree.sum())

    # -- writing -------------------------------------------------------------------
    def _write(self, frame: np.ndarray, pos: int) -> int:
        g = self.written
        ring = g % self.slots
        if g >= self.slots:  # overwrite: the old slot's transition and any whose stack reads it leave
            old = g - self.slots
            gone = [t for t in range(old, old + self.frame_stack) if self.in_tree[t % self.slots]
                    and t - min(self.frame_stack - 1, int(self.pos[t % self.slots])) <= old]
            if gone:
                idx = np.asarray(gone, dtype=np.int64) % self.slots
                self.in_tree[idx] = False
                self.tree.set(idx, np.zeros(len(idx)))
        self.frames[ring] = frame
        self.pos[ring] = pos
        self.terminated[ring] = self.ended[ring] = False
        self.written = g + 1
        return g

    def add(self, obs: np.ndarray, action: int, reward: float, next_obs: np.ndarray,
            terminated: bool, truncated: bool) -> None:
        """Add one transition; ``obs``/``next_obs`` are (frame_stack, *frame_shape) uint8 stacks.

        Only the newest frame of each stack is stored (plus an episode's first frame). An
        episode's first ``obs`` must be one frame repeated (the env's reset padding); every
        later ``obs`` must continue the previous ``next_obs``. ConfigError otherwise.
        """
        obs, next_obs = np.asarray(obs), np.asarray(next_obs)
        want = (self.frame_stack, *self.frame_shape)
        if obs.shape != want or next_obs.shape != want or obs.dtype != np.uint8 or next_obs.dtype != np.uint8:
            raise ConfigError(f"replay.add: observations must be uint8 of shape {want}, got {obs.dtype} "
                              f"{obs.shape} and {next_obs.dtype} {next_obs.shape}")
        if self.episode_open:
            head = (self.written - 1) % self.slots
            if not np.array_equal(obs[-1], self.frames[head]):
                raise ConfigError("replay.add: obs does not continue the previous next_obs; end the episode "
                                  "(terminated or truncated) before starting another")
            g = self.written - 1
        else:
            if not (obs == obs[-1]).all():
                raise ConfigError("replay.add: an episode's first observation must repeat one frame (the env's "
                                  "reset padding): the replay rebuilds stacks that way")
            g = self._write(obs[-1], 0)
        ring = g % self.slots
        self.action[ring], self.reward[ring] = int(action), float(reward)
        self.terminated[ring], self.ended[ring] = bool(terminated), bool(terminated or truncated)
        self._write(next_obs[-1], int(self.pos[ring]) + 1)
        self.episode_open = not (terminated or truncated)
        self.transitions_written += 1
        if self.episode_open:
            first = g - self.n_step + 1  # its window of n steps is now complete
            if first >= 0 and first >= g - int(self.pos[ring]):
                self._complete(np.array([first]))
        else:  # every transition of the episode still waiting is complete
            start = max(g - self.n_step + 1, g - int(self.pos[ring]))
            self._complete(np.arange(start, g + 1))

    def _complete(self, t: np.ndarray) -> None:
        """Compute the n-step returns of transitions ``t`` (absolute) and put them in the tree."""
        oldest_read = t - np.minimum(self.frame_stack - 1, self.pos[t % self.slots])
        t = t[oldest_read >= max(0, self.written - self.slots)]  # its stack's frames are all still stored
        if not len(t):
            return
        k = np.arange(self.n_step)
        ring = (t[:, None] + k) % self.slots                 # (T, n): the window's slots
        inside = np.ones(ring.shape, dtype=bool)             # step k is still in the episode
        inside[:, 1:] = ~np.cumsum(self.ended[ring[:, :-1]], axis=1).astype(bool)
        inside &= (t[:, None] + k) < self.written - 1        # never read past the newest transition
        m = inside.sum(axis=1)
        last = ring[np.arange(len(t)), m - 1]
        gammas = self.discount ** k
        rows = (t % self.slots)
        self.n_return[rows] = (np.where(inside, self.reward[ring], 0.0) * gammas).sum(axis=1)
        self.n_steps[rows] = m
        self.n_discount[rows] = np.where(self.terminated[last], 0.0, self.discount ** m)
        self.in_tree[rows] = True
        self.tree.set(rows, np.full(len(rows), self.max_priority))

    def end_episode(self) -> None:
        """Close the current episode without a last transition (e.g. on resume of the env):
        its transitions still waiting for n steps are dropped, the next add starts anew."""
        self.episode_open = False

    # -- sampling ------------------------------------------------------------------
    def _stacks(self, g: np.ndarray) -> np.ndarray:
        """(B, frame_stack, *frame_shape) stacks whose newest frames are absolute slots ``g``."""
        back = np.arange(self.frame_stack - 1, -1, -1)      # oldest first
        pos = self.pos[g % self.slots]
        idx = (g[:, None] - np.minimum(back[None, :], pos[:, None])) % self.slots
        return self.frames[idx]

    def _absolute(self, ring: np.ndarray) -> np.ndarray:
        """Absolute slot numbers of ring positions (the newest write of each)."""
        newest = self.written - 1
        return newest - ((newest - ring) % self.slots)

    def sample(self, batch_size: int, beta: float) -> dict[str, np.ndarray]:
        """A prioritised batch: ``obs``/``next_obs`` (B, frame_stack, *frame_shape) uint8,
        ``action`` (B,) int64, ``returns`` (B,) float32 (the n-step discounted reward sum),
        ``discount`` (B,) float32 (gamma^m, 0 after a termination), ``weight`` (B,) float32
        (IS weights normalised by the batch max), ``index`` (B,) int64 (for
        :meth:`update_priorities`) and ``probability`` (B,) float64 (P(i))."""
        if batch_size < 1:
            raise ConfigError(f"replay.sample: batch_size must be >= 1, got {batch_size}")
        if not 0.0 <= beta <= 1.0:
            raise ConfigError(f"replay.sample: beta must be in [0, 1], got {beta}")
        total = self.tree.total
        if len(self) == 0 or total <= 0.0:
            raise ConfigError("replay.sample: no transition can be sampled yet (each needs n steps or its "
                              "episode's end)")
        segment = total / batch_size
        mass = (np.arange(batch_size) + self.rng.random(batch_size)) * segment
        ring = self.tree.find(np.minimum(mass, np.nextafter(total, 0.0)))
        prob = self.tree.leaves[ring] / total
        weight = (len(self) * prob) ** -beta
        weight /= weight.max()
        batch = self.batch_at(self._absolute(ring))
        batch.update(weight=weight.astype(np.float32), probability=prob)
        return batch

    def batch_at(self, index) -> dict[str, np.ndarray]:
        """The stored transitions ``index`` (absolute, as :meth:`sample` returns them):
        ``obs``, ``action``, ``returns``, ``discount``, ``next_obs`` and ``index``, as in
        :meth:`sample` (no weights). ConfigError for a transition that cannot be sampled."""
        g = np.asarray(index, dtype=np.int64).ravel()
        ring = g % self.slots
        bad = (g < self.written - self.slots) | (g >= self.written) | ~self.in_tree[ring]
        if bad.any():
            raise ConfigError(f"replay.batch_at: index {int(g[bad][0])} is not a stored, complete transition")
        return {"obs": self._stacks(g), "action": self.action[ring].copy(), "returns": self.n_return[ring].copy(),
                "discount": self.n_discount[ring].copy(), "next_obs": self._stacks(g + self.n_steps[ring]),
                "index": g}

    def update_priorities(self, index: np.ndarray, priorities: np.ndarray) -> None:
        """Set the priorities of sampled transitions ``index`` to ``priorities ** alpha``
        (``priorities``: the agent's per-sample losses, >= 0). Entries whose transition has
        left the replay since it was sampled are skipped. DivergenceError if not finite."""
        index = np.asarray(index, dtype=np.int64).ravel()
        p = np.asarray(priorities, dtype=np.float64).ravel()
        if index.shape != p.shape:
            raise ConfigError(f"replay.update_priorities: {len(index)} indices but {len(p)} priorities")
        if not np.isfinite(p).all():
            raise DivergenceError("replay.update_priorities: a priority (the agent's loss) is not finite")
        if (p < 0).any():
            raise ConfigError("replay.update_priorities: priorities must be >= 0")
        ring = index % self.slots
        keep = (index >= self.written - self.slots) & (index < self.written) & self.in_tree[ring]
        if not keep.all():
            ring, p = ring[keep], p[keep]
        if not len(ring):
            return
        values = p ** self.alpha
        self.tree.set(ring, values)
        self.max_priority = max(self.max_priority, float(values.max()))

    # -- state ---------------------------------------------------------------------
    _ARRAYS = ("frames", "action", "reward", "pos", "terminated", "ended", "n_return", "n_steps", "n_discount",
               "in_tree")

    def state_dict(self) -> dict:
        """Everything a resume needs (numpy arrays, ints, floats and JSON strings): the
        written slots, the tree's leaves, the counters and the sampling RNG.

        Like torch's ``state_dict`` the arrays are views of the live ones, not copies (the
        frames of a 100k Atari replay are 0.7 GB): write them out (``np.savez``) before the
        replay changes."""
        used = min(self.written, self.slots)
        state = {name: getattr(self, name)[:used] for name in self._ARRAYS}
        state.update(priorities=self.tree.leaves[:used], max_priority=self.max_priority,
                     written=self.written, episode_open=self.episode_open,
                     transitions_written=self.transitions_written,
                     rng=json.dumps(self.rng.bit_generator.state),
                     config=json.dumps(self._config()))
        return state

    def _config(self) -> dict:
        return {"capacity": self.capacity, "frame_shape": list(self.frame_shape), "frame_stack": self.frame_stack,
                "n_step": self.n_step, "discount": self.discount, "alpha": self.alpha}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` output (values may come back as 0-d arrays, as from
        ``np.load``). CheckpointError if it is of a replay with other settings or corrupt."""
        try:
            config = json.loads(str(state["config"]))
            written = int(state["written"])
            arrays = {name: np.asarray(state[name]) for name in (*self._ARRAYS, "priorities")}
            rng_state = json.loads(str(state["rng"]))
            max_priority, episode_open = float(state["max_priority"]), bool(state["episode_open"])
            transitions_written = int(state["transitions_written"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"replay state is incomplete or corrupt ({exc})") from None
        if config != self._config():
            raise CheckpointError(f"replay state is of a replay with {config}; this one has {self._config()}")
        used = min(written, self.slots)
        for name, arr in arrays.items():
            target = self.tree.leaves if name == "priorities" else getattr(self, name)
            if arr.shape != (used, *target.shape[1:]):
                raise CheckpointError(f"replay state: {name} has shape {arr.shape}, expected "
                                      f"{(used, *target.shape[1:])}")
        for name in self._ARRAYS:  # the head first, then the tail: a state of this very replay stays intact
            getattr(self, name)[:used] = arrays[name]
            getattr(self, name)[used:] = 0
        priorities = arrays["priorities"].astype(np.float64)  # a copy: the nodes are zeroed next
        self.tree.nodes[:] = 0.0
        self.tree.leaves[:used] = priorities
        self.tree.rebuild()
        self.written, self.max_priority, self.episode_open = written, max_priority, episode_open
        self.transitions_written = transitions_written
        self.rng = np.random.default_rng()
        self.rng.bit_generator.state = rng_state

    # -- files ---------------------------------------------------------------------
    def save(self, path) -> None:
        """Write :meth:`state_dict` to ``path`` (an uncompressed ``.npz``: no pickles). An
        OSError (no space, the file size limit) goes on to the caller, which owns the file."""
        with open(path, "wb") as fh:
            np.savez(fh, **self.state_dict())

    def load(self, path) -> None:
        """Read a :meth:`save` file; CheckpointError if it is cut short or of another replay."""
        import zipfile

        try:
            with np.load(path, allow_pickle=False) as data:
                state = {k: data[k] for k in data.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise CheckpointError(f"replay file {path} cannot be read ({type(exc).__name__}: {exc})") from None
        self.load_state_dict(state)
