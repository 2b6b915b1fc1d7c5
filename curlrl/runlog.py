"""Run-directory logging: long-format CSVs, TensorBoard scalars, mp4 videos."""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np

TRAIN_COLUMNS = ["task", "seed", "env_step", "agent_step", "updates", "episode", "return",
                 "episode_env_steps", "env_steps_per_s", "critic_loss", "actor_loss", "curl_loss",
                 "alpha", "entropy", "wall_s"]
EVAL_COLUMNS = ["task", "seed", "env_step", "agent_step", "updates", "eval_episode", "return", "wall_s"]


class CsvLog:
    """Append-only long-format CSV with a fixed header; each row flushed at once."""

    def __init__(self, path: Path, columns: list[str]) -> None:
        self.path, self.columns = path, columns
        new = not path.exists() or path.stat().st_size == 0
        self._fh = open(path, "a", newline="")
        self._writer = csv.DictWriter(self._fh, fieldnames=columns, extrasaction="ignore")
        if new:
            self._writer.writeheader()
            self._fh.flush()

    def write(self, row: dict[str, Any]) -> None:
        self._writer.writerow({k: _fmt(row.get(k, "")) for k in self.columns})
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def _fmt(v: Any) -> Any:
    return f"{v:.6g}" if isinstance(v, float) else v


def truncate_csv(path: Path, keep) -> None:
    """Keep only rows for which ``keep(row)`` is true (used on resume); atomic rewrite."""
    if not path.exists():
        return
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        columns, rows = reader.fieldnames, [r for r in reader if keep(r)]
    if columns is None:
        return
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def write_video(path: Path, frames: Iterable[np.ndarray], fps: int = 30) -> None:
    """Write (H, W, 3) uint8 frames to an mp4 with imageio-ffmpeg, atomically."""
    import imageio.v2 as imageio

    tmp = path.with_name(f".{path.stem}.tmp.mp4")
    imageio.mimwrite(tmp, list(frames), fps=fps, macro_block_size=1, quality=7)
    os.replace(tmp, path)
