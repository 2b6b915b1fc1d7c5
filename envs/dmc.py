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

    def render(self) -> np.ndarray:
        """An RGB frame (H, W, 3) uint8 at ``render_size`` from the training camera."""
        return self._env.physics.render(self.render_size, self.render_size, camera_id=self.camera_id)

    def close(self) -> None:
        self._env = None


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
