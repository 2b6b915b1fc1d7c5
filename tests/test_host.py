"""Host concerns: usable cores (affinity mask, SLURM), the busy-CPU advice."""
import sys

import pytest

from curlrl.jobs import bench, host


@pytest.mark.parametrize("affinity,slurm,expected", [
    ({0, 1, 2, 3, 4, 5, 6, 7}, None, 8),
    ({2, 3}, None, 2),            # taskset / cpuset: only the mask counts, not the machine
    ({0, 1, 2, 3, 4, 5, 6, 7}, "3", 3),  # a SLURM job without core binding sees the whole node
    ({0, 1}, "8", 2),             # the mask is the harder limit
    ({0, 1, 2, 3}, "junk", 4),    # an unreadable variable is ignored
    ({0, 1, 2, 3}, "0", 4),
])
def test_usable_cpus_honours_affinity_and_slurm(monkeypatch, affinity, slurm, expected):
    monkeypatch.setattr(host, "_affinity", lambda: set(affinity))
    monkeypatch.setattr(host.os, "cpu_count", lambda: 64)
    if slurm is None:
        monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    else:
        monkeypatch.setenv("SLURM_CPUS_PER_TASK", slurm)
    assert host.usable_cpus() == expected


def test_usable_cpus_without_an_affinity_mask_counts_the_machine(monkeypatch):
    monkeypatch.setattr(host, "_affinity", lambda: None)
    monkeypatch.setattr(host.os, "cpu_count", lambda: 6)
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    assert host.usable_cpus() == 6


def test_bench_sizes_workers_and_threads_with_usable_cpus(monkeypatch, tmp_path):
    monkeypatch.setattr(bench, "usable_cpus", lambda: 8)
    lines = []
    suite = bench.Suite("s", ["cartpole-swingup"], 1000, [0])
    monkeypatch.setattr(bench, "launch_local", lambda todo, *a, **k: [])
    bench.run_bench(suite, tmp_path / "b", report=lines.append)
    assert "workers 2, threads per run 4" in lines[0]


@pytest.mark.parametrize("load,busy_now,warned", [(1.9, 0.95, True), (1.9, None, True), (0.4, 0.95, False),
                                                  (1.9, 0.1, False)])  # last: a run that just ended
def test_busy_cpu_warning(monkeypatch, capsys, load, busy_now, warned):
    monkeypatch.setattr(host, "usable_cpus", lambda: 2)
    monkeypatch.setattr(host, "load_average", lambda: load)
    monkeypatch.setattr(host, "cpu_busy_fraction", lambda: busy_now)
    host.warn_if_cpu_busy()
    err = capsys.readouterr().err
    assert (f"the CPU is already busy (load {load:.1f} on 2 cores)" in err and "threads=1" in err) == warned
    assert err.count("\n") == (1 if warned else 0)


def test_cpu_busy_fraction_is_a_fraction():
    busy = host.cpu_busy_fraction(0.05)
    if sys.platform.startswith("linux"):
        assert busy is not None
    assert busy is None or 0.0 <= busy <= 1.0
