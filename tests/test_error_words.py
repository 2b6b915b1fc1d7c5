"""The library words its errors with its own argument names; the CLI words them as flags.

A Python caller of ``collect(episodes=0)`` never passed ``--episodes``; a user of
``curlrl collect --episodes 0`` should read the flag they typed (one line, exit 2).
"""
from __future__ import annotations

import pytest
from conftest import cli_error

from curlrl.jobs import bench, collect, evaluate, export, probe, report
from curlrl.errors import CurlrlError

SUITE = bench.Suite("s", ["cartpole-swingup"], 1000, [0])


def _run_dir(tmp_path):
    (tmp_path / "run").mkdir(exist_ok=True)
    (tmp_path / "run" / "config.yaml").write_text("task: cartpole-swingup\n")
    return tmp_path / "run"


def _file(tmp_path):
    (tmp_path / "f").write_text("not a folder\n")
    return tmp_path / "f"


def _dataset(tmp_path):
    (tmp_path / "old").mkdir(exist_ok=True)
    (tmp_path / "old" / "manifest.json").write_text("{}\n")
    return tmp_path / "old"


LIBRARY_CASES = {
    "eval episodes": (lambda t: evaluate.evaluate_run(_run_dir(t), episodes=0), "episodes must be >= 1"),
    "collect episodes": (lambda t: collect.collect("cartpole-swingup", 0, t / "d"), "episodes must be >= 1"),
    "collect action_repeat": (lambda t: collect.collect("cartpole-swingup", 1, t / "d", action_repeat=0),
                              "image_size and action_repeat must be >= 1"),
    "collect image_size": (lambda t: collect.collect("cartpole-swingup", 1, t / "d", image_size=0),
                           "image_size and action_repeat must be >= 1, got 0"),
    "collect out is a file": (lambda t: collect.collect("cartpole-swingup", 1, _file(t)), "is a file"),
    "collect out holds a dataset": (lambda t: collect.collect("cartpole-swingup", 1, _dataset(t)),
                                    "already holds a dataset"),
    "collect policy": (lambda t: collect.collect("cartpole-swingup", 1, t / "d", policy=str(t)),
                       "is neither 'random' nor a curlrl train run directory"),
    "collect policy task": (lambda t: collect.collect("walker-walk", 1, t / "d", policy=str(_run_dir(t))),
                            "was trained on cartpole-swingup, not walker-walk"),
    "collect policy action_repeat": (lambda t: collect.collect("cartpole-swingup", 1, t / "d",
                                                               policy=str(_run_dir(t)), action_repeat=3),
                                     "action_repeat 3 differs from the policy's"),
    "export path": (lambda t: export.export_encoder(t, t / "e.pt"), "export path"),
    "probe knn_k": (lambda t: probe.run_probe("random", t, knn_k=0), "knn_k must be >= 1"),
    "bench workers": (lambda t: bench.run_bench(SUITE, t / "b", workers=0), "workers must be > 0"),
    "bench launcher": (lambda t: bench.run_bench(SUITE, t / "b", launcher="pbs"), "launcher must be one of"),
    "bench seed override": (lambda t: bench.plan(SUITE, t / "b", ["seed=3"]), "with the seeds argument"),
    "bench tasks twice": (lambda t: bench.plan(SUITE, t / "b", tasks=["a", "a"]), "name a task twice"),
    "bench seeds": (lambda t: bench.parse_seeds(0), "number of seeds must be > 0"),
    "bench suite": (lambda t: bench.load_suite(str(t / "nope.yaml")), "is neither a built-in suite"),
    "bench time": (lambda t: bench.parse_time_min("soon"), "time limit 'soon'"),
    "bench variants": (lambda t: bench.plan(SUITE, t / "b", variants=["a"]), "has no variants to choose from"),
    "bench variant clash": (lambda t: bench.plan(bench.Suite("s", ["cartpole-swingup"], 1000, [0],
                                                             variants={"a": {"curl": False}}), t / "b", ["curl=true"]),
                            "would replace what variant 'a' sets"),
    "rl modes": (lambda t: bench.encoder_suite("x:y", "cartpole-swingup", 10, 1, ["cold"]), "choose each once"),
    "report labels": (lambda t: report.load_runs([t, t], labels=["a", "b", "c"]), "3 labels for 2 paths"),
}


@pytest.mark.parametrize("case", sorted(LIBRARY_CASES))
def test_library_errors_name_arguments_not_flags(case, tmp_path):
    call, needle = LIBRARY_CASES[case]
    with pytest.raises(CurlrlError) as info:
        call(tmp_path)
    assert needle in str(info.value) and "--" not in str(info.value), str(info.value)


CLI_CASES = {
    "eval --episodes": (lambda t: ["eval", str(_run_dir(t)), "--episodes", "0"], "--episodes must be >= 1"),
    "collect --episodes": (lambda t: ["collect", "cartpole-swingup", "--episodes", "0", "--out", str(t / "d")],
                           "--episodes must be >= 1"),
    "collect --action-repeat": (lambda t: ["collect", "cartpole-swingup", "--episodes", "1", "--action-repeat",
                                           "0", "--out", str(t / "d")], "--action-repeat must be >= 1"),
    "collect --image-size": (lambda t: ["collect", "cartpole-swingup", "--episodes", "1", "--image-size", "0",
                                        "--out", str(t / "d")], "--image-size must be >= 1"),
    "export --out": (lambda t: ["export", str(t), "--out", str(t / "e.pt")], "--out"),
    "probe --knn-k": (lambda t: ["probe", "random", str(t), "--knn-k", "0"], "--knn-k must be >= 1"),
    "probe --ridge-alpha": (lambda t: ["probe", "random", str(t), "--ridge-alpha", "-1"], "--ridge-alpha must be"),
    "bench --workers": (lambda t: ["bench", "--out", str(t / "b"), "--workers", "0"], "--workers must be > 0"),
    "bench --seeds": (lambda t: ["bench", "--out", str(t / "b"), "--seeds", "0"], "--seeds must be > 0"),
    "bench seed=": (lambda t: ["bench", "--out", str(t / "b"), "seed=3"], "use --seeds"),
    "bench task=": (lambda t: ["bench", "--out", str(t / "b"), "task=walker-walk"], "use --tasks"),
    "bench --tasks twice": (lambda t: ["bench", "--out", str(t / "b"), "--tasks", "cartpole-swingup",
                                       "cartpole-swingup"], "--tasks lists a task twice"),
    "bench --signal-delay": (lambda t: ["bench", "--out", str(t / "b"), "--launcher", "slurm", "--signal-delay",
                                        "0"], "--signal-delay must be > 0"),
    "bench --time": (lambda t: ["bench", "--out", str(t / "b"), "--time", "soon"], "--time"),
    "report --label": (lambda t: ["report", str(t), str(t), "--label", "a", "--label", "b", "--label", "c",
                                  "--out", str(t / "r")], "--label given 3 times for 2 paths"),
}


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_cli_errors_name_the_flag_on_one_line(case, tmp_path, capsys):
    argv, needle = CLI_CASES[case]
    line = cli_error(capsys, argv(tmp_path), needle)
    assert line.startswith("curlrl: error:"), line
    assert not (tmp_path / "b").exists() and not (tmp_path / "d").exists() and not (tmp_path / "r").exists()
