"""Variants of a bench suite, ``curlrl rl`` (online RL from a pretrained encoder: frozen vs
fine-tuned vs scratch) and run labels in reports.

The end-to-end test trains two tiny runs (frozen and finetuned, 400 env steps, batch 16)
from an encoder written here, and checks what each left behind against that file."""
from __future__ import annotations

import contextlib
import csv
import io

import pytest
import torch
import yaml
from conftest import assert_one_line

from curlrl.cli import main
from curlrl.encoder import PixelEncoder
from curlrl.errors import ConfigError
from curlrl.jobs import bench, report
from curlrl.jobs import config as config_mod
from curlrl.jobs.bench.results import RunResult
from curlrl.jobs.export import load_encoder

TINY = ["init_steps=200", "eval_every=400", "checkpoint_every=400", "eval_episodes=1", "batch_size=16",
        "replay_capacity=1000", "image_size=64", "crop_size=56", "video=false", "threads=1"]


def _cli(argv: list[str]) -> tuple[int, str]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        try:
            rc = main(argv)
        except SystemExit as exc:
            rc = exc.code
    return rc, buf.getvalue()


def _suite_file(tmp_path, text: str):
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    return path


SUITE = """
tasks: [cartpole-swingup, walker-walk]
env_steps: 1000
seeds: 2
overrides: {batch_size: 32}
variants:
  small: {feature_dim: 20}
  wide-b.1: {feature_dim: 80, label: wide}
  plain: {}
"""


def test_plan_runs_every_variant_over_tasks_and_seeds(tmp_path):
    suite = bench.load_suite(str(_suite_file(tmp_path, SUITE)))
    assert list(suite.variants) == ["small", "wide-b.1", "plain"]
    specs = bench.plan(suite, tmp_path / "out")
    assert len(specs) == 3 * 2 * 2
    by_name = {s.name: s for s in specs}
    small = by_name["small/walker-walk seed1"]
    assert small.run_dir == str(tmp_path / "out" / "runs" / "small" / "walker-walk" / "seed1")
    assert small.log_path == str(tmp_path / "out" / "logs" / "small" / "walker-walk" / "seed1.log")
    assert {"feature_dim=20", "label=small", "batch_size=32", "seed=1"} <= set(small.overrides)
    # a variant may name its own label; a variant without overrides still gets its name as label
    assert "label=wide" in by_name["wide-b.1/cartpole-swingup seed0"].overrides
    assert "label=plain" in by_name["plain/cartpole-swingup seed0"].overrides
    # only some variants
    picked = bench.plan(suite, tmp_path / "out", variants=["plain"], seeds=1)
    assert {s.variant for s in picked} == {"plain"} and len(picked) == 2
    assert "2 runs (1 variant (plain) x 2 tasks x 1 seed)" in bench.plan_table(suite, picked, "local", 1, tmp_path)
    table = bench.plan_table(suite, specs, "local", 1, tmp_path / "out")
    assert "12 runs (3 variants (small, wide-b.1, plain) x 2 tasks x 2 seeds)" in table


def test_suite_without_variants_keeps_its_layout(tmp_path):
    suite = bench.load_suite(str(_suite_file(tmp_path, "tasks: [cartpole-swingup]\nenv_steps: 1000\nseeds: 1\n")))
    (spec,) = bench.plan(suite, tmp_path)
    assert spec.run_dir == str(tmp_path / "runs" / "cartpole-swingup" / "seed0") and spec.variant == ""
    assert spec.name == "cartpole-swingup seed0" and not any(o.startswith("label=") for o in spec.overrides)


@pytest.mark.parametrize("text, words", [
    ("variants: [a, b]", "'variants' must map variant names"),
    ("variants: {a: 3}", "'variants' must map variant names"),
    ("variants: {'a/b': {}}", "variant name 'a/b'"),
    ("variants: {'..': {}}", "variant name '..'"),
    ("variants: {a: {feature_dim: -1}}", "variant 'a': config key 'feature_dim'"),
    ("variants: {a: {no_such_key: 1}}", "variant 'a':"),
])
def test_bad_variants_get_one_line(tmp_path, text, words):
    path = _suite_file(tmp_path, f"tasks: [cartpole-swingup]\nenv_steps: 1000\n{text}\n")
    with pytest.raises(ConfigError) as err:
        bench.plan(bench.load_suite(str(path)), tmp_path / "out")
    assert words in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


def test_command_line_may_not_erase_a_variant(tmp_path):
    path = _suite_file(tmp_path, SUITE)
    with pytest.raises(bench.ArgumentError, match="would replace what variant 'small' sets"):
        bench.plan(bench.load_suite(str(path)), tmp_path, overrides=["feature_dim=30"])
    rc, text = _cli(["bench", "--suite", str(path), "--out", str(tmp_path / "o"), "feature_dim=30"])
    assert_one_line(rc, text, "feature_dim= would replace what variant 'small' sets")
    rc, text = _cli(["bench", "--suite", str(path), "--out", str(tmp_path / "o"), "label=all"])
    assert_one_line(rc, text, "label= would replace what variant 'small' sets")
    rc, text = _cli(["bench", "--suite", str(path), "--out", str(tmp_path / "o"), "--variants", "small,nope"])
    assert_one_line(rc, text, "--variants small,nope: choose each once from small, wide-b.1, plain")
    rc, text = _cli(["bench", "--suite", "planet100k", "--out", str(tmp_path / "o"), "--variants", "a"])
    assert_one_line(rc, text, "--variants: suite 'planet100k' has no variants")
    assert not (tmp_path / "o").exists()


def test_encoder_suite_modes(tmp_path, monkeypatch):
    enc = tmp_path / "enc.safetensors"
    PixelEncoder((9, 84, 84)).save_pretrained(enc)
    monkeypatch.chdir(tmp_path)
    suite = bench.encoder_suite("enc.safetensors", "cartpole-swingup", 5000, 3)
    assert suite.tasks == ["cartpole-swingup"] and suite.env_steps == 5000 and suite.seeds == [0, 1, 2]
    assert suite.variants == {"frozen": {"encoder_init": str(enc), "freeze_conv": True},
                              "finetuned": {"encoder_init": str(enc)}, "scratch": {}}
    assert list(bench.encoder_suite(str(enc), "cartpole-swingup", 10, 1, ["scratch", "frozen"]).variants) == \
        ["scratch", "frozen"]
    with pytest.raises(bench.ArgumentError, match="choose each once"):
        bench.encoder_suite(str(enc), "cartpole-swingup", 10, 1, ["frozen", "frozen"])
    with pytest.raises(ConfigError, match="does not exist"):
        bench.encoder_suite("missing.safetensors", "cartpole-swingup", 10, 1)
    with pytest.raises(ConfigError, match="give an encoder export"):
        bench.encoder_suite(str(tmp_path), "cartpole-swingup", 10, 1)


def test_encoder_suite_with_a_bring_your_own_trunk(tmp_path):
    suite = bench.encoder_suite("byo_encoder:make_conv", "cartpole-swingup", 400, 1)
    assert suite.variants == {"frozen": {"encoder_module": "byo_encoder:make_conv", "freeze_conv": True},
                              "finetuned": {"encoder_module": "byo_encoder:make_conv"}, "scratch": {}}
    specs = bench.plan(suite, tmp_path, TINY)  # every variant's config resolves (and so is checked)
    assert [s.variant for s in specs] == ["frozen", "finetuned", "scratch"]
    assert "encoder_module=byo_encoder:make_conv" in specs[0].overrides


def _result(variant, task, seed, ret, step=1000, outcome="done"):
    return RunResult(task, seed, outcome, env_step=step, last_eval=ret, last_eval_step=step, variant=variant,
                     budget=1000)


def test_variant_table_against_hand_computation():
    results = [_result("frozen", "cartpole-swingup", 0, 100.0), _result("frozen", "cartpole-swingup", 1, 300.0),
               _result("tuned", "cartpole-swingup", 0, 250.0),
               _result("tuned", "cartpole-swingup", 1, 50.0, step=400, outcome="failed")]
    lines = bench.variant_table(results).splitlines()
    assert "at 1000 env steps" in lines[0]
    assert lines[1].split() == ["task", "frozen", "tuned"]
    row = lines[3]
    assert row.startswith("cartpole-swingup")
    # frozen: mean of 100 and 300. A resample of two values has mean 100, 200 or 300 with
    # probabilities 1/4, 1/2, 1/4, so the 2.5th and 97.5th percentiles of the bootstrap means
    # are exactly 100 and 300 (each extreme holds ~500 of the 2000 resamples, far above 50)
    assert "200.0 [100.0, 300.0] (n=2)" in row
    # tuned: one of its two runs reached the budget
    assert "250.0 [250.0, 250.0] (n=1/2)" in row
    summary = bench.summary_table(results).splitlines()
    assert summary[0].split()[:3] == ["variant", "task", "seed"]
    assert "FAILED tuned/cartpole-swingup seed1" in summary[-1]


def test_report_names_runs_by_their_label(train_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(train_run, run)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["label"] = "frozen"
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    runs, _ = report.load_runs([run])
    assert [r.algo for r in runs] == ["frozen"]
    runs, _ = report.load_runs([run], labels=["mine"])  # --label still wins
    assert [r.algo for r in runs] == ["mine"]


@pytest.fixture(scope="module")
def rl_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rl")
    enc_path = tmp / "enc.safetensors"
    torch.manual_seed(123)
    PixelEncoder((9, 56, 56)).save_pretrained(enc_path, source="test")
    out = tmp / "out"
    config = tmp / "tiny.yaml"  # the budget and most settings from a config file, as with curlrl train --config
    config.write_text(yaml.safe_dump({"env_steps": 400, **config_mod.parse_overrides(TINY[:-1])}))
    argv = ["rl", str(enc_path), "cartpole-swingup", "--config", str(config), "--seeds", "1",
            "--modes", "frozen,finetuned", "--workers", "2", "--out", str(out), "--progress-every", "0", TINY[-1]]
    rc, text = _cli(argv)
    return dict(rc=rc, text=text, out=out, enc=enc_path, argv=argv)


def test_rl_trains_frozen_and_finetuned_from_the_encoder(rl_runs):
    assert rl_runs["rc"] == 0, rl_runs["text"]
    out, start = rl_runs["out"], PixelEncoder.from_pretrained(rl_runs["enc"]).state_dict()
    for mode, frozen in (("frozen", True), ("finetuned", False)):
        run = out / "runs" / mode / "cartpole-swingup" / "seed0"
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        assert (cfg["label"], cfg["freeze_conv"], cfg["encoder_init"]) == (mode, frozen, str(rl_runs["enc"]))
        assert (cfg["env_steps"], cfg["batch_size"], cfg["crop_size"], cfg["threads"]) == (400, 16, 56, 1)
        trained = load_encoder(str(run)).encoder.state_dict()
        conv_same = all(torch.equal(trained[k], v) for k, v in start.items() if k.startswith("conv."))
        head_same = all(torch.equal(trained[k], v) for k, v in start.items() if k.startswith("head."))
        assert conv_same == frozen, mode      # the trunk moved only when fine-tuned
        assert not head_same, mode            # the head learns in both modes


def test_rl_prints_the_modes_side_by_side(rl_runs):
    text = rl_runs["text"]
    side = text[text.index("variants side by side"):].splitlines()
    assert side[1].split() == ["task", "frozen", "finetuned"]
    assert side[3].startswith("cartpole-swingup") and side[3].count("(n=1)") == 2
    assert f"curlrl report {rl_runs['out'] / 'runs'} --steps 400" in text
    with open(rl_runs["out"] / "bench.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["variant"], r["outcome"]) for r in rows] == [("frozen", "done"), ("finetuned", "done")]
    runs, _ = report.load_runs([rl_runs["out"] / "runs"])
    assert sorted(r.algo for r in runs) == ["finetuned", "frozen"]
    # the report flags both as non-paper settings of the agent
    assert all(any(s.startswith("encoder_init=") for s in r.non_paper) for r in runs)


def test_rl_again_skips_finished_runs(rl_runs):
    rc, text = _cli(rl_runs["argv"])
    assert rc == 0 and "2 already finished" in text and "variants side by side" in text


def test_rl_bad_input_gets_one_line(tmp_path, rl_runs):
    out = tmp_path / "o"
    bad_config, neg_config = tmp_path / "bad.yaml", tmp_path / "neg.yaml"
    bad_config.write_text("batch_size: 32\nfreeze_conv: true\n")  # read: it clashes with the modes
    neg_config.write_text("batch_size: -1\n")
    nan_config = tmp_path / "nan.yaml"
    nan_config.write_text("env_steps: soon\n")
    for argv, words in [
        (["rl", str(tmp_path / "nope.safetensors"), "cartpole-swingup"], "does not exist"),
        (["rl", str(rl_runs["enc"]), "cartpole-swingup", "--modes", "frozen,warm"], "--modes frozen,warm: choose"),
        (["rl", str(rl_runs["enc"]), "cartpole-swingup", "--seeds", "0"], "--seeds must be > 0"),
        (["rl", str(rl_runs["enc"]), "cartpole-swingup", "--env-steps", "0"], "--env-steps"),
        (["rl", str(rl_runs["enc"]), "no-such-task"], "no-such-task"),
        (["rl", str(rl_runs["enc"]), "cartpole-swingup", "freeze_conv=false"], "would replace what variant"),
        (["rl", str(rl_runs["enc"]), "cartpole-swingup", "--config", str(bad_config)], "would replace what variant"),
        (["rl", str(rl_runs["enc"]), "cartpole-swingup", "--config", str(tmp_path / "none.yaml")], "none.yaml"),
        (["bench", "--tasks", "cartpole-swingup", "--config", str(neg_config)], "'batch_size' must be > 0"),
        (["rl", str(rl_runs["enc"]), "cartpole-swingup", "--config", str(nan_config)], "env_steps must be a number"),
    ]:
        rc, text = _cli([*argv, "--out", str(out)])
        assert_one_line(rc, text, words)
    assert not out.exists()
