"""The lent-GPU-machine suite: wheel slimming, the bundle size check, result packing, and
(slow, needs network) the whole dry run of benchmarks/device_suite.sh on the CPU."""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from conftest import HANG_TIMEOUT_S

ROOT = Path(__file__).resolve().parents[1]


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


wheel_slim = _load(ROOT / "scripts" / "wheel_slim.py")
suite = _load(ROOT / "benchmarks" / "device_suite.py")


def _make_wheel(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        zf.writestr("pkg-1.0.dist-info/RECORD", "stale,sha256=x,1\n")
    return path


def test_slim_wheel_drops_files_and_rewrites_record(tmp_path):
    wheel = _make_wheel(tmp_path / "pkg-1.0-py3-none-any.whl", {
        "pkg/__init__.py": b"x = 1\n", "pkg/assets/big.bin": b"\0" * 1000, "pkg/a_test.py": b"",
        "pkg-1.0.dist-info/METADATA": b"Name: pkg\n"})
    out = wheel_slim.slim_wheel(wheel, tmp_path / "out", drop=("pkg/assets/*", "*_test.py"))
    with zipfile.ZipFile(out) as zf:
        names = set(zf.namelist())
        record = zf.read("pkg-1.0.dist-info/RECORD").decode()
    assert names == {"pkg/__init__.py", "pkg-1.0.dist-info/METADATA", "pkg-1.0.dist-info/RECORD"}
    assert "stale" not in record and "big.bin" not in record
    wheel_slim.verify_wheel(out)  # every kept file is listed with its true hash and size


def test_verify_wheel_catches_a_wrong_record(tmp_path):
    wheel = _make_wheel(tmp_path / "pkg-1.0-py3-none-any.whl", {"pkg/__init__.py": b"x = 1\n"})
    with pytest.raises(SystemExit, match="RECORD does not match"):
        wheel_slim.verify_wheel(wheel)


def test_bundle_size_check(tmp_path):
    (tmp_path / "gl").mkdir()
    (tmp_path / "a.whl").write_bytes(b"\0" * 700_000)
    (tmp_path / "gl" / "b.deb").write_bytes(b"\0" * 400_000)
    assert wheel_slim.bundle_bytes(tmp_path) == 1_100_000
    assert wheel_slim.check_size(tmp_path, 2)[0]
    ok, line = wheel_slim.check_size(tmp_path, 1)
    assert not ok and "1.0 MiB" in line
    assert wheel_slim.main(["size", str(tmp_path), "1"]) == 1


def test_update_table_renders_results_and_failures():
    log = "\n".join([
        "### batch=128 amp=off capture=off status=ok",
        "mode=exact batch=128 median_ms=12.5 mean_ms=13.0 gflop_per_update=104.0 achieved_gflops=8320.0 of_matmul=0.2",
        "mode=fused capture=off batch=128 median_ms=9.0 mean_ms=9.1 gflop_per_update=71.1 achieved_gflops=7900.0 "
        "of_matmul=0.2 warmup_s=0.1",  # update_speed.py's current line (with capture=)
        "### batch=128 amp=off capture=compile status=timeout(150s)",
        "### batch=512 amp=bf16 capture=compile status=unsupported(update_speed.py_has_no_--capture)",
    ])
    table = suite.update_table(log)
    assert "| 128 | exact | off | off | 12.5 | 8.32 |  |" in table
    assert "| 128 | fused | off | off | 9.0 | 7.90 |  |" in table
    assert "timeout(150s)" in table and "unsupported" in table
    assert len(table.strip().splitlines()) == 2 + 4


def _fake_results(root: Path, runs: int) -> Path:
    res = root / "results"
    (res / "logs").mkdir(parents=True)
    (res / "logs" / "tests.txt").write_text("ok\n")
    for seed in range(runs):
        run = res / "runs" / "cartpole-swingup" / f"seed{seed}"
        (run / "checkpoints").mkdir(parents=True)
        (run / "checkpoints" / "latest.pt").write_bytes(b"\0" * 1000)
        (run / "config.yaml").write_text("task: cartpole-swingup\n")
        (run / "events.out.tfevents.1").write_bytes(b"\0")
        rows = ["task,seed,env_step,agent_step,updates,eval_episode,return,wall_s"]
        rows += [f"cartpole-swingup,{seed},{s},{s // 8},0,0,{100 + s / 100},1" for s in (0, 200, 400)[:seed + 2]]
        (run / "eval.csv").write_text("\n".join(rows) + "\n")
        (run.parent / f"seed{seed}.rc").write_text("124\n" if seed == 0 else "0\n")
    return res


def test_pack_returns_two_files_within_the_device_limits(tmp_path):
    res = _fake_results(tmp_path, runs=12)  # more run files than the device would return one by one
    summary = tmp_path / "summary.md"
    summary.write_text("# summary\n")
    out = tmp_path / "out"
    files = suite.pack(res, summary, out)
    assert [f.name for f in files] == ["results.tar.gz", "summary.md"]
    with tarfile.open(out / "results.tar.gz") as tar:
        names = tar.getnames()
    assert "results/runs/cartpole-swingup/seed3/eval.csv" in names
    assert "results/runs/cartpole-swingup/seed3.rc" in names
    assert not any(n.endswith(("latest.pt", ".tfevents.1")) for n in names)


def test_pack_refuses_what_the_device_would_not_return(tmp_path):
    out = tmp_path / "out"
    (out / "a" / "b" / "c").mkdir(parents=True)
    (out / "a" / "b" / "c" / "deep.txt").write_text("")
    with pytest.raises(SystemExit, match="folders below OUT"):
        suite._check_out(out)
    shutil.rmtree(out / "a")
    for i in range(9):
        (out / f"f{i}.txt").write_text("")
    with pytest.raises(SystemExit, match="at most 8"):
        suite._check_out(out)


def test_learning_table_and_report_steps(tmp_path):
    res = _fake_results(tmp_path, runs=2)
    table = suite.learning_table(res / "runs", 400)
    assert "| cartpole-swingup/seed0 | 124 (stopped at the deadline) | 200 | 400 | 102.0 (1 episodes) | 2 |" in table
    assert "| cartpole-swingup/seed1 | 0 (finished) | 400 | 400 | 104.0 (1 episodes) | 3 |" in table
    assert suite.report_steps(res / "runs", 400) == "200,400"


def test_suite_refuses_without_out():
    res = subprocess.run(["bash", str(ROOT / "benchmarks" / "device_suite.sh")], capture_output=True, text=True,
                         env={k: v for k, v in os.environ.items() if k != "OUT"}, timeout=HANG_TIMEOUT_S)
    assert res.returncode == 2 and "set OUT" in res.stderr


@pytest.mark.slow
def test_dry_run_end_to_end(tmp_path):
    """Builds the bundle for this Python (network: PyPI, Debian), then the suite's CPU dry run
    with this interpreter: ~2-3 minutes on 2 cores."""
    if shutil.which("apt-get") is None:
        pytest.skip("the bundle's EGL .debs need apt-get")
    pyv = f"{sys.version_info[0]}.{sys.version_info[1]}"
    bundle = tmp_path / "bundle"
    env = dict(os.environ, BUNDLE=str(bundle), PYTHON=sys.executable, OMP_NUM_THREADS="1")
    subprocess.run(["bash", str(ROOT / "scripts" / "device_bundle.sh"), pyv], env=env, check=True, timeout=600)
    out = tmp_path / "out"
    env.update(DEVICE="cpu", OUT=str(out))
    res = subprocess.run(["bash", str(ROOT / "benchmarks" / "device_suite.sh")], env=env, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["results.tar.gz", "summary.md"]
    summary = (out / "summary.md").read_text()
    for step in ("install", "preflight", "tests", "table", "env", "learn", "report"):
        assert f"| {step} | ok |" in summary, summary
