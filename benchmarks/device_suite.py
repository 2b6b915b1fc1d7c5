"""Helpers of ``benchmarks/device_suite.sh``: tables, the learning runs' progress, packing.

    python benchmarks/device_suite.py table UPDATE_SPEED_LOG            # markdown to stdout
    python benchmarks/device_suite.py learning RUNS_DIR ENV_STEPS       # markdown to stdout
    python benchmarks/device_suite.py report-steps RUNS_DIR ENV_STEPS   # --steps for curlrl report
    python benchmarks/device_suite.py pack RESULTS_DIR SUMMARY_MD OUT   # OUT/summary.md + results.tar.gz

Standard library only: it runs under any python3, before or without curlrl's packages.
The device tool returns at most 8 files from ``$OUT``, no deeper than 2 folders, named
in letters, digits, '.', '_' and '-': ``pack`` writes two and checks all of that.
"""
from __future__ import annotations

import csv
import re
import sys
import tarfile
from pathlib import Path

MAX_FILES = 8
MAX_DEPTH = 2  # folders below OUT
NAME_OK = re.compile(r"^[A-Za-z0-9._-]+$")
# the files of a run directory worth bringing back (no checkpoints, events, videos)
RUN_FILES = ("eval.csv", "train.csv", "config.yaml")

_RESULT = re.compile(r"^mode=(\S+) (?:capture=\S+ )?batch=(\d+) median_ms=([\d.]+) .*achieved_gflops=([\d.]+)")
_HEADER = re.compile(r"^### (.*)$")


def update_table(log: str) -> str:
    """Markdown table of ``update_speed.py`` results from the suite's log.

    The log holds blocks that start with ``### batch=B amp=A capture=C status=S`` (written
    by the suite) followed by the script's output; a block without result lines shows
    its status (failed, timeout, skipped, unsupported).
    """
    rows = ["| batch | mode | amp | capture | ms / update (median) | achieved TFLOP/s | note |",
            "|---|---|---|---|---|---|---|"]
    block: dict[str, str] | None = None
    found = 0

    def close() -> None:
        if block is not None and not found:
            rows.append(f"| {block.get('batch', '?')} | {block.get('mode', '?')} | {block.get('amp', '?')} | "
                        f"{block.get('capture', '?')} | – | – | {block.get('status', 'no result')} |")

    for line in log.splitlines():
        header = _HEADER.match(line)
        if header:
            close()
            block = dict(kv.split("=", 1) for kv in header.group(1).split() if "=" in kv)
            found = 0
            continue
        m = _RESULT.match(line)
        if m and block is not None:
            mode, batch, ms, gflops = m.groups()
            note = block.get("status", "")
            rows.append(f"| {batch} | {mode} | {block.get('amp', '?')} | {block.get('capture', '?')} | "
                        f"{float(ms):.1f} | {float(gflops) / 1000:.2f} | {'' if note == 'ok' else note} |")
            found += 1
    close()
    return "\n".join(rows) + "\n"


def _evals(run: Path) -> dict[int, list[float]]:
    by_step: dict[int, list[float]] = {}
    path = run / "eval.csv"
    if path.is_file():
        with path.open(newline="") as fh:
            for row in csv.DictReader(fh):
                try:
                    by_step.setdefault(int(row["env_step"]), []).append(float(row["return"]))
                except (KeyError, TypeError, ValueError):
                    continue
    return by_step


def run_dirs(root: Path) -> list[Path]:
    """Run directories (those with a config.yaml) under ``root``, sorted."""
    return sorted(p.parent for p in root.rglob("config.yaml"))


def learning_table(root: Path, env_steps: int) -> str:
    """Which env step each run's evaluations reached, with the mean return there."""
    rows = ["| run | exit | last evaluated env step | of | mean eval return there | evaluations |",
            "|---|---|---|---|---|---|"]
    for run in run_dirs(root):
        evals = _evals(run)
        rc_file = run.parent / f"{run.name}.rc"
        rc = rc_file.read_text().strip() if rc_file.is_file() else "?"
        rc = {"124": "124 (stopped at the deadline)", "0": "0 (finished)"}.get(rc, rc)
        if evals:
            last = max(evals)
            mean = sum(evals[last]) / len(evals[last])
            rows.append(f"| {run.relative_to(root)} | {rc} | {last} | {env_steps} | {mean:.1f} "
                        f"({len(evals[last])} episodes) | {len(evals)} |")
        else:
            rows.append(f"| {run.relative_to(root)} | {rc} | none | {env_steps} | – | 0 |")
    if len(rows) == 2:
        rows.append("| (no run directory) | | | | | |")
    return "\n".join(rows) + "\n"


def report_steps(root: Path, env_steps: int) -> str:
    """``--steps`` for ``curlrl report``: the budget, and the last step every run reached if earlier."""
    reached = [max(e) for e in (_evals(r) for r in run_dirs(root)) if e]
    steps = {env_steps}
    if reached and min(reached) < env_steps:
        steps.add(min(reached))
    return ",".join(str(s) for s in sorted(steps))


def _check_out(out: Path) -> None:
    files = [p for p in out.rglob("*") if p.is_file() or p.is_symlink()]
    if len(files) > MAX_FILES:
        raise SystemExit(f"pack: {out} holds {len(files)} files; the device returns at most {MAX_FILES}")
    for p in out.rglob("*"):
        rel = p.relative_to(out)
        if not all(NAME_OK.match(part) for part in rel.parts):
            raise SystemExit(f"pack: {rel} has a name the device does not return (letters, digits, . _ - only)")
        if (p.is_file() or p.is_symlink()) and len(rel.parts) - 1 > MAX_DEPTH:
            raise SystemExit(f"pack: {rel} lies more than {MAX_DEPTH} folders below OUT and would not come back")
        if p.is_symlink():
            raise SystemExit(f"pack: {rel} is a link; the device returns plain files only")


def pack(results: Path, summary: Path, out: Path) -> list[Path]:
    """Write ``out/summary.md`` and ``out/results.tar.gz`` (everything under ``results``
    except run files other than RUN_FILES), then check ``out`` against the device's limits."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.md").write_text(summary.read_text())

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        parts = Path(info.name).parts
        if "runs" in parts and info.isfile() and parts[-1] not in RUN_FILES and not parts[-1].endswith((".log", ".rc")):
            return None
        if info.issym() or info.islnk():
            return None
        return info

    with tarfile.open(out / "results.tar.gz", "w:gz") as tar:
        tar.add(results, arcname="results", filter=keep)
    _check_out(out)
    return sorted(p for p in out.rglob("*") if p.is_file())


def main(argv: list[str]) -> int:
    cmd, args = (argv[0], argv[1:]) if argv else ("", [])
    if cmd == "table" and len(args) == 1:
        print(update_table(Path(args[0]).read_text() if Path(args[0]).is_file() else ""), end="")
    elif cmd == "learning" and len(args) == 2:
        print(learning_table(Path(args[0]), int(args[1])), end="")
    elif cmd == "report-steps" and len(args) == 2:
        print(report_steps(Path(args[0]), int(args[1])))
    elif cmd == "pack" and len(args) == 3:
        for p in pack(Path(args[0]), Path(args[1]), Path(args[2])):
            print(f"{p}  {p.stat().st_size / 2**20:.2f} MiB")
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
