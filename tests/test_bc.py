"""Behaviour cloning from a frozen encoder, and bring-your-own encoders through probe and BC."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import cli_error

from curlrl.encoder import ForeignEncoder
from curlrl.errors import ConfigError, DatasetError


def test_a_foreign_encoder_sees_the_stated_protocol():
    seen = {}

    class Spy(torch.nn.Module):
        def forward(self, x):
            seen["x"] = x
            return x.mean((2, 3))

    enc = ForeignEncoder(Spy(), (6, 8, 8), 6, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    obs = torch.full((2, 6, 8, 8), 255, dtype=torch.uint8)
    out = enc(obs)
    # uint8 255 -> 1.0 -> (1 - 0.5) / 0.25 = 2 for every channel of both frames
    assert torch.allclose(seen["x"], torch.full((2, 6, 8, 8), 2.0)) and out.shape == (2, 6)
    with pytest.raises(ValueError, match=r"expected \(batch, 5\)"):
        ForeignEncoder(Spy(), (6, 8, 8), 5)(obs)


def test_byo_encoder_specs_load_and_bad_ones_get_one_line():
    from curlrl.jobs.export import load_encoder

    loaded = load_encoder("byo_encoder:make")
    assert loaded.encoder.feature_dim == 18 and "bring your own" in loaded.source
    assert load_encoder("byo_encoder:make_plain").encoder.obs_shape == (9, 56, 56)
    with pytest.raises(ConfigError, match="must return a curlrl.encoder.ForeignEncoder"):
        load_encoder("byo_encoder:make_wrong")
    with pytest.raises(ConfigError, match="cannot import 'nope'"):
        load_encoder("byo_encoder:nope")


def test_probe_runs_a_byo_encoder(dataset, tmp_path):
    from curlrl.jobs.probe import run_probe

    (res,) = run_probe("byo_encoder:make", dataset, out=tmp_path / "p", holdout=0.34, quiet=True)
    # mean colours of cartpole frames carry some of the state (the cart's position moves pixels)
    assert res["encoder"].startswith("byo_encoder:make") and res["linear_r2"] is not None
    assert res["inverse_dynamics_r2"] is not None and (tmp_path / "p" / "probe.md").is_file()


def test_bc_fits_rolls_out_and_repeats_per_seed(dataset, tmp_path):
    from curlrl.jobs.bc import behaviour_clone

    kw = dict(demos=2, episodes=1, seeds=2, steps=30, batch_size=32, hidden_dim=16, quiet=True)
    a = behaviour_clone("byo_encoder:make", dataset, out=tmp_path / "bc", **kw)
    b = behaviour_clone("byo_encoder:make", dataset, **kw)
    assert a["per_seed_return"] == b["per_seed_return"] and len(a["per_seed_return"]) == 2
    assert a["task"] == "cartpole-swingup" and a["demo_transitions"] == 2 * (1000 // 20)
    assert a["ci95"][0] <= a["mean_return"] <= a["ci95"][1]
    assert all(np.isfinite(a["per_seed_return"])) and (tmp_path / "bc" / "bc.json").is_file()


def test_bc_refuses_what_it_cannot_do(dataset, tmp_path, capsys):
    from curlrl.jobs.bc import behaviour_clone

    with pytest.raises(DatasetError, match="fewer than demos=99"):
        behaviour_clone("byo_encoder:make", dataset, demos=99, quiet=True)
    videos = tmp_path / "v"
    videos.mkdir()
    import imageio.v2 as imageio

    imageio.mimwrite(videos / "a.mp4", [np.zeros((64, 64, 3), np.uint8)] * 4, fps=5, macro_block_size=1)
    imageio.mimwrite(videos / "b.mp4", [np.zeros((64, 64, 3), np.uint8)] * 4, fps=5, macro_block_size=1)
    cli_error(capsys, ["bc", "byo_encoder:make", str(videos), "--task", "cartpole-swingup"], "needs actions")
    cli_error(capsys, ["bc", "byo_encoder:make", str(dataset), "--demos", "0"], "--demos must be >= 1")
