"""`curlrl train atari-GAME`: the DER (+ CURL) training loop end to end on a real game.

Small budgets (a few hundred agent steps, batch 8) so that the real command runs in seconds:
the CSVs and both evaluation protocols, a kill -9 right after a mid-game checkpoint and the
resume that must equal the uninterrupted run (every CSV value but the clock's, every weight,
optimizer moment, noise buffer and the replay), the env state restored mid-game, the
one-line refusals."""
import csv
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("ale_py")

from conftest import assert_one_line  # noqa: E402

from curlrl.envs.atari import make_atari_env  # noqa: E402
from curlrl.jobs import config as config_mod  # noqa: E402
from curlrl.jobs.atari import AtariTrainer  # noqa: E402

SMALL = ["env_steps=600", "learn_start=200", "batch_size=8", "replay_capacity=2000", "eval_every=300",
         "eval_episodes=1", "final_eval_episodes=2", "checkpoint_every=250", "max_frames=2400", "threads=1",
         "device=cpu"]
CLOCK = {"wall_s", "env_steps_per_s"}


def curlrl(*args, env=None):
    return subprocess.run([sys.executable, "-m", "curlrl.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=900)


def rows(path):
    with open(path) as fh:
        return [{k: v for k, v in r.items() if k not in CLOCK} for r in csv.DictReader(fh)]


def weights(run_dir):
    from curlrl.jobs.rundir import RunDir

    state = RunDir(run_dir).load_checkpoint()
    flat = {}

    def walk(prefix, obj):
        if isinstance(obj, dict):
            for k, v in obj.items():
                walk(f"{prefix}.{k}", v)
        elif isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                walk(f"{prefix}.{i}", v)
        else:
            flat[prefix] = obj
    walk("", {k: state[k] for k in ("agent", "env", "game", "counters")})
    return flat


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """The uninterrupted run every interrupted one is compared with."""
    run = tmp_path_factory.mktemp("atari") / "whole"
    r = curlrl("train", "atari-breakout", *SMALL, "--run-dir", str(run))
    assert r.returncode == 0, r.stderr
    return run


def assert_same_run(whole, cut):
    for name in ("train.csv", "eval.csv", "final_eval.csv"):
        assert rows(whole / name) == rows(cut / name), name
    a, b = weights(whole), weights(cut)
    assert a.keys() == b.keys() and ".game.seconds" in a
    del a[".game.seconds"], b[".game.seconds"]  # the clock's
    for k in a:
        if torch.is_tensor(a[k]):
            assert torch.equal(a[k], b[k]), k
        else:
            assert a[k] == b[k], k
    ra, rb = (np.load(d / "checkpoints" / (d / "checkpoints" / "LATEST").read_text().strip() / "replay.npz")
              for d in (whole, cut))
    assert ra.files == rb.files and all(np.array_equal(ra[f], rb[f]) for f in ra.files)


def test_a_run_killed_after_a_mid_game_checkpoint_resumes_to_the_uninterrupted_run(whole, tmp_path):
    cut = tmp_path / "cut"
    # the kill lands right after the checkpoint at agent step 500 (mid-game: the cap is 600 steps)
    r = curlrl("train", "atari-breakout", *SMALL, "--run-dir", str(cut), env={"CURLRL_FAULT": "checkpoint:500"})
    assert r.returncode == -9
    assert (cut / "checkpoints" / "LATEST").read_text().strip() == "step-000000500"
    r = curlrl("train", "--resume", "--run-dir", str(cut))
    assert r.returncode == 0, r.stderr
    assert_same_run(whole, cut)


def test_sigterm_after_an_evaluation_checkpoints_that_step_and_the_resume_is_exact(whole, tmp_path):
    cut = tmp_path / "cut"
    r = curlrl("train", "atari-breakout", *SMALL, "--run-dir", str(cut), env={"CURLRL_FAULT": "eval:300:TERM"})
    assert r.returncode == 143, r.stderr
    # the step in progress when the signal came (the one after the evaluation) is finished, then checkpointed
    assert "stopped by SIGTERM at env step 301 (checkpoint written)" in r.stderr
    assert "curlrl train --resume --run-dir" in r.stderr
    r = curlrl("train", "--resume", "--run-dir", str(cut))
    assert r.returncode == 0, r.stderr
    assert_same_run(whole, cut)


def test_the_logs_hold_games_both_protocols_and_agent_steps(tmp_path):
    run = tmp_path / "r"
    r = curlrl("train", "atari-breakout", *SMALL, "curl=false", "--run-dir", str(run))
    assert r.returncode == 0, r.stderr
    assert "(DER)" in r.stdout and "final evaluation (2 games)" in r.stdout and "CURL paper 4.9" in r.stdout
    evals = rows(run / "eval.csv")
    assert sorted({int(e["env_step"]) for e in evals}) == [300, 600]
    assert all(int(e["frames"]) == 4 * int(e["env_step"]) for e in evals)
    final = rows(run / "final_eval.csv")
    assert [int(f["eval_episode"]) for f in final] == [0, 1] and {f["env_step"] for f in final} == {"600"}
    games = rows(run / "train.csv")
    # max_frames=2400 caps a game at 600 agent steps: every game row is a whole game, its steps add up
    assert games and all(0 < int(g["game_steps"]) <= 600 for g in games)
    assert sum(int(g["game_steps"]) for g in games) <= 600
    assert all(g["curl_loss"] == "" for g in games)
    # 600 - 200 + 1 updates: one per agent step from learn_start on (Kaixhin's T >= learn_start)
    assert int(evals[-1]["updates"]) == 401
    assert (run / "eval_curve.png").stat().st_size > 0 and "plot: " in r.stdout
    # curlrl eval plays the checkpoint's agent again, films the first game, and writes no log row
    before = (run / "eval.csv").read_bytes()
    r = curlrl("eval", str(run), "--episodes", "1")
    assert r.returncode == 0, r.stderr
    assert "atari-breakout @ 600 agent steps: score" in r.stdout
    assert (run / "videos" / "final_eval_0000600.mp4").stat().st_size > 0
    assert (run / "eval.csv").read_bytes() == before


def test_the_env_state_restores_mid_game_across_a_life_loss():
    env = make_atari_env("atari-breakout", seed=3, training=True)
    env.reset()
    rng = np.random.default_rng(0)
    for _ in range(150):
        _, _, t, tr, _ = env.step(int(rng.integers(4)))
        if t or tr:
            env.reset()
    state = env.get_episode_state()
    actions = rng.integers(4, size=800)

    def play(e):
        out = []
        for a in actions:
            obs, r, t, tr, info = e.step(int(a))
            out.append((obs.copy(), r, t, tr, info["life_loss"], info["lives"]))
            if t or tr:
                out.append(e.reset()[0].copy())
        return out

    first = play(env)
    other = make_atari_env("atari-breakout", seed=99, training=True)  # another seed: the state decides
    other.set_episode_state(state)
    second = play(other)
    assert any(isinstance(x, tuple) and x[4] for x in first)  # a life was lost on the way
    assert len(first) == len(second)
    for x, y in zip(first, second):
        if isinstance(x, tuple):
            assert np.array_equal(x[0], y[0]) and x[1:] == y[1:]
        else:
            assert np.array_equal(x, y)


def test_an_atari_config_is_its_own_kind():
    cfg = config_mod.resolve("atari-pong", None, [])
    assert isinstance(cfg, config_mod.AtariConfig)
    assert cfg.curl_weight == 0.01 and cfg.beta_anneal_updates == 100_000 - 1600
    assert config_mod.resolve("atari-krull", None, []).curl_weight == 1.0
    assert config_mod.resolve("atari-krull", None, ["curl_weight=0.05"]).curl_weight == 0.05
    assert isinstance(config_mod.resolve("cartpole-swingup", None, []), config_mod.TrainConfig)


@pytest.mark.parametrize("args, words", [
    (["atari-pongg"], "did you mean atari-pong"),
    (["atari-pong", "curl_weight=-1"], "'curl_weight' must be >= 0"),
    (["atari-pong", "action_repeat=4"], "unknown config key 'action_repeat'"),
    (["atari-pong", "batch_size=64", "replay_capacity=32"], "'batch_size' (64) must be <= replay_capacity"),
    (["atari-pong", "v_min=1", "v_max=0"], "'v_min' (1.0) must be below 'v_max'"),
    (["cartpole-swingup", "task=atari-pong"], "contradicts the task argument"),
])
def test_bad_atari_input_is_one_line_and_exit_2(tmp_path, args, words):
    run = tmp_path / "r"
    r = curlrl("train", *args, "--run-dir", str(run))
    assert_one_line(r.returncode, r.stderr, words)
    assert not run.exists()


def test_a_dmc_checkpoint_does_not_resume_as_an_atari_run(tmp_path):
    run = tmp_path / "r"
    r = curlrl("train", "atari-pong", *SMALL, "env_steps=250", "save_replay=false", "final_eval_episodes=0",
               "--run-dir", str(run))
    assert r.returncode == 0, r.stderr
    state = torch.load(next((run / "checkpoints").glob("step-*")) / "latest.pt", weights_only=True)
    state.pop("agent_kind")
    torch.save(state, next((run / "checkpoints").glob("step-*")) / "latest.pt")
    before = (run / "eval.csv").read_bytes()
    r = curlrl("train", "--resume", "--run-dir", str(run), "env_steps=500")
    assert_one_line(r.returncode, r.stderr, "not an Atari one")
    assert (run / "eval.csv").read_bytes() == before


def test_the_trainer_runs_in_process_and_summarises(tmp_path):
    cfg = config_mod.resolve("atari-pong", None, [*SMALL, "env_steps=300", "final_eval_episodes=1"])
    with AtariTrainer(cfg, tmp_path / "r", quiet=True) as trainer:
        summary = trainer.run()
    assert summary["agent_steps"] == 300 and summary["updates"] == 101
    assert summary["best_eval_return"] == summary["last_eval_return"]  # one evaluation so far
    assert summary["final_eval_return"] is not None


def test_every_game_has_a_shipped_config_with_the_codes_curl_weight():
    from curlrl.envs.atari import ATARI_100K_GAMES

    small = {"pong", "boxing", "private_eye", "freeway"}  # curl_rainbow agent.py's list
    for game in ATARI_100K_GAMES:
        shipped = config_mod.task_config(f"atari-{game}")
        assert shipped == {"task": f"atari-{game}", "curl_weight": 0.01 if game in small else 1.0}, game


def test_the_defaults_are_ders_published_settings():
    # CURL Table 4 / Kaixhin's README "data-efficient Rainbow" / curl_rainbow main.py (shared/ATARI.md section 2)
    cfg = config_mod.resolve("atari-alien", None, [])
    published = dict(num_atoms=51, v_min=-10.0, v_max=10.0, hidden_dim=256, noisy_sigma0=0.1, n_step=20,
                     discount=0.99, lr=1e-4, adam_eps=1.5e-4, grad_clip=10.0, batch_size=32, target_update=2000,
                     learn_start=1600, priority_alpha=0.5, priority_beta=0.4, eval_epsilon=0.001, encoder_tau=0.001,
                     replay_capacity=100_000, env_steps=100_000, eval_every=10_000, eval_episodes=10, noop_max=30,
                     max_frames=108_000, curl_dim=128)
    assert {k: getattr(cfg, k) for k in published} == published
