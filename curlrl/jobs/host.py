"""The machine a run lands on: usable cores, current load, busy-CPU advice, tcmalloc.

Every module that sizes thread pools or worker counts asks :func:`usable_cpus`, so a run
under ``taskset``, a cgroup cpuset or a SLURM allocation sees the same number everywhere.
Imports nothing heavy (no torch): the CLI calls :func:`reexec_with_tcmalloc` first thing.
"""
from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def _affinity() -> set[int] | None:
    """CPU ids this process may run on (None where the OS does not say)."""
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return None


def usable_cpus() -> int:
    """Cores this process may use: its affinity mask (taskset, cpusets, SLURM core binding),
    at most ``SLURM_CPUS_PER_TASK`` when that is set (a job without core binding still sees
    every core of its node), at least 1."""
    cpus = _affinity()
    count = len(cpus) if cpus else (os.cpu_count() or 1)
    try:
        slurm = int(os.environ.get("SLURM_CPUS_PER_TASK", ""))
    except ValueError:  # unset or not a number
        slurm = 0
    if slurm > 0:
        count = min(count, slurm)
    return max(1, count)


def load_average() -> float | None:
    """The 1-minute load average of the whole machine (None where unavailable)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def cpu_busy_fraction(seconds: float = 0.25) -> float | None:
    """Fraction of this process's cores (its affinity mask) busy over the next ``seconds``.

    Read from /proc/stat; None where that is unavailable.
    """
    cpus = _affinity()

    def sample() -> tuple[int, int]:
        total = idle = 0
        with open("/proc/stat") as fh:
            for line in fh:
                name, *values = line.split()
                if not name.startswith("cpu") or name == "cpu":
                    continue
                if cpus is not None and int(name[3:]) not in cpus:
                    continue
                ticks = [int(v) for v in values]
                total += sum(ticks)
                idle += ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
        if total == 0:
            raise ValueError("no cpu lines")
        return total, idle

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    return 1.0 - (idle1 - idle0) / max(total1 - total0, 1)


def warn_if_cpu_busy() -> None:
    """One line on stderr when other processes already load the cores that torch will use whole.

    Two runs with all-core thread pools on the same cores contend for every core and slow
    each other down more than in proportion. The 1-minute load average lags (a run that
    just ended still counts) and covers the whole machine, so the use of this process's
    cores right now must agree.
    """
    cores = usable_cpus()
    load = load_average()
    if load is None or load < 0.75 * cores:
        return
    busy = cpu_busy_fraction()
    if busy is None or busy >= 0.5:
        print(f"curlrl: the CPU is already busy (load {load:.1f} on {cores} cores) and this run will use "
              f"all {cores} cores: concurrent runs slow each other more than in proportion; give each "
              f"run its share, e.g. threads={max(1, cores // 2)}", file=sys.stderr)


def reexec_with_tcmalloc() -> None:
    """Re-execute this process with tcmalloc preloaded, when it is installed (Linux only).

    glibc's malloc hands the large conv activations back to the OS after every update and
    faults them in again on the next; tcmalloc keeps them, which makes CPU updates faster
    (benchmarks/README.md). Debian/Ubuntu: ``apt-get install libtcmalloc-minimal4``
    (scripts/setup.sh does). ``CURLRL_TCMALLOC=0`` turns this off. The PID is kept.
    Returns without doing anything when tcmalloc is off, missing or already loaded.
    """
    if not sys.platform.startswith("linux"):
        return
    if os.environ.get("CURLRL_TCMALLOC", "1") == "0" or "tcmalloc" in os.environ.get("LD_PRELOAD", ""):
        return
    from ctypes.util import find_library

    lib = find_library("tcmalloc_minimal") or find_library("tcmalloc")
    if lib is None:
        return
    env = dict(os.environ, LD_PRELOAD=f"{lib} {os.environ.get('LD_PRELOAD', '')}".strip())
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def resolve_device(name: str) -> "torch.device":
    """The torch device of a config's ``device`` value ("auto": CUDA when visible, else CPU)."""
    import torch

    from curlrl.errors import ConfigError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"config key 'device' is {name!r} but no CUDA device is available")
    return torch.device(name)
