"""Progress bars that read well on a terminal and in a log file.

On a terminal tqdm redraws one line with carriage returns. Redirected to a file
(``curlrl train ... 2> train.log``, a cluster job's log) the same output becomes one
line megabytes long; there each refresh is written as its own line, every 30 s.
"""
from __future__ import annotations

import sys
from typing import TextIO


class _LineWriter:
    """A file-like object for tqdm that turns each redraw into one newline-terminated line."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        line = text.replace("\r", "").strip()
        if line:
            self.stream.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(total: int, unit: str, quiet: bool = False, initial: int = 0, stream: TextIO | None = None):
    """A tqdm bar on ``stream`` (stderr): redrawn every second on a terminal, else a line every 30 s."""
    from tqdm import tqdm

    stream = stream if stream is not None else sys.stderr
    if getattr(stream, "isatty", lambda: False)():
        return tqdm(total=total, initial=initial, unit=unit, disable=quiet, dynamic_ncols=True,
                    mininterval=1.0, file=stream)
    # miniters=1: check the clock at every update, so a line comes every 30 s whatever the rate
    # (tqdm's adaptive miniters, tuned in the fast random phase, would skip minutes of slow updates,
    # and its monitor thread would add extra redraws)
    return tqdm(total=total, initial=initial, unit=unit, disable=quiet, mininterval=30.0, miniters=1,
                file=_LineWriter(stream),
                bar_format="{percentage:3.0f}% {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]")
