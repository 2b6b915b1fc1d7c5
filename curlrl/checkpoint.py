"""Atomic checkpoint writes and safe (weights-only) loads.

torch is imported by the functions that need it, so the atomic text write serves the
pure-numpy dataset format too.
"""
from __future__ import annotations

import contextlib
import errno
import os
import pickle
import zipfile
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Iterator

from curlrl.errors import CheckpointError, first_line

if TYPE_CHECKING:
    import torch


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temp file in the same folder, fsync, then rename over ``path``.

    A crash at any point leaves either the old file or the new one, never half of one.
    Only tensors and plain containers should be saved: loading uses ``weights_only``.
    """
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path, "wb", fsync=True) as fh:
        try:
            torch.save(obj, fh)
        except RuntimeError as exc:  # torch's zip writer reports a failed write (ENOSPC, EFBIG) this way
            raise _failed_write(exc, path, Path(fh.name)) from None


def _failed_write(exc: RuntimeError, path: Path, tmp: Path) -> OSError:
    """The OSError behind a RuntimeError that ``torch.save`` raised while writing ``path``.

    torch's zip writer turns the kernel's error into "PytorchStreamWriter failed writing
    file ..." or "[enforce fail at inline_container.cc] . unexpected pos ..."; the errno is
    lost, so it is recovered where it can be (a full disk; a file at the process's file-size
    limit), and the message names what torch said otherwise."""
    with contextlib.suppress(OSError, ImportError, ValueError):
        import resource

        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if limit != resource.RLIM_INFINITY and tmp.stat().st_size >= limit - (64 << 10):
            return OSError(errno.EFBIG, f"{os.strerror(errno.EFBIG)} (the process's file-size limit is {limit} "
                                        f"bytes)", str(path))
    with contextlib.suppress(OSError):
        st = os.statvfs(path.parent)
        if st.f_bavail * st.f_frsize < 1 << 20:
            return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0].strip()
    return OSError(errno.EIO, f"the write failed (disk full, a file-size limit or an I/O error: torch said "
                              f"{first[:160]!r})", str(path))


def atomic_write_text(path: str | os.PathLike, text: str, fsync: bool = False) -> None:
    """Write ``text`` to a hidden temp file beside ``path``, then rename over it
    (``fsync``: flush the temp file to disk before the rename)."""
    with atomic_file(path, "w", fsync=fsync) as fh:
        fh.write(text)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "wb", fsync: bool = True,
                newline: str | None = None) -> Iterator[IO]:
    """An open hidden temp file beside ``path`` (``.NAME.tmp``) that replaces ``path`` when the
    block ends (flushed and, with ``fsync``, synced first); on any error the temp file is
    removed and the error goes on, ``path`` untouched. ``newline``: as :func:`open`'s (text modes)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, mode, newline=newline) as fh:
            yield fh
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise


def safe_load(path: str | os.PathLike, map_location: str | torch.device = "cpu", mmap: bool = False) -> Any:
    """``torch.load(weights_only=True)``; any failure becomes one clear CheckpointError.

    ``mmap=True`` maps the tensor data instead of reading it: callers that only look at
    small entries (a run's counters) then read little of a large checkpoint.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, pickle.UnpicklingError) as exc:
        raise CheckpointError(f"checkpoint {path} is corrupt or not a curlrl checkpoint ({first_line(exc)})") from None
