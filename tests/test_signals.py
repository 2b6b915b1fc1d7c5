"""Graceful stops: SIGTERM/SIGINT/SIGUSR1 checkpoint the current step (mid-episode too), exit 128 + signum,
and the resumed run is the uninterrupted one."""
import csv
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import HANG_TIMEOUT_S

import offline_data
from curlrl.jobs.rundir import RunDir
from curlrl.cli import main
from curlrl.jobs import pretrain as pretrain_mod
from curlrl.jobs.signals import StopFlag, stop_on_signals
from curlrl.replay import BaseReplayBuffer
from test_train_cli import TINY

ARGS = ["env_steps=2000", *TINY, "eval_every=1000"]  # episodes end at 1000 and 2000; updates from 800


def rows(path, cols):
    with open(path, newline="") as fh:
        return [[r[c] for c in cols] for r in csv.DictReader(fh)]


def ckpt(run):
    return torch.load(RunDir(run).checkpoint_path, weights_only=True)


def signal_at_transition(monkeypatch, n, signum):
    """Send ``signum`` to this process while the training loop adds its n-th transition."""
    add = BaseReplayBuffer.add

    def hooked(self, *args, **kwargs):
        add(self, *args, **kwargs)
        if self.transitions_written == n:
            os.kill(os.getpid(), signum)

    monkeypatch.setattr(BaseReplayBuffer, "add", hooked)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("signals") / "full"
    assert main(["train", "cartpole-swingup", "--run-dir", str(run), *ARGS]) == 0
    return run


@pytest.mark.parametrize("signum,step", [
    (signal.SIGTERM, 1200),  # mid-episode, with updates: the episode goes on after the resume
    (signal.SIGUSR1, 504),   # in the seed phase, before any update and before the first checkpoint
])
def test_a_signal_checkpoints_the_current_step_and_the_resume_is_the_uninterrupted_run(
        full_run, tmp_path, monkeypatch, capsys, signum, step):
    run = tmp_path / "stopped"
    signal_at_transition(monkeypatch, step // 8, signum)
    before = signal.getsignal(signum)
    assert main(["train", "cartpole-swingup", "--run-dir", str(run), *ARGS]) == 128 + signum
    assert signal.getsignal(signum) is before  # the command's handlers are gone again
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == (f"curlrl: stopped by {signal.Signals(signum).name} at env step {step} (checkpoint written); "
                    f"resume: curlrl train --resume --run-dir {run}")
    state = ckpt(run)
    assert state["counters"]["env_step"] == step and state["episode"]["start"] == (step // 1000) * 1000
    assert state["agent"]["updates"] == max(0, step - 800) // 8
    monkeypatch.undo()

    assert main(["train", "--resume", "--run-dir", str(run)]) == 0
    for name, cols in (("eval.csv", ["env_step", "updates", "return"]),
                       ("train.csv", ["env_step", "updates", "episode", "return", "critic_loss", "curl_loss"])):
        assert rows(run / name, cols) == rows(full_run / name, cols), name  # on the CPU, the very same numbers
    a, b = ckpt(run)["agent"]["modules"], ckpt(full_run)["agent"]["modules"]
    assert a.keys() == b.keys()
    for module in a:  # every network, targets included
        assert all(torch.equal(a[module][k], b[module][k]) for k in a[module]), module


SECOND_SIGNAL = """
import os, signal, sys
from curlrl.cli import main
from curlrl.replay import BaseReplayBuffer
add, save, sent = BaseReplayBuffer.add, BaseReplayBuffer.save, []
def hooked_add(self, *args, **kwargs):
    add(self, *args, **kwargs)
    if self.transitions_written == 150:
        sent.append(1)
        os.kill(os.getpid(), signal.SIGTERM)
def hooked_save(self, path):  # the stop's checkpoint begins with the replay: a second signal now
    if sent:
        os.kill(os.getpid(), signal.SIGTERM)
    save(self, path)
BaseReplayBuffer.add, BaseReplayBuffer.save = hooked_add, hooked_save
sys.exit(main(sys.argv[1:]))
"""


def test_a_second_signal_exits_at_once_and_keeps_the_previous_checkpoint(tmp_path):
    run = tmp_path / "twice"
    res = subprocess.run([sys.executable, "-c", SECOND_SIGNAL, "train", "cartpole-swingup", "--run-dir", str(run),
                          *ARGS], capture_output=True, text=True, timeout=HANG_TIMEOUT_S)
    assert res.returncode == 143, res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("curlrl: SIGTERM while stopping after SIGTERM: exited at once") and str(run) in last
    state = ckpt(run)  # the episode-end checkpoint at 1000, with the replay written for it
    assert state["counters"]["env_step"] == 1000 and "episode" not in state
    with np.load(RunDir(run).replay_path) as data:
        assert json.loads(str(data["meta"]))["transitions_written"] == state["counters"]["transitions"]


def test_stop_on_signals_sets_the_flag_and_restores_the_handlers():
    before = signal.getsignal(signal.SIGUSR1)
    with stop_on_signals("curlrl train --resume --run-dir R") as flag:
        assert not flag
        os.kill(os.getpid(), signal.SIGUSR1)
        assert flag and flag.signum == signal.SIGUSR1 and flag.exit_code == 138 and flag.name == "SIGUSR1"
    assert signal.getsignal(signal.SIGUSR1) is before
    flag = StopFlag()
    flag.request()  # a library user's own stop, no signal
    assert flag.name == "a stop request" and flag.exit_code == 1


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return offline_data.shared(tmp_path_factory)


def test_pretrain_stops_at_the_current_update_and_resumes_exactly(dataset, tmp_path, monkeypatch, capsys):
    args = [str(dataset), *offline_data.SMALL, "steps=6", "batch_size=16", "log_every=2", "checkpoint_every=100"]
    assert main(["pretrain", *args, "--run-dir", str(tmp_path / "straight")]) == 0
    update = pretrain_mod.Pretrainer.update

    def hooked(self):
        out = update(self)
        if self.step == 3:  # between two pretrain.csv rows: the next row still averages updates 3 and 4
            os.kill(os.getpid(), signal.SIGINT)
        return out

    monkeypatch.setattr(pretrain_mod.Pretrainer, "update", hooked)
    run = tmp_path / "stopped"
    assert main(["pretrain", *args, "--run-dir", str(run)]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"curlrl: stopped by SIGINT at update 3 (checkpoint written); "
        f"resume: curlrl pretrain --resume --run-dir {run}")
    assert ckpt(run)["step"] == 3
    monkeypatch.undo()
    assert main(["pretrain", "--resume", "--run-dir", str(run)]) == 0
    cols = ["step", "loss", "accuracy"]
    assert rows(run / "pretrain.csv", cols) == rows(tmp_path / "straight" / "pretrain.csv", cols)
    a, b = ckpt(run), ckpt(tmp_path / "straight")
    for key in ("encoder", "key_encoder", "curl_head"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
