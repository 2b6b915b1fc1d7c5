"""Outside pixel data (videos, image folders, V-D4RL files) read into curlrl datasets.

Every source is made here (imageio, numpy, h5py): no download. The truths checked are the
sources' own contents: frame counts and order, colours through the crop/resize rule, and
the action/reward alignment of V-D4RL's reset-first convention.
"""
from __future__ import annotations

import numpy as np
import pytest
from conftest import cli_error

from curlrl import readers
from curlrl.cli import main
from curlrl.datasets import load_dataset
from curlrl.errors import ConfigError, DatasetError


def _frames(n: int, h: int, w: int, base: int = 0) -> np.ndarray:
    """n frames whose flat grey level encodes their index (base + 10 * i): order is visible."""
    return np.stack([np.full((h, w, 3), base + 10 * i, np.uint8) for i in range(n)])


def _write_video(path, frames) -> None:
    import imageio.v2 as imageio

    imageio.mimwrite(path, list(frames), fps=10, macro_block_size=1, quality=10)


def _vd4rl_npz(path, t: int, size: int = 64, action_dim: int = 2, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    ep = dict(image=rng.integers(0, 255, (t + 1, size, size, 3), dtype=np.uint8),
              action=rng.uniform(-1, 1, (t + 1, action_dim)).astype(np.float32),
              reward=rng.uniform(0, 1, (t + 1,)).astype(np.float32),
              discount=np.ones(t + 1, np.float32), is_first=np.arange(t + 1) == 0,
              is_last=np.arange(t + 1) == t, is_terminal=np.zeros(t + 1, bool))
    ep["action"][0], ep["reward"][0] = 0.0, 0.0  # the reset's entry
    np.savez_compressed(path, **ep)
    return ep


# -- videos ----------------------------------------------------------------------------------
def test_videos_one_episode_per_file_cropped_and_resized(tmp_path):
    # 48 high, 64 wide: the centre square drops 8 columns each side. Mark those columns red.
    a = _frames(6, 48, 64, base=40)
    a[:, :, :8] = (255, 0, 0)
    a[:, :, -8:] = (255, 0, 0)
    _write_video(tmp_path / "ep_a.mp4", a)
    _write_video(tmp_path / "ep_b.mp4", _frames(4, 48, 64, base=100))
    assert readers.detect_format(tmp_path) == "videos"
    data = load_dataset(tmp_path, image_size=24)
    assert data.frames.shape == (10, 3, 24, 24) and data.frames.dtype == np.uint8
    assert list(data.names) == ["ep_a.mp4", "ep_b.mp4"]
    assert list(data.start) == [0, 6] and list(data.end) == [6, 10]
    assert data.state is None and data.action is None and data.reward is None
    assert data.manifest["format"] == "videos" and data.manifest["resize"] == readers.RESIZE_RULE
    # the cropped-away red bands are gone and the grey levels keep their order (lossy codec: tolerance)
    levels = data.frames[:6].astype(int).mean(axis=(1, 2, 3))
    assert np.all(np.abs(levels - (40 + 10 * np.arange(6))) < 6), levels
    red_minus_green = data.frames[:6, 0].astype(int) - data.frames[:6, 1].astype(int)
    assert np.abs(red_minus_green).max() < 12


def test_non_square_videos_need_an_image_size_and_bad_files_are_named(tmp_path):
    _write_video(tmp_path / "a.mp4", _frames(3, 48, 64))
    with pytest.raises(DatasetError, match="not square"):
        load_dataset(tmp_path)
    (tmp_path / "b.mp4").write_bytes(b"not a video at all" * 10)
    with pytest.raises(DatasetError, match=r"b\.mp4 is not a readable video") as info:
        load_dataset(tmp_path, image_size=32)
    assert "\n" not in str(info.value)


def test_videos_of_mixed_sizes_need_an_image_size(tmp_path):
    _write_video(tmp_path / "a.mp4", _frames(3, 32, 32))
    _write_video(tmp_path / "b.mp4", _frames(3, 48, 48))
    with pytest.raises(DatasetError, match=r"mixes frame sizes: 32x32 \(a\.mp4\), 48x48 \(b\.mp4\)"):
        load_dataset(tmp_path)
    assert load_dataset(tmp_path, image_size=40).frames.shape == (6, 3, 40, 40)


# -- image folders -----------------------------------------------------------------------------
def test_image_folders_in_natural_name_order(tmp_path):
    import imageio.v2 as imageio

    for ep, n in (("ep1", 12), ("ep2", 3)):
        (tmp_path / ep).mkdir()
        for i, frame in enumerate(_frames(n, 32, 32)):
            imageio.imwrite(tmp_path / ep / f"frame_{i}.png", frame)  # frame_10 sorts before frame_2 as text
    assert readers.detect_format(tmp_path) == "frames"
    data = load_dataset(tmp_path)
    assert data.frames.shape == (15, 3, 32, 32) and list(data.names) == ["ep1", "ep2"]
    assert list(data.frames[:12, 0, 0, 0]) == [10 * i for i in range(12)]  # lossless png: exact


def test_image_folder_problems_get_one_line(tmp_path):
    import imageio.v2 as imageio

    (tmp_path / "ep").mkdir()
    imageio.imwrite(tmp_path / "ep" / "0.png", np.zeros((32, 32, 3), np.uint8))
    imageio.imwrite(tmp_path / "ep" / "1.png", np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(DatasetError, match=r"mixes image sizes: 0\.png is 32x32, 1\.png is 16x16"):
        load_dataset(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="holds no episodes of a known format"):
        load_dataset(empty)
    (empty / "notes.txt").write_text("hello")
    with pytest.raises(DatasetError, match=r"found \.txt"):
        load_dataset(empty)


# -- V-D4RL -------------------------------------------------------------------------------------
def test_vd4rl_npz_drops_the_reset_entry_of_action_and_reward(tmp_path):
    eps = [_vd4rl_npz(tmp_path / f"2022-{i}-501.npz", t=5 + i, seed=i) for i in range(2)]
    assert readers.detect_format(tmp_path) == "vd4rl"
    data = load_dataset(tmp_path)
    assert data.frames.shape == (6 + 7, 3, 64, 64)
    np.testing.assert_array_equal(data.frames[:6], eps[0]["image"].transpose(0, 3, 1, 2))
    # row f: the action taken after frame f (the source's entry f+1), NaN on the last frame
    np.testing.assert_array_equal(data.action[:5], eps[0]["action"][1:])
    np.testing.assert_array_equal(data.reward[6:12], eps[1]["reward"][1:])
    assert np.isnan(data.action[5]).all() and np.isnan(data.reward[12])


def test_vd4rl_npz_missing_keys_are_named(tmp_path):
    np.savez(tmp_path / "x.npz", image=np.zeros((3, 8, 8, 3), np.uint8), action=np.zeros((3, 1), np.float32))
    with pytest.raises(DatasetError, match=r"x\.npz lacks reward"):
        load_dataset(tmp_path, format="vd4rl")


def test_vd4rl_hdf5_shards_split_at_first_steps(tmp_path):
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(0)
    n = 4 + 6  # two episodes: 4 and 6 steps (each begins with its reset, step_type 0)
    obs = rng.integers(0, 255, (n, 3, 84, 84), dtype=np.uint8)
    action = rng.uniform(-1, 1, (n, 3)).astype(np.float32)
    reward = rng.uniform(0, 1, n).astype(np.float32)
    step_type = np.array([0, 1, 1, 2, 0, 1, 1, 1, 1, 2])
    with h5py.File(tmp_path / "shard_0.hdf5", "w") as fh:
        for k, v in dict(observation=obs, action=action, reward=reward, discount=np.ones(n, np.float32),
                         step_type=step_type).items():
            fh.create_dataset(k, data=v)
    data = load_dataset(tmp_path)
    assert list(data.start) == [0, 4] and list(data.end) == [4, 10]
    np.testing.assert_array_equal(data.frames, obs)
    np.testing.assert_array_equal(data.action[4:9], action[5:10])
    np.testing.assert_array_equal(data.reward[:3], reward[1:4])
    with h5py.File(tmp_path / "shard_1.hdf5", "w") as fh:
        fh.create_dataset("observation", data=obs)
    with pytest.raises(DatasetError, match=r"shard_1\.hdf5 lacks action, reward, step_type"):
        load_dataset(tmp_path)


def test_curlrl_episodes_can_be_resized_too(dataset):
    data = load_dataset(dataset, image_size=32)
    assert data.frames.shape[1:] == (3, 32, 32) and data.state is not None
    assert data.manifest["image_size"] == 32 and data.action is not None


# -- the commands read any format ----------------------------------------------------------------
def test_pretrain_on_videos_and_probe_says_state_is_missing(tmp_path, capsys):
    (tmp_path / "vids").mkdir()
    for i in range(3):
        _write_video(tmp_path / "vids" / f"{i}.mp4", _frames(12, 40, 40, base=20 * i))
    run = tmp_path / "run"
    assert main(["pretrain", str(tmp_path / "vids"), "steps=2", "batch_size=4", "num_layers=2", "num_filters=8",
                 "crop_size=32", "holdout=0", "checkpoint_every=2", "log_every=1", "threads=1", "device=cpu",
                 "--run-dir", str(run)]) == 0
    from curlrl.jobs.rundir import RunDir

    saved = RunDir(run).read_config()
    assert saved["data_format"] == "auto" and saved["image_size"] == 0
    capsys.readouterr()
    cli_error(capsys, ["probe", str(run), str(tmp_path / "vids"), "--out", str(tmp_path / "p")],
              "need the true state", "videos format")
    assert not (tmp_path / "p").exists()


def test_pretraining_on_several_datasets_draws_them_by_the_stated_rule(tmp_path):
    """Two folders of 2 and 6 episodes: `uniform` draws each folder about half the time,
    `proportional` in proportion to its frames (1:3)."""
    from curlrl.jobs.pretrain import Pretrainer, resolve

    small, big = tmp_path / "small", tmp_path / "big"
    for folder, n in ((small, 2), (big, 6)):
        folder.mkdir()
        for i in range(n):
            _vd4rl_npz(folder / f"{i}.npz", t=9, size=32, seed=i)
    for mix, share in (("uniform", 0.5), ("proportional", 0.25)):
        cfg = resolve(f"{small},{big}", ["batch_size=8", "num_layers=2", "num_filters=8", "crop_size=28",
                                         "holdout=0", f"data_mix={mix}", "device=cpu", "threads=1"])
        job = Pretrainer(cfg, tmp_path / f"run-{mix}", quiet=True)
        try:
            assert len(job.data.names) == 8 and job.data.names[0] == f"{small}/0.npz"
            drawn = []
            for _ in range(400):  # the pretraining run's own sampler; it records what it drew
                job.sample()
                drawn.append(job.labels)
            drawn = np.concatenate(drawn)
            from_small = np.mean(job.data.source[job.data.episode[drawn]] == 0)
            assert abs(from_small - share) < 0.04, (mix, from_small)
        finally:
            job.close()
    with pytest.raises(ConfigError, match="names a folder twice"):
        resolve(f"{small},{small}", ["device=cpu"])


def test_inverse_dynamics_and_reward_probes_read_the_actions_a_dataset_has(tmp_path):
    """Frames whose grey level moves by 40 x the action: the action between two frames is in
    their pixels, and a frozen random encoder's features recover it on held-out episodes;
    with the actions shuffled across transitions (a control) nothing is recoverable."""
    from curlrl.jobs.export import LoadedEncoder, random_encoder
    from curlrl.jobs.probe import probe

    rng = np.random.default_rng(0)
    real, shuffled = tmp_path / "real", tmp_path / "shuffled"
    real.mkdir(), shuffled.mkdir()
    for e in range(8):
        level, images, actions = 128.0, [], []
        for _ in range(30):
            images.append(np.full((32, 32, 3), level, np.uint8))
            a = rng.uniform(0.2, 1.0) * (1 if level < 128 else -1)
            actions.append(a)
            level += 40 * a
        images.append(np.full((32, 32, 3), level, np.uint8))
        action = np.array([[0.0]] + [[a] for a in actions], np.float32)
        reward = np.concatenate([[0.0], np.abs(actions)]).astype(np.float32)
        np.savez(real / f"{e}.npz", image=np.stack(images), action=action, reward=reward)
        np.savez(shuffled / f"{e}.npz", image=np.stack(images), action=rng.permutation(action),
                 reward=rng.permutation(reward))
    encoder = LoadedEncoder(random_encoder((9, 28, 28), seed=0, num_layers=2, num_filters=16), None, None, "random")
    res = probe(encoder, load_dataset(real), holdout=0.25)
    control = probe(encoder, load_dataset(shuffled), holdout=0.25)
    assert res["linear_r2"] is None and res["state_names"] == []
    assert res["inverse_dynamics_r2"] > 0.8, res["inverse_dynamics_r2"]
    assert res["reward_r2"] > 0.5, res["reward_r2"]
    assert control["inverse_dynamics_r2"] < 0.3 and control["reward_r2"] < 0.3, control
