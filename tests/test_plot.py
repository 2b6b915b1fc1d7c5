"""curlrl plot: a run's evaluation curve read from eval.csv, drawn with its references."""
import csv

import numpy as np
import pytest
import yaml
from conftest import cli_error

from curlrl.cli import main
from curlrl.jobs.plot import curve_text, plot_runs, random_text, read_curve
from curlrl.jobs.published import RANDOM_POLICY

RETURNS = {0: [1.0, 2.0, 6.0], 2000: [10.0, 30.0, 50.0], 4000: [200.0, 220.0, 240.0]}


def fake_run(path, task="cartpole-swingup", seed=3, returns=RETURNS):
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump({"task": task, "seed": seed}))
    with open(path / "eval.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["task", "seed", "env_step", "agent_step", "updates", "eval_episode", "return", "wall_s"])
        for step, rets in returns.items():
            for i, r in enumerate(rets):
                w.writerow([task, seed, step, step // 8, 0, i, r, 1.0])
    return path


def test_the_curve_is_the_mean_and_std_of_each_evaluation(tmp_path):
    c = read_curve(fake_run(tmp_path / "r"))
    assert c.task == "cartpole-swingup" and c.label == "cartpole-swingup seed 3" and c.episodes == 3
    assert c.steps.tolist() == [0, 2000, 4000]
    assert c.mean.tolist() == [3.0, 30.0, 220.0]
    assert np.allclose(c.std, [np.sqrt(14 / 3), np.sqrt(800 / 3), np.sqrt(800 / 3)])
    assert curve_text(c) == "0: 3.0 | 2000: 30.0 | 4000: 220.0"
    assert curve_text(c, last=2) == "... | 2000: 30.0 | 4000: 220.0"


def test_the_random_reference_is_the_measured_table():
    mean, std, episodes, repeat = RANDOM_POLICY["cartpole-swingup"]
    assert repeat == 8 and episodes >= 10 and 0 < mean < 300
    assert random_text("cartpole-swingup").startswith(f"{mean:.0f} ± {std:.0f} ({episodes} episodes")
    assert random_text("no-such-task") is None


def test_plot_writes_the_png_beside_the_run_and_names_it(tmp_path, capsys):
    run = fake_run(tmp_path / "r")
    assert main(["plot", str(run)]) == 0
    png = run / "eval_curve.png"
    assert f"curlrl: wrote {png}" in capsys.readouterr().out
    import imageio.v3 as iio
    image = iio.imread(png)
    assert image.shape[:2] == (420, 640) and image.std() > 0  # a drawn figure, not a blank canvas
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml", "eval.csv", "eval_curve.png"]  # no temp file


def test_several_runs_and_tasks_in_one_figure(tmp_path):
    a = fake_run(tmp_path / "a")
    b = fake_run(tmp_path / "b", task="walker-walk", returns={0: [1.0], 1000: [40.0]})
    out = plot_runs([a, b], tmp_path / "both.png", labels=["curl", "walker"])
    import imageio.v3 as iio
    assert iio.imread(out).shape[:2] == (420, 1280)  # one panel per task


def test_plot_mistakes_are_one_line(tmp_path, capsys):
    cli_error(capsys, ["plot", str(tmp_path / "nope")], "not a curlrl run directory")
    empty = fake_run(tmp_path / "empty", returns={})
    cli_error(capsys, ["plot", str(empty)], "holds no evaluation yet")
    (empty / "eval.csv").unlink()
    cli_error(capsys, ["plot", str(empty)], "has no eval.csv yet")
    run = fake_run(tmp_path / "r")
    cli_error(capsys, ["plot", str(run), str(run), "--label", "one"], "1 labels for 2 run directories")
    pre = tmp_path / "pre"
    pre.mkdir()
    (pre / "config.yaml").write_text(yaml.safe_dump({"data_dir": "x", "steps": 10}))
    cli_error(capsys, ["plot", str(pre)], "pretraining run")


@pytest.mark.parametrize("bad", ["env_step,return\nsoon,1\n", "x,y\n1,2\n"])
def test_a_damaged_eval_csv_is_one_line(tmp_path, capsys, bad):
    run = fake_run(tmp_path / "r")
    (run / "eval.csv").write_text(bad)
    cli_error(capsys, ["plot", str(run)], "eval.csv", "not a curlrl evaluation log")
