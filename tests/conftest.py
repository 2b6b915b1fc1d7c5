"""Shared test settings: small thread count, the ``slow`` marker, env availability."""
from __future__ import annotations

import os
import re

import pytest
import torch

torch.set_num_threads(int(os.environ.get("CURLRL_TEST_THREADS", "1")))

# Subprocess timeouts in the tests only guard against hangs: a busy CI machine can make a
# tiny training run take many minutes, and no test may depend on the machine's speed.
HANG_TIMEOUT_S = 1800

_PROGRESS = re.compile(r"\s*\d+%")  # a progress bar's line (training writes it to stderr too)


def assert_one_line(rc: int, err: str, *needles: str) -> str:
    """Assert a refusal kept the CLI's promise for a user's mistake: exit code 2, no traceback,
    and on ``err`` (stderr, or stdout and stderr together) exactly one line apart from progress
    bars, ``curlrl: error: ...`` (``curlrl COMMAND: error:`` from the argument parser), holding
    every one of ``needles``. Returns the line."""
    assert rc == 2, (rc, err)
    assert "Traceback" not in err, err
    lines = [ln for ln in err.strip().splitlines() if ln.strip() and not _PROGRESS.match(ln)]
    assert len(lines) == 1, err
    assert re.match(r"curlrl( [a-z]+)?: error: ", lines[0]), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def one_line_error(res, *needles: str) -> str:
    """:func:`assert_one_line` for a finished ``subprocess.run`` of the CLI (text mode)."""
    return assert_one_line(res.returncode, res.stderr, *needles)


def cli_error(capsys, argv: list[str], *needles: str) -> str:
    """:func:`one_line_error` for ``curlrl.cli.main(argv)`` run in this process."""
    from curlrl.cli import main

    try:
        rc = main(argv)
    except SystemExit as exc:  # the argument parser's own refusals
        rc = exc.code
    return assert_one_line(rc, capsys.readouterr().err, *needles)


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow (learning checks)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow") or os.environ.get("CURLRL_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow or CURLRL_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


# The offline tests' shared fixtures: made once per session (tests/offline_data.py).
@pytest.fixture(scope="session")
def dataset(tmp_path_factory):
    """A small collected cartpole dataset folder."""
    import offline_data

    return offline_data.shared(tmp_path_factory)


@pytest.fixture(scope="session")
def train_run(tmp_path_factory):
    """A tiny real ``curlrl train`` run directory with a checkpoint."""
    import offline_data

    return offline_data.train_run(tmp_path_factory)
