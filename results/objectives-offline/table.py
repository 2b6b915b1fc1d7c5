"""The side-by-side table of results/objectives-offline/run.sh: per objective, the mean over
pretraining seeds of each held-out probe with its 95% percentile-bootstrap interval
(curlrl.jobs.report.bootstrap_ci), and the random encoders' row.

    python results/objectives-offline/table.py ~/objectives-offline > results/objectives-offline/table.md
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from curlrl.jobs.report import bootstrap_ci
from curlrl.options import OBJECTIVE_NAMES

PROBES = [("linear_r2", "state linear R²"), ("knn_r2", "state kNN R²"),
          ("inverse_dynamics_r2", "inverse dynamics R²"), ("reward_r2", "reward R²")]


def rows_of(folder: Path) -> list[dict]:
    out = []
    for path in sorted(folder.glob("seed*/probe/probe.json")) + sorted(folder.glob("seed*/probe.json")):
        out.append(json.loads(path.read_text())["results"][0])
    return out


def cell(values: list[float]) -> str:
    if not values:
        return "-"
    lo, hi = bootstrap_ci(np.array(values))
    return f"{np.mean(values):.3f} [{lo:.3f}, {hi:.3f}]"


def main(out: Path) -> None:
    steps = set()
    print("| encoder | seeds | " + " | ".join(name for _, name in PROBES) + " |")
    print("|---|---|" + "---|" * len(PROBES))
    for name in ["random", *OBJECTIVE_NAMES]:
        rows = rows_of(out / name)
        if not rows:
            continue
        for r in rows:
            if "updates" in r["encoder"]:
                steps.add(r["encoder"].split("(pretrain run, ")[-1].rstrip(")"))
        cells = [cell([r[key] for r in rows if r.get(key) is not None]) for key, _ in PROBES]
        print(f"| {name} | {len(rows)} | " + " | ".join(cells) + " |")
    print()
    print(f"Pretraining: {', '.join(sorted(steps)) or '-'}; mean over seeds [95% bootstrap interval over seeds].")


if __name__ == "__main__":
    main(Path(sys.argv[1]).expanduser())
