"""Atari-100k environments (ALE through gymnasium) with DER's preprocessing. Imports no torch.

``make_atari_env("atari-pong", seed=0, training=True)`` builds ``ALE/Pong-v5`` with
``frameskip=1, repeat_action_probability=0.0, full_action_space=False`` (no sticky actions,
the minimal action set) and wraps it in :class:`Atari100kPreprocessing`, which does what
data-efficient Rainbow (DER, van Hasselt et al. 2019) and CURL's code on it
(aravindsrinivas/curl_rainbow, built on Kaixhin/Rainbow) do:

- up to 30 no-op starts after every game reset (0 to ``noop_max - 1`` raw no-op frames, as
  curl_rainbow's ``random.randrange(30)``; gymnasium's AtariPreprocessing draws 1 to 30);
- action repeat 4, the observed frame being the pixel-wise max of the last two raw frames;
- grayscale (ALE's palette luminance), resized to 84x84 (``cv2.INTER_AREA``), uint8;
- a stack of the last 4 frames: observation (4, 84, 84) uint8, oldest first;
- the 108k-frame cap (27k agent steps) per game, reported as ``truncated``.

And in training only (``training=True``):

- rewards clipped to [-1, 1] (the sum over the 4 repeated frames, then clipped);
- a life loss ends the *agent's* episode (``terminated=True``) without resetting the game.

Life loss (DER / Kaixhin semantics). gymnasium's ``terminal_on_life_loss=True`` makes the
next ``reset()`` restart the whole game (Gymnasium issue #166). Here a ``reset()`` right
after a life-loss termination continues the same game: no ``reset_game``, no no-ops, the
frame counter and the 108k cap run on. Kaixhin's env acts one raw no-op frame there; this
one takes no new frame, so the game goes on exactly where the terminal step left it. The
*frame stack* restarts: the continued episode's first observation is the last frame
repeated 4 times, as at a game reset. That is what a replay that stores each frame once
and never builds stacks across episode starts rebuilds (:class:`curlrl.per.PrioritizedReplay`
pads an episode's first frame the same way), so the stacks the agent learns from are the
stacks it acted on (Kaixhin's env keeps the old frames in its stack while its replay pads
the new episode with blank frames: the two differ). A ``reset`` with a ``seed``, after a
game over, after a truncation or in mid-episode always resets the game.

A life loss is counted when ``0 < lives < lives before the step`` and the game is not over
(curl_rainbow's ``lives > 0`` guard, "for Q*bert"); the last life ends the game, which is
``terminated`` in both modes. The dynamics do not depend on ``training``: a training and an
evaluation env with the same seed and actions see the same frames (no early stop of the
action repeat on a life loss, as in Kaixhin's env; the repeat stops early at a game over).

``info`` at every step and reset: ``raw_reward`` (unclipped sum of the step's rewards),
``lives``, ``life_loss`` (this step lost a life; in evaluation too), ``ram`` (the console's
128-byte RAM, ``ale.getRAM()``, the true state for probes), ``episode_frame_number``
(raw frames since the game's reset: the 108k cap counts these), ``frame_number`` and, at a
reset, ``noops`` (no-op frames taken: 0 when a game continues) and ``continued``.

Step counts: one ``step`` is one agent step = 4 raw frames. The Atari-100k budget is 100k
agent steps (400k frames).
"""
from __future__ import annotations

import difflib
import json
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from curlrl.errors import EnvError

# The 26 games of Atari-100k (Kaiser et al. 2019, SimPLe; DER and CURL Table 2), as ALE
# names their ROMs (and curl_rainbow's --game takes them). Task names are "atari-<game>".
ATARI_100K_GAMES = (
    "alien", "amidar", "assault", "asterix", "bank_heist", "battle_zone", "boxing", "breakout",
    "chopper_command", "crazy_climber", "demon_attack", "freeway", "frostbite", "gopher", "hero",
    "jamesbond", "kangaroo", "krull", "kung_fu_master", "ms_pacman", "pong", "private_eye", "qbert",
    "road_runner", "seaquest", "up_n_down",
)
TASK_PREFIX = "atari-"
MAX_FRAMES = 108_000  # per game: 30 minutes at 60 Hz (Machado et al. 2018) = 27k agent steps


def _key(name: str) -> str:
    return name.lower().replace("_", "").replace("-", "")


def parse_game(task: str) -> str:
    """``"atari-pong"`` (or ``"pong"``, ``"Pong"``, ``"atari-PrivateEye"``) -> the ROM name
    (``"pong"``, ``"private_eye"``); EnvError naming the nearest Atari-100k game otherwise."""
    if not isinstance(task, str) or not task.strip():
        raise EnvError(f"Atari task must be a name like 'atari-pong', got {task!r}")
    game = task.strip()
    if game.lower().startswith(TASK_PREFIX):
        game = game[len(TASK_PREFIX):]
    by_key = {_key(g): g for g in ATARI_100K_GAMES}
    if _key(game) in by_key:
        return by_key[_key(game)]
    near = difflib.get_close_matches(game.lower(), ATARI_100K_GAMES, n=1, cutoff=0.0)
    raise EnvError(f"unknown Atari-100k game {task!r}; did you mean {TASK_PREFIX}{near[0]}? "
                   f"(the 26 games: {', '.join(ATARI_100K_GAMES)})")


def ale_env_id(game: str) -> str:
    """The gymnasium id of a game: ``"private_eye"`` -> ``"ALE/PrivateEye-v5"``."""
    return "ALE/" + "".join(part.capitalize() for part in parse_game(game).split("_")) + "-v5"


class Atari100kPreprocessing(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """DER's Atari preprocessing over an ALE env built with ``frameskip=1`` (module docstring).

    Args:
        env: an ``ALE/<Game>-v5`` env made with ``frameskip=1`` and ``obs_type="grayscale"``.
        training: clip rewards to [-1, 1] and end the agent's episode at a life loss
            (without resetting the game).
        noop_max: a game reset is followed by a uniform 0 .. noop_max - 1 raw no-op frames
            (0: none).
        frame_skip: raw frames per agent step (the action repeat), max-pooled over the last two.
        frame_stack: frames per observation.
        screen_size: side of the square frames.
        seed: seeds the first ``reset()`` that is given no seed (the game's RNG and the no-op
            draws); later resets continue those streams.

    Observation: uint8 Box (frame_stack, screen_size, screen_size). Action: Discrete, the
    game's minimal action set. ``render()`` gives the RGB screen when made with
    ``render_mode="rgb_array"``.
    """

    def __init__(self, env: gym.Env, training: bool, noop_max: int = 30, frame_skip: int = 4,
                 frame_stack: int = 4, screen_size: int = 84, seed: int | None = None) -> None:
        if getattr(env.unwrapped, "_frameskip", 1) != 1:
            raise EnvError("Atari100kPreprocessing repeats actions itself: make the ALE env with frameskip=1")
        if getattr(env.unwrapped, "_obs_type", "grayscale") != "grayscale":
            raise EnvError("Atari100kPreprocessing needs the ALE env made with obs_type='grayscale'")
        if noop_max < 0 or frame_skip < 1 or frame_stack < 1 or screen_size < 1:
            raise EnvError(f"Atari preprocessing needs noop_max >= 0 and frame_skip, frame_stack, screen_size >= 1;"
                           f" got {noop_max}, {frame_skip}, {frame_stack}, {screen_size}")
        if noop_max > 0 and env.unwrapped.get_action_meanings()[0] != "NOOP":
            raise EnvError("no-op starts need action 0 to be NOOP")
        # recorded so that env.spec can remake the env (gymnasium's check_env does)
        gym.utils.RecordConstructorArgs.__init__(self, training=training, noop_max=noop_max, frame_skip=frame_skip,
                                                 frame_stack=frame_stack, screen_size=screen_size, seed=seed)
        gym.Wrapper.__init__(self, env)
        self.training = bool(training)
        self.noop_max, self.frame_skip = int(noop_max), int(frame_skip)
        self.frame_stack, self.screen_size = int(frame_stack), int(screen_size)
        self.observation_space = spaces.Box(0, 255, (self.frame_stack, self.screen_size, self.screen_size),
                                            dtype=np.uint8)
        self.action_space = env.action_space
        self._seed = seed
        self._rng = np.random.default_rng(seed)
        self._frames: list[np.ndarray] = []
        self._raw = [None, None]    # the last two raw screens (older, newer)
        self._lives = 0
        self._continue = False       # the last step lost a life in training: reset continues the game

    @property
    def ale(self):
        """The ALE interface of the game."""
        return self.env.unwrapped.ale

    def _frame(self) -> np.ndarray:
        import cv2

        pooled = np.maximum(self._raw[0], self._raw[1])
        return cv2.resize(pooled, (self.screen_size, self.screen_size), interpolation=cv2.INTER_AREA)

    def _obs(self) -> np.ndarray:
        return np.stack(self._frames)

    def _info(self, raw_reward: float, life_loss: bool) -> dict[str, Any]:
        ale = self.ale
        return {"raw_reward": float(raw_reward), "lives": int(ale.lives()), "life_loss": bool(life_loss),
                "ram": ale.getRAM(), "episode_frame_number": int(ale.getEpisodeFrameNumber()),
                "frame_number": int(ale.getFrameNumber())}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is None and self._seed is not None:
            seed, self._seed = self._seed, None  # the constructor's seed, once
        if seed is not None:
            self._rng = np.random.default_rng(seed)
            self._continue = False
        if self._continue:  # the game goes on from the terminal step's screens
            self._continue = False
            noops, continued = 0, True
        else:
            screen, _ = self.env.reset(seed=seed, options=options)
            noops, continued = int(self._rng.integers(0, self.noop_max)) if self.noop_max else 0, False
            for _ in range(noops):
                screen, _, terminated, truncated, _ = self.env.step(0)
                if terminated or truncated:
                    screen, _ = self.env.reset()
            self._raw = [screen, screen]
        self._frames = [self._frame()] * self.frame_stack
        self._lives = int(self.ale.lives())
        info = self._info(0.0, False)
        info.update(noops=noops, continued=continued)
        return self._obs(), info

    def step(self, action):
        if not self._frames:
            raise EnvError("Atari env: call reset() before step()")
        raw_reward, terminated, truncated = 0.0, False, False
        for _ in range(self.frame_skip):
            screen, reward, terminated, truncated, _ = self.env.step(action)
            raw_reward += float(reward)
            self._raw = [self._raw[1], screen]
            if terminated or truncated:
                break
        self._frames = self._frames[1:] + [self._frame()]
        lives = int(self.ale.lives())
        life_loss = 0 < lives < self._lives and not terminated
        self._lives = lives
        reward = raw_reward
        if self.training:
            reward = float(np.clip(raw_reward, -1.0, 1.0))
            if life_loss:
                terminated = True
                self._continue = not truncated  # a truncated game is reset, not continued
        return self._obs(), reward, terminated, truncated, self._info(raw_reward, life_loss)

    # -- state, for a checkpoint taken mid-game ----------------------------------------
    def get_episode_state(self) -> dict[str, Any]:
        """Everything the next steps depend on, as numpy arrays and plain values: the
        console (``ale.cloneState(include_rng=True)``, serialised), the frame stack, the last
        two raw screens, the lives count, whether the next reset continues the game, and the
        no-op RNG. :meth:`set_episode_state` on a fresh env of the same game makes it step as
        this one would."""
        if not self._frames:
            raise EnvError("Atari env: no episode to save (call reset() first)")
        ale_state = np.frombuffer(self.ale.cloneState(include_rng=True).serialize(), dtype=np.uint8).copy()
        return {"ale": ale_state, "frames": np.stack(self._frames), "raw": np.stack(self._raw),
                "lives": np.int64(self._lives), "continue": np.int64(self._continue),
                "noop_rng": np.frombuffer(json.dumps(self._rng.bit_generator.state).encode(), dtype=np.uint8).copy()}

    def set_episode_state(self, state: dict[str, Any]) -> np.ndarray:
        """Restore :meth:`get_episode_state` output; returns the current observation."""
        import ale_py

        try:
            if not self._frames:  # the env's first reset: the game must be loaded before its state
                self.env.reset()
            self.ale.restoreState(ale_py.ALEState(np.asarray(state["ale"], dtype=np.uint8).tobytes()))
            frames = np.asarray(state["frames"], dtype=np.uint8)
            raw = np.asarray(state["raw"], dtype=np.uint8)
            self._frames = [f for f in frames]
            self._raw = [raw[0], raw[1]]
            self._lives = int(state["lives"])
            self._continue = bool(int(state["continue"]))
            self._rng = np.random.default_rng()
            self._rng.bit_generator.state = json.loads(np.asarray(state["noop_rng"], dtype=np.uint8).tobytes())
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise EnvError(f"Atari env: the saved episode state does not fit this env ({exc})") from None
        self._seed = None  # the constructor's seed was used by the saved run's first reset
        if frames.shape != self.observation_space.shape:
            raise EnvError(f"Atari env: the saved frame stack has shape {frames.shape}, this env "
                           f"{self.observation_space.shape}")
        return self._obs()


def make_atari_env(game: str, seed: int | None, training: bool, noop_max: int = 30, frame_skip: int = 4,
                   frame_stack: int = 4, screen_size: int = 84, max_frames: int = MAX_FRAMES,
                   render_mode: str | None = None) -> Atari100kPreprocessing:
    """An Atari-100k game as a gymnasium env with DER's preprocessing (module docstring).

    Args:
        game: ``"atari-pong"``, ``"pong"`` or ``"Pong"``: one of :data:`ATARI_100K_GAMES`.
        seed: seeds the first reset (the game and the no-op starts); None: fresh entropy.
        training: reward clipping and life loss as ``terminated`` (training); neither
            (evaluation).
        noop_max, frame_skip, frame_stack, screen_size: DER's 30, 4, 4, 84.
        max_frames: raw frames per game before the truncation (108k).
        render_mode: ``"rgb_array"`` for ``render()`` (videos).

    Raises EnvError for an unknown game (naming the nearest) or when ale-py is not installed.
    """
    rom = parse_game(game)
    if max_frames < 1:
        raise EnvError(f"max_frames must be >= 1, got {max_frames}")
    try:
        import ale_py
    except ImportError:
        raise EnvError("Atari envs need ale-py >= 0.12.1 and opencv-python-headless: "
                       "pip install 'curlrl[atari]'") from None
    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)  # no banner on stderr: errors only
    gym.register_envs(ale_py)  # gymnasium 1.x registers no plugins by itself
    env = gym.make(ale_env_id(rom), frameskip=1, repeat_action_probability=0.0, full_action_space=False,
                   obs_type="grayscale", max_num_frames_per_episode=int(max_frames), render_mode=render_mode)
    return Atari100kPreprocessing(env, training=training, noop_max=noop_max, frame_skip=frame_skip,
                                  frame_stack=frame_stack, screen_size=screen_size, seed=seed)
