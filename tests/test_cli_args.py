"""Positional words and key=value overrides in any order, for every command that takes both."""
from __future__ import annotations

import argparse

import pytest
import yaml
from conftest import cli_error

from curlrl.cli import main, place_positional


@pytest.mark.parametrize("slot,overrides,want_slot,want_overrides", [
    ("cartpole-swingup", ["batch_size=64"], "cartpole-swingup", ["batch_size=64"]),
    ("batch_size=64", ["cartpole-swingup"], "cartpole-swingup", ["batch_size=64"]),
    ("batch_size=64", ["seed=1", "walker-walk", "lr=0.1"], "walker-walk", ["batch_size=64", "seed=1", "lr=0.1"]),
    ("env_steps=2000", [], None, ["env_steps=2000"]),
    (None, [], None, []),
    ("a", ["b", "x=1"], "a", ["b", "x=1"]),  # a second bare word is left for the config parser to name
])
def test_place_positional(slot, overrides, want_slot, want_overrides):
    args = argparse.Namespace(task=slot, overrides=overrides)
    place_positional(args, "task")
    assert (args.task, args.overrides) == (want_slot, want_overrides)


def test_an_existing_path_with_an_equals_sign_is_the_positional(tmp_path):
    folder = tmp_path / "holdout=0.5"
    folder.mkdir()
    args = argparse.Namespace(data_dir="steps=5", overrides=[str(folder)])
    place_positional(args, "data_dir")
    assert (args.data_dir, args.overrides) == (str(folder), ["steps=5"])


def _config(capsys, argv):
    assert main(argv) == 0
    return yaml.safe_load(capsys.readouterr().out)


def test_config_takes_the_task_after_an_override(capsys):
    cfg = _config(capsys, ["config", "batch_size=64", "walker-walk"])
    # walker-walk's shipped action_repeat (2) shows the task was read as the task
    assert (cfg["task"], cfg["batch_size"], cfg["action_repeat"]) == ("walker-walk", 64, 2)
    assert _config(capsys, ["config", "walker-walk", "batch_size=64"]) == cfg


@pytest.mark.parametrize("command", ["train", "config"])
def test_an_override_alone_is_not_a_task(command, capsys):
    line = cli_error(capsys, [command, "batch_size=64"])
    assert line == f"curlrl {command}: error: a TASK is required (e.g. cartpole-swingup)", line


@pytest.fixture
def captured(monkeypatch):
    """Run train/pretrain commands up to the job, and keep the config the job would get."""
    from curlrl.jobs import pretrain, train

    got = {}

    def job(cfg, run_dir, resume=False, stop=None):
        got.update(cfg=cfg, resume=resume)
        return {"stopped_by": None}  # the summary's key the command reads

    monkeypatch.setattr(train, "train", job)
    monkeypatch.setattr(pretrain, "pretrain", job)
    return got


def test_train_takes_the_task_after_an_override(captured, tmp_path):
    assert main(["train", "batch_size=64", "walker-walk", "--run-dir", str(tmp_path / "r")]) == 0
    cfg = captured["cfg"]
    assert (cfg.task, cfg.batch_size, cfg.action_repeat) == ("walker-walk", 64, 2)


def test_train_resume_takes_a_lone_override(captured, tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / "config.yaml").write_text("task: walker-walk\naction_repeat: 2\nenv_steps: 1000\n")
    assert main(["train", "--resume", "--run-dir", str(run), "env_steps=2000"]) == 0
    assert (captured["cfg"].task, captured["cfg"].env_steps, captured["resume"]) == ("walker-walk", 2000, True)


@pytest.mark.parametrize("argv", [["steps=5", "{data}"], ["{data}", "steps=5"], ["steps=5", "data_dir={data}"]])
def test_pretrain_takes_data_dir_and_overrides_in_any_order(argv, captured, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    argv = [a.format(data=data) for a in argv]
    assert main(["pretrain", *argv, "--run-dir", str(tmp_path / "r")]) == 0
    assert (captured["cfg"].data_dir, captured["cfg"].steps) == (str(data), 5)


def test_pretrain_resume_takes_a_lone_override(captured, tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / "config.yaml").write_text(f"data_dir: {tmp_path}\nsteps: 10\n")
    assert main(["pretrain", "--resume", "--run-dir", str(run), "steps=20"]) == 0
    assert (captured["cfg"].data_dir, captured["cfg"].steps, captured["resume"]) == (str(tmp_path), 20, True)


def test_pretrain_without_a_data_dir_is_one_line(captured, tmp_path, capsys):
    line = cli_error(capsys, ["pretrain", "steps=5", "--run-dir", str(tmp_path / "r")], "a DATA_DIR is required")
    assert line.startswith("curlrl: error: a DATA_DIR is required"), line
    assert captured == {} and not (tmp_path / "r").exists()
