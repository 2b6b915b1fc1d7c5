"""`curlrl probe`: closed-form probes, reports, and pretrained beats random on held-out episodes."""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import cli_error

from curlrl.cli import main
from curlrl.jobs.probe import knn_r2, ridge_r2, run_probe

import offline_data


@pytest.fixture(scope="session")
def pretrained(tmp_path_factory, dataset):
    return offline_data.pretrained(tmp_path_factory, dataset)


def test_ridge_recovers_a_linear_map_and_flags_constant_targets():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 10))
    y = np.column_stack([x @ rng.normal(size=10) + 0.01 * rng.normal(size=400), np.ones(400)])
    r2 = ridge_r2(x[:300], y[:300], x[300:], y[300:], alpha=1e-3)
    assert r2[0] > 0.99 and np.isnan(r2[1])
    noise = rng.normal(size=(400, 1))
    assert ridge_r2(x[:300], noise[:300], x[300:], noise[300:], alpha=1.0)[0] < 0.05


def test_knn_regression_on_a_smooth_function():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(600, 2))
    y = np.sin(3 * x[:, :1])
    assert knn_r2(x[:500], y[:500], x[500:], y[500:], k=5)[0] > 0.95


def test_pretrained_encoder_beats_a_random_one_on_held_out_episodes(dataset, pretrained, tmp_path):
    rows = run_probe(str(pretrained), dataset, out=tmp_path, holdout=offline_data.HOLDOUT,
                     with_random=True, quiet=True)
    ours, rand = rows
    assert ours["heldout_episodes"] == rand["heldout_episodes"] and len(ours["heldout_episodes"]) == 2
    # Measured: ~0.14 vs ~0.01 (seeds 0-2, 250 updates); velocities stay near 0 for both.
    assert ours["linear_r2"] > rand["linear_r2"] + 0.07, (ours["linear_r2"], rand["linear_r2"])
    assert ours["knn_r2"] > rand["knn_r2"]
    assert ours["contrastive_accuracy"] is not None and rand["contrastive_accuracy"] is None


def test_probe_reports(dataset, pretrained, tmp_path, capsys):
    out = tmp_path / "p"
    assert main(["probe", str(pretrained), str(dataset), "--out", str(out), "--holdout",
                 str(offline_data.HOLDOUT), "--with-random", "--threads", "1"]) == 0
    report = json.loads((out / "probe.json").read_text())
    assert len(report["results"]) == 2
    r = report["results"][0]
    assert len(r["linear_r2_per_dim"]) == 5 and r["state_names"][0] == "position[0]"
    assert r["contrastive_key"] == "momentum key encoder"
    md = (out / "probe.md").read_text()
    assert "| encoder | linear R² |" in md and "n/a" in md and "position[0]" in md
    assert not list(out.glob(".*"))
    assert "linear R²" in capsys.readouterr().out


def test_probe_random_train_run_and_export(dataset, tmp_path_factory, tmp_path):
    run = offline_data.train_run(tmp_path_factory)
    export = tmp_path / "enc.safetensors"
    assert main(["export", str(run), "--out", str(export)]) == 0
    for spec, has_head in ((str(run), True), (str(export), True), ("random", False)):
        out = tmp_path / f"out-{has_head}-{len(spec)}"
        args = ["probe", spec, str(dataset), "--out", str(out), "--threads", "1"]
        if spec == "random":
            args += ["--crop-size", str(offline_data.CROP)]
        assert main(args) == 0
        r = json.loads((out / "probe.json").read_text())["results"][0]
        assert (r["contrastive_accuracy"] is not None) == has_head
        assert np.isfinite(r["linear_r2"]) and r["crop_size"] == offline_data.CROP


def test_encoder_larger_than_the_frames_is_one_line(dataset, tmp_path, capsys):
    cli_error(capsys, ["probe", "random", str(dataset), "--out", str(tmp_path / "o")],  # 84 > 64
              "larger than the dataset's frames")
    assert not (tmp_path / "o" / "probe.json").exists()
