"""DeepMind Control suite tasks as gymnasium pixel environments (no torch here)."""
from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from curlrl.envs.rendering import INSTALL_HINT, select_gl_backend
from curlrl.errors import EnvError


def parse_task(task: str) -> tuple[str, str]:
    """``"ball_in_cup-catch"`` -> ``("ball_in_cup", "catch")``; checks the suite has it."""
    domain, sep, name = task.partition("-")
    if not sep or not domain or not name:
        raise EnvError(f"task {task!r} is not of the form DOMAIN-TASK (e.g. cartpole-swingup)")
    select_gl_backend()  # dm_control fixes its GL backend when first imported
    from dm_control import suite
    if (domain, name) not in suite.ALL_TASKS:
        known = ", ".join(sorted(f"{d}-{t}" for d, t in suite.ALL_TASKS))
        raise EnvError(f"unknown task {task!r}; dm_control suite tasks are: {known}")
    return domain, name


class DMCPixelEnv(gym.Env):
    """A dm_control suite task seen through its camera, with action repeat and frame stack.

    Observation: uint8 Box (3 * frame_stack, image_size, image_size), the last
    ``frame_stack`` RGB frames stacked on channels (oldest first); at reset the first
    frame fills the stack. Action: float32 Box in [-1, 1], rescaled to the task's
    bounds. Reward: the sum over the ``action_repeat`` physics steps. One ``step`` is
    one *agent* step = ``action_repeat`` *environment* steps.

    ``info["state"]``: the task's true state features (the flattened dm_control
    observation dict, float32), for probes and datasets; :attr:`state_names` names its
    entries. ``info["env_steps"]``: env
    steps taken in this episode. The time limit ends an episode with ``truncated=True``
    (not ``terminated``), so learners keep bootstrapping through it.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(self, task: str, image_size: int = 100, action_repeat: int = 1, frame_stack: int = 3,
                 seed: int | None = None, camera_id: int | None = None, render_size: int | None = None,
                 render_mode: str | None = "rgb_array") -> None:
        domain, name = parse_task(task)
        if action_repeat < 1 or frame_stack < 1 or image_size < 1:
            raise EnvError("action_repeat, frame_stack and image_size must be >= 1")
        from dm_control import suite
        self._env = suite.load(domain, name, task_kwargs={"random": seed})
        self.task = task
        self.image_size, self.action_repeat, self.frame_stack = image_size, action_repeat, frame_stack
        self.camera_id = (2 if domain == "quadruped" else 0) if camera_id is None else camera_id
        self.render_size = render_size or image_size
        self.render_mode = render_mode
        spec = self._env.action_spec()
        self._low, self._high = spec.minimum.astype(np.float64), spec.maximum.astype(np.float64)
        self.action_space = spaces.Box(-1.0, 1.0, shape=spec.shape, dtype=np.float32)
        self.observation_space = spaces.Box(0, 255, (3 * frame_stack, image_size, image_size), dtype=np.uint8)
        self._state_names = _flat_names(self._env.observation_spec())
        self._frames: list[np.ndarray] = []
        self._episode_env_steps = 0
        self._reset_random = _random_state(self._env.task.random)
        self._check_render()

    @property
    def state_names(self) -> list[str]:
        """Names of the entries of ``info["state"]``, in order: each dm_control observation
        key, with an index when it holds more than one number (cartpole: ``position[0]``,
        ``position[1]``, ``position[2]``, ``velocity[0]``, ``velocity[1]``; walker has a
        scalar ``height``)."""
        return list(self._state_names)

    def _check_render(self) -> None:
        try:
            self._env.physics.render(8, 8, camera_id=self.camera_id)
        except Exception as exc:  # the GL stack failed although the probe passed
            raise EnvError(f"{INSTALL_HINT} (render failed: {exc})") from None

    def _frame(self) -> np.ndarray:
        img = self._env.physics.render(self.image_size, self.image_size, camera_id=self.camera_id)
        return np.ascontiguousarray(img.transpose(2, 0, 1))

    def _obs(self) -> np.ndarray:
        return np.concatenate(self._frames, axis=0)

    def _state(self, time_step) -> np.ndarray:
        return np.concatenate([np.asarray(v, dtype=np.float32).ravel() for v in time_step.observation.values()])

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._env.task.random.seed(seed)
        self._reset_random = _random_state(self._env.task.random)  # replays this reset on resume
        time_step = self._env.reset()
        frame = self._frame()
        self._frames = [frame] * self.frame_stack
        self._episode_env_steps = 0
        return self._obs(), {"state": self._state(time_step), "env_steps": 0}

    def step(self, action):
        action = np.asarray(action, dtype=np.float64)
        if action.shape != self.action_space.shape:
            raise ValueError(f"action of shape {action.shape}, expected {self.action_space.shape}")
        scaled = self._low + (np.clip(action, -1.0, 1.0) + 1.0) * 0.5 * (self._high - self._low)
        reward, terminated, truncated = 0.0, False, False
        for _ in range(self.action_repeat):
            time_step = self._env.step(scaled)
            reward += time_step.reward or 0.0
            self._episode_env_steps += 1
            if time_step.last():
                # dm_control ends on the time limit with discount 1 (truncation); a
                # discount of 0 is a true termination.
                terminated = time_step.discount == 0.0
                truncated = not terminated
                break
        self._frames = self._frames[1:] + [self._frame()]
        info = {"state": self._state(time_step), "env_steps": self._episode_env_steps}
        return self._obs(), float(reward), terminated, truncated, info

    # -- mid-episode state ----------------------------------------------------------
    def get_episode_state(self) -> dict[str, Any]:
        """Everything that continues the current episode exactly, as numpy arrays and plain types.

        ``physics``: MuJoCo's full integration state (``mj_getState`` with
        ``mjSTATE_INTEGRATION``: time, qpos, qvel, act, warm start, controls, applied forces,
        mocap, ...); ``frames``: the frame stack (k, 3, H, W) uint8; ``step_count``: the
        time-limit counter in physics control steps; ``episode_env_steps``; ``task_random``:
        the task's RandomState (MT19937 key and position), which some tasks draw from
        while stepping; ``reset_random``: that RandomState as the episode's reset found it,
        so that the reset (and what it changed in the *model*: reacher's target, say) can
        be replayed. :meth:`set_episode_state` of an env of the same task and sizes
        restores it all; the next ``step`` then gives what this env's next ``step`` would."""
        import mujoco

        if not self._frames:
            raise EnvError("get_episode_state: the env has not been reset")
        physics = self._env.physics
        size = mujoco.mj_stateSize(physics.model.ptr, mujoco.mjtState.mjSTATE_INTEGRATION)
        phys = np.empty(size, dtype=np.float64)
        mujoco.mj_getState(physics.model.ptr, physics.data.ptr, phys, mujoco.mjtState.mjSTATE_INTEGRATION)
        return {
            "physics": phys,
            "frames": np.stack(self._frames),
            "step_count": int(self._env._step_count),
            "episode_env_steps": int(self._episode_env_steps),
            "task_random": _random_state(self._env.task.random),
            "reset_random": list(self._reset_random),
        }

    def set_episode_state(self, state: dict[str, Any]) -> np.ndarray:
        """Continue the episode saved by :meth:`get_episode_state`; returns its current observation.

        Arrays may come back as any array-like (lists, CPU tensors): they are converted to
        the dtypes saved. EnvError if the state does not fit this env."""
        import mujoco

        try:
            frames = np.asarray(state["frames"], dtype=np.uint8)
            phys = np.asarray(state["physics"], dtype=np.float64)
            task_random, reset_random = _to_random_state(state["task_random"]), _to_random_state(state["reset_random"])
            step_count, env_steps = int(state["step_count"]), int(state["episode_env_steps"])
        except (KeyError, TypeError, ValueError) as exc:
            raise EnvError(f"set_episode_state: not an episode state of this env ({exc})") from None
        physics = self._env.physics
        size = mujoco.mj_stateSize(physics.model.ptr, mujoco.mjtState.mjSTATE_INTEGRATION)
        want = (self.frame_stack, 3, self.image_size, self.image_size)
        if phys.shape != (size,) or frames.shape != want:
            raise EnvError(f"set_episode_state: state of shapes physics {phys.shape}, frames {frames.shape}; "
                           f"this env ({self.task}) needs ({size},) and {want}")
        # replay the episode's reset: dm_control's own bookkeeping (it steps only after a reset)
        # and what the task's initialize_episode set in the model
        self._env.task.random.set_state(reset_random)
        self._env.reset()
        self._reset_random = list(reset_random)
        self._env.task.random.set_state(task_random)
        with physics.reset_context():  # sets the state, then mj_forward: derived quantities follow
            mujoco.mj_setState(physics.model.ptr, physics.data.ptr, phys, mujoco.mjtState.mjSTATE_INTEGRATION)
        self._env._step_count = step_count
        self._frames = [f.copy() for f in frames]
        self._episode_env_steps = env_steps
        return self._obs()

    def render(self) -> np.ndarray:
        """An RGB frame (H, W, 3) uint8 at ``render_size`` from the training camera."""
        return self._env.physics.render(self.render_size, self.render_size, camera_id=self.camera_id)

    def close(self) -> None:
        self._env = None


def _random_state(random: np.random.RandomState) -> list:
    """A RandomState's state as [kind, key (uint32 array), pos, has_gauss, cached_gaussian]."""
    kind, key, pos, has_gauss, cached = random.get_state()
    return [str(kind), np.array(key, dtype=np.uint32), int(pos), int(has_gauss), float(cached)]


def _to_random_state(value) -> tuple:
    kind, key, pos, has_gauss, cached = value
    return str(kind), np.asarray(key, dtype=np.uint32), int(pos), int(has_gauss), float(cached)


def _flat_names(spec) -> list[str]:
    """``{"position": (3,), "height": ()}`` -> ``["position[0]", ..., "position[2]", "height"]``."""
    names: list[str] = []
    for key, arr in spec.items():
        size = int(np.prod(arr.shape)) if arr.shape else 1
        names += [key] if size == 1 else [f"{key}[{i}]" for i in range(size)]
    return names


def make_env(task: str, image_size: int = 100, action_repeat: int = 1, frame_stack: int = 3,
             seed: int | None = 0, **kwargs) -> DMCPixelEnv:
    """Build a :class:`DMCPixelEnv` for a dm_control suite ``DOMAIN-TASK`` name."""
    return DMCPixelEnv(task, image_size=image_size, action_repeat=action_repeat,
                       frame_stack=frame_stack, seed=seed, **kwargs)
