"""Real kernel write failures of a run's logs, TensorBoard events and videos, no fakes: each
runs in a subprocess under RLIMIT_FSIZE (SIGXFSZ ignored, so the kernel fails the write with
EFBIG) and must come back as one WriteError naming the file, with no traceback on stderr and
no temp file left. (Checkpoints, a full tmpfs and a read-only volume: test_checkpoint_atomic.py
and test_train_cli.py.)"""
import subprocess
import sys

import pytest
from conftest import HANG_TIMEOUT_S, one_line_error

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")

_PRELUDE = """
import resource, signal, sys
from pathlib import Path
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
from curlrl.errors import WriteError
out = Path(sys.argv[1])
def limit(n):
    resource.setrlimit(resource.RLIMIT_FSIZE, (n, n))
def report(exc):
    print(exc)
    sys.exit(2)
"""


def _run(code: str, tmp_path):
    return subprocess.run([sys.executable, "-c", _PRELUDE + code, str(tmp_path)], capture_output=True, text=True,
                          timeout=HANG_TIMEOUT_S)


def _refused(res, *needles):
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr, res.stderr
    line = res.stdout.strip()
    assert "\n" not in line and line.startswith("cannot write "), line
    for needle in needles:
        assert needle in line, (needle, line)
    return line


def test_a_csv_row_over_the_file_size_limit_is_a_write_error(tmp_path):
    res = _run("""
from curlrl.jobs.logs import CsvLog
log = CsvLog(out / "eval.csv", ["env_step", "return"])
limit(4096)
try:
    for i in range(10_000):
        log.write({"env_step": i, "return": 1.5})
except WriteError as exc:
    report(exc)
""", tmp_path)
    _refused(res, str(tmp_path / "eval.csv"), "File too large")
    assert (tmp_path / "eval.csv").stat().st_size <= 4096  # what was written stays


def test_a_trimmed_csv_that_cannot_be_rewritten_is_a_write_error_and_keeps_the_log(tmp_path):
    # the resume's atomic rewrite of a log bigger than the limit: the old log stays whole
    path = tmp_path / "train.csv"
    path.write_text("env_step,return\n" + "".join(f"{i},1.5\n" for i in range(2000)))
    before = path.read_bytes()
    res = _run("""
from curlrl.jobs.logs import truncate_csv
limit(4096)
try:
    truncate_csv(out / "train.csv", lambda row: int(row["env_step"]) < 1900)
except WriteError as exc:
    report(exc)
""", tmp_path)
    _refused(res, str(path), "File too large")
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.csv"]  # no temp file


def test_tensorboard_events_over_the_file_size_limit_are_a_write_error_without_a_thread_traceback(tmp_path):
    # TensorBoard writes from a thread: its OSError comes back at the next call of the run's thread
    res = _run("""
from curlrl.jobs.logs import TensorBoard
tb = TensorBoard(out)
limit(4096)
try:
    for i in range(10_000):
        tb.add_scalar("eval/return", float(i), i)
    tb.flush()
except WriteError as exc:
    report(exc)
""", tmp_path)
    _refused(res, "events.out.tfevents.", "File too large")


def test_a_video_over_the_file_size_limit_is_a_write_error_and_leaves_no_temp_file(tmp_path):
    # ffmpeg is a child process: it inherits the limit and the ignored SIGXFSZ
    res = _run("""
import numpy as np
from curlrl.jobs.logs import write_video
frames = np.random.default_rng(0).integers(0, 256, (60, 64, 64, 3), dtype=np.uint8)  # noise compresses badly
limit(16 * 1024)
try:
    write_video(out / "videos" / "eval_0000000.mp4", frames)
except WriteError as exc:
    report(exc)
""", tmp_path)
    _refused(res, str(tmp_path / "videos" / "eval_0000000.mp4"))
    assert list((tmp_path / "videos").iterdir()) == []


def test_train_whose_first_video_is_over_the_limit_ends_with_one_line(tmp_path):
    """The whole CLI: a run whose evaluation video cannot be written stops with one line
    naming the video; its config and logs so far stay."""
    run = tmp_path / "r"
    code = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (8 * 1024, 8 * 1024))  # config.yaml and the logs stay below
from curlrl.cli import main
sys.exit(main(sys.argv[1:]))
"""
    res = subprocess.run([sys.executable, "-c", code, "train", "cartpole-swingup", "env_steps=1600", "init_steps=64",
                          "batch_size=16", "image_size=84", "eval_every=800", "eval_episodes=1",
                          "checkpoint_every=800", "replay_capacity=2000", "threads=1", "--run-dir", str(run)],
                         capture_output=True, text=True, timeout=HANG_TIMEOUT_S)
    one_line_error(res, "cannot write", str(run / "videos" / "eval_0000000.mp4"))
    assert (run / "config.yaml").is_file() and (run / "eval.csv").is_file()
    assert not [p for p in (run / "videos").iterdir()]


def test_an_encoder_export_over_the_file_size_limit_is_a_write_error_and_leaves_no_temp_file(tmp_path):
    res = _run("""
from curlrl.encoder import PixelEncoder
encoder = PixelEncoder((9, 84, 84))  # some MB of weights
limit(64 * 1024)
try:
    encoder.save_pretrained(out / "encoder.safetensors", source="test")
except WriteError as exc:
    report(exc)
""", tmp_path)
    _refused(res, str(tmp_path / "encoder.safetensors"), "File too large")
    assert list(tmp_path.iterdir()) == []


def test_collect_whose_episode_is_over_the_limit_ends_with_one_line_and_leaves_no_temp_file(tmp_path):
    out = tmp_path / "data"
    code = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))  # an episode of 84 px frames is more
from curlrl.cli import main
sys.exit(main(sys.argv[1:]))
"""
    res = subprocess.run([sys.executable, "-c", code, "collect", "cartpole-swingup", "--episodes", "2",
                          "--out", str(out)], capture_output=True, text=True, timeout=HANG_TIMEOUT_S)
    one_line_error(res, f"cannot write {out / 'episode_00000.npz'}: File too large")
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
