"""Console output: progress lines in a log file, a redrawn bar on a terminal, warnings."""
import io
import sys

import pytest

from curlrl import train as train_mod
from curlrl.progress import progress_bar


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def _run(stream, quiet=False):
    bar = progress_bar(40, "env step", quiet, initial=8, stream=stream)
    for _ in range(4):
        bar.update(8)
    bar.set_postfix(eval_return="12.5")
    bar.close()
    return stream.getvalue()


def test_log_file_gets_one_line_per_refresh():
    text = _run(io.StringIO())
    lines = text.splitlines()
    assert "\r" not in text and text.endswith("\n")
    assert lines[0].startswith("20% 8/40 [")  # resumed runs start at their step
    assert "40/40" in lines[-1] and "eval_return=12.5" in lines[-1] and "env step" in lines[-1]


def test_terminal_gets_a_redrawn_bar_and_quiet_gets_nothing():
    assert "\r" in _run(_Terminal())
    assert _run(io.StringIO(), quiet=True) == ""


@pytest.mark.parametrize("load,busy_now,warned", [(1.9, 0.95, True), (1.9, None, True), (0.4, 0.95, False),
                                                  (1.9, 0.1, False)])  # last: a run that just ended
def test_busy_cpu_warning(monkeypatch, capsys, load, busy_now, warned):
    monkeypatch.setattr(train_mod.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(train_mod.os, "getloadavg", lambda: (load, load, load))
    monkeypatch.setattr(train_mod, "cpu_busy_fraction", lambda: busy_now)
    train_mod.warn_if_cpu_busy()
    err = capsys.readouterr().err
    assert (f"the CPU is already busy (load {load:.1f} on 2 cores)" in err and "threads=1" in err) == warned
    assert err.count("\n") == (1 if warned else 0)


def test_cpu_busy_fraction_is_a_fraction():
    busy = train_mod.cpu_busy_fraction(0.05)
    if sys.platform.startswith("linux"):
        assert busy is not None
    assert busy is None or 0.0 <= busy <= 1.0
