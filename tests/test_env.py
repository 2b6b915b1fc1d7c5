"""DMC pixel envs against gymnasium's checker and dm_control's own semantics."""
import os

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from curlrl.envs import make_env
from curlrl.errors import EnvError


@pytest.fixture(scope="module")
def cartpole():
    env = make_env("cartpole-swingup", image_size=64, action_repeat=8, frame_stack=3, seed=0)
    yield env
    env.close()


def test_passes_gymnasium_env_checker(cartpole):
    check_env(cartpole, skip_render_check=False)


@pytest.mark.parametrize("task", ["ball_in_cup-catch", "walker-walk"])
def test_other_suite_tasks_build_with_the_right_spaces(task):
    env = make_env(task, image_size=32, action_repeat=2, frame_stack=2, seed=1)
    obs, info = env.reset(seed=1)
    assert obs.shape == (6, 32, 32) and obs.dtype == np.uint8
    assert env.observation_space.contains(obs)
    assert info["state"].dtype == np.float32 and info["state"].ndim == 1
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert env.observation_space.contains(obs) and isinstance(reward, float)


def test_reset_stack_repeats_the_first_frame_and_steps_shift_it(cartpole):
    obs, info = cartpole.reset(seed=3)
    assert obs.shape == (9, 64, 64)
    np.testing.assert_array_equal(obs[0:3], obs[6:9])
    nxt, *_ = cartpole.step(np.ones(1, np.float32))
    np.testing.assert_array_equal(nxt[0:6], obs[3:9])  # oldest frame dropped, newest appended
    assert info["state"].shape == (5,)  # cartpole: position (3) + velocity (2)


def test_state_names_label_the_state_entries(cartpole):
    names = cartpole.state_names
    assert names == ["position[0]", "position[1]", "position[2]", "velocity[0]", "velocity[1]"]
    _, info = cartpole.reset(seed=4)
    for _ in range(3):
        _, _, _, _, info = cartpole.step(np.ones(1, np.float32))
    state = dict(zip(names, info["state"]))
    # dm_control's cartpole position is (cart x, cos(pole angle), sin(pole angle))
    assert state["position[1]"] ** 2 + state["position[2]"] ** 2 == pytest.approx(1.0, abs=1e-5)


def test_state_names_keep_scalar_entries_unindexed():
    env = make_env("walker-walk", image_size=16, action_repeat=2, frame_stack=1, seed=0)
    _, info = env.reset(seed=0)
    _, _, _, _, info = env.step(env.action_space.sample())
    names = env.state_names
    assert len(names) == len(info["state"]) == 24
    assert names[14] == "height" and names[:2] == ["orientations[0]", "orientations[1]"]
    assert names[15:] == [f"velocity[{i}]" for i in range(9)]
    state = dict(zip(names, info["state"]))
    # walker's orientations are the (xx, xz) entries of 7 planar rotations: unit vectors
    for i in range(7):
        assert state[f"orientations[{2 * i}]"] ** 2 + state[f"orientations[{2 * i + 1}]"] ** 2 == \
            pytest.approx(1.0, abs=1e-5)
    env.close()
    assert env.state_names == names  # still known after close


def test_time_limit_is_a_truncation_after_1000_env_steps(cartpole):
    cartpole.reset(seed=0)
    steps = 0
    while True:
        _, _, terminated, truncated, info = cartpole.step(np.zeros(1, np.float32))
        steps += 1
        if terminated or truncated:
            break
    assert steps == 125 and info["env_steps"] == 1000  # 1000 env steps / action repeat 8
    assert truncated and not terminated


def test_action_repeat_sums_rewards_and_seeded_resets_repeat():
    a = make_env("cartpole-swingup", image_size=32, action_repeat=4, frame_stack=1, seed=5)
    b = make_env("cartpole-swingup", image_size=32, action_repeat=1, frame_stack=1, seed=5)
    obs_a, _ = a.reset(seed=11)
    obs_b, _ = b.reset(seed=11)
    np.testing.assert_array_equal(obs_a, obs_b)
    act = np.array([0.3], np.float32)
    r_a = a.step(act)[1]
    r_b = sum(b.step(act)[1] for _ in range(4))
    assert r_a == pytest.approx(r_b, rel=1e-6)


def test_render_returns_rgb_frames():
    env = make_env("cartpole-swingup", image_size=32, render_size=48)
    env.reset(seed=0)
    img = env.render()
    assert img.shape == (48, 48, 3) and img.dtype == np.uint8 and img.std() > 0


@pytest.mark.parametrize("task", ["cartpole", "cartpole-flip", "nope-nope"])
def test_unknown_tasks_name_the_problem(task):
    with pytest.raises(EnvError, match="task"):
        make_env(task)


def test_no_working_renderer_says_what_to_install(monkeypatch):
    from curlrl.envs import rendering
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    with pytest.raises(EnvError, match="apt-get install libosmesa6"):
        rendering.select_gl_backend(candidates=("no-such-backend",))
    assert "MUJOCO_GL" not in os.environ


def test_users_mujoco_gl_wins(monkeypatch):
    from curlrl.envs import rendering
    monkeypatch.setenv("MUJOCO_GL", "osmesa")
    assert rendering.select_gl_backend(candidates=()) == "osmesa"


@pytest.mark.parametrize("task", ["cartpole-swingup", "reacher-easy"])  # reacher: the reset moves the target
def test_episode_state_continues_the_episode_exactly(task):
    a = make_env(task, image_size=24, action_repeat=8, frame_stack=3, seed=1)
    b = make_env(task, image_size=24, action_repeat=8, frame_stack=3, seed=5)
    actions = np.random.default_rng(0).uniform(-1, 1, (125,) + a.action_space.shape).astype(np.float32)
    a.reset(seed=3)
    b.reset(seed=4)
    for act in actions[:40]:
        a.step(act)
    state = a.get_episode_state()
    # what a checkpoint does to it: numpy arrays, plain ints and floats, lists
    assert state["frames"].dtype == np.uint8 and state["physics"].dtype == np.float64
    assert np.array_equal(b.set_episode_state(state), np.concatenate(state["frames"]))
    for n, act in enumerate(actions[40:], start=41):
        obs_a, *rest_a, info_a = a.step(act)
        obs_b, *rest_b, info_b = b.step(act)
        assert np.array_equal(obs_a, obs_b) and rest_a == rest_b, n
        assert np.array_equal(info_a["state"], info_b["state"]) and info_a["env_steps"] == info_b["env_steps"]
    assert rest_b[2] and info_b["env_steps"] == 1000  # the time limit still comes at the same step


def test_episode_state_of_another_env_is_refused():
    a = make_env("cartpole-swingup", image_size=24, action_repeat=8, frame_stack=3, seed=1)
    a.reset(seed=0)
    b = make_env("cartpole-swingup", image_size=32, action_repeat=8, frame_stack=3, seed=1)
    with pytest.raises(EnvError, match="set_episode_state"):
        b.set_episode_state(a.get_episode_state())
