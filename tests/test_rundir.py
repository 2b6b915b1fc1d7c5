"""The run-directory module: logs read by header, counters and kinds of checkpoints, RNG capture."""
from __future__ import annotations

import csv
import random
import shutil

import pytest
import torch
from conftest import cli_error

from curlrl.checkpoint import atomic_save, safe_load
from curlrl.cli import main
from curlrl.errors import CheckpointError
from curlrl.jobs.rundir import (EVAL_COLUMNS, PRETRAIN_KIND, TRAIN_COLUMNS, TRAIN_KIND, CsvLog, RunDir,
                                checkpoint_kind, global_rng_state, set_global_rng_state)

import offline_data


def write_csv(path, columns, rows):
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        writer.writerows(rows)


# -- logs ------------------------------------------------------------------------------

def test_read_csv_and_evals_go_by_the_header_not_the_position(tmp_path):
    cols = ["return", "env_step", "eval_episode", "seed", "task"]  # another order than EVAL_COLUMNS
    write_csv(tmp_path / "eval.csv", cols, [[10.0, 0, 0, 3, "t"], [20.0, 0, 1, 3, "t"], [7.5, 1000, 0, 3, "t"]])
    run = RunDir(tmp_path)
    rows = run.read_csv("eval.csv")
    assert [(r["env_step"], r["return"], r["seed"]) for r in rows] == [("0", "10.0", "3"), ("0", "20.0", "3"),
                                                                       ("1000", "7.5", "3")]
    assert run.evals() == {0: [10.0, 20.0], 1000: [7.5]}
    assert run.last_eval() == (1000, 7.5)
    assert run.read_csv("train.csv") == []  # no such log yet


def test_last_eval_is_the_mean_at_the_last_step_or_none(tmp_path):
    run = RunDir(tmp_path)
    assert run.last_eval() is None  # no eval.csv
    write_csv(tmp_path / "eval.csv", EVAL_COLUMNS, [])
    assert run.last_eval() is None  # header only
    write_csv(tmp_path / "eval.csv", ["env_step", "return"], [[2000, 1.0], [2000, 4.0], [1000, 100.0]])
    assert run.last_eval() == (2000, 2.5)
    write_csv(tmp_path / "eval.csv", ["env_step", "return"], [["later", 1.0]])
    assert run.last_eval() is None  # unreadable: no evaluation to report
    with pytest.raises(CheckpointError, match="is not a curlrl eval.csv"):
        run.evals()


def test_last_train_step_reads_env_step_by_the_header(tmp_path):
    run = RunDir(tmp_path)
    assert run.last_train_step() == 0  # no train.csv
    cols = list(reversed(TRAIN_COLUMNS))  # env_step is far from its usual third place
    write_csv(tmp_path / "train.csv", cols, [])
    assert run.last_train_step() == 0  # header only
    rows = []
    for step in (1000, 2000, 3000):
        row = dict.fromkeys(TRAIN_COLUMNS, "")
        row.update(task="cartpole-swingup", seed=0, env_step=step, agent_step=step // 8, updates=step // 8 - 100,
                   episode=step // 1000 - 1, episode_env_steps=1000)
        rows.append([row[c] for c in cols])
    write_csv(tmp_path / "train.csv", cols, rows)
    assert run.last_train_step() == 3000


def test_a_log_appended_to_follows_its_own_header(tmp_path):
    path = tmp_path / "eval.csv"
    cols = list(reversed(EVAL_COLUMNS))
    write_csv(path, cols, [])
    log = CsvLog(path, EVAL_COLUMNS)
    log.write({"task": "t", "seed": 1, "env_step": 800, "eval_episode": 0, "return": 12.5})
    log.close()
    assert RunDir(tmp_path).evals() == {800: [12.5]}
    with open(path, newline="") as fh:
        assert next(csv.reader(fh)) == cols  # the header is untouched


def test_open_log_trims_on_resume_and_names_a_foreign_log(tmp_path):
    run = RunDir(tmp_path)
    write_csv(run.csv_path(run.TRAIN_CSV), ["env_step", "return"], [[1000, 1], [2000, 2], [3000, 3]])
    run.open_log(run.TRAIN_CSV, TRAIN_COLUMNS, keep=lambda r: int(r["env_step"]) <= 2000).close()
    assert [r["env_step"] for r in run.read_csv(run.TRAIN_CSV)] == ["1000", "2000"]
    write_csv(run.csv_path(run.TRAIN_CSV), ["step", "loss"], [[1, 0.5]])  # no env_step column
    with pytest.raises(CheckpointError, match="is not a curlrl log"):
        run.open_log(run.TRAIN_CSV, TRAIN_COLUMNS, keep=lambda r: int(r["env_step"]) <= 2000)


# -- checkpoints -----------------------------------------------------------------------

def test_checkpoint_counters_missing_corrupt_and_valid(tmp_path):
    run = RunDir(tmp_path)
    assert run.checkpoint_counters() is None and run.checkpoint_env_step() is None
    run.checkpoint_dir.mkdir()
    run.checkpoint_path.write_bytes(b"\x00 not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        run.checkpoint_counters()
    atomic_save({"kind": TRAIN_KIND, "step": 3}, run.checkpoint_path)  # no counters
    with pytest.raises(CheckpointError, match="no env_step counter"):
        run.checkpoint_counters()
    counters = dict(env_step=4000, episode=4, next_eval=5000, next_checkpoint=5000, eval_index=5, transitions=500)
    run.save_checkpoint({"kind": TRAIN_KIND, "counters": counters, "weights": torch.zeros(1000)})
    assert run.checkpoint_counters() == counters and run.checkpoint_env_step() == 4000


@pytest.mark.parametrize("state, kind", [
    ({"kind": "curlrl.train/1", "version": 1, "agent": {}}, TRAIN_KIND),
    ({"version": 1, "agent": {}, "counters": {}}, TRAIN_KIND),           # written before kinds existed
    ({"kind": "curlrl.pretrain/1", "encoder": {}}, PRETRAIN_KIND),
    ({"kind": "curlrl.jobs.pretrain/1", "encoder": {}}, PRETRAIN_KIND),  # the name one commit wrote
])
def test_checkpoint_kinds(state, kind):
    assert checkpoint_kind(state, "x.pt") == kind


@pytest.mark.parametrize("state, message", [
    ({"kind": "curlrl.train/2"}, "of kind 'curlrl.train/2', which this curlrl cannot read"),
    ({"version": 2, "agent": {}}, "names no kind and has version 2"),
    ({"weights": {}}, "not a curlrl run checkpoint (it names no kind)"),
    ([1, 2], "not a mapping"),
])
def test_checkpoints_of_no_known_kind_are_refused(state, message):
    with pytest.raises(CheckpointError, match="checkpoint x.pt ") as info:
        checkpoint_kind(state, "x.pt")
    assert message in str(info.value)


def test_load_checkpoint_checks_the_kind_it_is_asked_for(tmp_path):
    run = RunDir(tmp_path)
    run.save_checkpoint({"kind": PRETRAIN_KIND, "step": 2})
    assert run.checkpoint_kind() == PRETRAIN_KIND
    assert run.load_checkpoint(kind=PRETRAIN_KIND)["step"] == 2
    with pytest.raises(CheckpointError) as info:
        run.load_checkpoint(kind=TRAIN_KIND)
    assert str(info.value) == (f"checkpoint {run.checkpoint_path} belongs to an encoder pretraining run, "
                               f"not an agent training run")
    with pytest.raises(CheckpointError, match="belongs to an encoder pretraining run"):
        run.expect_kind(TRAIN_KIND)
    run.expect_kind(PRETRAIN_KIND)
    RunDir(tmp_path / "new").expect_kind(TRAIN_KIND)  # no checkpoint: nothing to contradict


def test_global_rng_state_round_trips_through_a_checkpoint(tmp_path):
    state = global_rng_state()
    want = (torch.rand(3), random.random())
    atomic_save({"rng": state}, tmp_path / "c.pt")
    torch.manual_seed(123)
    random.seed(123)
    set_global_rng_state(safe_load(tmp_path / "c.pt")["rng"])
    got = (torch.rand(3), random.random())
    assert torch.equal(got[0], want[0]) and got[1] == want[1]


# -- real runs: the kinds meet the jobs -------------------------------------------------

@pytest.fixture(scope="module")
def pretrain_run(tmp_path_factory, dataset):
    from curlrl.jobs.pretrain import pretrain, resolve

    run = tmp_path_factory.mktemp("rundir-pt") / "run"
    pretrain(resolve(str(dataset), offline_data.SMALL + ["steps=3", "batch_size=16", "log_every=1"]), run,
             quiet=True)
    return run


def test_a_run_of_the_other_kind_is_named_not_misread(train_run, pretrain_run, tmp_path, capsys):
    from curlrl.jobs import config as config_mod
    from curlrl.jobs.evaluate import evaluate_run
    from curlrl.jobs.train import Trainer

    pt_ckpt, tr_ckpt = RunDir(pretrain_run).checkpoint_path, RunDir(train_run).checkpoint_path
    before = {p: p.read_bytes() for run in (pretrain_run, train_run) for p in run.rglob("*") if p.is_file()}
    with pytest.raises(CheckpointError, match=f"checkpoint {pt_ckpt} belongs to an encoder pretraining run, "
                                              f"not an agent training run"):
        evaluate_run(pretrain_run, episodes=1, video=False)
    for argv, needles in (
            (["eval", str(pretrain_run), "--episodes", "1", "--no-video"],
             (str(pt_ckpt), "belongs to an encoder pretraining run")),
            (["train", "--resume", "--run-dir", str(pretrain_run)],
             (str(pt_ckpt), "belongs to an encoder pretraining run")),
            (["pretrain", "--resume", "--run-dir", str(train_run)],
             (str(tr_ckpt), "belongs to an agent training run, not an encoder pretraining run"))):
        line = cli_error(capsys, argv, *needles)
        assert line.startswith("curlrl: error:"), line
    # the library, given a config of the right kind but the other kind's directory
    cfg = config_mod.resolve(offline_data.TASK, overrides=offline_data.TRAIN_SMALL)
    with pytest.raises(CheckpointError, match="belongs to an encoder pretraining run"):
        Trainer(cfg, pretrain_run, resume=True, quiet=True)
    assert before == {p: p.read_bytes() for run in (pretrain_run, train_run) for p in run.rglob("*") if p.is_file()}


def test_an_agent_checkpoint_from_before_kinds_resumes_and_evaluates(train_run, tmp_path, capsys):
    run = tmp_path / "old"
    shutil.copytree(train_run, run)
    state = safe_load(RunDir(run).checkpoint_path)
    assert state.pop("kind") == TRAIN_KIND and state["version"] == 1
    atomic_save(state, RunDir(run).checkpoint_path)  # as curlrl wrote it before checkpoints had kinds
    assert main(["eval", str(run), "--episodes", "1", "--no-video"]) == 0
    assert "@ 40 env steps" in capsys.readouterr().out
    assert main(["train", "--resume", "--run-dir", str(run), "env_steps=80"]) == 0
    resumed = safe_load(RunDir(run).checkpoint_path)
    assert resumed["counters"]["env_step"] == 80 and resumed["kind"] == TRAIN_KIND
    assert [r["env_step"] for r in RunDir(run).read_csv("eval.csv")] == ["0", "40", "80"]


def test_a_pretrain_checkpoint_under_its_misnamed_kind_resumes(pretrain_run, tmp_path):
    run = tmp_path / "pt"
    shutil.copytree(pretrain_run, run)
    state = safe_load(RunDir(run).checkpoint_path)
    state["kind"] = "curlrl.jobs.pretrain/1"
    atomic_save(state, RunDir(run).checkpoint_path)
    assert main(["pretrain", "--resume", "--run-dir", str(run), "steps=4"]) == 0
    resumed = safe_load(RunDir(run).checkpoint_path)
    assert resumed["step"] == 4 and resumed["kind"] == PRETRAIN_KIND
    assert [r["step"] for r in RunDir(run).read_csv("pretrain.csv")] == ["1", "2", "3", "4"]
