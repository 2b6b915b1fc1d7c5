"""Encoder export/load, training from a pretrained encoder (frozen or not), collecting with a policy."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from curlrl.jobs import config as config_mod
from curlrl.agents.curl_sac import AgentConfig, CurlSacAgent
from curlrl.checkpoint import safe_load
from curlrl.cli import main
from curlrl.encoder import PixelEncoder
from curlrl.errors import CheckpointError, ConfigError
from curlrl.jobs.rundir import RunDir

import offline_data
from conftest import HANG_TIMEOUT_S, cli_error


@pytest.fixture(scope="session")
def pretrain_export(tmp_path_factory, dataset):
    """A short pretrain run (shape of the tiny train run: 9x56x56, 2 layers, 16 filters), exported."""
    from curlrl.jobs.pretrain import pretrain, resolve

    run = tmp_path_factory.mktemp("pt")
    pretrain(resolve(str(dataset), offline_data.SMALL + ["steps=3", "batch_size=16"]), run, quiet=True)
    out = run / "encoder.safetensors"
    assert main(["export", str(run), "--out", str(out)]) == 0
    return run, out


def test_export_of_a_pretrain_run_round_trips_with_metadata(pretrain_export):
    run, path = pretrain_export
    enc = PixelEncoder.from_pretrained(path)
    state = safe_load(RunDir(run).checkpoint_path)
    for k, v in state["encoder"].items():
        torch.testing.assert_close(enc.state_dict()[k], v, rtol=0, atol=0)
    with safe_open(str(path), framework="pt") as fh:
        meta, keys = fh.metadata(), set(fh.keys())
    assert json.loads(meta["obs_shape"]) == [9, offline_data.CROP, offline_data.CROP]
    assert meta["normalisation"] == "uint8/255" and "pretrain run" in meta["source"]
    assert {json.loads(meta[k]) for k in ("feature_dim", "num_layers", "num_filters")} == {50, 2, 16}
    assert json.loads(meta["output_tanh"]) is False and "curl_head.W" in keys


def test_export_of_a_train_run_is_the_critic_encoder(train_run, tmp_path):
    out = tmp_path / "e.safetensors"
    assert main(["export", str(train_run), "--out", str(out)]) == 0
    enc = PixelEncoder.from_pretrained(out, obs_shape=(9, offline_data.CROP, offline_data.CROP))
    critic = safe_load(RunDir(train_run).checkpoint_path)["agent"]["modules"]["encoder"]
    for k, v in critic.items():
        torch.testing.assert_close(enc.state_dict()[k], v, rtol=0, atol=0)


def test_from_pretrained_errors_are_checkpoint_errors(tmp_path, pretrain_export):
    with pytest.raises(CheckpointError, match="does not exist"):
        PixelEncoder.from_pretrained(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="corrupt or not a safetensors file"):
        PixelEncoder.from_pretrained(tmp_path / "junk.safetensors")
    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(CheckpointError, match="not a curlrl encoder export"):
        PixelEncoder.from_pretrained(tmp_path / "other.safetensors")
    with pytest.raises(CheckpointError, match=r"another shape: obs_shape \[9, 56, 56\] \(expected \[9, 84, 84\]\)"):
        PixelEncoder.from_pretrained(pretrain_export[1], obs_shape=(9, 84, 84))


def test_export_cli_errors(tmp_path, capsys):
    cli_error(capsys, ["export", str(tmp_path), "--out", str(tmp_path / "e.safetensors")], "not a curlrl run directory")
    cli_error(capsys, ["export", str(tmp_path), "--out", str(tmp_path / "e.pt")], "must end in .safetensors")
    assert not list(tmp_path.iterdir())


def test_train_config_has_the_new_keys():
    cfg = config_mod.resolve("cartpole-swingup", overrides=["encoder_init=enc.safetensors", "freeze_conv=true"])
    assert cfg.encoder_init == "enc.safetensors" and cfg.freeze_conv is True
    with pytest.raises(ConfigError, match="'freeze_conv' must be bool"):
        config_mod.resolve("cartpole-swingup", overrides=["freeze_conv=maybe"])


def _batch(b=4, c=9, size=64):
    rng = np.random.default_rng(0)
    return dict(obs=rng.integers(0, 256, (b, c, size, size), dtype=np.uint8),
                next_obs=rng.integers(0, 256, (b, c, size, size), dtype=np.uint8),
                action=rng.uniform(-1, 1, (b, 1)).astype(np.float32),
                reward=rng.normal(size=(b, 1)).astype(np.float32), not_done=np.ones((b, 1), np.float32))


@pytest.mark.parametrize("update_mode,encoder_adam", [("exact", "reference"), ("fused", "shared"),
                                                       ("exact", "shared"), ("exact", "per_loss")])
def test_frozen_conv_leaves_the_optimizer_and_never_changes(pretrain_export, update_mode, encoder_adam):
    enc = PixelEncoder.from_pretrained(pretrain_export[1])
    cfg = AgentConfig(crop_size=offline_data.CROP, num_layers=2, num_filters=16, hidden_dim=32,
                      update_mode=update_mode, encoder_adam=encoder_adam, actor_update_every=1,
                      target_update_every=1)
    agent = CurlSacAgent((9, 64, 64), 1, cfg)
    agent.init_encoder(enc.state_dict(), freeze_conv=True)
    for module in (agent.encoder, agent.encoder_target):
        for k, v in enc.state_dict().items():
            torch.testing.assert_close(module.state_dict()[k], v, rtol=0, atol=0)
    conv_ids = {id(p) for p in agent.encoder.conv.parameters()}
    head_ids = {id(p) for p in agent.encoder.head.parameters()}
    for name, opt in agent.optimizers.items():
        in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
        assert not in_opt & conv_ids, name
        if name in ("encoder", "encoder_curl") or (name == "critic" and encoder_adam == "reference"):
            assert head_ids <= in_opt, name
    conv0 = {k: v.clone() for k, v in agent.encoder.conv.state_dict().items()}
    head0 = agent.encoder.head.linear.weight.clone()
    for _ in range(2):
        agent.update(_batch())
    for k, v in agent.encoder.conv.state_dict().items():
        torch.testing.assert_close(v, conv0[k], rtol=0, atol=0)
    assert not torch.equal(agent.encoder.head.linear.weight, head0)


def test_unfrozen_init_trains_the_conv(pretrain_export):
    enc = PixelEncoder.from_pretrained(pretrain_export[1])
    agent = CurlSacAgent((9, 64, 64), 1, AgentConfig(crop_size=offline_data.CROP, num_layers=2, num_filters=16,
                                                       hidden_dim=32))
    agent.init_encoder(enc.state_dict(), freeze_conv=False)
    for name in ("critic", "encoder_curl"):  # the default layout: both hold the whole encoder
        in_opt = {id(p) for g in agent.optimizers[name].param_groups for p in g["params"]}
        assert {id(p) for p in agent.encoder.parameters()} <= in_opt, name
    agent.update(_batch())
    assert not torch.equal(agent.encoder.conv.net[0].weight, enc.conv.net[0].weight)


def test_train_build_loads_the_export_and_resumes(pretrain_export, tmp_path):
    from curlrl.jobs.train import Trainer

    overrides = offline_data.TRAIN_SMALL + [f"encoder_init={pretrain_export[1]}", "freeze_conv=true",
                                            "eval_episodes=0", "eval_every=1000", "env_steps=1000",
                                            "checkpoint_every=1000"]
    cfg = config_mod.resolve(offline_data.TASK, overrides=overrides)
    trainer = Trainer(cfg, tmp_path / "run", quiet=True)
    try:
        enc = PixelEncoder.from_pretrained(pretrain_export[1])
        torch.testing.assert_close(trainer.agent.encoder.conv.net[0].weight, enc.conv.net[0].weight)
        assert not trainer.agent.encoder.conv.net[0].weight.requires_grad
        trainer._save_checkpoint()
    finally:
        trainer.close()
    resumed = Trainer(cfg, tmp_path / "run", resume=True, quiet=True)  # optimizer state fits the frozen set
    resumed.close()


def test_resume_and_eval_do_not_read_a_moved_export(pretrain_export, tmp_path, monkeypatch):
    """Once a run has a checkpoint, its weights come from there: the export may be gone."""
    import shutil

    export = tmp_path / "enc.safetensors"
    shutil.copy(pretrain_export[1], export)
    run = tmp_path / "run"
    overrides = offline_data.TRAIN_SMALL + [f"encoder_init={export}", "freeze_conv=true", "eval_episodes=0"]
    assert main(["train", offline_data.TASK, *overrides, "--run-dir", str(run)]) == 0
    export.unlink()
    assert main(["train", "--resume", "--run-dir", str(run), "env_steps=80"]) == 0
    saved = safe_load(RunDir(run).checkpoint_path)
    assert saved["counters"]["env_step"] == 80

    agent = offline_data.evaluated_agent(run, monkeypatch)
    for name, module in agent.modules().items():
        for k, v in saved["agent"]["modules"][name].items():
            torch.testing.assert_close(module.state_dict()[k], v, rtol=0, atol=0, msg=f"{name}.{k}")
    assert not agent.encoder.conv.net[0].weight.requires_grad  # freeze_conv still applies
    # the frozen conv is still the (now deleted) export's
    torch.testing.assert_close(agent.encoder.conv.net[0].weight,
                               PixelEncoder.from_pretrained(pretrain_export[1]).conv.net[0].weight, rtol=0, atol=0)


def test_train_with_an_export_of_another_shape_is_one_line(pretrain_export, tmp_path, capsys):
    run = tmp_path / "run"
    cli_error(capsys, ["train", "cartpole-swingup", f"encoder_init={pretrain_export[1]}", "image_size=64",
                       "crop_size=60", "num_layers=2", "num_filters=16", "threads=1", "--run-dir", str(run)],
              "has another shape: obs_shape [9, 56, 56] (expected [9, 60, 60])")
    assert not (run / "checkpoints").exists()


def test_collect_with_a_trained_policy(train_run, tmp_path):
    out = tmp_path / "d"
    assert main(["collect", "cartpole-swingup", "--episodes", "1", "--policy", str(train_run), "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["frame_stack"] == 3 and manifest["action_repeat"] == offline_data.ACTION_REPEAT
    with np.load(out / "episode_00000.npz") as ep:
        assert ep["pixels"].shape == (51, 3, offline_data.IMAGE_SIZE, offline_data.IMAGE_SIZE)  # single frames


def test_collect_policy_settings_must_match(train_run, tmp_path, capsys):
    cli_error(capsys, ["collect", "cartpole-swingup", "--episodes", "1", "--policy", str(train_run),
                       "--action-repeat", "4", "--out", str(tmp_path / "d")], "differs from the policy's 20")
    assert not (tmp_path / "d").exists()


def test_loading_an_export_needs_no_rl_stack(pretrain_export):
    import subprocess
    import sys

    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if (name.split('.')[0] in ('gymnasium', 'dm_control')\n"
            "                or name.startswith(('curlrl.agents', 'curlrl.envs'))):\n"
            "            raise ImportError('blocked ' + name)\n"
            "sys.meta_path.insert(0, Block())\n"
            "from curlrl.encoder import PixelEncoder\n"
            f"enc = PixelEncoder.from_pretrained({str(pretrain_export[1])!r})\n"
            "print(enc.feature_dim)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=HANG_TIMEOUT_S)
    assert res.returncode == 0 and res.stdout.strip() == "50", res.stderr
