"""A run directory: the one module that knows its file names and formats.

Every writer (``Trainer``, ``Pretrainer``) and every reader (``evaluate``, ``collect --policy``,
``export``, ``bench``, ``report``) of a run goes through :class:`RunDir`. Layout::

    config.yaml                resolved config (resume reads it back)
    train.csv / eval.csv       agent runs, long format: task, seed, env_step, agent_step, updates, return, ...
    pretrain.csv               pretraining runs: step, loss, accuracy, samples_per_s, wall_s
    events.out.tfevents.*      TensorBoard scalars
    videos/                    eval_<env_step>.mp4 (first episode of each evaluation), final_eval_*.mp4
    checkpoints/latest.pt      the state to resume from (atomic)
    checkpoints/replay.npz     agent runs with save_replay=true: the replay (written before latest.pt)

CSVs are read by their header, never by column position.
"""
from __future__ import annotations

import csv
import dataclasses
import os
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from curlrl.checkpoint import atomic_save, atomic_write_text, safe_load
from curlrl.errors import CheckpointError, ConfigError

TRAIN_COLUMNS = ["task", "seed", "env_step", "agent_step", "updates", "episode", "return",
                 "episode_env_steps", "env_steps_per_s", "critic_loss", "actor_loss", "curl_loss",
                 "alpha", "entropy", "wall_s"]
EVAL_COLUMNS = ["task", "seed", "env_step", "agent_step", "updates", "eval_episode", "return", "wall_s"]
PRETRAIN_COLUMNS = ["step", "loss", "accuracy", "samples_per_s", "wall_s"]


class RunDir:
    """Paths and readers/writers of one run directory (which need not exist yet)."""

    CONFIG = "config.yaml"
    TRAIN_CSV, EVAL_CSV, PRETRAIN_CSV = "train.csv", "eval.csv", "pretrain.csv"

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __str__(self) -> str:
        return str(self.path)

    # -- paths --------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / self.CONFIG

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def checkpoint_path(self) -> Path:
        return self.checkpoint_dir / "latest.pt"

    @property
    def replay_path(self) -> Path:
        return self.checkpoint_dir / "replay.npz"

    def csv_path(self, name: str) -> Path:
        return self.path / name

    def video_path(self, env_step: int, final: bool = False) -> Path:
        return self.path / "videos" / f"{'final_eval' if final else 'eval'}_{env_step:07d}.mp4"

    # -- config -------------------------------------------------------------------------
    def is_run(self) -> bool:
        return self.config_path.is_file()

    def read_config(self) -> dict[str, Any]:
        """The saved config as a dict; ConfigError if there is none or it is not YAML."""
        from curlrl.jobs.config import load_yaml

        if not self.is_run():
            raise ConfigError(f"{self.path} is not a curlrl run directory (no {self.CONFIG})")
        data = load_yaml(self.config_path)
        if not isinstance(data, dict):
            raise ConfigError(f"{self.config_path} does not hold a mapping of config keys")
        return data

    def write_config(self, cfg: Any) -> None:
        """Save a config dataclass (or dict) as YAML, atomically; creates the directory."""
        import yaml

        self.path.mkdir(parents=True, exist_ok=True)
        data = dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else dict(cfg)
        atomic_write_text(self.config_path, yaml.safe_dump(data, sort_keys=False))

    # -- checkpoints --------------------------------------------------------------------
    def has_checkpoint(self) -> bool:
        return self.checkpoint_path.is_file()

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        atomic_save(state, self.checkpoint_path)

    def load_checkpoint(self, map_location: Any = "cpu", mmap: bool = False) -> dict[str, Any]:
        """The checkpoint's contents (weights-only load); CheckpointError if missing or corrupt."""
        return safe_load(self.checkpoint_path, map_location=map_location, mmap=mmap)

    def checkpoint_counters(self) -> dict[str, int] | None:
        """The counters of an agent run's checkpoint (env_step, episode, ...), read without
        loading the weights; None without a checkpoint, CheckpointError for an unreadable one."""
        if not self.has_checkpoint():
            return None
        state = self.load_checkpoint(mmap=True)
        try:
            counters = {k: int(v) for k, v in state["counters"].items()}
            counters["env_step"]  # noqa: B018 (presence check)
        except (KeyError, TypeError, ValueError, AttributeError):
            raise CheckpointError(f"checkpoint {self.checkpoint_path} has no env_step counter") from None
        return counters

    def checkpoint_env_step(self) -> int | None:
        counters = self.checkpoint_counters()
        return None if counters is None else counters["env_step"]

    # -- logs ---------------------------------------------------------------------------
    def read_csv(self, name: str) -> list[dict[str, str]]:
        """All rows of a log, keyed by its header; [] if the file does not exist."""
        path = self.csv_path(name)
        if not path.is_file():
            return []
        try:
            with open(path, newline="") as fh:
                return list(csv.DictReader(fh))
        except (OSError, csv.Error, UnicodeDecodeError) as exc:
            raise CheckpointError(f"cannot read {path} ({exc})") from None

    def evals(self) -> dict[int, list[float]]:
        """Returns of every evaluation in eval.csv, by env step."""
        out: dict[int, list[float]] = {}
        try:
            for row in self.read_csv(self.EVAL_CSV):
                out.setdefault(int(row["env_step"]), []).append(float(row["return"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{self.csv_path(self.EVAL_CSV)} is not a curlrl eval log ({exc})") from None
        return out

    def last_eval(self) -> tuple[int, float] | None:
        """(env_step, mean return) of the last evaluation; None if there is none or it is unreadable."""
        try:
            evals = self.evals()
        except CheckpointError:
            return None
        if not evals:
            return None
        step = max(evals)
        return step, float(np.mean(evals[step]))

    def last_train_step(self) -> int:
        """The env step of the last row of train.csv (0 if none), reading only the file's tail."""
        path = self.csv_path(self.TRAIN_CSV)
        try:
            with open(path, "rb") as fh:
                header = fh.readline().decode("utf-8", "replace").strip().split(",")
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - 4096))
                lines = [ln for ln in fh.read().decode("utf-8", "replace").splitlines() if ln.strip()]
            if len(lines) < 2 or lines[-1].split(",") == header:
                return 0
            return int(dict(zip(header, next(csv.reader([lines[-1]]))))["env_step"])
        except (OSError, ValueError, KeyError, StopIteration):
            return 0

    def open_log(self, name: str, columns: list[str], keep: Callable[[dict[str, str]], bool] | None = None) -> "CsvLog":
        """An append-only log; ``keep`` (on resume) first drops the rows it rejects."""
        self.path.mkdir(parents=True, exist_ok=True)
        if keep is not None:
            truncate_csv(self.csv_path(name), keep)
        return CsvLog(self.csv_path(name), columns)

    def tensorboard(self, purge_step: int | None = None):
        """A SummaryWriter into the run directory (``purge_step`` on resume drops later events)."""
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(str(self.path), purge_step=purge_step)

    # -- agents -------------------------------------------------------------------------
    def load_agent(self, cfg: Any, obs_shape: tuple[int, ...], action_dim: int, device: Any):
        """The agent saved in this run's checkpoint, built for ``cfg`` on ``device``, and the
        checkpoint's contents. ``encoder_init`` is not read: the checkpoint holds the weights,
        and that file may have moved since the run started."""
        from curlrl.jobs.train import build_agent

        state = self.load_checkpoint(map_location=device)
        agent = build_agent(cfg, obs_shape, action_dim, device, from_checkpoint=True)
        try:
            agent.load_state_dict(state["agent"])
        except (KeyError, RuntimeError, TypeError, ValueError) as exc:
            raise CheckpointError(f"checkpoint {self.checkpoint_path} does not match its config ({exc})") from None
        return agent, state


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


def truncate_csv(path: Path, keep: Callable[[dict[str, str]], bool]) -> None:
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

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.mp4")
    imageio.mimwrite(tmp, list(frames), fps=fps, macro_block_size=1, quality=7)
    os.replace(tmp, path)
