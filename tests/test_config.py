"""Config layering and validation: every mistake names its key."""
import pytest

from curlrl.jobs.config import TrainConfig, parse_overrides, resolve
from curlrl.errors import ConfigError


def test_task_config_then_overrides():
    cfg = resolve("cartpole-swingup", overrides=["batch_size=128", "curl=false", "critic_lr=3e-4"])
    assert (cfg.action_repeat, cfg.init_steps, cfg.batch_size, cfg.curl) == (8, 8000, 128, False)
    assert cfg.critic_lr == pytest.approx(3e-4)
    cheetah = resolve("cheetah-run")
    assert (cheetah.action_repeat, cheetah.encoder_lr, cheetah.batch_size) == (4, 0.0002, 512)


@pytest.mark.parametrize("task,repeat", [("finger-spin", 2), ("walker-walk", 2), ("reacher-easy", 4),
                                         ("ball_in_cup-catch", 4), ("cheetah-run", 4), ("cartpole-swingup", 8)])
def test_paper_action_repeats(task, repeat):
    cfg = resolve(task)
    assert cfg.action_repeat == repeat and cfg.init_steps == 1000 * repeat and cfg.batch_size == 512


@pytest.mark.parametrize("task,overrides,init_steps", [
    ("quadruped-walk", [], 4000),                       # no shipped config: default action repeat 4
    ("cartpole-swingup", ["action_repeat=4"], 4000),    # the rule follows the action repeat
    ("walker-walk", ["init_steps=500"], 500),           # set explicitly: kept
    ("walker-walk", ["init_steps=null"], 2000),         # null: the rule
])
def test_init_steps_is_1000_agent_steps_unless_set(task, overrides, init_steps):
    cfg = resolve(task, overrides=overrides)
    assert cfg.init_steps == init_steps


def test_curl_lr_follows_encoder_lr_unless_set():
    assert resolve("cheetah-run").curl_lr == pytest.approx(2e-4)
    assert resolve("cartpole-swingup", overrides=["encoder_lr=5e-4"]).curl_lr == pytest.approx(5e-4)
    assert resolve("cartpole-swingup", overrides=["curl_lr=3e-3"]).curl_lr == pytest.approx(3e-3)


def test_config_file_layer(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("batch_size: 64\nenv_steps: 2e4\n")
    cfg = resolve("cartpole-swingup", str(f), ["batch_size=32"])
    assert cfg.batch_size == 32 and cfg.env_steps == 20000


@pytest.mark.parametrize("override,match", [
    (["batch_sise=128"], "unknown config key 'batch_sise' \\(did you mean 'batch_size'\\?\\)"),
    (["batch_size=big"], "'batch_size' must be int"),
    (["curl=maybe"], "'curl' must be bool"),
    (["batch_size=1.5"], "'batch_size' must be int"),
    (["batch_size=0"], "'batch_size' must be > 0"),
    (["encoder_tau=1.5"], "'encoder_tau' must be in"),
    (["eval_every=1001"], "'eval_every' \\(1001\\) must be a multiple of action_repeat"),
    (["crop_size=120"], "'crop_size'"),
    (["update_mode=fast"], "'update_mode'"),
    (["encoder_adam=separate"], "'encoder_adam' must be one of reference, per_loss, shared"),
    (["amp=fp16"], "'amp' must be 'off' or 'bf16'"),
    (["encoder_adam=per_loss", "update_mode=fused"], "'update_mode' = 'fused' needs encoder_adam=shared"),
    (["update_mode=fused"], "'update_mode' = 'fused' needs encoder_adam=shared"),
    (["init_steps=-8"], "'init_steps' must be >= 0"),
    (["capture=graphs"], "'capture' must be one of off, compile, cudagraphs"),
    (["capture=cudagraphs", "device=cpu"], "'capture' = 'cudagraphs' needs a CUDA device"),
    (["init_steps=big"], "'init_steps' must be int"),
    (["device=tpu"], "'device'"),
    (["replay_storage=gpu"], "'replay_storage' must be auto, host or device, got 'gpu'"),
    (["nokey"], "key=value"),
])
def test_bad_overrides_name_the_key(override, match):
    with pytest.raises(ConfigError, match=match):
        resolve("cartpole-swingup", overrides=override)


def test_bad_config_files(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("batch_size: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        resolve("cartpole-swingup", str(bad))
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        resolve("cartpole-swingup", str(bad))
    with pytest.raises(ConfigError, match="cannot read"):
        resolve("cartpole-swingup", str(tmp_path / "missing.yaml"))


def test_overrides_parse_yaml_scalars():
    assert parse_overrides(["a=1", "b=0.5", "c=true", "d=cpu", "e=1e-3"]) == dict(a=1, b=0.5, c=True, d="cpu", e="1e-3")
    assert TrainConfig().env_steps == 100_000
