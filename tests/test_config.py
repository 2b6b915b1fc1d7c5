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


# -- the declarative schema: help, checks and flags beside each field ------------------------

def _config_classes():
    from curlrl.jobs.pretrain import PretrainConfig
    return [TrainConfig, PretrainConfig]


@pytest.mark.parametrize("cls", _config_classes(), ids=lambda c: c.__name__)
def test_every_field_has_help_text(cls):
    import dataclasses
    missing = [f.name for f in dataclasses.fields(cls) if not str(f.metadata.get("help", "")).strip()]
    assert not missing, f"{cls.__name__} fields without help: {missing}"


def test_shared_fields_are_declared_once():
    import dataclasses
    from curlrl.agents import AgentConfig
    from curlrl.jobs.pretrain import PretrainConfig
    from curlrl.objectives import OBJECTIVE_KEYS
    from curlrl.options import EncoderConfig, ObjectiveConfig
    encoder = {f.name for f in dataclasses.fields(EncoderConfig)}
    assert encoder == {"crop_size", "feature_dim", "num_layers", "num_filters", "encoder_tanh", "encoder_lr",
                       "curl_lr", "encoder_tau", "target_update_every", "augment", "objective", *OBJECTIVE_KEYS}
    assert issubclass(EncoderConfig, ObjectiveConfig) and len(OBJECTIVE_KEYS) == 15
    assert issubclass(AgentConfig, EncoderConfig) and issubclass(PretrainConfig, EncoderConfig)
    # each job keeps its own curl_lr default: the agent's None means "= encoder_lr"
    assert AgentConfig().curl_lr is None and PretrainConfig().curl_lr == 1e-3
    runtime = {"seed", "device", "threads"}
    assert all(runtime <= {f.name for f in dataclasses.fields(c)} for c in (TrainConfig, PretrainConfig))


# The list report.py kept by hand before the schema (less curl, which names the algorithm).
OPERATIONAL = {"task", "seed", "device", "threads", "env_steps", "eval_every", "checkpoint_every", "save_replay",
               "video", "log_every_updates", "channels_last", "replay_compress", "replay_storage", "capture",
               "label"}


def test_operational_and_resumable_keys():
    from curlrl.jobs.config import compared_keys, operational_keys, resumable_keys
    assert operational_keys() == OPERATIONAL
    assert compared_keys() == set(TrainConfig.__dataclass_fields__) - OPERATIONAL - {"curl"}
    assert resumable_keys() == {"env_steps", "threads", "device", "seed", "task", "label"}


@pytest.mark.parametrize("override,match", [
    (["discount=1.0"], "'discount' must be in \\[0, 1\\), got 1.0"),
    (["critic_tau=0"], "'critic_tau' must be in \\(0, 1\\], got 0.0"),
    (["threads=-1"], "'threads' must be >= 0, got -1"),
    (["hidden_dim=0"], "'hidden_dim' must be > 0, got 0"),
    (["actor_lr=-1e-3"], "'actor_lr' must be > 0, got -0.001"),
    (["curl_lr=0"], "'curl_lr' must be > 0"),
    (["batch_size=true"], "'batch_size' must be int, got True"),   # bool is not an int
    (["batch_size=1e2"], "'batch_size' must be int"),              # 1e5 style only for step counts
    (["device=cuda:x"], "'device' must be auto, cpu, cuda or cuda:N, got 'cuda:x'"),
    (["log_std_min=3"], "'log_std_min' must be < 'log_std_max'"),
    (["crop_size=8"], "'crop_size' \\(8\\) is too small for 4 conv layers"),
])
def test_declared_checks_name_the_key(override, match):
    with pytest.raises(ConfigError, match=match):
        resolve("cartpole-swingup", overrides=override)


def test_types_follow_the_annotations():
    cfg = resolve("cartpole-swingup", overrides=["env_steps=2e4", "actor_lr=1e-3", "alpha_lr=1", "curl_lr=null",
                                                 "device=cuda:1", "init_steps=null"])
    assert cfg.env_steps == 20000 and isinstance(cfg.env_steps, int)
    assert cfg.actor_lr == pytest.approx(1e-3) and isinstance(cfg.alpha_lr, float)
    assert cfg.curl_lr == cfg.encoder_lr and cfg.init_steps == 8000 and cfg.device == "cuda:1"


def test_validate_checks_a_config_built_in_python():
    from curlrl.jobs.config import validate
    with pytest.raises(ConfigError, match="'batch_size' must be int"):
        validate(TrainConfig(batch_size="big"))
    with pytest.raises(ConfigError, match="'frame_stack' must be > 0, got 0"):
        validate(TrainConfig(frame_stack=0))


def test_pretrain_config_goes_through_the_same_checks():
    from curlrl.jobs.pretrain import resolve as pretrain_resolve
    with pytest.raises(ConfigError, match="'curl_lr' must be float"):  # no None rule in pretraining
        pretrain_resolve("data", ["curl_lr=null"])
    with pytest.raises(ConfigError, match="'holdout' must be in \\[0, 1\\), got 1.0"):
        pretrain_resolve("data", ["holdout=1"])
    with pytest.raises(ConfigError, match="'crop_size' \\(8\\) is too small for 4 conv layers"):
        pretrain_resolve("data", ["crop_size=8"])
    assert pretrain_resolve("data", ["steps=1e3"]).steps == 1000


def test_config_command_prints_yaml_or_explains_every_key(capsys):
    import dataclasses

    import yaml

    from curlrl.cli import main
    args = ["config", "cartpole-swingup", "batch_size=128"]
    assert main(args) == 0
    plain = capsys.readouterr().out
    resolved = dataclasses.asdict(resolve("cartpole-swingup", overrides=["batch_size=128"]))
    assert yaml.safe_load(plain) == resolved and "#" not in plain
    assert main(args + ["--explain"]) == 0
    explained = capsys.readouterr().out
    assert yaml.safe_load(explained) == resolved  # the comments are YAML comments
    lines = explained.splitlines()
    for f in dataclasses.fields(TrainConfig):
        value_line = next(i for i, line in enumerate(lines) if line.startswith(f"{f.name}:"))
        start = max(i for i in range(value_line) if lines[i].startswith(f"# {f.name} ("))
        comment = " ".join(line.lstrip("# ") for line in lines[start:value_line])
        meaning = comment.split("): ", 1)[1]
        assert meaning.strip(), f.name
        assert ("operational" in comment.split("): ", 1)[0]) == (f.name in OPERATIONAL), f.name


def test_a_task_named_only_by_an_override_or_a_file_gets_its_own_task_settings(tmp_path):
    from curlrl.jobs import config

    walker = config.task_config("walker-walk")
    cfg = config.resolve(None, overrides=["task=walker-walk"])
    assert cfg.task == "walker-walk" and cfg.action_repeat == walker["action_repeat"] == 2
    path = tmp_path / "w.yaml"
    path.write_text("task: walker-walk\n")
    cfg = config.resolve(None, config_file=str(path))
    assert cfg.task == "walker-walk" and cfg.action_repeat == 2
    # the override wins over the file, as for every other key
    assert config.resolve(None, config_file=str(path), overrides=["task=cartpole-swingup"]).action_repeat == 8
