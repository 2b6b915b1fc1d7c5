"""A run directory: the one module that knows its file names, its config and its checkpoints.

Every writer (:class:`~curlrl.jobs.writer.RunWriter`: ``Trainer``, ``Pretrainer``) and every
reader (``evaluate``, ``collect`` with a policy, ``export``, ``bench``, ``report``) of a run
goes through :class:`RunDir`. The logs, TensorBoard and videos are written by
:mod:`curlrl.jobs.logs`, the generators' states captured by :mod:`curlrl.jobs.rngstate`, the
agent built from a checkpoint by :func:`curlrl.jobs.train.load_agent`. Layout::

    config.yaml                resolved config (resume reads it back)
    train.csv / eval.csv       agent runs, long format: task, seed, env_step, agent_step, updates, return, ...
                               (eval.csv holds the evaluations made while training)
    pretrain.csv               pretraining runs: step, loss, accuracy, samples_per_s, wall_s
    events.out.tfevents.*      TensorBoard scalars (x-axis: env steps; pretraining runs: updates)
    videos/                    eval_<env_step>.mp4 (first episode of each evaluation while training),
                               final_eval_<env_step>.mp4 (evaluations of the saved run)
    checkpoints/LATEST         names the folder of the current checkpoint (``step-<N>``)
    checkpoints/step-<N>/      the current checkpoint (N: the env step, or a pretraining run's update;
                               ``step-<N>.<k>`` when step N was saved before):
        latest.pt              the state to resume from (loaded weights-only)
        replay.npz             agent runs with save_replay=true: the replay (one format for host and
                               device storage, either reads it)

A checkpoint is one atomic unit (:meth:`RunDir.save_checkpoint`): its files are written into a
fresh ``checkpoints/.tmp-*`` folder, fsynced, the folder is renamed to ``step-<N>``, then
``LATEST`` is replaced (write, fsync, rename) to name it -- that replacement is the commit.
Older folders are removed after it. A crash or a failed write (the error names the file and the
cause) at any moment leaves the previous checkpoint or the new one current, whole; temp folders
and uncommitted ``step-*`` folders a crash leaves are ignored by readers and removed by the next
save. Readers resolve the current checkpoint through ``LATEST`` (:attr:`RunDir.checkpoint_path`,
:attr:`RunDir.replay_path`). A run directory written before checkpoint folders (no ``LATEST``;
``checkpoints/latest.pt`` and ``checkpoints/replay.npz``) is read as it is; its first save after
a resume writes the new layout and removes the old files.

Divergence (:mod:`curlrl.jobs.divergence`): a NaN or infinite loss (agent runs: checked once per
episode from the metrics already read there; pretraining runs: at each log point) or parameter
(checked before every checkpoint write) stops the run with a ``DivergenceError`` naming the
update and the loss, and leaves the last checkpoint as it is.

``latest.pt`` says what it holds by its ``kind``:

    curlrl.train/1      an agent run: agent (weights, optimizers, generator, updates), counters
                        (env_step, episode, next_eval, next_checkpoint, eval_index, transitions),
                        wall_s, last_eval, rng (global torch/Python/CUDA states), action_rng,
                        config (JSON), version (1). Written before kinds: ``version`` 1 and no kind.
    curlrl.pretrain/1   a pretraining run: encoder, key_encoder, curl_head, optimizer, step, wall_s,
                        torch_rng, generator, rng, config (JSON).

CSVs are read by their header, never by column position; rows appended to an existing log
follow the header it already has.
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from curlrl.checkpoint import atomic_save, atomic_write_text, safe_load
from curlrl.errors import CheckpointError, ConfigError, first_line
from curlrl.errors import write_error
from curlrl.jobs.logs import CsvLog, TensorBoard, read_rows, truncate_csv, write_video  # noqa: F401
from curlrl.jobs.rngstate import global_rng_state, set_global_rng_state  # noqa: F401

TRAIN_COLUMNS = ["task", "seed", "env_step", "agent_step", "updates", "episode", "return",
                 "episode_env_steps", "env_steps_per_s", "critic_loss", "actor_loss", "curl_loss",
                 "alpha", "entropy", "wall_s"]
EVAL_COLUMNS = ["task", "seed", "env_step", "agent_step", "updates", "eval_episode", "return", "wall_s"]
PRETRAIN_COLUMNS = ["step", "loss", "accuracy", "samples_per_s", "wall_s"]

TRAIN_KIND = "curlrl.train/1"
PRETRAIN_KIND = "curlrl.pretrain/1"
# Agent checkpoints still carry it: before kinds existed it was their only mark.
CHECKPOINT_VERSION = 1
# Kinds once written under another name: the commit that moved pretraining into curlrl.jobs
# wrote its module path into the kind.
_KIND_ALIASES = {"curlrl.jobs.pretrain/1": PRETRAIN_KIND}
_KIND_WORDS = {TRAIN_KIND: "an agent training run", PRETRAIN_KIND: "an encoder pretraining run"}


def checkpoint_kind(state: Any, path: str | os.PathLike) -> str:
    """The kind of a loaded checkpoint (:data:`TRAIN_KIND` or :data:`PRETRAIN_KIND`);
    CheckpointError for anything else. An agent checkpoint written before kinds existed
    (``version`` 1, no kind) is of :data:`TRAIN_KIND`."""
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} is not a curlrl run checkpoint (not a mapping)")
    kind = state.get("kind")
    if kind is None:
        if state.get("version") == CHECKPOINT_VERSION and "agent" in state:
            return TRAIN_KIND
        version = state.get("version")
        why = "it names no kind" + ("" if version is None else f" and has version {version!r}")
        raise CheckpointError(f"checkpoint {path} is not a curlrl run checkpoint ({why})")
    kind = _KIND_ALIASES.get(kind, kind)
    if kind not in _KIND_WORDS:
        raise CheckpointError(f"checkpoint {path} is of kind {kind!r}, which this curlrl cannot read "
                              f"(written by another version?)")
    return kind


def _check_kind(state: Any, path: Path, kind: str) -> None:
    found = checkpoint_kind(state, path)
    if found != kind:
        raise CheckpointError(f"checkpoint {path} belongs to {_KIND_WORDS[found]}, not {_KIND_WORDS[kind]}")


_FOLDER = re.compile(r"step-\d+(\.\d+)?")


def _state_step(state: Any) -> int | None:
    """The step a checkpoint was written at: an agent run's env step, a pretraining run's update."""
    try:
        return int(state["counters"]["env_step"])
    except (KeyError, TypeError, ValueError):
        pass
    try:
        return int(state["step"])
    except (KeyError, TypeError, ValueError):
        return None


def _step_words(state: Any) -> str:
    """``env step N`` (agent runs) or ``update N`` (pretraining runs)."""
    step = _state_step(state)
    if step is None or not isinstance(state, dict):
        return "an unknown step"
    return f"env step {step}" if isinstance(state.get("counters"), dict) else f"update {step}"


def _folder_name(step: int | None, ckdir: Path) -> str:
    """``step-<step>`` (zero-padded), or ``step-<step>.<k>`` when that folder exists already
    (the same step saved twice: the current checkpoint cannot be renamed over)."""
    base = f"step-{0 if step is None else step:09d}"
    name, k = base, 0
    while (ckdir / name).exists():
        k += 1
        name = f"{base}.{k}"
    return name


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_error(exc: OSError, path: Path, kept: str | None) -> CheckpointError:
    """One line for a failed checkpoint write: the file, the cause and what is left current."""
    cause = exc.strerror or str(exc) or type(exc).__name__
    tail = "the new checkpoint is in place" if kept is None else kept
    return CheckpointError(f"cannot write checkpoint file {path}: {cause}; {tail}")


class RunDir:
    """Paths and readers/writers of one run directory (which need not exist yet)."""

    CONFIG = "config.yaml"
    TRAIN_CSV, EVAL_CSV, PRETRAIN_CSV = "train.csv", "eval.csv", "pretrain.csv"
    POINTER, STATE, REPLAY = "LATEST", "latest.pt", "replay.npz"

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def check_location(self) -> None:
        """ConfigError if the run directory cannot be one: it, or a folder above it, is an
        existing file (checked before a run writes anything)."""
        for p in (self.path, *self.path.parents):
            if p.exists() and not p.is_dir():
                what = "is an existing file" if p == self.path else f"is under {p}, an existing file"
                raise ConfigError(f"run directory {self.path} {what}, not a folder: choose another")
            if p.exists():
                return

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
    def pointer_path(self) -> Path:
        """``checkpoints/LATEST``: names the folder of the current checkpoint (its replacement is the commit)."""
        return self.checkpoint_dir / self.POINTER

    @property
    def current_checkpoint_dir(self) -> Path:
        """The folder of the current checkpoint: the one ``checkpoints/LATEST`` names, or, in a run
        directory written before checkpoints had folders (no pointer), ``checkpoints/`` itself.
        CheckpointError if the pointer cannot be read or names no checkpoint folder."""
        try:
            name = self.pointer_path.read_text().strip()
        except FileNotFoundError:
            return self.checkpoint_dir
        except (OSError, UnicodeDecodeError) as exc:
            why = getattr(exc, "strerror", None) or exc
            raise CheckpointError(f"cannot read {self.pointer_path} ({why})") from None
        if not _FOLDER.fullmatch(name):
            raise CheckpointError(f"{self.pointer_path} does not name a checkpoint folder ({name[:40]!r})")
        return self.checkpoint_dir / name

    @property
    def checkpoint_path(self) -> Path:
        """The state file of the current checkpoint (resolved through ``checkpoints/LATEST``)."""
        return self.current_checkpoint_dir / self.STATE

    @property
    def replay_path(self) -> Path:
        """The replay file of the current checkpoint (agent runs with ``save_replay=true``)."""
        return self.current_checkpoint_dir / self.REPLAY

    def csv_path(self, name: str) -> Path:
        return self.path / name

    def video_path(self, env_step: int, final: bool = False) -> Path:
        return self.path / "videos" / f"{'final_eval' if final else 'eval'}_{env_step:07d}.mp4"

    # -- config -------------------------------------------------------------------------
    def is_run(self) -> bool:
        return self.config_path.is_file()

    def read_config(self) -> dict[str, Any]:
        """The saved config as a dict; ConfigError if there is none, it is not YAML, or it lacks
        keys its run's checkpoint was written with (a truncated or cut file: resuming from it
        would silently fall back to defaults)."""
        from curlrl.jobs.config import load_yaml

        if not self.is_run():
            raise ConfigError(f"{self.path} is not a curlrl run directory (no {self.CONFIG})")
        data = load_yaml(self.config_path)
        if not isinstance(data, dict):
            raise ConfigError(f"{self.config_path} does not hold a mapping of config keys (truncated or corrupt?)")
        missing = [k for k in self._checkpoint_config_keys() if k not in data]
        if missing:
            shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
            raise ConfigError(f"{self.config_path} lacks {shown}, which its checkpoint was written with "
                              f"(truncated or cut?); restore the file or start a new run")
        return data

    def _checkpoint_config_keys(self) -> list[str]:
        """The config keys the current checkpoint was written with ([] without a checkpoint, or
        one that holds no config); CheckpointError for an unreadable checkpoint."""
        if not self.has_checkpoint():
            return []
        saved = self.load_checkpoint(mmap=True).get("config")
        try:
            keys = json.loads(saved) if isinstance(saved, str) else saved
        except ValueError:
            raise CheckpointError(f"checkpoint {self.checkpoint_path} holds a config that is not JSON") from None
        return list(keys) if isinstance(keys, dict) else []

    def write_config(self, cfg: Any) -> None:
        """Save a config dataclass (or dict) as YAML, atomically; creates the directory."""
        import yaml

        data = dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else dict(cfg)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.config_path, yaml.safe_dump(data, sort_keys=False))
        except OSError as exc:
            raise write_error(self.config_path, exc) from None

    # -- checkpoints --------------------------------------------------------------------
    def has_checkpoint(self) -> bool:
        return self.checkpoint_path.is_file()

    def save_checkpoint(self, state: dict[str, Any], replay: Any = None, step: int | None = None) -> Path:
        """Write one checkpoint as one atomic unit and return its folder.

        ``state`` goes to ``latest.pt`` and, when given, ``replay`` (a replay buffer, by its
        ``save``) to ``replay.npz``, both in a fresh ``checkpoints/.tmp-*`` folder; that folder is
        fsynced and renamed to ``checkpoints/step-<step>`` (``step``: by default the state's
        ``counters.env_step`` or ``step``), then ``checkpoints/LATEST`` is replaced to name it:
        that replacement is the commit. Older checkpoint folders (and the files of a run directory
        written before checkpoints had folders) are removed after it, as are the temp folders a
        crash left behind. Until the commit every reader sees the previous checkpoint, whole.

        A write that fails (no space, no permission, an I/O error) raises CheckpointError naming
        the file and the cause; its temp folder is removed and the previous checkpoint stays current.
        """
        ckdir = self.checkpoint_dir
        if step is None:
            step = _state_step(state)
        try:
            ckdir.mkdir(parents=True, exist_ok=True)
            self._remove_leftovers(keep=None)
            tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=ckdir))
        except OSError as exc:
            raise _write_error(exc, ckdir, self._kept()) from None
        final = ckdir / _folder_name(step, ckdir)
        committed, target = False, final / (self.REPLAY if replay is not None else self.STATE)
        try:  # ``target``: the file being written, by the name it will have (for the error line)
            if replay is not None:
                replay.save(tmp / self.REPLAY)
                self._checkpoint_stage("replay")
            target = final / self.STATE
            atomic_save(state, tmp / self.STATE)
            self._checkpoint_stage("state")
            _fsync_dir(tmp)
            target = final
            os.rename(tmp, final)
            _fsync_dir(ckdir)
            self._checkpoint_stage("rename")
            target = self.pointer_path
            atomic_write_text(self.pointer_path, final.name + "\n", fsync=True)
            committed = True
            self._checkpoint_stage("pointer")
            _fsync_dir(ckdir)
        except BaseException as exc:
            if not committed:
                for leftover in (tmp, final):
                    shutil.rmtree(leftover, ignore_errors=True)
                with contextlib.suppress(OSError):
                    (ckdir / f".{self.POINTER}.tmp").unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise _write_error(exc, target, None if committed else self._kept()) from None
            raise
        self._checkpoint_stage("cleanup")
        self._remove_leftovers(keep=final.name)
        return final

    def _checkpoint_stage(self, stage: str) -> None:
        """Called by :meth:`save_checkpoint` after each of its steps (``replay``, ``state``,
        ``rename``, ``pointer``, ``cleanup``); does nothing. Tests make it raise there."""

    def checkpoint_words(self) -> str:
        """The current checkpoint in words, for error lines: ``the checkpoint of env step 8000``
        (``... of update 500`` for a pretraining run), ``no checkpoint`` without one."""
        try:
            if not self.has_checkpoint():
                return "no checkpoint"
            return f"the checkpoint of {_step_words(self.load_checkpoint(mmap=True))}"
        except CheckpointError:
            return f"the checkpoint in {self.checkpoint_dir}"

    def _kept(self) -> str:
        """Words for the checkpoint a failed save leaves current."""
        words = self.checkpoint_words()
        return "no earlier checkpoint exists" if words == "no checkpoint" else f"{words} is kept"

    def _remove_leftovers(self, keep: str | None) -> None:
        """Remove temp folders; with ``keep`` (the folder just committed), also every other
        checkpoint folder and the files of the layout before folders. Best effort."""
        ckdir = self.checkpoint_dir
        legacy = {self.STATE, self.REPLAY, f".{self.STATE}.tmp", f"{self.REPLAY}.tmp"}
        try:
            entries = list(ckdir.iterdir())
        except OSError:
            return
        for entry in entries:
            name = entry.name
            if name.startswith(".tmp-") or (keep is not None and _FOLDER.fullmatch(name) and name != keep):
                shutil.rmtree(entry, ignore_errors=True)
            elif keep is not None and name in legacy:
                with contextlib.suppress(OSError):
                    entry.unlink()

    def load_checkpoint(self, map_location: Any = "cpu", mmap: bool = False, kind: str | None = None) -> dict[str, Any]:
        """The checkpoint's contents (weights-only load); CheckpointError if missing or corrupt,
        or, when ``kind`` is given, if it is of another kind (see :func:`checkpoint_kind`).

        A writer may commit a newer checkpoint (and remove this one) while this reads: then
        the newer one is read."""
        for attempt in range(3):
            path = self.checkpoint_path
            try:
                state = safe_load(path, map_location=map_location, mmap=mmap)
                break
            except CheckpointError:
                if attempt == 2 or self.checkpoint_path == path:
                    raise
        if kind is not None:
            _check_kind(state, path, kind)
        return state

    def checkpoint_kind(self) -> str | None:
        """The kind of this run's checkpoint (read without loading the weights); None without one."""
        if not self.has_checkpoint():
            return None
        return checkpoint_kind(self.load_checkpoint(mmap=True), self.checkpoint_path)

    def expect_kind(self, kind: str) -> None:
        """CheckpointError if this run has a checkpoint of another kind (say, a pretraining run
        where an agent run is expected); checked before its config is read as that kind's."""
        if self.has_checkpoint():
            _check_kind(self.load_checkpoint(mmap=True), self.checkpoint_path, kind)

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
        return read_rows(path) if path.is_file() else []

    def evals(self) -> dict[int, list[float]]:
        """Returns of every evaluation in eval.csv, by env step."""
        out: dict[int, list[float]] = {}
        try:
            for row in self.read_csv(self.EVAL_CSV):
                out.setdefault(int(row["env_step"]), []).append(float(row["return"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{self.csv_path(self.EVAL_CSV)} is not a curlrl eval.csv ({exc})") from None
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
        path = self.csv_path(name)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise write_error(path, exc) from None
        if keep is not None:
            try:
                truncate_csv(path, keep)
            except (KeyError, TypeError, ValueError, csv.Error, UnicodeDecodeError) as exc:
                raise CheckpointError(f"{path} is not a curlrl log ({type(exc).__name__}: {exc})") from None
        return CsvLog(path, columns)

    def tensorboard(self, purge_step: int | None = None) -> TensorBoard:
        """A SummaryWriter into the run directory (``purge_step`` on resume drops later events)
        whose failed writes are WriteError."""
        return TensorBoard(self.path, purge_step=purge_step)

    # -- agents (built by curlrl.jobs.train.load_agent) -------------------------------------
    def load_agent_state(self, agent: Any, state: dict[str, Any]) -> None:
        """Load the agent part of this run's checkpoint ``state`` into ``agent``; CheckpointError
        (naming the checkpoint) if its weights or optimizers do not fit the agent's config."""
        try:
            agent.load_state_dict(state["agent"])
        except (KeyError, RuntimeError, TypeError, ValueError) as exc:
            first = first_line(exc)
            raise CheckpointError(f"checkpoint {self.checkpoint_path} does not match its config ({first})") from None


