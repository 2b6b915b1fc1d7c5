"""Atari-100k envs (curlrl.envs.atari): DER's preprocessing, checked against gymnasium's own
AtariPreprocessing, and DER's life-loss semantics (terminal for the agent, the game goes on)."""
import warnings

import numpy as np
import pytest

pytest.importorskip("ale_py", reason="the atari extra (ale-py) is not installed")
pytest.importorskip("cv2", reason="the atari extra (opencv-python-headless) is not installed")

import gymnasium as gym  # noqa: E402

from curlrl.envs.atari import ATARI_100K_GAMES, ale_env_id, make_atari_env, parse_game  # noqa: E402
from curlrl.errors import EnvError  # noqa: E402
from curlrl.per import PrioritizedReplay  # noqa: E402

FIRE = 1  # Breakout's minimal action set: NOOP, FIRE, RIGHT, LEFT; FIRE with a still paddle loses lives fast


def test_the_26_games_are_ales_and_task_names_parse():
    import ale_py

    gym.register_envs(ale_py)
    assert len(ATARI_100K_GAMES) == 26 == len(set(ATARI_100K_GAMES))
    for game in ATARI_100K_GAMES:
        assert ale_env_id(game) in gym.registry, game
    assert parse_game("atari-pong") == parse_game("Pong") == parse_game("pong") == "pong"
    assert parse_game("atari-PrivateEye") == parse_game("atari-private_eye") == "private_eye"
    assert ale_env_id("atari-up_n_down") == "ALE/UpNDown-v5"


@pytest.mark.parametrize("task, nearest", [("atari-pongg", "atari-pong"), ("atari-privateye", "atari-private_eye"),
                                           ("atari-ms-pacmann", "atari-ms_pacman")])
def test_an_unknown_game_names_the_nearest(task, nearest):
    with pytest.raises(EnvError, match="unknown Atari-100k game") as err:
        make_atari_env(task, seed=0, training=True)
    assert f"did you mean {nearest}" in str(err.value)
    assert len(str(err.value).splitlines()) == 1


def test_observations_are_4_stacked_84px_uint8_frames():
    env = make_atari_env("atari-pong", seed=0, training=True)
    obs, info = env.reset()
    assert env.observation_space == gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8 and env.observation_space.contains(obs)
    assert all(np.array_equal(f, obs[0]) for f in obs)  # the reset frame fills the stack
    assert 0 <= info["noops"] < 30 and info["episode_frame_number"] == info["noops"]
    rng = np.random.default_rng(0)
    for _ in range(20):
        nxt, reward, terminated, truncated, info = env.step(int(rng.integers(env.action_space.n)))
        assert np.array_equal(nxt[:3], obs[1:])  # the stack shifts by one frame per agent step
        obs = nxt
    assert info["ram"].shape == (128,) and info["ram"].dtype == np.uint8
    assert np.array_equal(info["ram"], env.unwrapped.ale.getRAM())


def test_frames_match_gymnasiums_atari_preprocessing():
    """gymnasium's AtariPreprocessing + FrameStackObservation is an independent implementation of the
    same frames (max of the last two raw frames, then INTER_AREA to 84x84); no-ops off in both."""
    import ale_py
    from gymnasium.wrappers import AtariPreprocessing, FrameStackObservation

    gym.register_envs(ale_py)
    ours = make_atari_env("atari-ms_pacman", seed=3, training=False, noop_max=0)
    theirs = FrameStackObservation(AtariPreprocessing(
        gym.make("ALE/MsPacman-v5", frameskip=1, repeat_action_probability=0.0, full_action_space=False),
        noop_max=0, frame_skip=4, screen_size=84, grayscale_obs=True), 4, padding_type="reset")
    a, _ = ours.reset()
    b, _ = theirs.reset(seed=3)
    assert np.array_equal(a, b)
    rng = np.random.default_rng(0)
    for _ in range(150):
        action = int(rng.integers(ours.action_space.n))
        a, ra, ta, _, info = ours.step(action)
        b, rb, tb, _, _ = theirs.step(action)
        assert ra == rb and ta == tb and not ta
        assert np.array_equal(a, b)


def _until_life_loss(env, max_steps=500):
    for step in range(1, max_steps):
        obs, reward, terminated, truncated, info = env.step(FIRE)
        if info["life_loss"] or terminated or truncated:
            return step, obs, terminated, truncated, info
    raise AssertionError("no life lost")


def test_a_life_loss_is_terminal_in_training_and_the_game_goes_on():
    env = make_atari_env("atari-breakout", seed=1, training=True)
    _, info0 = env.reset()
    assert info0["lives"] == 5 and not info0["continued"]
    _, obs, terminated, truncated, info = _until_life_loss(env)
    assert terminated and not truncated and info["life_loss"] and info["lives"] == 4
    frames_at_loss = info["episode_frame_number"]
    obs2, info2 = env.reset()
    # the game was not reset: same lives, same frame counter, no no-ops; the stack restarts from the last frame
    assert info2["continued"] and info2["noops"] == 0 and info2["lives"] == 4
    assert info2["episode_frame_number"] == frames_at_loss
    assert np.array_equal(info2["ram"], info["ram"])
    assert all(np.array_equal(f, obs[-1]) for f in obs2)
    _, _, _, _, info3 = env.step(FIRE)
    assert info3["episode_frame_number"] == frames_at_loss + 4

    losses = 1
    while True:  # lose the rest: each loss ends an agent episode, the last one ends the game
        _, _, terminated, _, info = _until_life_loss(env)
        assert terminated
        if info["lives"] == 0:
            assert not info["life_loss"]  # the last life is the game over, not a life loss
            break
        losses += 1
        assert info["life_loss"] and info["lives"] == 5 - losses
        env.reset()
    assert losses == 4
    _, info = env.reset()
    assert not info["continued"] and info["lives"] == 5 and info["episode_frame_number"] == info["noops"]
    # a seeded reset, or one in mid-episode, resets the game even right after a life loss
    _until_life_loss(env)
    _, info = env.reset(seed=5)
    assert not info["continued"] and info["lives"] == 5
    env.step(FIRE)
    _, info = env.reset()
    assert not info["continued"] and info["episode_frame_number"] == info["noops"]


def test_evaluation_sees_the_same_frames_without_life_loss_terminals():
    train, evaluate = (make_atari_env("atari-breakout", seed=4, training=t) for t in (True, False))
    a, _ = train.reset()
    b, _ = evaluate.reset()
    assert np.array_equal(a, b)
    life_losses = 0
    for _ in range(1000):
        a, ra, ta, _, ia = train.step(FIRE)
        b, rb, tb, _, ib = evaluate.step(FIRE)
        assert ia["episode_frame_number"] == ib["episode_frame_number"]
        assert np.array_equal(ia["ram"], ib["ram"])  # the same game
        assert ia["life_loss"] == ib["life_loss"]
        if ia["life_loss"]:
            life_losses += 1
            assert ta and not tb
            train.reset()
        if ib["lives"] == 0:
            assert ta and tb
            break
    assert life_losses == 4


def test_rewards_are_clipped_in_training_only():
    seen_big = False
    for training in (True, False):
        env = make_atari_env("atari-asterix", seed=0, training=training)
        env.reset()
        rng = np.random.default_rng(0)
        for _ in range(400):
            _, reward, terminated, truncated, info = env.step(int(rng.integers(env.action_space.n)))
            raw = info["raw_reward"]
            seen_big |= raw > 1
            assert reward == (np.clip(raw, -1, 1) if training else raw)
            if terminated or truncated:
                env.reset()
    assert seen_big  # Asterix scores 50 an item: the clip mattered


def test_the_frame_cap_is_a_truncation_and_the_next_reset_restarts_the_game():
    env = make_atari_env("atari-pong", seed=0, training=True, noop_max=0, max_frames=200)
    env.reset()
    step, terminated, truncated = 0, False, False
    while not (terminated or truncated or step == 100):
        _, _, terminated, truncated, info = env.step(0)
        step += 1
    assert truncated and not terminated and step == 50 and info["episode_frame_number"] == 200
    _, info = env.reset()
    assert not info["continued"] and info["episode_frame_number"] == 0


def test_seeds_make_games_reproducible():
    def rollout(seed):
        env = make_atari_env("atari-breakout", seed=seed, training=True)
        obs, info = env.reset()
        out, noops = [obs], [info["noops"]]
        for _ in range(60):
            obs, _, terminated, truncated, info = env.step(FIRE)
            out.append(obs)
            if terminated or truncated:
                obs, info = env.reset()
                noops.append(info["noops"])
        return np.stack(out), noops

    a, na = rollout(7)
    b, nb = rollout(7)
    assert np.array_equal(a, b) and na == nb
    env = make_atari_env("atari-pong", seed=0, training=False)
    draws = {env.reset()[1]["noops"] for _ in range(60)}
    assert draws <= set(range(30)) and len(draws) > 10  # 0 .. 29 no-op frames, as curl_rainbow's randrange(30)


def test_the_env_passes_gymnasiums_checker():
    from gymnasium.utils.env_checker import check_env

    for training in (True, False):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "different from the unwrapped version": it is a wrapper
            check_env(make_atari_env("atari-pong", seed=0, training=training), skip_render_check=True)


def test_replay_stacks_are_the_stacks_the_agent_saw_across_life_losses():
    env = make_atari_env("atari-breakout", seed=2, training=True)
    rep = PrioritizedReplay(2000, frame_stack=4, n_step=5, seed=0)
    seen = set()
    obs, _ = env.reset()
    seen.add(obs.tobytes())
    rng = np.random.default_rng(0)
    episodes = 0
    while episodes < 6:
        action = FIRE if rng.random() < 0.7 else int(rng.integers(env.action_space.n))
        nxt, reward, terminated, truncated, info = env.step(action)
        seen.add(nxt.tobytes())
        rep.add(obs, action, reward, nxt, terminated, truncated)
        obs = nxt
        if terminated or truncated:
            episodes += 1
            obs, _ = env.reset()
            seen.add(obs.tobytes())
    for _ in range(20):
        batch = rep.sample(32, 0.4)
        for o, n in zip(batch["obs"], batch["next_obs"]):
            assert o.tobytes() in seen and n.tobytes() in seen
