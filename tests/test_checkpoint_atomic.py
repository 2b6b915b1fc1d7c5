"""A checkpoint is one atomic unit (state + replay behind one pointer); a write failure or a
divergence ends a run with one line, leaving the last good checkpoint resumable."""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import HANG_TIMEOUT_S, cli_error, one_line_error

from curlrl.checkpoint import safe_load
from curlrl.cli import main
from curlrl.errors import CheckpointError, DivergenceError
from curlrl.jobs.rundir import TRAIN_KIND, RunDir
from curlrl.replay import ReplayBuffer

import offline_data

STAGES = ["replay", "state", "rename", "pointer", "cleanup"]  # after each, RunDir._checkpoint_stage is called
COMMITTED = {"pointer", "cleanup"}  # the LATEST pointer was switched before these


class Injected(Exception):
    pass


def fill(buf, n, seed=0):
    rng = np.random.default_rng(seed)
    obs = rng.integers(0, 255, (3 * buf.frame_stack, *buf.frame_shape[1:]), dtype=np.uint8)
    for i in range(n):
        nxt = rng.integers(0, 255, obs.shape, dtype=np.uint8)
        buf.add(obs, rng.uniform(-1, 1, buf.action_dim).astype(np.float32), 1.0, nxt, False, i == n - 1)
        obs = nxt


def state_for(env_step, buf):
    return {"kind": TRAIN_KIND, "version": 1,
            "counters": {"env_step": env_step, "transitions": buf.transitions_written},
            "weights": torch.full((100,), float(env_step))}


def consistent(run: RunDir) -> int:
    """The env step of the run's checkpoint, after checking its replay belongs to it."""
    state = run.load_checkpoint()
    with np.load(run.replay_path) as data:
        written = json.loads(str(data["meta"]))["transitions_written"]
    assert state["counters"]["transitions"] == written, "agent and replay from different checkpoints"
    assert torch.equal(state["weights"], torch.full((100,), float(state["counters"]["env_step"])))
    return state["counters"]["env_step"]


def folders(run: RunDir) -> list[str]:
    return sorted(p.name for p in run.checkpoint_dir.iterdir())


def make_buffer():
    return ReplayBuffer(40, (3, 8, 8), 2, frame_stack=3, seed=1)


@pytest.mark.parametrize("legacy", [False, True], ids=["folders", "legacy"])
@pytest.mark.parametrize("stage", STAGES)
def test_a_save_that_fails_at_any_point_leaves_one_whole_checkpoint(tmp_path, monkeypatch, stage, legacy):
    run = RunDir(tmp_path / "run")
    buf = make_buffer()
    fill(buf, 5)
    if legacy:  # the layout before checkpoint folders: latest.pt and replay.npz in checkpoints/
        run.checkpoint_dir.mkdir(parents=True)
        buf.save(run.checkpoint_dir / "replay.npz")
        torch.save(state_for(100, buf), run.checkpoint_dir / "latest.pt")
    else:
        run.save_checkpoint(state_for(100, buf), replay=buf)
    assert consistent(run) == 100
    fill(buf, 7, seed=1)

    def fail(self, at):
        if at == stage:
            raise Injected(at)
    monkeypatch.setattr(RunDir, "_checkpoint_stage", fail)
    with pytest.raises(Injected):
        run.save_checkpoint(state_for(200, buf), replay=buf)
    monkeypatch.undo()

    reader = RunDir(run.path)  # what a resume in a new process sees
    assert consistent(reader) == (200 if stage in COMMITTED else 100)
    assert not [n for n in folders(run) if n.startswith(".tmp-")]  # the failed save removed its temp folder
    # the next save (here: of the same step) commits and leaves only itself behind
    fill(buf, 3, seed=2)
    reader.save_checkpoint(state_for(300, buf), replay=buf)
    assert consistent(RunDir(run.path)) == 300
    assert folders(run) == ["LATEST", RunDir(run.path).current_checkpoint_dir.name]


def test_leftovers_of_a_crash_are_ignored_then_removed(tmp_path):
    run = RunDir(tmp_path / "run")
    buf = make_buffer()
    fill(buf, 5)
    run.save_checkpoint(state_for(100, buf), replay=buf)
    # a process killed mid-save: a half-written temp folder, a renamed folder the pointer never named
    (run.checkpoint_dir / ".tmp-abc").mkdir()
    (run.checkpoint_dir / ".tmp-abc" / "replay.npz.tmp").write_bytes(b"\0" * 10)
    (run.checkpoint_dir / "step-000000200").mkdir()
    (run.checkpoint_dir / "step-000000200" / "latest.pt").write_bytes(b"half")
    (run.checkpoint_dir / ".LATEST.tmp").write_text("step-000000200")
    assert consistent(run) == 100 and run.checkpoint_env_step() == 100
    fill(buf, 2, seed=3)
    run.save_checkpoint(state_for(200, buf), replay=buf)
    assert consistent(run) == 200
    assert folders(run) == ["LATEST", run.current_checkpoint_dir.name]


def test_the_same_step_saved_twice_gets_a_new_folder(tmp_path):
    run = RunDir(tmp_path / "run")
    run.save_checkpoint({"kind": TRAIN_KIND, "counters": {"env_step": 40}})
    first = run.current_checkpoint_dir
    run.save_checkpoint({"kind": TRAIN_KIND, "counters": {"env_step": 40}, "again": 1})
    assert run.current_checkpoint_dir != first and not first.exists()
    assert run.load_checkpoint()["again"] == 1 and run.checkpoint_env_step() == 40


def test_a_bad_pointer_is_one_clear_error(tmp_path):
    run = RunDir(tmp_path / "run")
    run.checkpoint_dir.mkdir(parents=True)
    run.pointer_path.write_text("../../etc")
    with pytest.raises(CheckpointError, match="does not name a checkpoint folder"):
        run.load_checkpoint()


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES, errno.EIO])
@pytest.mark.parametrize("at", ["mkdtemp", "replay", "state", "rename", "pointer"])
def test_a_write_error_is_one_checkpoint_error_and_leaves_nothing_behind(tmp_path, monkeypatch, code, at):
    import os
    import tempfile

    import curlrl.jobs.rundir as rundir_mod

    run = RunDir(tmp_path / "run")
    buf = make_buffer()
    fill(buf, 5)
    run.save_checkpoint(state_for(100, buf), replay=buf)
    fill(buf, 2, seed=4)
    error = OSError(code, os.strerror(code))

    def fail(*a, **kw):
        raise error
    if at == "mkdtemp":
        monkeypatch.setattr(tempfile, "mkdtemp", fail)
    elif at == "replay":
        monkeypatch.setattr(ReplayBuffer, "save", fail)
    elif at == "state":
        monkeypatch.setattr(rundir_mod, "atomic_save", fail)
    elif at == "rename":
        monkeypatch.setattr(rundir_mod.os, "rename", fail)
    else:
        monkeypatch.setattr(rundir_mod, "atomic_write_text", fail)  # the pointer switch
    with pytest.raises(CheckpointError) as info:
        run.save_checkpoint(state_for(200, buf), replay=buf)
    monkeypatch.undo()
    msg = str(info.value)
    assert "\n" not in msg and os.strerror(code) in msg and msg.endswith("the checkpoint of env step 100 is kept")
    name = {"mkdtemp": "", "replay": "/step-000000200/replay.npz", "state": "/step-000000200/latest.pt",
            "rename": "/step-000000200", "pointer": "/LATEST"}[at]
    assert msg.startswith(f"cannot write checkpoint file {run.checkpoint_dir}{name}: {os.strerror(code)};"), msg
    assert folders(run) == ["LATEST", "step-000000100"] and consistent(run) == 100


# -- write failures through the CLI ------------------------------------------------------

SMALL = [*offline_data.TRAIN_SMALL, "save_replay=true"]


@pytest.mark.parametrize("writer", ["replay", "state"])
def test_no_space_left_ends_the_run_with_one_line_and_resume_works(tmp_path, monkeypatch, capsys, writer):
    import curlrl.jobs.rundir as rundir_mod
    from curlrl.replay import BaseReplayBuffer

    run_dir = tmp_path / "run"
    assert main(["train", offline_data.TASK, "--run-dir", str(run_dir), *SMALL]) == 0
    run = RunDir(run_dir)
    assert run.checkpoint_env_step() == 40
    capsys.readouterr()

    def no_space(obj, path, *a, **kw):  # writes a little, then the disk is full
        path = getattr(path, "path", path)
        with open(str(path) + ".part", "wb") as fh:
            fh.write(b"\0" * 1000)
        raise OSError(errno.ENOSPC, "No space left on device")
    if writer == "replay":
        save = lambda self, path: no_space(self, path)  # noqa: E731
        monkeypatch.setattr(BaseReplayBuffer, "save", save)
    else:
        monkeypatch.setattr(rundir_mod, "atomic_save", no_space)
    name = "replay.npz" if writer == "replay" else "latest.pt"
    line = cli_error(capsys, ["train", "--resume", "--run-dir", str(run_dir), "env_steps=80"],
                     f"{run.checkpoint_dir}/step-000000080/{name}: No space left on device",
                     "the checkpoint of env step 40 is kept")
    assert line.startswith("curlrl: error:"), line
    assert folders(run) == ["LATEST", "step-000000040"]  # no temp files, the old checkpoint as it was
    monkeypatch.undo()

    assert main(["train", "--resume", "--run-dir", str(run_dir), "env_steps=80"]) == 0
    assert run.checkpoint_env_step() == 80 and folders(run) == ["LATEST", "step-000000080"]
    state = run.load_checkpoint()
    with np.load(run.replay_path) as data:
        assert json.loads(str(data["meta"]))["transitions_written"] == state["counters"]["transitions"] == 4


def test_a_legacy_run_directory_resumes_into_the_new_layout(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", offline_data.TASK, "--run-dir", str(run_dir), *SMALL]) == 0
    run = RunDir(run_dir)
    current = run.current_checkpoint_dir
    for name in ("latest.pt", "replay.npz"):  # back to the layout before folders
        (current / name).rename(run.checkpoint_dir / name)
    current.rmdir()
    run.pointer_path.unlink()
    assert run.checkpoint_path == run.checkpoint_dir / "latest.pt" and run.checkpoint_env_step() == 40
    assert main(["eval", str(run_dir), "--episodes", "1", "--no-video"]) == 0
    assert main(["train", "--resume", "--run-dir", str(run_dir), "env_steps=80"]) == 0
    assert folders(run) == ["LATEST", "step-000000080"] and run.checkpoint_env_step() == 80


# -- divergence --------------------------------------------------------------------------

DIVERGE = [*offline_data.TRAIN_SMALL, "env_steps=3000", "checkpoint_every=1000", "eval_every=1000"]


def test_a_nan_loss_stops_the_run_and_keeps_the_last_checkpoint(tmp_path, monkeypatch, capsys):
    from curlrl.agents.curl_sac import CurlSacAgent

    update = CurlSacAgent.update

    def poisoned(self, batch):
        metrics = update(self, batch)
        if self.updates == 60:  # in the second episode (updates 49..98; env steps 1000..2000)
            metrics["critic_loss"] = metrics["critic_loss"] * float("nan")
        return metrics
    monkeypatch.setattr(CurlSacAgent, "update", poisoned)
    run_dir = tmp_path / "run"
    line = cli_error(capsys, ["train", offline_data.TASK, "--run-dir", str(run_dir), *DIVERGE])
    assert line == ("curlrl: error: critic_loss is nan at update 60 (env step 1240); stopped without "
                    "overwriting the checkpoint of env step 1000"), line
    run = RunDir(run_dir)
    assert run.checkpoint_env_step() == 1000 and run.load_checkpoint()["agent"]["updates"] == 48
    monkeypatch.undo()
    assert main(["train", "--resume", "--run-dir", str(run_dir), "env_steps=2000"]) == 0
    assert run.checkpoint_env_step() == 2000


def test_a_nan_weight_is_never_checkpointed(tmp_path):
    from curlrl.jobs import config as config_mod
    from curlrl.jobs.train import Trainer

    cfg = config_mod.resolve(offline_data.TASK, overrides=offline_data.TRAIN_SMALL)
    with Trainer(cfg, tmp_path / "run", quiet=True) as trainer:
        trainer.run()
        before = trainer.rundir.load_checkpoint()["agent"]["modules"]["q"]
        with torch.no_grad():
            next(trainer.agent.q.parameters()).view(-1)[0] = float("inf")
        with pytest.raises(DivergenceError, match=r"agent parameter q\.\S+ is not finite at update 0 \(env step "
                                                  r"40\); stopped without overwriting the checkpoint of env step 40"):
            trainer._save_checkpoint()
    after = RunDir(tmp_path / "run").load_checkpoint()["agent"]["modules"]["q"]
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return offline_data.shared(tmp_path_factory)


def test_a_nan_pretraining_loss_stops_at_its_log_point(dataset, tmp_path, monkeypatch, capsys):
    from curlrl.jobs.pretrain import Pretrainer

    update = Pretrainer.update

    def poisoned(self):
        metrics = update(self)
        if self.step == 5:
            metrics["loss"] = metrics["loss"] * float("inf")
        return metrics
    monkeypatch.setattr(Pretrainer, "update", poisoned)
    run_dir = tmp_path / "pt"
    args = ["pretrain", str(dataset), "--run-dir", str(run_dir), *offline_data.SMALL, "steps=8", "batch_size=16",
            "log_every=3", "checkpoint_every=3"]
    line = cli_error(capsys, args)
    assert line == ("curlrl: error: loss is inf at update 5; stopped without overwriting the checkpoint of "
                    "update 3"), line
    assert RunDir(run_dir).load_checkpoint()["step"] == 3


# -- real kernel errors, no fakes ---------------------------------------------------------------
_LIMITED_SAVE = """
import resource, signal, sys, torch
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the kernel then fails the write with EFBIG
from curlrl.errors import CheckpointError
from curlrl.jobs.rundir import RunDir
run = RunDir(sys.argv[1])
run.save_checkpoint({"step": 1, "x": torch.zeros(10)})
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
try:
    run.save_checkpoint({"step": 2, "x": torch.zeros(1_000_000)})  # a 4 MB state file
except CheckpointError as exc:
    print(exc)
    sys.exit(2)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="RLIMIT_FSIZE is POSIX")
def test_a_state_file_over_the_file_size_limit_is_one_error_and_the_previous_checkpoint_stays(tmp_path):
    # torch.save's zip writer raises RuntimeError ("unexpected pos") around the kernel's EFBIG
    run = tmp_path / "run"
    res = subprocess.run([sys.executable, "-c", _LIMITED_SAVE, str(run)], capture_output=True, text=True,
                         timeout=HANG_TIMEOUT_S)
    assert res.returncode == 2, res.stderr
    line = res.stdout.strip()
    assert "\n" not in line and "step-000000002/latest.pt" in line and "File too large" in line, line
    assert "the checkpoint of update 1 is kept" in line
    assert (run / "checkpoints" / "LATEST").read_text().strip() == "step-000000001"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["LATEST", "step-000000001"]
    assert safe_load(RunDir(run).checkpoint_path)["step"] == 1


def _limit_file_size(limit):
    def preexec():
        import resource
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return preexec


def test_train_under_a_file_size_limit_ends_with_one_line_and_exit_2(tmp_path):
    # the default networks' state file is tens of MB; logs and the first video stay far below 4 MB
    run = tmp_path / "r"
    res = subprocess.run([sys.executable, "-m", "curlrl.cli", "train", "cartpole-swingup", "env_steps=1600",
                          "init_steps=64", "batch_size=16", "eval_every=800", "eval_episodes=1",
                          "checkpoint_every=800", "replay_capacity=5000", "save_replay=false", "threads=1",
                          "--run-dir", str(run)], capture_output=True, text=True, timeout=HANG_TIMEOUT_S,
                         preexec_fn=_limit_file_size(4 << 20))
    line = one_line_error(res, "cannot write checkpoint file", "File too large")
    assert line.startswith("curlrl: error: cannot write checkpoint file"), line
    assert not list((run / "checkpoints").glob(".tmp-*")) and not list((run / "checkpoints").glob("step-*"))
    assert (run / "eval.csv").is_file() and (run / "config.yaml").is_file()  # what was written is kept


def test_train_on_a_full_tmpfs_ends_with_one_line_and_exit_2(tmp_path):
    # the command on a real 12 MB tmpfs (needs root to mount one)
    mnt = tmp_path / "small"
    mnt.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mnt)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root): " + mounted.stderr.decode().strip()[:100])
    try:
        res = subprocess.run([sys.executable, "-m", "curlrl.cli", "train", "cartpole-swingup", "env_steps=1600",
                              "init_steps=64", "batch_size=16", "eval_every=800", "eval_episodes=1",
                              "checkpoint_every=800", "replay_capacity=5000", "threads=1",
                              "--run-dir", str(mnt / "r")], capture_output=True, text=True, timeout=HANG_TIMEOUT_S)
        line = one_line_error(res, "cannot write checkpoint file", "No space left")
        assert line.startswith("curlrl: error: cannot write checkpoint file"), line
        assert not list((mnt / "r" / "checkpoints").glob(".tmp-*"))
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)
