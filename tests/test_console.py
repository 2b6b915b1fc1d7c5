"""Console output: progress lines in a log file, a redrawn bar on a terminal."""
import io

from curlrl.jobs.progress import progress_bar


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
