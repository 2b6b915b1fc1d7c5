"""Soak: does a long ``curlrl train`` grow without bound?

Runs one ``curlrl train`` subprocess with a small config for ``--minutes`` and samples,
every ``--every`` seconds, the child's resident memory (VmRSS from /proc/PID/status), its
open file descriptors (/proc/PID/fd), its threads, and the run directory's disk use
(bytes allocated, every file under it). Prints the samples as a table, then per quantity
the first, last and max values and the least-squares slope over the second half of the
soak (per minute): the replay is small enough to fill early and a checkpoint is written
at every episode end, so in the second half every quantity should be flat — a slope that
is clearly positive there is a leak (memory, descriptors, threads, or old checkpoint files
that are never removed).

    .venv/bin/python benchmarks/soak.py --minutes 10 [--task cartpole-swingup] [key=value ...]

The extra ``key=value`` arguments override the soak's config (``--show-config`` prints it).
The run directory is a temporary one, removed at the end (``--keep`` keeps it). Prints
the machine's matmul rate first (as ``update_speed.py`` does) so that figures from
different machines or sittings can be told apart by speed.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# replay_capacity 500 transitions fills within the first minutes; checkpoint_every is
# below an episode (cartpole: 1000 env steps), so a checkpoint (with the replay) is written at every episode end.
SOAK_CONFIG = ["env_steps=100000000", "init_steps=200", "replay_capacity=500", "checkpoint_every=200",
               "eval_every=1000000", "eval_episodes=1", "batch_size=16", "image_size=64", "crop_size=56",
               "video=false", "save_replay=true", "threads=1", "device=cpu"]

QUANTITIES = [("rss_mib", "RSS MiB"), ("fds", "open fds"), ("threads", "threads"), ("disk_mib", "run dir MiB"),
              ("env_step", "env step")]


def proc_sample(pid: int) -> dict[str, float] | None:
    """RSS (MiB), open fds and threads of ``pid`` from /proc; None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    rss_kib = int(fields.get("VmRSS", "0 kB").split()[0])
    return dict(rss_mib=rss_kib / 1024, fds=fds, threads=int(fields["Threads"].strip()))


def disk_mib(path: Path) -> float:
    """Bytes allocated under ``path`` (like ``du``), in MiB; files vanishing meanwhile are skipped."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total / 2**20


def last_env_step(run_dir: Path) -> int:
    """env_step of train.csv's last complete row (0 before the first)."""
    try:
        lines = (run_dir / "train.csv").read_text().splitlines()
    except FileNotFoundError:
        return 0
    if len(lines) < 2:
        return 0
    header = lines[0].split(",")
    row = lines[-1].split(",")
    try:
        return int(float(row[header.index("env_step")]))
    except (ValueError, IndexError):
        return 0


def slope_per_min(ts: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over ts (seconds), per minute."""
    n = len(ts)
    if n < 2:
        return 0.0
    mt, my = sum(ts) / n, sum(ys) / n
    var = sum((t - mt) ** 2 for t in ts)
    return 0.0 if var == 0 else 60 * sum((t - mt) * (y - my) for t, y in zip(ts, ys)) / var


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="how long to run (default 10)")
    ap.add_argument("--every", type=float, default=5.0, help="seconds between samples (default 5)")
    ap.add_argument("--task", default="cartpole-swingup")
    ap.add_argument("--keep", action="store_true", help="keep the run directory (its path is printed)")
    ap.add_argument("--no-calibration", action="store_true", help="skip the matmul rate")
    ap.add_argument("--show-config", action="store_true", help="print the soak's overrides and exit")
    ap.add_argument("overrides", nargs="*", help="key=value overrides of the soak config")
    args = ap.parse_args()
    overrides = SOAK_CONFIG + list(args.overrides)
    if args.show_config:
        print(" ".join(overrides))
        return 0
    if not args.no_calibration:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import torch

        from update_speed import matmul_gflops

        torch.set_num_threads(1)
        print(f"matmul_gflops={matmul_gflops('cpu'):.1f}  (fp32 2048x2048 matmul, 1 thread)", flush=True)

    tmp = Path(tempfile.mkdtemp(prefix="curlrl-soak-"))
    run_dir, log_path = tmp / "run", tmp / "train.log"
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    argv = [sys.executable, "-m", "curlrl.cli", "train", args.task, "--run-dir", str(run_dir), *overrides]
    print("$ " + " ".join(argv[1:]), flush=True)
    samples: list[dict[str, float]] = []
    t0 = time.time()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        try:
            print(f"{'t_s':>6} {'RSS MiB':>8} {'fds':>4} {'thr':>4} {'dir MiB':>8} {'env step':>9}", flush=True)
            while time.time() - t0 < 60 * args.minutes:
                s = proc_sample(proc.pid)
                if s is None or proc.poll() is not None:
                    break
                s.update(t=time.time() - t0, disk_mib=disk_mib(run_dir), env_step=last_env_step(run_dir))
                samples.append(s)
                print(f"{s['t']:6.0f} {s['rss_mib']:8.1f} {s['fds']:4.0f} {s['threads']:4.0f} "
                      f"{s['disk_mib']:8.1f} {s['env_step']:9.0f}", flush=True)
                time.sleep(args.every)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    rc = proc.returncode
    early = rc not in (0, -signal.SIGTERM, 128 + signal.SIGTERM) or time.time() - t0 < 60 * args.minutes - args.every
    if early:
        print(f"curlrl train ended early (exit {rc}); its log, {log_path}:", file=sys.stderr)
        print(log_path.read_text()[-3000:], file=sys.stderr)
    ckpts = sorted(p.name for p in (run_dir / "checkpoints").glob("*")) if (run_dir / "checkpoints").is_dir() else []
    print(f"\nsummary over {len(samples)} samples, {(samples[-1]['t'] if samples else 0) / 60:.1f} min; "
          f"slope: least squares over the second half, per minute")
    print(f"{'quantity':<12} {'first':>9} {'last':>9} {'max':>9} {'slope 2nd half /min':>20}")
    half = [s for s in samples if s["t"] >= samples[-1]["t"] / 2] if samples else []
    for key, label in QUANTITIES:
        if not samples:
            break
        ys = [s[key] for s in samples]
        slope = slope_per_min([s["t"] for s in half], [s[key] for s in half])
        print(f"{label:<12} {ys[0]:9.1f} {ys[-1]:9.1f} {max(ys):9.1f} {slope:20.2f}")
    print(f"checkpoint files at the end: {', '.join(ckpts) or '(none)'}; exit code {rc}")
    if args.keep:
        print(f"run directory kept: {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if early else 0


if __name__ == "__main__":
    raise SystemExit(main())
