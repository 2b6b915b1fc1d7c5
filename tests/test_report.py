"""``curlrl report`` on synthetic run directories: statistics against hand computations,
the Markdown sections, plots, labels, CSV export/import. (The report on real bench runs is
checked in test_bench.py.)"""
from __future__ import annotations

import dataclasses
import csv

import numpy as np
import pytest
import yaml
from conftest import cli_error

from curlrl.jobs import config as config_mod
from curlrl.jobs import report
from curlrl.cli import main
from curlrl.jobs.published import PLANET_TASKS, PUBLISHED, published
from curlrl.jobs.rundir import EVAL_COLUMNS

# returns per eval episode: algorithm -> task -> seed -> {env_step: [episode returns]}
CURL = {
    "cartpole-swingup": {0: {0: [10, 20], 50_000: [400, 420], 100_000: [800, 820]},
                         1: {0: [30, 30], 50_000: [500, 500], 100_000: [700, 700]},
                         2: {0: [0, 10], 50_000: [300, 310], 100_000: [600, 640]},
                         3: {0: [5, 5], 50_000: [450, 450]}},            # stopped early: no 100k eval
    "reacher-easy": {0: {0: [50, 50], 50_000: [600, 600], 100_000: [900, 900]},
                     1: {0: [60, 40], 50_000: [700, 700], 100_000: [850, 850]},
                     2: {0: [70, 70], 50_000: [650, 650], 100_000: [950, 950]}},
}
ABLATION = {
    "cartpole-swingup": {s: {0: [10, 10], 50_000: [200, 200], 100_000: [300 + 20 * s] * 2} for s in range(3)},
    "reacher-easy": {s: {0: [20, 20], 50_000: [80, 80], 100_000: [100 + 50 * s] * 2} for s in range(3)},
}


def _write_run(run_dir, task, seed, evals, overrides):
    run_dir.mkdir(parents=True)
    cfg = config_mod.resolve(task, None, [f"seed={seed}", "device=cuda", *overrides])
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config_mod.to_dict(cfg), sort_keys=False))
    with open(run_dir / "eval.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=EVAL_COLUMNS)
        w.writeheader()
        for step, returns in evals.items():
            for ep, ret in enumerate(returns):
                w.writerow(dict(task=task, seed=seed, env_step=step, agent_step=step // 8, updates=0,
                                eval_episode=ep, wall_s=1.0, **{"return": ret}))


@pytest.fixture()
def runs(tmp_path):
    for name, data, over in (("curl", CURL, []), ("ablation", ABLATION, ["curl=false", "batch_size=128"])):
        for task, seeds in data.items():
            for seed, evals in seeds.items():
                _write_run(tmp_path / name / "runs" / task / f"seed{seed}", task, seed, evals, over)
    return tmp_path


def test_iqm_and_task_stats_by_hand():
    from rliable import metrics

    assert report.iqm(np.arange(8)) == pytest.approx(3.5)          # mean of 2, 3, 4, 5
    assert report.iqm(np.arange(8)) == pytest.approx(metrics.aggregate_iqm(np.arange(8.0)))
    assert report.iqm(np.array([[0.62, 0.9], [0.7, 0.85], [0.81, 0.95]])) == pytest.approx(0.815)
    st = report.task_stats([1, 2, 3, 4])
    assert (st["n"], st["mean"], st["std"], st["iqm"]) == (4, 2.5, pytest.approx(np.sqrt(1.25)), 2.5)


def test_bootstrap_ci_contains_point_estimate():
    rng = np.random.default_rng(0)
    scores = {"a": rng.uniform(0, 1, (10, 4)), "b": rng.uniform(0.2, 0.9, (5, 4))}
    points, cis = report.interval_estimates(scores, report.aggregate_metrics, reps=300, seed=0)
    for algo, mat in scores.items():
        assert points[algo][2] == pytest.approx(mat.mean())
        assert points[algo][3] == pytest.approx(np.mean(np.maximum(1 - mat, 0)))
        assert np.all(cis[algo][0] <= points[algo] + 1e-12) and np.all(points[algo] <= cis[algo][1] + 1e-12)
        assert np.all(cis[algo][1] - cis[algo][0] > 0)


def test_bootstrap_ci_of_the_mean_by_hand():
    # two runs: a resample of 2 has mean 0 (p 1/4), 0.5 (p 1/2) or 1 (p 1/4), so the 2.5th and
    # 97.5th percentiles of the bootstrap means are 0 and 1
    assert report.bootstrap_ci(np.array([0.0, 1.0]), reps=4000) == (0.0, 1.0)
    # identical runs: no spread; one run: that value twice
    assert report.bootstrap_ci(np.array([3.0, 3.0, 3.0])) == (3.0, 3.0)
    assert report.bootstrap_ci(np.array([7.0])) == (7.0, 7.0)
    # many runs: close to the normal interval of the mean, mean +- 1.96 * sd / sqrt(n)
    x = np.random.default_rng(1).normal(10.0, 2.0, 400)
    half = 1.96 * x.std() / np.sqrt(len(x))
    lo, hi = report.bootstrap_ci(x, reps=4000)
    assert lo == pytest.approx(x.mean() - half, abs=0.05) and hi == pytest.approx(x.mean() + half, abs=0.05)


def test_score_is_mean_at_exact_step_and_matrix_notes():
    r = report.RunRecord("curl", "cartpole-swingup", 0, "x", evals={100: [1.0, 3.0], 200: [5.0]})
    assert r.score(100) == 2.0 and r.score(150) is None and r.last_step == 200
    runs = [report.RunRecord("curl", "a", s, "x", evals={10: [100.0 * (s + 1)]}) for s in range(3)] + \
        [report.RunRecord("curl", "b", s, "x", evals={10: [500.0]}) for s in range(2)]
    mat, notes = report.score_matrix(runs, ["a", "b"], 10)
    assert mat.shape == (2, 2) and mat[:, 0].tolist() == [0.1, 0.2] and "unequal runs" in notes[0]
    mat, notes = report.score_matrix(runs, ["a", "b"], 20)
    assert mat is None and "no run" in notes[0]


def test_non_paper_settings():
    paper = config_mod.to_dict(config_mod.resolve("cartpole-swingup", None, ["device=cpu", "threads=1",
                                                                             "env_steps=800", "seed=4"]))
    assert report.non_paper_settings(paper) == []
    small = config_mod.to_dict(config_mod.resolve("cheetah-run", None, ["batch_size=128", "actor_lr=0.001"]))
    assert report.non_paper_settings(small) == ["actor_lr=0.001 (paper 0.0002)", "batch_size=128 (paper 512)"]
    per_loss = config_mod.to_dict(config_mod.resolve("cartpole-swingup", None, ["encoder_adam=per_loss"]))
    assert report.non_paper_settings(per_loss) == ["encoder_adam=per_loss (paper reference)"]
    # every variant is flagged, library choices included
    variant = config_mod.to_dict(config_mod.resolve("cartpole-swingup", None, [
        "update_mode=fused", "encoder_adam=shared", "amp=bf16", "init_steps=1000", "curl_lr=0.01"]))
    assert sorted(report.non_paper_settings(variant)) == [
        "amp=bf16 (paper off)", "curl_lr=0.01 (paper 0.001)", "encoder_adam=shared (paper reference)",
        "init_steps=1000 (paper 8000)", "update_mode=fused (paper exact)"]
    # a run written before a key existed cannot claim the paper's value for it
    old = {k: v for k, v in paper.items() if k != "encoder_adam"}
    assert report.non_paper_settings(old) == ["encoder_adam not recorded (paper reference)"]
    # ... except an opt-in source that curlrl did not have then (its paper value is empty)
    older = {k: v for k, v in paper.items() if k not in ("encoder_module", "encoder_init")}
    assert report.non_paper_settings(older) == []
    # another objective is a departure, and so is each of its keys; a run from before objectives
    # existed trained CURL's and is not flagged for their absence
    byol = config_mod.to_dict(config_mod.resolve("cartpole-swingup", None, ["objective=moco", "temperature=0.5"]))
    assert sorted(report.non_paper_settings(byol)) == ["objective=moco (paper curl)", "temperature=0.5 (paper none)"]
    assert report.algorithm_name(byol) == "sac+moco" and report.algorithm_name(paper) == "curl"
    views = config_mod.to_dict(config_mod.resolve("cartpole-swingup", None, ["augment=shift+jitter"]))
    assert report.non_paper_settings(views) == ["augment=shift+jitter (paper crop)"]
    from curlrl.options import ObjectiveConfig
    pre = {k: v for k, v in paper.items()
           if k not in {f.name for f in dataclasses.fields(ObjectiveConfig)} | {"augment"}}
    assert report.non_paper_settings(pre) == []
    init = config_mod.to_dict(config_mod.resolve("cartpole-swingup", None, ["encoder_init=e.safetensors"]))
    assert report.non_paper_settings(init) == ["encoder_init=e.safetensors (paper none)"]
    # where the replay keeps its frames changes no math: neither a setting nor its absence is flagged
    storage = config_mod.to_dict(config_mod.resolve("cartpole-swingup", None, ["replay_storage=device",
                                                                               "replay_compress=false"]))
    assert report.non_paper_settings(storage) == []
    assert report.non_paper_settings({k: v for k, v in paper.items() if k != "replay_storage"}) == []


def test_published_table_is_complete():
    for algo in PUBLISHED:
        for task in PLANET_TASKS:
            assert published(algo, task, 100_000) is not None
    assert published("CURL", "cartpole-swingup", 100_000) == (582, 146)
    assert published("DrQ", "walker-walk", 500_000) == (921, 45)
    assert published("pixel SAC", "walker-walk", 500_000) is None


def test_report_two_algorithms(runs, tmp_path):
    out = tmp_path / "rep"
    assert main(["report", str(runs / "curl"), str(runs / "ablation"), "--compare", "published", "--reps", "300",
                 "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    # per-task mean ± std (ddof=0) and IQM at exactly 100k; the stopped run is named, not interpolated
    lo, hi = report.bootstrap_ci(np.array([810.0, 700.0, 620.0]))
    assert (f"| cartpole-swingup | curl | 3/4 | 0: 810.0 · 1: 700.0 · 2: 620.0 | 710.0 ± 77.9 | "
            f"710.0 [{lo:.1f}, {hi:.1f}] | 710.0 | seed 3 (last eval 50000) |") in md
    assert "| reacher-easy | curl | 3/3 | 0: 900.0 · 1: 850.0 · 2: 950.0 | 900.0 ± 40.8 | 900.0 [" in md
    assert "| cartpole-swingup | pixel_sac_crop | 3/3 | 0: 300.0 · 1: 320.0 · 2: 340.0 | 320.0 ± 16.3 | " in md
    assert "No run has an evaluation at env step 500000" in md
    # aggregates over runs x tasks of normalised scores: IQM by hand = 0.815
    row = next(ln for ln in md.splitlines() if ln.startswith("| curl | 2 | 3 |") and "0.815 [" in ln)
    assert row.count("[") == 4
    # every curl run beats every ablation run on both tasks
    assert "| 100000 | curl | pixel_sac_crop | 2 | 1.000 [1.000, 1.000] |" in md
    # honesty: seeds, batch size, device per run, non-paper settings flagged
    assert "| curl | cartpole-swingup | 4 (0, 1, 2, 3) | 512 | cuda |" in md
    assert "⚠ batch_size=128 (paper 512)" in md
    assert "6 of 13 runs used settings that differ from the paper's" in md
    # published numbers side by side
    assert "| cartpole-swingup | 710 ± 78 (3/4) | 320 ± 16 (3/3) | 582 ± 146 |" in md
    for png in ("aggregate_100000.png", "performance_profile_100000.png", "sample_efficiency.png",
                "per_task_curves.png"):
        assert (out / png).is_file()


def test_labels_export_and_reimport(runs, tmp_path):
    out = tmp_path / "rep"
    assert main(["report", str(runs / "curl"), str(runs / "ablation"), "--label", "CURL-ours", "--label", "RAD",
                 "--steps", "50000,100000", "--reps", "200", "--out", str(out),
                 "--export-csv", str(tmp_path / "res.csv")]) == 0
    md = (out / "report.md").read_text()
    assert "| 100000 | CURL-ours | RAD | 2 |" in md and "| 50000 | CURL-ours | RAD | 2 |" in md
    rows = list(csv.DictReader(open(tmp_path / "res.csv")))
    assert len(rows) == 3 * 6 + 2 + 3 * 6  # one row per (run, eval step)
    first = next(r for r in rows if r["algo"] == "CURL-ours" and r["task"] == "cartpole-swingup"
                 and r["seed"] == "0" and r["env_step"] == "100000")
    assert (first["return"], first["episodes"], first["batch_size"], first["device"]) == ("810", "2", "512", "cuda")
    assert main(["report", str(tmp_path / "res.csv"), "--steps", "50000,100000", "--reps", "200",
                 "--out", str(tmp_path / "again")]) == 0
    again = (tmp_path / "again" / "report.md").read_text()
    for line in md.splitlines():
        if line.startswith(("| cartpole-swingup |", "| reacher-easy |", "| 100000 |", "| CURL-ours | 2 |")):
            assert line in again


def test_report_user_mistakes(runs, tmp_path, capsys):
    cli_error(capsys, ["report", str(tmp_path / "nope"), "--out", str(tmp_path / "r")], "does not exist")
    (tmp_path / "empty").mkdir()
    cli_error(capsys, ["report", str(tmp_path / "empty"), "--out", str(tmp_path / "r")], "no runs")
    cli_error(capsys, ["report", str(runs / "curl"), str(runs / "ablation"), "--label", "a", "--label", "b",
                       "--label", "c", "--out", str(tmp_path / "r")])
    cli_error(capsys, ["report", str(runs / "curl"), "--steps", "soon", "--out", str(tmp_path / "r")])
    bad = tmp_path / "bad.csv"
    bad.write_text("x,y\n1,2\n")
    cli_error(capsys, ["report", str(bad), "--out", str(tmp_path / "r")], "not a curlrl report export")


def test_bootstrap_is_reproducible_and_leaves_global_rng_alone():
    x = {"a": np.random.default_rng(1).uniform(size=(4, 3))}
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    one = report.interval_estimates(x, report.aggregate_metrics, 200, seed=7)[1]["a"]
    two = report.interval_estimates(x, report.aggregate_metrics, 200, seed=7)[1]["a"]
    assert np.array_equal(one, two)
    assert np.array_equal(np.random.get_state()[1], before)


def test_stale_attempts_are_ignored(runs, tmp_path):
    stale = runs / "curl" / "runs" / "cartpole-swingup" / "seed0.stale-20260101-000000"
    _write_run(stale, "cartpole-swingup", 0, {100_000: [0, 0]}, [])
    recs, warn = report.load_runs([runs / "curl"])
    assert len(recs) == 7 and not any("duplicate" in w for w in warn)
