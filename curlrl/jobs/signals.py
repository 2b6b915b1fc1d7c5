"""Graceful stops on SIGTERM, SIGINT and SIGUSR1: checkpoint the current step, then exit 128 + signum.

The contract (what a SLURM requeue wrapper codes against):

* The first of these signals asks the job to stop: it finishes the step (env step or
  update) it is in, writes a checkpoint of that step (mid-episode too), and the command
  exits with code ``128 + signum`` (SIGTERM 143, SIGINT 130, SIGUSR1 138) after one line
  on stderr saying where it stopped and how to resume.
* A second signal (any of them) before that exits at once, with the first signal's code,
  without writing anything more: the previous checkpoint is left as it was.

Only the command line installs handlers (:func:`stop_on_signals`, around the job's ``run``);
library users who call ``train()``/``pretrain()`` from Python keep their own handlers and
may pass a :class:`StopFlag` of their own, set from wherever they like.
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Iterator

STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


def exit_code(signum: int) -> int:
    """The exit code of a job stopped by ``signum``: 128 + signum, as a shell reports it."""
    return 128 + int(signum)


def signal_name(signum: int | None) -> str:
    if signum is None:
        return "a stop request"
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class StopFlag:
    """Set once a stop was asked for; ``Trainer.run`` and ``Pretrainer.run`` check it after each step."""

    def __init__(self) -> None:
        self.requested = False
        self.signum: int | None = None

    def request(self, signum: int | None = None) -> None:
        """Ask the job to stop after its current step (``signum``: the signal that asked, if any)."""
        if not self.requested:
            self.requested, self.signum = True, signum

    def __bool__(self) -> bool:
        return self.requested

    @property
    def name(self) -> str:
        """``"SIGTERM"``, ..., or ``"a stop request"`` when no signal asked."""
        return signal_name(self.signum)

    @property
    def exit_code(self) -> int:
        """128 + signum (SIGTERM 143); 1 for a stop without a signal."""
        return exit_code(self.signum) if self.signum is not None else 1


def stop_message(flag: StopFlag, where: str, resume: str) -> str:
    """The one stderr line of a graceful stop: where it stopped and the command that resumes."""
    return f"curlrl: stopped by {flag.name} at {where} (checkpoint written); resume: {resume}"


@contextlib.contextmanager
def stop_on_signals(resume: str, signals: tuple[int, ...] = STOP_SIGNALS) -> Iterator[StopFlag]:
    """Within the block, ``signals`` set the yielded :class:`StopFlag` instead of killing the process.

    A second signal writes one line to stderr and exits at once (``os._exit``, the first
    signal's code): whatever save was in progress is abandoned, the checkpoint before it kept
    (checkpoint writes are atomic). ``resume`` is the command the line names. The previous
    handlers come back on leaving. Off the main thread (where Python cannot install handlers)
    nothing is installed and the flag is never set.
    """
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame) -> None:
        if flag.requested:
            line = (f"curlrl: {signal_name(signum)} while stopping after {flag.name}: exited at once, "
                    f"the previous checkpoint is kept; resume: {resume}\n")
            try:
                os.write(2, line.encode())
            finally:
                os._exit(flag.exit_code)
        flag.request(signum)

    previous = {}
    try:
        for s in signals:
            previous[s] = signal.signal(s, handler)
        yield flag
    finally:
        for s, old in previous.items():
            signal.signal(s, old)
