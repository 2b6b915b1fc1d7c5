"""A run's logs and videos: the CSV files (read by header, appended row by row, trimmed to a
checkpoint on resume), TensorBoard and the evaluation videos.

Every write that fails (no space, a read-only volume, the file size limit, no permission)
raises :class:`~curlrl.errors.WriteError` naming the file and the cause -- whatever type the
layer below raised it as -- so the CLI reports it on one line and the run's checkpoint stays
as it was.
"""
from __future__ import annotations

import csv
import os
import threading
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from curlrl.checkpoint import atomic_file
from curlrl.errors import CheckpointError, WriteError, write_error


class CsvLog:
    """Append-only long-format CSV with a fixed header; each row flushed at once.

    A new file gets ``columns``; rows appended to an existing one follow the header it
    already has (its columns may be in another order; columns it lacks are left out)."""

    def __init__(self, path: Path, columns: list[str]) -> None:
        new = not path.exists() or path.stat().st_size == 0
        if not new:
            with open(path, newline="") as fh:
                header = next(csv.reader(fh), None)
            columns = header if header else columns
        self.path, self.columns = path, list(columns)
        try:
            self._fh = open(path, "a", newline="")
            self._writer = csv.DictWriter(self._fh, fieldnames=columns, extrasaction="ignore")
            if new:
                self._writer.writeheader()
                self._fh.flush()
        except OSError as exc:
            raise write_error(path, exc) from None

    def write(self, row: dict[str, Any]) -> None:
        try:
            self._writer.writerow({k: _fmt(row.get(k, "")) for k in self.columns})
            self._fh.flush()
        except OSError as exc:
            raise write_error(self.path, exc) from None

    def close(self) -> None:
        try:
            self._fh.close()
        except OSError:  # a row that could not be flushed has already raised WriteError
            pass


def _fmt(v: Any) -> Any:
    return f"{v:.6g}" if isinstance(v, float) else v


def read_rows(path: str | os.PathLike) -> list[dict[str, str]]:
    """All rows of a CSV file, keyed by its header; CheckpointError if it cannot be read."""
    try:
        with open(path, newline="") as fh:
            return list(csv.DictReader(fh))
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (csv.Error, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not a readable CSV file ({exc})") from None


def truncate_csv(path: Path, keep: Callable[[dict[str, str]], bool]) -> None:
    """Keep only rows for which ``keep(row)`` is true (used on resume); atomic rewrite."""
    if not path.exists():
        return
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        columns, rows = reader.fieldnames, [r for r in reader if keep(r)]
    if columns is None:
        return
    try:
        with atomic_file(path, "w", fsync=False, newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
    except OSError as exc:
        raise write_error(path, exc) from None


def write_video(path: Path, frames: Iterable[np.ndarray], fps: int = 30) -> None:
    """Write (H, W, 3) uint8 frames to an mp4 with imageio-ffmpeg, atomically; WriteError if
    it cannot be written whole.

    ffmpeg runs as a child process and does not report a failed write (a full disk, the file
    size limit) to imageio: the file is checked to be a whole MP4 before it is renamed."""
    import imageio.v2 as imageio

    tmp = path.with_name(f".{path.stem}.tmp.mp4")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # quiet: ffmpeg's own messages would go to the run's stderr; failures are found below
        imageio.mimwrite(tmp, list(frames), fps=fps, macro_block_size=1, quality=7, ffmpeg_log_level="quiet")
        if not mp4_is_whole(tmp):
            raise WriteError(f"cannot write {path}: the video came out cut short (no space left, or the "
                             f"file size limit)")
        os.replace(tmp, path)
    except Exception as exc:  # noqa: BLE001 (OSError, BrokenPipeError or imageio's own, by when it hits)
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise exc if isinstance(exc, WriteError) else write_error(path, exc) from None


def mp4_is_whole(path: Path) -> bool:
    """Whether the file is a sequence of whole MP4 boxes, ``mdat`` and ``moov`` among them
    (a write cut short ends inside a box, and ffmpeg writes ``moov`` last)."""
    size, pos, kinds = path.stat().st_size, 0, set()
    with open(path, "rb") as fh:
        while pos < size:
            fh.seek(pos)
            head = fh.read(8)
            if len(head) < 8:
                return False
            n, kind = int.from_bytes(head[:4], "big"), head[4:]
            if n == 1:  # a 64-bit size follows the type
                n = int.from_bytes(fh.read(8), "big")
            elif n == 0:  # the box runs to the end of the file
                n = size - pos
            if n < 8 or pos + n > size:
                return False
            kinds.add(kind)
            pos += n
    return {b"mdat", b"moov"} <= kinds


def _quiet_tensorboard_thread_errors() -> None:
    """TensorBoard's writer thread stores its error for the writing thread to re-raise at its
    next call, and also lets it end the thread, which Python reports as a traceback on stderr.
    This drops that report (only for errors the writer stored): the re-raised one is the
    run's one line."""
    previous = threading.excepthook
    if getattr(previous, "curlrl_tensorboard", False):
        return

    def hook(args) -> None:
        thread = args.thread
        if type(thread).__name__ == "_AsyncWriterThread" and getattr(thread, "exception", None) is args.exc_value:
            return
        previous(args)

    hook.curlrl_tensorboard = True
    threading.excepthook = hook


class TensorBoard:
    """A ``SummaryWriter`` whose failures are :class:`WriteError`: TensorBoard writes its events
    file from a thread and re-raises that thread's error (an ``OSError``, or another type) at
    the next call, which this turns into one line naming the run's events file."""

    def __init__(self, log_dir: Path, purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(log_dir)
        _quiet_tensorboard_thread_errors()
        try:
            self._writer = SummaryWriter(str(log_dir), purge_step=purge_step)
        except Exception as exc:  # noqa: BLE001 (whatever the writer raises, it is a failed write)
            raise write_error(self._events(), exc) from None

    def _events(self) -> str:
        files = sorted(self.log_dir.glob("events.out.tfevents.*"))
        return str(files[-1]) if files else str(self.log_dir / "events.out.tfevents.*")

    def _call(self, name: str, *args, **kwargs):
        try:
            return getattr(self._writer, name)(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001
            raise write_error(self._events(), exc) from None

    def add_scalar(self, *args, **kwargs) -> None:
        self._call("add_scalar", *args, **kwargs)

    def flush(self) -> None:
        self._call("flush")

    def close(self) -> None:
        self._call("close")
