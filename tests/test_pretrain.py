"""`curlrl pretrain`: typed config, the shared core modules, logs, checkpoints and resume."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from conftest import cli_error

import curlrl.augment
import curlrl.objectives
import curlrl.ema
import curlrl.encoder
from curlrl.jobs import pretrain as pretrain_mod
from curlrl.checkpoint import safe_load
from curlrl.cli import main
from curlrl.errors import ConfigError
from curlrl.jobs.rundir import RunDir
from curlrl.jobs.pretrain import Pretrainer, PretrainConfig, pretrain, resolve

import offline_data


def tiny(data, *extra):
    return resolve(str(data), offline_data.SMALL + ["batch_size=16", "log_every=2", "checkpoint_every=3", *extra])


def test_uses_the_core_modules_not_copies():
    assert pretrain_mod.make_views is curlrl.augment.make_views  # whose "crop" is random_crop
    assert isinstance(Pretrainer.curl_head, property)  # the objective's own module: curlrl.objectives
    assert pretrain_mod.build_objective is curlrl.objectives.build_objective
    assert pretrain_mod.ema_update is curlrl.ema.ema_update
    assert pretrain_mod.PixelEncoder is curlrl.encoder.PixelEncoder


@pytest.mark.parametrize("override, message", [
    ("stepz=10", "unknown config key 'stepz' (did you mean 'steps'?)"),
    ("steps=ten", "config key 'steps' must be int"),
    ("encoder_lr=fast", "config key 'encoder_lr' must be float"),
    ("positive=rotate", "config key 'positive' must be 'augment' or 'temporal'"),
    ("batch_size=1", "config key 'batch_size' must be >= 2"),
    ("encoder_tau=0", "config key 'encoder_tau' must be in (0, 1]"),
])
def test_config_is_strict(override, message):
    with pytest.raises(ConfigError) as exc:
        resolve("data", [override])
    assert message in str(exc.value)


def test_config_defaults_match_the_agent():
    cfg = PretrainConfig()
    assert (cfg.frame_stack, cfg.crop_size, cfg.feature_dim, cfg.num_layers, cfg.num_filters) == (3, 84, 50, 4, 32)
    assert (cfg.encoder_tau, cfg.positive) == (0.05, "augment")


@pytest.mark.parametrize("positive", ["augment", "temporal"])
def test_pretrain_writes_logs_checkpoint_and_config(dataset, tmp_path, positive):
    run = tmp_path / "run"
    summary = pretrain(tiny(dataset, "steps=4", f"positive={positive}", "temporal_offset=2"), run, quiet=True)
    assert summary["steps"] == 4 and summary["holdout_episodes"] == 2
    rows = list(csv.DictReader(open(run / "pretrain.csv")))
    assert [int(r["step"]) for r in rows] == [2, 4]
    assert {"loss", "accuracy", "samples_per_s", "wall_s"} <= set(rows[0])
    assert list(run.glob("events.out.tfevents.*")) and (run / "config.yaml").is_file()
    state = safe_load(RunDir(run).checkpoint_path)
    assert state["step"] == 4 and state["kind"] == pretrain_mod.CHECKPOINT_KIND
    assert not list((run / "checkpoints").glob(".*"))


def test_temporal_positive_is_the_stack_k_steps_later(dataset, tmp_path):
    trainer = Pretrainer(tiny(dataset, "positive=temporal", "temporal_offset=3"), tmp_path / "run", quiet=True)
    try:
        trainer.rng = __import__("numpy").random.default_rng(1)
        anchor, positive = trainer.sample()
        d = trainer.data
        # every anchor has its positive 3 frames later in the same episode
        assert anchor.shape == positive.shape and not torch.equal(anchor, positive)
        assert (d.episode[trainer.anchors + 3] == d.episode[trainer.anchors]).all()
        # against the dataset's frames themselves: a stack's newest frame is the drawn frame
        # (anchor) or the one 3 steps later (positive), the frame before it one step earlier
        t = trainer.labels
        frames = torch.from_numpy(d.frames)
        assert torch.equal(anchor[:, -3:].cpu(), frames[t]) and torch.equal(positive[:, -3:].cpu(), frames[t + 3])
        assert torch.equal(positive[:, -6:-3].cpu(), frames[t + 2])
        first = t == d.start[d.episode[t]]  # an episode's first frame is repeated, as the env does at reset
        assert torch.equal(anchor[:, -6:-3].cpu(), frames[np.where(first, t, t - 1)])
        held_out = set(trainer.holdout_episodes)
        assert not held_out & set(d.episode[trainer.anchors].tolist())  # held-out episodes unseen
    finally:
        trainer.close()


def test_temporal_offset_longer_than_episodes_is_an_error(dataset, tmp_path):
    with pytest.raises(ConfigError, match="temporal_offset=60"):
        Pretrainer(tiny(dataset, "positive=temporal", "temporal_offset=60"), tmp_path / "run", quiet=True)


def test_resume_matches_an_uninterrupted_run(dataset, tmp_path):
    pretrain(tiny(dataset, "steps=6"), tmp_path / "straight", quiet=True)
    pretrain(tiny(dataset, "steps=3"), tmp_path / "resumed", quiet=True)
    assert main(["pretrain", "--resume", "--run-dir", str(tmp_path / "resumed"), "steps=6"]) == 0
    a = safe_load(RunDir(tmp_path / "straight").checkpoint_path)
    b = safe_load(RunDir(tmp_path / "resumed").checkpoint_path)
    assert b["step"] == 6
    for key in ("encoder", "key_encoder", "curl_head"):
        for name, tensor in a[key].items():
            torch.testing.assert_close(b[key][name], tensor, rtol=0, atol=0, msg=f"{key}.{name}")
    rows = list(csv.DictReader(open(tmp_path / "resumed" / "pretrain.csv")))
    assert [int(r["step"]) for r in rows] == [2, 3, 4, 6]  # 3: the end of the first run


def test_cli_refuses_to_overwrite_a_run(dataset, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["pretrain", str(dataset), *offline_data.SMALL, "steps=2", "batch_size=16", "--run-dir", str(run)]
    assert main(args) == 0
    capsys.readouterr()
    cli_error(capsys, args, "already holds a pretrain run")
    cli_error(capsys, ["pretrain", str(dataset), "--run-dir", str(tmp_path / "r2"), "bogus=1"],
              "unknown config key 'bogus'")


def test_crop_larger_than_the_dataset_frames_is_an_error(dataset, tmp_path):
    with pytest.raises(ConfigError, match="crop_size"):
        Pretrainer(resolve(str(dataset), ["crop_size=84", "threads=1"]), tmp_path / "run", quiet=True)


@pytest.mark.parametrize("objective", ["infonce", "moco", "byol", "barlow_twins", "swav", "supcon", "triplet"])
def test_each_objective_pretrains_checkpoints_resumes_and_exports(dataset, tmp_path, objective):
    extra = [f"objective={objective}", *(["queue_size=32"] if objective == "moco" else [])]
    pretrain(tiny(dataset, "steps=4", *extra), tmp_path / "straight", quiet=True)
    pretrain(tiny(dataset, "steps=2", *extra), tmp_path / "resumed", quiet=True)
    assert main(["pretrain", "--resume", "--run-dir", str(tmp_path / "resumed"), "steps=4"]) == 0
    a = safe_load(RunDir(tmp_path / "straight").checkpoint_path)
    b = safe_load(RunDir(tmp_path / "resumed").checkpoint_path)
    assert "objective" in a and "curl_head" not in a
    for key in ("encoder", "key_encoder", "objective"):
        for name, tensor in a[key].items():
            torch.testing.assert_close(b[key][name], tensor, rtol=0, atol=0, msg=f"{key}.{name}")
    rows = list(csv.DictReader(open(tmp_path / "straight" / "pretrain.csv")))
    assert all(0.0 <= float(r["accuracy"]) <= 1.0 and float(r["loss"]) == float(r["loss"]) for r in rows)
    out = tmp_path / "enc.safetensors"
    assert main(["export", str(tmp_path / "straight"), "--out", str(out)]) == 0 and out.is_file()


def test_supcon_batches_are_groups_of_one_episode_window(dataset, tmp_path):
    trainer = Pretrainer(tiny(dataset, "objective=supcon", "supcon_group=4", "supcon_window=2"), tmp_path / "r",
                         quiet=True)
    try:
        d = trainer.data
        for _ in range(10):
            t = trainer._window_indices().reshape(-1, 4)
            ep = d.episode[t]
            assert (ep == ep[:, :1]).all() and (abs(t - t[:, :1]) <= 2).all()
            assert not set(ep.ravel().tolist()) & set(trainer.holdout_episodes)
    finally:
        trainer.close()


@pytest.mark.parametrize("override, message", [
    (["objective=supcon", "positive=temporal"], "does not apply to objective=supcon"),
    (["objective=moco", "queue_size=8", "batch_size=16"], "'queue_size' (8) must be >= batch_size (16)"),
    (["objective=swaw"], "did you mean 'swav'"),
    (["objective=byol", "barlow_lambda=0.1"], "'barlow_lambda' applies to objective=barlow_twins"),
])
def test_objective_config_mistakes(override, message):
    with pytest.raises(ConfigError) as exc:
        resolve("data", override)
    assert message in str(exc.value)



def test_pretraining_draws_its_views_by_the_augment_chain(dataset, tmp_path):
    plain = Pretrainer(tiny(dataset), tmp_path / "a", quiet=True)
    heavy = Pretrainer(tiny(dataset, "augment=shift+jitter+cutout"), tmp_path / "b", quiet=True)
    try:
        x = torch.from_numpy(plain.data.stacks(plain.anchors[:8], 3))
        g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
        assert torch.equal(plain.view(x, g1), curlrl.augment.random_crop(x, plain.cfg.crop_size, g2))
        out = heavy.view(x, torch.Generator().manual_seed(0))
        assert out.shape == (8, 9, plain.cfg.crop_size, plain.cfg.crop_size) and (out == 0).any()  # cutout
        assert torch.isfinite(heavy.update()["loss"])
    finally:
        plain.close()
        heavy.close()
