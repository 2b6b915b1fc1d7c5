"""`curlrl report` on Atari runs: both protocols, HNS and IQM against hand computations."""
import csv

import numpy as np
import pytest
import yaml

from conftest import assert_one_line

from curlrl.cli import main
from curlrl.jobs.published_atari import ATARI_PUBLISHED, hns
from curlrl.jobs.report_atari import load_atari_runs, make_atari_report

COLUMNS = ["task", "seed", "env_step", "agent_step", "frames", "updates", "eval_episode", "return",
           "episode_steps", "wall_s"]


def fake_run(root, algo, game, seed, evals, final, budget=300):
    """A run directory as curlrl train atari-GAME writes it (config.yaml, eval.csv, final_eval.csv)."""
    d = root / algo / game / f"seed{seed}"
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(yaml.safe_dump({"task": f"atari-{game}", "seed": seed, "env_steps": budget,
                                                   "curl": algo == "curl", "label": "",
                                                   "beta_anneal_updates": 98_400}))
    for name, table in (("eval.csv", evals), ("final_eval.csv", final)):
        with open(d / name, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=COLUMNS)
            w.writeheader()
            for step, scores in table.items():
                for i, s in enumerate(scores):
                    w.writerow(dict(task=f"atari-{game}", seed=seed, env_step=step, agent_step=step,
                                    frames=4 * step, updates=0, eval_episode=i, episode_steps=10, wall_s=0,
                                    **{"return": s}))
    return d


def test_hns_is_rliables_normalisation():
    p = ATARI_PUBLISHED["pong"]
    assert (p.random, p.human) == (-20.7, 14.6)
    assert hns("atari-pong", -20.7) == 0 and hns("pong", 14.6) == pytest.approx(1.0)
    assert hns("pong", -16.5) == pytest.approx(0.119, abs=5e-4)  # CURL's paper HNS for Pong (Table 2 notes)


def test_final_and_best_protocols_and_the_iqm(tmp_path):
    # boxing: random 0.1, human 12.1 -> HNS = (s - 0.1) / 12
    finals = [0.1, 6.1, 12.1, 24.1]          # HNS 0, 0.5, 1, 2
    for seed, f in enumerate(finals):
        fake_run(tmp_path, "curl", "boxing", seed, {100: [0.0, 2.0], 200: [9.0, 11.0], 300: [4.0]}, {300: [f, f]})
    runs = load_atari_runs([tmp_path])
    assert {r.final_score() for r in runs} == set(finals)
    assert {r.best_score() for r in runs} == {10.0}  # the best 10-game mean (9+11)/2, not the last or a single game
    path = make_atari_report([tmp_path], tmp_path / "rep", reps=200)
    text = path.read_text()
    # IQM of 4 runs x 1 game: the middle half, HNS (0.5 + 1) / 2 = 0.75; identical runs' best: (10 - 0.1) / 12
    assert "| curl (final) | 0.750 [" in text
    assert f"| curl (best) | {(10 - 0.1) / 12:.3f} [" in text
    assert f"| atari-boxing | 10.6 ± {np.std(finals):.1f} (4) | 10.0 ± 0.0 (4) |" in text
    assert "1.2 ± 10 | 0.2 | 0.9 | 0.1 | 12.1 |" in text
    # one row per run: its evaluation curve, final and best; then the mean over seeds with its interval
    assert "| curl | atari-boxing | 2 | 100: 1.0 · 200: 10.0 · 300: 4.0 | 12.1 | 10.0 |" in text
    from curlrl.jobs.report import bootstrap_ci
    lo, hi = bootstrap_ci(np.array(finals))
    assert f"| curl | atari-boxing | mean of 4 [95% CI] | | 10.6 [{lo:.1f}, {hi:.1f}] | 10.0 [10.0, 10.0] |" in text
    assert (tmp_path / "rep" / "atari_curves.png").stat().st_size > 0
    # a 300-step run is named as such beside the benchmark's budget
    assert "| curl | atari-boxing | 0, 1, 2, 3 | env_steps=300 (benchmark 100000) |" in text


def test_an_unfinished_run_is_named_and_left_out(tmp_path):
    fake_run(tmp_path, "der", "pong", 0, {100: [-21.0]}, {}, budget=300)
    fake_run(tmp_path, "der", "pong", 1, {100: [-20.0], 300: [-19.0]}, {300: [-18.7]})
    text = make_atari_report([tmp_path], tmp_path / "rep", reps=100).read_text()
    assert "**Unfinished runs**" in text and "der atari-pong seed 0 (last eval at 100)" in text
    assert "| der | atari-pong | 0 | 100: -21.0 | – | -21.0 |" in text           # no final yet
    assert "| der | atari-pong | mean of 1 [95% CI] | | -18.7 [-18.7, -18.7] | -19.0 [-19.0, -19.0] |" in text
    assert "| der (final) | " + f"{hns('pong', -18.7):.3f}" in text


def test_mixed_kinds_are_refused_in_one_line(tmp_path, capsys):
    fake_run(tmp_path, "der", "pong", 0, {100: [-21.0]}, {100: [-21.0]}, budget=100)
    dmc = tmp_path / "dmc"
    dmc.mkdir()
    (dmc / "config.yaml").write_text(yaml.safe_dump({"task": "cartpole-swingup", "seed": 0}))
    (dmc / "eval.csv").write_text("task,seed,env_step,return\ncartpole-swingup,0,0,1.0\n")
    rc = main(["report", str(tmp_path), "--out", str(tmp_path / "rep")])
    assert_one_line(rc, capsys.readouterr().err, "Atari and DeepMind Control runs")
    assert not (tmp_path / "rep").exists()
