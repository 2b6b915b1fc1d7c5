"""`curlrl collect` output, dataset loading and the errors of bad datasets."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from curlrl.datasets import load_dataset, save_episode, split_episodes
from curlrl.errors import DatasetError
from curlrl.jobs.rundir import RunDir

import offline_data
from conftest import HANG_TIMEOUT_S, cli_error, one_line_error


def test_collect_writes_single_frames_state_actions_and_manifest(dataset):
    files = sorted(dataset.glob("*.npz"))
    assert len(files) == offline_data.EPISODES
    assert not list(dataset.glob(".*")), "no temp files left behind"
    steps = 1000 // offline_data.ACTION_REPEAT
    with np.load(files[0]) as ep:
        size = offline_data.IMAGE_SIZE
        assert ep["pixels"].shape == (steps + 1, 3, size, size) and ep["pixels"].dtype == np.uint8
        assert ep["state"].shape == (steps + 1, 5) and ep["state"].dtype == np.float32
        assert ep["action"].shape == (steps, 1) and ep["action"].dtype == np.float32
        assert ep["reward"].shape == (steps,) and ep["reward"].dtype == np.float32
        assert np.abs(ep["action"]).max() <= 1.0
        assert ep["pixels"][0].std() > 0 and not np.array_equal(ep["pixels"][0], ep["pixels"][-1])
    manifest = json.loads((dataset / "manifest.json").read_text())
    assert manifest["task"] == "cartpole-swingup" and manifest["image_size"] == offline_data.IMAGE_SIZE
    assert manifest["action_repeat"] == offline_data.ACTION_REPEAT and manifest["frame_stack"] is None
    assert manifest["episodes"] == offline_data.EPISODES and manifest["complete"] is True
    assert manifest["transitions"] == offline_data.EPISODES * steps
    assert manifest["state_names"] == ["position[0]", "position[1]", "position[2]", "velocity[0]", "velocity[1]"]


def test_stacks_stay_within_episodes_and_pad_with_the_first_frame(dataset):
    data = load_dataset(dataset)
    s1 = data.start[1]
    stacks = data.stacks(np.array([s1, s1 + 1, s1 + 5]), 3)
    f = data.frames
    assert stacks.shape == (3, 9, data.image_size, data.image_size)
    np.testing.assert_array_equal(stacks[0], np.concatenate([f[s1]] * 3))  # episode start: padded
    np.testing.assert_array_equal(stacks[1], np.concatenate([f[s1], f[s1], f[s1 + 1]]))
    np.testing.assert_array_equal(stacks[2], np.concatenate([f[s1 + 3], f[s1 + 4], f[s1 + 5]]))  # oldest first


def test_split_is_by_episode_and_deterministic():
    train, test = split_episodes(10, 0.2, seed=0)
    assert len(test) == 2 and len(train) == 8 and not set(train) & set(test)
    assert np.array_equal(test, split_episodes(10, 0.2, seed=0)[1])


def test_collect_refuses_an_existing_dataset(dataset, capsys):
    cli_error(capsys, ["collect", "cartpole-swingup", "--episodes", "1", "--out", str(dataset)],
              "already holds a dataset")


def _episode(path, t=4, size=8, state_dim=5):
    save_episode(path, np.zeros((t + 1, 3, size, size), np.uint8), np.zeros((t + 1, state_dim)),
                 np.zeros((t, 1)), np.zeros(t))


def _bad_datasets(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "episode_00000.npz").write_bytes(b"this is not a zip file")
    truncated = tmp_path / "truncated"
    truncated.mkdir()
    _episode(truncated / "episode_00000.npz", t=50, size=32)
    raw = (truncated / "episode_00000.npz").read_bytes()
    (truncated / "episode_00000.npz").write_bytes(raw[: len(raw) // 2])
    mismatched = tmp_path / "mismatched"
    mismatched.mkdir()
    _episode(mismatched / "episode_00000.npz", size=8)
    _episode(mismatched / "episode_00001.npz", size=12)
    wrong_keys = tmp_path / "wrong_keys"
    wrong_keys.mkdir()
    np.savez(wrong_keys / "episode_00000.npz", pixels=np.zeros((3, 3, 8, 8), np.uint8))
    return {"missing": (tmp_path / "nope", "does not exist"), "empty": (empty, "holds no episodes"),
            "corrupt": (corrupt, "corrupt or truncated"), "truncated": (truncated, "corrupt or truncated"),
            "mismatched": (mismatched, "mismatched shapes"), "wrong_keys": (wrong_keys, "lacks state")}


@pytest.mark.parametrize("case", ["missing", "empty", "corrupt", "truncated", "mismatched", "wrong_keys"])
@pytest.mark.parametrize("command", ["pretrain", "probe"])
def test_bad_datasets_give_one_line_and_exit_2(tmp_path, capsys, case, command):
    path, why = _bad_datasets(tmp_path)[case]
    run_dir = tmp_path / "run"
    argv = (["pretrain", str(path), "--run-dir", str(run_dir)] if command == "pretrain"
            else ["probe", "random", str(path), "--out", str(run_dir)])
    line = cli_error(capsys, argv, why)
    assert line.startswith("curlrl: error:"), line
    # nothing that looks like a finished output
    assert not RunDir(run_dir).has_checkpoint() and not (run_dir / "probe.json").exists()


def test_bad_dataset_through_the_real_cli_process(tmp_path):
    path, _ = _bad_datasets(tmp_path)["corrupt"]
    res = subprocess.run([sys.executable, "-m", "curlrl.cli", "probe", "random", str(path), "--out",
                          str(tmp_path / "o")], capture_output=True, text=True, timeout=HANG_TIMEOUT_S)
    one_line_error(res, "corrupt or truncated")


def test_load_dataset_error_names_the_file(tmp_path):
    path, _ = _bad_datasets(tmp_path)["corrupt"]
    with pytest.raises(DatasetError, match="episode_00000.npz"):
        load_dataset(path)


def test_a_killed_collect_leaves_only_whole_episodes(dataset, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(dataset, copy)
    raw = (copy / "episode_00000.npz").read_bytes()
    # what a kill during save_episode leaves: a hidden, partial temp file
    (copy / f".episode_{offline_data.EPISODES:05d}.npz.tmp").write_bytes(raw[: len(raw) // 3])
    data = load_dataset(copy)
    assert len(data.names) == offline_data.EPISODES


def test_collect_with_a_policy_repeats_for_a_seed(train_run, tmp_path):
    from curlrl.jobs.collect import collect

    actions = []
    for name in ("a", "b"):
        collect(offline_data.TASK, 1, tmp_path / name, policy=str(train_run), seed=3, quiet=True)
        with np.load(tmp_path / name / "episode_00000.npz") as ep:
            actions.append(ep["action"])
    np.testing.assert_array_equal(actions[0], actions[1])
    assert actions[0].std() > 0  # sampled, not a constant action


def test_collect_policy_without_a_checkpoint_is_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(f"task: {offline_data.TASK}\nimage_size: 64\ncrop_size: 56\n")
    out = tmp_path / "d"
    line = cli_error(capsys, ["collect", offline_data.TASK, "--episodes", "1", "--policy", str(run), "--out", str(out)],
                     "does not exist")
    assert line.startswith("curlrl: error: checkpoint"), line
    assert not out.exists()
