"""Small offline datasets made by the project itself, shared by the offline tests.

tests/conftest.py wraps :func:`shared` and :func:`train_run` in session-scoped fixtures; the folder lives under
pytest's session temp dir, so the episodes are rendered once per session.
"""
from __future__ import annotations

from pathlib import Path

from curlrl.jobs.rundir import RunDir

# cartpole-swingup at action repeat 20 -> 50 agent steps (51 frames) per episode;
# 6 episodes = 306 rendered 64x64 frames (~10 s). Pretrain/probe crop 64 -> 56.
TASK, EPISODES, ACTION_REPEAT, IMAGE_SIZE, CROP = "cartpole-swingup", 6, 20, 64, 56
HOLDOUT = 0.34  # 2 of 6 episodes held out
# A small encoder so pretraining in a test takes seconds (probes compare like with like).
SMALL = ["num_layers=2", "num_filters=16", f"crop_size={CROP}", "threads=1", f"holdout={HOLDOUT}"]


def shared(tmp_path_factory, name: str = "cartpole") -> Path:
    """The session's dataset folder, collected on first use."""
    from curlrl.jobs.collect import collect

    out = tmp_path_factory.getbasetemp() / f"offline-{name}"
    if not (out / "manifest.json").exists():
        collect(TASK, EPISODES, out, image_size=IMAGE_SIZE, action_repeat=ACTION_REPEAT, seed=0, quiet=True)
    return out


def pretrained(tmp_path_factory, data: Path, steps: int = 250) -> Path:
    """A pretrain run on ``data`` (small encoder, augment positives), made once per session."""
    from curlrl.jobs.pretrain import pretrain, resolve


    run = tmp_path_factory.getbasetemp() / f"pretrain-{steps}"
    if not RunDir(run).has_checkpoint():
        cfg = resolve(str(data), SMALL + [f"steps={steps}", "batch_size=64", "log_every=50"])
        pretrain(cfg, run, quiet=True)
    return run


def train_run(tmp_path_factory) -> Path:
    """A real (tiny) ``curlrl train`` run dir: 2 random-action agent steps, 2 evaluation episodes, a checkpoint."""
    from curlrl.jobs import config as config_mod
    from curlrl.jobs.train import train

    run = tmp_path_factory.getbasetemp() / "train-run"
    if not RunDir(run).has_checkpoint():
        cfg = config_mod.resolve(TASK, overrides=TRAIN_SMALL)
        train(cfg, run, quiet=True)
    return run


TRAIN_SMALL = [f"image_size={IMAGE_SIZE}", f"crop_size={CROP}", f"action_repeat={ACTION_REPEAT}",
               "num_layers=2", "num_filters=16", "hidden_dim=32", "env_steps=40", "init_steps=40",
               "eval_every=40", "eval_episodes=1", "checkpoint_every=40", "video=false", "save_replay=false",
               "batch_size=8", "replay_capacity=100", "threads=1", "device=cpu"]


def evaluated_agent(run: Path, monkeypatch):
    """The agent that ``curlrl eval RUN --episodes 1 --no-video`` evaluates (caught on its way
    into :func:`curlrl.jobs.evaluate.evaluate`), after checking the command succeeded."""
    from curlrl.cli import main
    from curlrl.jobs import evaluate as evaluate_mod

    seen, real = {}, evaluate_mod.evaluate

    def spy(agent, *args, **kwargs):
        seen["agent"] = agent
        return real(agent, *args, **kwargs)

    monkeypatch.setattr(evaluate_mod, "evaluate", spy)
    assert main(["eval", str(run), "--episodes", "1", "--no-video"]) == 0
    return seen["agent"]
