"""Append probe results to the run folder while probing, so a killed run loses (almost) nothing.

Results are buffered and flushed as one Parquet part when the buffer holds ``batch`` results or
``interval_s`` seconds have passed since the last flush, and always on close. Each part is written
atomically (see :func:`freemodels.runfolder.append_probe_checkpoint`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import polars as pl

from freemodels.errors import StorageError, environment_error
from freemodels.records import ProbeResult
from freemodels.storage import runfolder

DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


class CheckpointWriter:
    """Buffered, atomic checkpointing of :class:`ProbeResult` rows into ``run_dir/probes/``.

    ``source`` (a source kind) is stamped on every result that does not name one, so each stored probe
    says which source answered it. A write that fails (disk full, permission denied) keeps the
    results in the buffer and raises :class:`~freemodels.errors.StorageError` naming the folder and the
    cause; the next flush tries them again. When the disk is full, ``on_disk_full`` is asked for room
    first (the run gives back its disk reserve), the results are written with that room, and the
    error is raised all the same: the run stops before it fills the disk again. Leaving the block
    flushes once more, and when the block ends by an exception a failing flush does not hide it.
    """

    def __init__(
        self,
        run_dir: Path,
        *,
        batch: int = 25,
        interval_s: float = 1.0,
        source: str | None = None,
        on_disk_full: Callable[[], bool] | None = None,
    ) -> None:
        self.run_dir = run_dir
        self.on_disk_full = on_disk_full
        self.batch = batch
        self.interval_s = interval_s
        self.source = source
        self._buffer: list[ProbeResult] = []
        self._last_flush = time.monotonic()
        self.written = 0

    @property
    def pending(self) -> int:
        """Results held in memory, not yet on disk."""
        return len(self._buffer)

    def add(self, result: ProbeResult) -> None:
        if self.source is not None and result.source is None:
            result = dataclasses.replace(result, source=self.source)
        self._buffer.append(result)
        if len(self._buffer) >= self.batch or time.monotonic() - self._last_flush >= self.interval_s:
            self.flush()

    def flush(self) -> None:
        if self._buffer:
            folder = self.run_dir / runfolder.CHECKPOINT_DIR
            try:
                self._write()
            except OSError as exc:
                if exc.errno in DISK_FULL and self.on_disk_full is not None and self.on_disk_full():
                    # Room was given back: save what is in memory, then stop all the same (the disk
                    # is still full for everything that would follow).
                    with contextlib.suppress(OSError, pl.exceptions.PolarsError):
                        self._write()
                raise environment_error(exc, folder) from exc
            except pl.exceptions.PolarsError as exc:
                raise StorageError(f"cannot write the probe checkpoint in {folder}: {exc}") from exc
        self._last_flush = time.monotonic()

    def _write(self) -> None:
        runfolder.append_probe_checkpoint(self.run_dir, self._buffer)
        self.written += len(self._buffer)
        self._buffer = []

    def __enter__(self) -> CheckpointWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.flush()
            return
        # The block's own exception says what went wrong; results that cannot be written stay unwritten.
        with contextlib.suppress(StorageError):
            self.flush()
