"""Fault points: a signal sent at a chosen transition of a run, for tests of what survives it.

``CURLRL_FAULT=EVENT:ENV_STEP[:SIGNAL[:TARGET]]`` makes a training run send ``SIGNAL``
(default ``KILL``) right after ``EVENT`` at exactly ``ENV_STEP``:

- ``EVENT``: ``eval`` (the evaluation rows of that step are written and flushed) or
  ``checkpoint`` (the checkpoint of that step is on disk);
- ``TARGET``: ``self`` (default), ``group`` (the process group: a ``curlrl bench`` started in
  its own session and its ``curlrl train`` children, as a node dying takes them all),
  ``parent`` (e.g. the submitit job process, which requeues on its signal) or ``job`` (the
  parent, then this process: as SLURM signals every process of a job).

The kill then lands at the same point on every machine, however loaded: a test compares the
resumed run with the uninterrupted one without a clock deciding what was written first.
Unset (the default), :func:`fault_point` does nothing.
"""
from __future__ import annotations

import os
import signal
from dataclasses import dataclass

from curlrl.errors import ConfigError

ENV_VAR = "CURLRL_FAULT"
EVENTS = ("eval", "checkpoint")
TARGETS = ("self", "group", "parent", "job")


@dataclass(frozen=True)
class Fault:
    event: str
    env_step: int
    signal: signal.Signals = signal.SIGKILL
    target: str = "self"


def parse_fault(text: str) -> Fault:
    """The :class:`Fault` of a ``CURLRL_FAULT`` value; ConfigError naming the variable if malformed."""
    parts = text.split(":")
    usage = f"{ENV_VAR} must be EVENT:ENV_STEP[:SIGNAL[:TARGET]] (EVENT one of {', '.join(EVENTS)}), got {text!r}"
    if not 2 <= len(parts) <= 4 or parts[0] not in EVENTS or not parts[1].isdigit():
        raise ConfigError(usage)
    sig = parts[2] if len(parts) > 2 else "KILL"
    try:
        signum = signal.Signals[sig if sig.startswith("SIG") else "SIG" + sig]
    except KeyError:
        raise ConfigError(f"{ENV_VAR}: unknown signal {sig!r}") from None
    target = parts[3] if len(parts) > 3 else "self"
    if target not in TARGETS:
        raise ConfigError(f"{ENV_VAR}: the target must be one of {', '.join(TARGETS)}, got {target!r}")
    return Fault(parts[0], int(parts[1]), signum, target)


def configured_fault() -> Fault | None:
    text = os.environ.get(ENV_VAR, "")
    return parse_fault(text) if text else None


_fired: set[Fault] = set()


def fault_point(event: str, env_step: int, fault: Fault | None) -> None:
    """Send the fault's signal if ``event`` at ``env_step`` is its point (``fault`` None: nothing).

    Once per process: a run stopped by that signal writes its stop checkpoint at the same env
    step, and that second checkpoint must not signal again."""
    if fault is None or fault.event != event or fault.env_step != env_step or fault in _fired:
        return
    _fired.add(fault)
    if fault.target == "group":
        os.killpg(os.getpgrp(), fault.signal)
    elif fault.target in ("parent", "job"):
        os.kill(os.getppid(), fault.signal)
        if fault.target == "job":
            os.kill(os.getpid(), fault.signal)
    else:
        os.kill(os.getpid(), fault.signal)
