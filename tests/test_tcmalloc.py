"""`curlrl train` restarts itself under tcmalloc when it is installed (faster updates on CPU)."""
import os
import subprocess
import sys
from ctypes.util import find_library

import pytest

from curlrl import cli
from curlrl.jobs import host
from conftest import HANG_TIMEOUT_S


@pytest.fixture
def execs(monkeypatch):
    calls = []
    monkeypatch.setattr(host.os, "execve", lambda path, argv, env: calls.append((path, argv, env)))
    monkeypatch.setattr("ctypes.util.find_library",
                        lambda name: f"lib{name}.so.4" if name == "tcmalloc_minimal" else None)
    monkeypatch.setattr(host.sys, "orig_argv", ["python", "-m", "curlrl.cli", "train", "cartpole-swingup"])
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    monkeypatch.delenv("CURLRL_TCMALLOC", raising=False)
    return calls


def test_training_commands_reexec_with_tcmalloc_preloaded(execs, monkeypatch):
    monkeypatch.setenv("LD_PRELOAD", "libother.so")
    cli._use_tcmalloc("train")
    (path, argv, env), = execs
    assert path == sys.executable and argv == [sys.executable, "-m", "curlrl.cli", "train", "cartpole-swingup"]
    assert env["LD_PRELOAD"] == "libtcmalloc_minimal.so.4 libother.so"


@pytest.mark.parametrize("command,env", [("config", {}), ("report", {}), ("train", {"CURLRL_TCMALLOC": "0"}),
                                         ("train", {"LD_PRELOAD": "/usr/lib/libtcmalloc_minimal.so.4"})])
def test_no_reexec_for_other_commands_when_disabled_or_already_preloaded(execs, monkeypatch, command, env):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    cli._use_tcmalloc(command)
    assert execs == []


@pytest.mark.skipif(not sys.platform.startswith("linux") or find_library("tcmalloc_minimal") is None,
                    reason="tcmalloc is not installed (scripts/setup.sh installs it)")
def test_real_reexec_maps_tcmalloc_into_the_same_process():
    code = ("import os; from curlrl import cli; cli._use_tcmalloc('train'); "
            "maps = open('/proc/self/maps').read(); print(os.getpid(), 'tcmalloc' in maps)")
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "CURLRL_TCMALLOC")}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate(timeout=HANG_TIMEOUT_S)
    pid, mapped = out.split()
    assert mapped == "True" and int(pid) == proc.pid  # execve kept the PID that kill/resume rely on
