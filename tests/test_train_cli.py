"""End to end through the `curlrl` command: artifacts, resume after kill -9, user mistakes."""
import csv
import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from conftest import HANG_TIMEOUT_S, one_line_error

from curlrl.jobs.rundir import RunDir

TINY = ["image_size=48", "crop_size=40", "batch_size=16", "hidden_dim=64", "num_filters=8", "feature_dim=16",
        "init_steps=800", "eval_every=800", "eval_episodes=1", "checkpoint_every=1000",
        "replay_capacity=5000", "threads=1"]


def curlrl(*args, timeout=HANG_TIMEOUT_S, **kw):
    return subprocess.run([sys.executable, "-m", "curlrl.cli", *args], capture_output=True, text=True,
                          timeout=timeout, **kw)


def rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "full"
    res = curlrl("train", "cartpole-swingup", "--run-dir", str(run), "env_steps=3200", *TINY)
    assert res.returncode == 0, res.stderr
    return run, res


def test_train_writes_every_artifact(full_run):
    run, res = full_run
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["task"] == "cartpole-swingup" and cfg["action_repeat"] == 8 and cfg["batch_size"] == 16
    evals = rows(run / "eval.csv")
    assert [int(r["env_step"]) for r in evals] == [0, 800, 1600, 2400, 3200]  # exactly at multiples
    assert {"task", "seed", "env_step", "agent_step", "updates", "return"} <= set(evals[0])
    assert int(evals[-1]["updates"]) == (3200 - 800) // 8 and int(evals[-1]["agent_step"]) == 400
    train = rows(run / "train.csv")
    assert [int(r["env_step"]) for r in train] == [1000, 2000, 3000]
    assert all(r["task"] == "cartpole-swingup" and r["seed"] == "0" for r in train)
    assert float(train[-1]["critic_loss"]) >= 0 and train[-1]["curl_loss"] != ""

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(run))
    acc.Reload()
    assert [e.step for e in acc.Scalars("eval/return")] == [0, 800, 1600, 2400, 3200]
    assert "train/return" in acc.Tags()["scalars"]

    import imageio.v3 as iio
    video = iio.imread(run / "videos" / "eval_0003200.mp4")
    assert video.shape == (125, 48, 48, 3)  # one frame per agent step of the filmed episode

    ckpt = torch.load(RunDir(run).checkpoint_path, weights_only=True)
    assert ckpt["counters"]["env_step"] == 3200 and ckpt["agent"]["updates"] == 300
    assert "curlrl: cartpole-swingup seed 0: 3200 env steps (400 agent steps, 300 updates)" in res.stdout
    # what a newcomer needs to read the run: the curve so far, the random policy's score, the plot
    curve = " | ".join(f"{int(r['env_step'])}: {float(r['return']):.1f}" for r in evals)
    assert f"  eval return (mean of 1) by env step: {curve}" in res.stdout, res.stdout
    assert "  for scale, random actions score 140 ± 66 (20 episodes" in res.stdout, res.stdout
    assert f"  plot: {run / 'eval_curve.png'}  (curlrl plot {run} redraws it)" in res.stdout, res.stdout
    assert (run / "eval_curve.png").stat().st_size > 0
    # stderr is a pipe here, as in a log file: progress comes as whole lines, not carriage returns
    assert "\r" not in res.stderr
    assert any("3200/3200" in line and "env step" in line for line in res.stderr.splitlines())


def test_eval_command_reports_and_films(full_run, tmp_path):
    run = tmp_path / "copy"
    shutil.copytree(full_run[0], run)
    res = curlrl("eval", str(run), "--episodes", "2")
    assert res.returncode == 0, res.stderr
    assert "cartpole-swingup @ 3200 env steps: return" in res.stdout
    assert (run / "videos" / "final_eval_0003200.mp4").stat().st_size > 0


CLOCK_COLUMNS = {"wall_s", "env_steps_per_s"}  # the only columns a resumed run may write differently


def same_tensors(a, b, where="agent"):
    """Assert two checkpoint trees (dicts, lists, tensors, numbers) are equal, leaf by leaf."""
    assert type(a) is type(b), where
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            same_tensors(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            same_tensors(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), where
    else:
        assert a == b, where


def test_resume_after_kill_9_continues_like_the_uninterrupted_run(full_run, tmp_path):
    """kill -9 right after the evaluation at 2400, which follows the checkpoint at 2000: the
    rows written after that checkpoint are on disk when it dies and must not come back twice."""
    run = tmp_path / "killed"
    res = curlrl("train", "cartpole-swingup", "--run-dir", str(run), "env_steps=3200", *TINY,
                 env={**os.environ, "CURLRL_FAULT": "eval:2400"})
    assert res.returncode == -signal.SIGKILL, res.stderr
    assert [int(r["env_step"]) for r in rows(run / "eval.csv")] == [0, 800, 1600, 2400]
    assert torch.load(RunDir(run).checkpoint_path, weights_only=True)["counters"]["env_step"] == 2000

    res = curlrl("train", "--resume", "--run-dir", str(run))
    assert res.returncode == 0, res.stderr
    full = full_run[0]
    for name in ("eval.csv", "train.csv"):
        got, want = rows(run / name), rows(full / name)
        assert [r.keys() - CLOCK_COLUMNS for r in got] == [r.keys() - CLOCK_COLUMNS for r in want], name
        # same counters and, on the CPU, the very same numbers
        assert [{k: v for k, v in r.items() if k not in CLOCK_COLUMNS} for r in got] == \
            [{k: v for k, v in r.items() if k not in CLOCK_COLUMNS} for r in want], name
    a = torch.load(RunDir(run).checkpoint_path, weights_only=True)
    b = torch.load(RunDir(full).checkpoint_path, weights_only=True)
    same_tensors(a["agent"], b["agent"])  # every module, optimizer state and log_alpha
    assert a["counters"] == b["counters"]
    same_tensors(a["rng"], b["rng"], "rng")  # the global generators too: the next update would match


def test_a_malformed_fault_point_is_one_line(tmp_path):
    res = curlrl("train", "cartpole-swingup", "--run-dir", str(tmp_path / "r"), *TINY,
                 env={**os.environ, "CURLRL_FAULT": "eval:soon"})
    one_line_error(res, "CURLRL_FAULT", "EVENT:ENV_STEP")
    assert not (tmp_path / "r").exists()


def test_resume_can_extend_a_finished_run(full_run, tmp_path):
    run = tmp_path / "ext"
    shutil.copytree(full_run[0], run)
    res = curlrl("train", "--resume", "--run-dir", str(run), "env_steps=4000")
    assert res.returncode == 0, res.stderr
    assert [int(r["env_step"]) for r in rows(run / "eval.csv")][-2:] == [3200, 4000]


@pytest.mark.parametrize("args,needles", [
    (["train", "cartpole-swingup", "batch_sise=32"], ["batch_sise", "batch_size"]),
    (["train", "cartpole-swingup", "batch_size=many"], ["batch_size", "int"]),
    (["train", "cartpole-swingup", "eval_every=1001"], ["eval_every", "multiple"]),
    (["train", "cartpole-swing"], ["unknown task 'cartpole-swing'"]),
    (["train", "--resume"], ["--run-dir"]),
    (["train", "cartpole-swingup", "--config", "/nonexistent.yaml"], ["/nonexistent.yaml"]),
    (["eval", "/nonexistent-run"], ["not a curlrl run directory"]),
])
def test_user_mistakes_get_one_line_and_exit_2(args, needles, tmp_path):
    one_line_error(curlrl(*args, "--run-dir", str(tmp_path / "r")) if args[0] == "train" and "--resume" not in args
                   else curlrl(*args), *needles)
    assert not (tmp_path / "r").exists()


def test_corrupt_checkpoint_is_refused_and_nothing_is_lost(full_run, tmp_path):
    run = tmp_path / "corrupt"
    shutil.copytree(full_run[0], run)
    RunDir(run).checkpoint_path.write_bytes(b"\x00garbage")
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    one_line_error(curlrl("train", "--resume", "--run-dir", str(run)), "corrupt")
    one_line_error(curlrl("eval", str(run)), "corrupt")
    assert before == {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}


def _truncate_config(run):
    lines = (run / "config.yaml").read_text().splitlines(keepends=True)
    (run / "config.yaml").write_text("".join(lines[: len(lines) // 2]))


def _truncate_checkpoint(run):
    path = RunDir(run).checkpoint_path
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _pretrain_checkpoint(run):
    from curlrl.checkpoint import atomic_save
    from curlrl.jobs.rundir import PRETRAIN_KIND
    atomic_save({"kind": PRETRAIN_KIND, "step": 10, "encoder": {}}, RunDir(run).checkpoint_path)


@pytest.mark.parametrize("damage, needles", [
    (lambda run: (run / "config.yaml").write_bytes(b"task: [cartpole\n\x00\x01"), ["config.yaml", "YAML"]),
    (lambda run: (run / "config.yaml").write_text("- not\n- a mapping\n"), ["config.yaml", "mapping"]),
    (_truncate_config, ["config.yaml", "lacks", "truncated"]),
    (_truncate_checkpoint, ["latest.pt", "corrupt"]),
    (_pretrain_checkpoint, ["latest.pt", "pretraining"]),
], ids=["config-not-yaml", "config-not-a-mapping", "config-truncated", "checkpoint-truncated",
        "checkpoint-of-a-pretraining-run"])
def test_a_damaged_run_directory_is_one_line_and_nothing_is_lost(full_run, tmp_path, damage, needles):
    run = tmp_path / "damaged"
    shutil.copytree(full_run[0], run)
    damage(run)
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    one_line_error(curlrl("train", "--resume", "--run-dir", str(run)), *needles)
    one_line_error(curlrl("eval", str(run), "--episodes", "1"), *needles)
    assert before == {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}


@pytest.mark.parametrize("gl, needles", [
    ("vulkan", ["MUJOCO_GL='vulkan' is not a MuJoCo backend", "egl"]),
    ("glfw", ["MUJOCO_GL=glfw cannot render on this machine"]),  # no display here: GLFW cannot start
])
def test_a_mujoco_gl_that_cannot_render_is_one_line_and_writes_nothing(gl, needles, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    res = curlrl("train", "cartpole-swingup", "--run-dir", str(tmp_path / "r"), *TINY, env={**env, "MUJOCO_GL": gl})
    one_line_error(res, *needles)
    assert not (tmp_path / "r").exists()


@pytest.fixture
def read_only_after(tmp_path):
    """A real tmpfs (root only: skipped elsewhere) and a function that remounts it read-only,
    so that even root's writes fail with EROFS, as on a read-only or failing volume."""
    mnt = tmp_path / "vol"
    mnt.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mnt)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root): " + mounted.stderr.decode().strip()[:100])

    def remount_read_only():
        res = subprocess.run(["mount", "-o", "remount,ro", str(mnt)], capture_output=True)
        assert res.returncode == 0, res.stderr

    try:
        yield mnt, remount_read_only
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_an_unwritable_run_directory_is_one_line_and_nothing_is_lost(full_run, read_only_after):
    mnt, remount_read_only = read_only_after
    run = mnt / "run"
    shutil.copytree(full_run[0], run)
    remount_read_only()
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    one_line_error(curlrl("train", "--resume", "--run-dir", str(run), "env_steps=4000"), str(run), "Read-only")
    one_line_error(curlrl("train", "cartpole-swingup", "--run-dir", str(mnt / "new"), *TINY), "Read-only")
    assert before == {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}


def test_existing_run_is_not_overwritten(full_run):
    run = full_run[0]
    before = (run / "eval.csv").read_bytes()
    one_line_error(curlrl("train", "cartpole-swingup", "--run-dir", str(run), *TINY), "not empty", "--resume")
    assert (run / "eval.csv").read_bytes() == before


@pytest.mark.parametrize("overrides,resume,error", [
    (["task=cartpole-swing"], False, "unknown task"),
    ([], True, "cannot resume"),
])
def test_mistakes_are_found_before_any_load_advice(overrides, resume, error, tmp_path, monkeypatch):
    """The busy-CPU advice comes only once nothing can fail, so a mistake's one line stands alone
    on a loaded machine too (here the machine is made to look busy, whatever its real load)."""
    from curlrl.jobs import config as config_mod, host, train
    from curlrl.errors import CurlrlError

    advice = []
    monkeypatch.setattr(host, "warn_if_cpu_busy", lambda: advice.append("busy"))
    cfg = config_mod.resolve(None, overrides=["threads=0", "device=cpu", *overrides])
    with pytest.raises(CurlrlError, match=error):
        train.Trainer(cfg, tmp_path / "run", resume=resume)
    assert advice == []
    assert not (tmp_path / "run").exists()


def test_device_replay_storage_trains_checkpoints_and_resumes_like_the_uninterrupted_run(tmp_path):
    # replay_storage=device on the CPU: frames, index draws and gathers as torch tensors on "cpu"
    tiny = [*TINY, "eval_every=1000", "replay_storage=device"]
    full, part = tmp_path / "full", tmp_path / "part"
    for run, steps in ((full, 2000), (part, 1000)):
        res = curlrl("train", "cartpole-swingup", "--run-dir", str(run), f"env_steps={steps}", *tiny)
        assert res.returncode == 0, res.stderr
    with np.load(RunDir(part).replay_path) as data:  # written by the device storage
        assert json.loads(str(data["meta"]))["rng_kind"] == "torch-cpu" and "frames" in data.files
    res = curlrl("train", "--resume", "--run-dir", str(part), "env_steps=2000")
    assert res.returncode == 0, res.stderr
    for name, cols in (("eval.csv", ["env_step", "updates", "return"]),
                       ("train.csv", ["env_step", "updates", "episode", "return", "critic_loss", "curl_loss"])):
        got = [[r[c] for c in cols] for r in rows(part / name)]
        want = [[r[c] for c in cols] for r in rows(full / name)]
        assert got == want, name  # the replay's generator and contents came back exactly
    assert int(rows(full / "train.csv")[-1]["updates"]) == (2000 - 800) // 8


def test_a_host_storage_run_resumes_with_device_storage(full_run, tmp_path):
    run = tmp_path / "to_device"
    shutil.copytree(full_run[0], run)
    assert yaml.safe_load((run / "config.yaml").read_text())["replay_compress"] is True  # LZ4 frames on disk
    res = curlrl("train", "--resume", "--run-dir", str(run), "env_steps=4000", "replay_storage=device")
    assert res.returncode == 0, res.stderr
    assert yaml.safe_load((run / "config.yaml").read_text())["replay_storage"] == "device"
    # the saved replay was loaded (no refill with init_steps of random actions): one update per agent step
    assert int(rows(run / "eval.csv")[-1]["updates"]) == (4000 - 800) // 8
    with np.load(RunDir(run).replay_path) as data:
        assert json.loads(str(data["meta"]))["rng_kind"] == "torch-cpu"


@pytest.mark.parametrize("command", ["train", "pretrain"])
def test_a_run_dir_that_is_a_file_is_one_line_and_the_file_is_kept(command, tmp_path):
    afile = tmp_path / "notes.txt"
    afile.write_text("keep me\n")
    for run_dir, needle in ((afile, "is an existing file"), (afile / "sub" / "r", f"is under {afile}")):
        args = ["cartpole-swingup"] if command == "train" else [str(tmp_path / "data")]
        one_line_error(curlrl(command, *args, "--run-dir", str(run_dir)), str(run_dir), needle)
    assert afile.read_text() == "keep me\n"
