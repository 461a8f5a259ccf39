"""Append probe results to the run folder while probing, so a killed run loses (almost) nothing.

Results are buffered and flushed as one Parquet part when the buffer holds ``batch`` results or
``interval_s`` seconds have passed since the last flush, and always on close. Each part is written
atomically (see :func:`freemodels.runfolder.append_probe_checkpoint`).
"""

from __future__ import annotations

import time
from pathlib import Path
from types import TracebackType

from freemodels.records import ProbeResult
from freemodels.storage import runfolder


class CheckpointWriter:
    """Buffered, atomic checkpointing of :class:`ProbeResult` rows into ``run_dir/probes/``."""

    def __init__(self, run_dir: Path, *, batch: int = 25, interval_s: float = 1.0) -> None:
        self.run_dir = run_dir
        self.batch = batch
        self.interval_s = interval_s
        self._buffer: list[ProbeResult] = []
        self._last_flush = time.monotonic()
        self.written = 0

    def add(self, result: ProbeResult) -> None:
        self._buffer.append(result)
        if len(self._buffer) >= self.batch or time.monotonic() - self._last_flush >= self.interval_s:
            self.flush()

    def flush(self) -> None:
        if self._buffer:
            runfolder.append_probe_checkpoint(self.run_dir, self._buffer)
            self.written += len(self._buffer)
            self._buffer = []
        self._last_flush = time.monotonic()

    def __enter__(self) -> CheckpointWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.flush()
