"""Shared test settings: small thread count, the ``slow`` marker, env availability."""
from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(int(os.environ.get("CURLRL_TEST_THREADS", "1")))

# Subprocess timeouts in the tests only guard against hangs: a busy CI machine can make a
# tiny training run take many minutes, and no test may depend on the machine's speed.
HANG_TIMEOUT_S = 1800


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
