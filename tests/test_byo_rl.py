"""Online RL on a bring-your-own trunk (``encoder_module``): frozen or fine-tuned, resumed,
evaluated, probed; and the mistakes around it, each one line."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import cli_error

import offline_data
from curlrl.agents import AgentConfig, CurlSacAgent
from curlrl.checkpoint import safe_load
from curlrl.cli import main
from curlrl.encoder import ForeignPixelEncoder
from curlrl.errors import ConfigError
from curlrl.jobs import config as config_mod
from curlrl.jobs.rundir import RunDir

SPEC = "byo_encoder:make_conv"  # tests/byo_encoder.py: (9, 56, 56) -> 32, with a BatchNorm
# action repeat 20, 40 env steps of random actions: updates at env steps 40, 60 and 80
ARGS = [*offline_data.TRAIN_SMALL, f"encoder_module={SPEC}", "feature_dim=16", "env_steps=100",
        "eval_episodes=0", "eval_every=1000", "checkpoint_every=1000"]


def _cfg(*extra):
    return config_mod.resolve(offline_data.TASK, overrides=[*ARGS, *extra])


def _clone(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _train_in_process(run_dir, *extra):
    """(agent after the run, trunk state before the first update, head weight before)."""
    from curlrl.jobs.train import Trainer

    with Trainer(_cfg(*extra), run_dir, quiet=True) as trainer:
        agent = trainer.agent
        trunk0, head0 = _clone(agent.encoder.conv), agent.encoder.head.linear.weight.detach().clone()
        trainer.run()
    assert agent.updates == 3
    return agent, trunk0, head0


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_frozen_trunk_stays_bit_identical_while_the_heads_learn(tmp_path):
    agent, trunk0, head0 = _train_in_process(tmp_path / "run", "freeze_conv=true")
    assert isinstance(agent.encoder, ForeignPixelEncoder)
    trunk_ids = {id(p) for p in agent.encoder.conv.parameters()}
    for name, opt in agent.optimizers.items():
        assert not trunk_ids & {id(p) for g in opt.param_groups for p in g["params"]}, name
    # weights and BatchNorm running statistics (eval mode: never updated), in the critic and target encoders
    assert _same(_clone(agent.encoder.conv), trunk0) and _same(_clone(agent.encoder_target.conv), trunk0)
    assert not torch.equal(agent.encoder.head.linear.weight, head0)
    assert not agent.encoder.conv.training and not agent.encoder.conv.module.bn.training
    saved = safe_load(RunDir(tmp_path / "run").checkpoint_path)["agent"]["modules"]["encoder"]
    assert _same({k[len("conv."):]: v for k, v in saved.items() if k.startswith("conv.")}, trunk0)


def test_a_fine_tuned_trunk_learns_and_keeps_its_running_statistics(tmp_path):
    agent, trunk0, head0 = _train_in_process(tmp_path / "run", "freeze_conv=false")
    trunk = _clone(agent.encoder.conv)
    assert not torch.equal(trunk["module.conv.weight"], trunk0["module.conv.weight"])
    assert not torch.equal(trunk["module.bn.weight"], trunk0["module.bn.weight"])
    for k in ("running_mean", "running_var", "num_batches_tracked"):  # eval mode, whether frozen or not
        assert torch.equal(trunk[f"module.bn.{k}"], trunk0[f"module.bn.{k}"]), k
    assert not torch.equal(agent.encoder.head.linear.weight, head0)


def test_the_agent_runs_a_trunk_in_eval_mode_and_checks_its_shape():
    import byo_encoder

    cfg = AgentConfig(crop_size=56, feature_dim=16, hidden_dim=32)
    trunk = byo_encoder.make_conv().train()
    agent = CurlSacAgent((9, 64, 64), 1, cfg, trunk=trunk)
    agent.encoder.train()  # train mode of the modules around it leaves the trunk in eval mode
    assert agent.encoder.training and not agent.encoder.conv.training and not agent.encoder_target.conv.training
    assert agent.encoder.conv_dim == 32 and agent.actor_head.linear.in_features == 32
    obs = torch.randint(0, 256, (2, 9, 56, 56), dtype=torch.uint8)
    assert agent.encoder(obs).shape == (2, 16)
    with pytest.raises(ValueError, match=r"takes obs_shape \(9, 56, 56\), but the agent feeds \(9, 48, 48\)"):
        CurlSacAgent((9, 64, 64), 1, AgentConfig(crop_size=48), trunk=byo_encoder.make_conv())


def test_resume_on_a_trunk_is_the_uninterrupted_run(tmp_path):
    """The factory is called again on resume; the checkpoint's weights (the trained trunk's) load over it."""
    more = ["freeze_conv=false", "save_replay=true", "env_steps=160"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert main(["train", offline_data.TASK, *ARGS, *more, "--run-dir", str(straight)]) == 0
    assert main(["train", offline_data.TASK, *ARGS, *more, "env_steps=80", "--run-dir", str(split)]) == 0
    assert main(["train", "--resume", "--run-dir", str(split), "env_steps=160"]) == 0
    a, b = (safe_load(RunDir(r).checkpoint_path) for r in (split, straight))
    assert a["agent"]["updates"] == b["agent"]["updates"] == 6
    assert a["agent"]["modules"].keys() == b["agent"]["modules"].keys()
    for name in a["agent"]["modules"]:  # every network, trunks and targets included: the very same numbers
        assert _same(a["agent"]["modules"][name], b["agent"]["modules"][name]), name


@pytest.fixture(scope="module")
def tuned_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("byo") / "run"
    assert main(["train", offline_data.TASK, *ARGS, "freeze_conv=false", "--run-dir", str(run)]) == 0
    return run


def test_eval_rebuilds_the_trained_trunk_from_the_checkpoint(tuned_run, monkeypatch):
    import byo_encoder

    agent = offline_data.evaluated_agent(tuned_run, monkeypatch)
    saved = safe_load(RunDir(tuned_run).checkpoint_path)["agent"]["modules"]
    for name, module in agent.modules().items():
        assert _same(_clone(module), saved[name]), name
    torch.manual_seed(0)  # what the factory made at the run's start (seed 0): not what eval uses
    fresh = byo_encoder.make_conv().state_dict()
    assert not torch.equal(agent.encoder.conv.state_dict()["module.conv.weight"], fresh["module.conv.weight"])
    assert not agent.encoder.conv.training


def test_load_encoder_and_probe_of_a_trunk_run(tuned_run, dataset, tmp_path):
    from curlrl.jobs.export import load_encoder
    from curlrl.jobs.probe import run_probe

    loaded = load_encoder(tuned_run)
    assert isinstance(loaded.encoder, ForeignPixelEncoder) and isinstance(loaded.key_encoder, ForeignPixelEncoder)
    assert f"trunk {SPEC}" in loaded.source and loaded.curl_head is not None
    saved = safe_load(RunDir(tuned_run).checkpoint_path)["agent"]["modules"]
    assert _same(_clone(loaded.encoder), saved["encoder"])
    assert _same(_clone(loaded.key_encoder), saved["encoder_target"])
    with torch.no_grad():
        assert loaded.encoder(torch.randint(0, 256, (3, 9, 56, 56), dtype=torch.uint8)).shape == (3, 16)
    results = run_probe(str(tuned_run), dataset, out=tmp_path / "p", holdout=0.34, with_random=True, quiet=True)
    assert [r["feature_dim"] for r in results] == [16, 16]  # the run's encoder, then a random one of its shape
    assert all(np.isfinite(r["linear_r2"]) for r in results) and results[0]["contrastive_accuracy"] is not None


def test_export_of_a_trunk_run_is_one_line(tuned_run, tmp_path, capsys):
    out = tmp_path / "e.safetensors"
    line = cli_error(capsys, ["export", str(tuned_run), "--out", str(out)], "bring-your-own trunk does not fit")
    assert line.startswith("curlrl: error:"), line
    assert not out.exists()


def test_reports_flag_a_trunk_run():
    from curlrl.jobs.report import non_paper_settings

    cfg = config_mod.to_dict(_cfg())
    assert f"encoder_module={SPEC} (paper none)" in non_paper_settings(cfg)
    assert "encoder_module (str; empty or package.module:factory)" in config_mod.explain(_cfg())


@pytest.mark.parametrize("extra,needle", [
    (["encoder_init=enc.safetensors"], "'encoder_module' and 'encoder_init' exclude each other"),
    (["encoder_module=byo_encoder"], "'encoder_module' must be empty or package.module:factory, got 'byo_encoder'"),
    (["amp=bf16"], "bring-your-own trunk (encoder_module): use amp=off"),
])
def test_config_mistakes(extra, needle):
    with pytest.raises(ConfigError) as info:
        _cfg(*extra)
    assert needle in str(info.value) and "\n" not in str(info.value) and "--" not in str(info.value)


@pytest.mark.parametrize("extra,needle", [
    (["crop_size=48"], f"encoder module '{SPEC}' takes obs_shape (9, 56, 56), but this run feeds it (9, 48, 48)"),
    (["encoder_module=no_such_module:make"], "encoder 'no_such_module:make': cannot import 'make'"),
    (["encoder_module=byo_encoder:make_wrong"], "must return a curlrl.encoder.ForeignEncoder"),
])
def test_train_mistakes_are_one_line_before_any_checkpoint(extra, needle, tmp_path, capsys):
    run = tmp_path / "run"
    line = cli_error(capsys, ["train", offline_data.TASK, *ARGS, *extra, "--run-dir", str(run)], needle)
    assert line.startswith("curlrl: error:"), line
    assert not RunDir(run).has_checkpoint()
