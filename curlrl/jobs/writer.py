"""The skeleton every job that writes a run directory shares (``Trainer``, ``Pretrainer``)."""
from __future__ import annotations

import contextlib
import os
import time
from typing import Any, Callable, Iterator

import torch

from curlrl.errors import CheckpointError
from curlrl.jobs.logs import CsvLog
from curlrl.jobs.rundir import RunDir


class RunWriter:
    """What every job that writes a run directory shares (``Trainer``, ``Pretrainer``).

    ``__init__`` sets torch's CPU threads (``cfg.threads``; 0 keeps torch's default) and
    resolves ``cfg.device``; it touches no file, so a mistake found while the job builds
    its parts leaves no run directory behind. Then, in order: :meth:`check_resumable` and
    the job's own checkpoint load (resume), :meth:`open_files` (config.yaml, the CSV logs
    trimmed to the checkpoint, TensorBoard, advice), :meth:`running` around the loop,
    ``rundir.save_checkpoint`` (one call per checkpoint: state and replay together),
    :meth:`close` (or use the job as a context manager). Wall time across resumes: :meth:`wall`.
    """

    def __init__(self, cfg: Any, run_dir: str | os.PathLike, quiet: bool = False) -> None:
        from curlrl.jobs.host import resolve_device

        self.cfg, self.quiet = cfg, quiet
        self.rundir = RunDir(run_dir)
        self.rundir.check_location()
        self.run_dir = self.rundir.path
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.device = resolve_device(cfg.device)
        self.wall_offset = 0.0      # wall seconds of the run before this process (from the checkpoint)
        self.t_start = time.time()  # reset by running(); wall() = wall_offset + time since then
        self.tb = None
        self._logs: list[CsvLog] = []

    def check_resumable(self) -> None:
        """CheckpointError unless the run directory holds a checkpoint to resume from."""
        if not self.rundir.has_checkpoint():
            raise CheckpointError(f"cannot resume: no checkpoint at {self.rundir.checkpoint_path} (a run that "
                                  f"stopped before its first checkpoint cannot continue; remove {self.run_dir} "
                                  f"to start over)")

    def open_files(self, logs: list[tuple[str, list[str], Callable[[dict[str, str]], bool]]],
                   resume_step: int | None = None) -> list[CsvLog]:
        """Write config.yaml, open the CSV ``logs`` (name, columns, keep) and TensorBoard.

        ``resume_step`` (on resume): each log first drops the rows its ``keep`` rejects (they
        were written after the checkpoint and will be written again) and TensorBoard drops the
        events after that step. Ends with the busy-CPU advice, once nothing can fail."""
        resume = resume_step is not None
        self.rundir.write_config(self.cfg)
        self._logs = [self.rundir.open_log(name, columns, keep if resume else None) for name, columns, keep in logs]
        self.tb = self.rundir.tensorboard(purge_step=resume_step)
        if self.device.type == "cpu" and not self.quiet and not self.cfg.threads:
            from curlrl.jobs import host

            host.warn_if_cpu_busy()
        return self._logs

    def wall(self) -> float:
        """Wall seconds of the whole run, earlier processes included."""
        return self.wall_offset + time.time() - self.t_start

    @contextlib.contextmanager
    def running(self, total: int, unit: str, initial: int = 0) -> Iterator[Any]:
        """Start the clock and yield a progress bar; on leaving, close it and flush TensorBoard."""
        from curlrl.jobs.progress import progress_bar

        self.t_start = time.time()
        bar = progress_bar(total, unit, self.quiet, initial=initial)
        try:
            yield bar
        finally:
            bar.close()
            if self.tb is not None:
                self.tb.flush()

    def close(self) -> None:
        for log in self._logs:
            log.close()
        if self.tb is not None:
            self.tb.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
