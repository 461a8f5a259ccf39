"""How a run ends: the one place that turns what stopped it into its recorded status.

:func:`guarded` wraps the parts of a run that come after it is recorded. Whatever ends them is
written to the run's record before it goes on up:

* ``CancelledError`` (SIGINT, SIGTERM, a cancelled flow run): ``interrupted``; the run id rides on the
  exception so the caller can print :func:`interrupted_line`;
* a :class:`~freemodels.errors.DiscoveryError` (a bad parameter, an unreachable source, a damaged
  database): ``failed`` with its one-line message, raised again as :class:`~freemodels.errors.RunFailed`;
* an ``OSError`` of the machine (disk full, permission denied): ``failed`` with one line naming the
  cause and the path (:func:`~freemodels.errors.environment_error`);
* anything else is a defect of this program: ``failed`` as an internal error, raised unchanged so its
  traceback is kept.

:func:`quiet_expected_errors` keeps Prefect from printing a traceback for the errors above: they are
said in one line; ``--debug`` (``DISCOVERY_DEBUG=1``) shows them in full.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

from freemodels.errors import DiscoveryError, RunFailed, environment_error
from freemodels.records import RunStatus
from freemodels.runs import RunRecorder
from freemodels.settings import debug_requested


def interrupted_line(run_id: str | None) -> str:
    """The one line an interrupted run prints."""
    if run_id is None:
        return "interrupted before the run started: nothing was recorded or sent"
    return f"interrupted: resume with discovery run --resume {run_id}"


def resume_hint(run_id: str) -> str:
    return f"run {run_id} failed; after fixing it, resume with discovery run --resume {run_id}"


@asynccontextmanager
async def guarded(
    recorder: RunRecorder, logger: logging.Logger | logging.LoggerAdapter[logging.Logger]
) -> AsyncIterator[None]:
    """Record how the block ends (see the module docstring)."""
    try:
        yield
    except asyncio.CancelledError as exc:
        recorder.end(RunStatus.INTERRUPTED, "interrupted (SIGINT, SIGTERM or a cancelled flow run)")
        exc.run_id = recorder.run_id  # type: ignore[attr-defined]
        logger.warning("%s", interrupted_line(recorder.run_id))
        raise
    except RunFailed:
        raise
    except DiscoveryError as exc:
        recorder.end(RunStatus.FAILED, str(exc))
        raise RunFailed(str(exc), run_id=recorder.run_id) from exc
    except OSError as exc:
        problem = environment_error(exc)
        recorder.end(RunStatus.FAILED, str(problem))
        raise RunFailed(str(problem), run_id=recorder.run_id) from exc
    except Exception as exc:
        recorder.end(RunStatus.FAILED, f"internal error: {type(exc).__name__}")
        raise


@contextlib.contextmanager
def sigterm_cancels_this_task() -> Iterator[None]:
    """SIGTERM cancels the current task, as SIGINT does under ``asyncio.run``, for the block.

    Inside a flow run Prefect's engine turns SIGTERM into an exception raised wherever the main thread
    happens to be (often outside any step); a cancellation instead reaches the run where it waits,
    so it ends as ``interrupted`` with its checkpoint flushed. Prefect's handler is put back after.
    Outside the main thread (no signals there) this does nothing.
    """
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    if task is None:
        yield
        return
    try:
        previous = signal.getsignal(signal.SIGTERM)
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
    except (ValueError, RuntimeError, NotImplementedError):
        yield
        return
    try:
        yield
    finally:
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
            loop.remove_signal_handler(signal.SIGTERM)
            signal.signal(signal.SIGTERM, previous)


class _QuietExpected(logging.Filter):
    """Drops the traceback from log records about errors that are said in one line anyway, and the
    per-task "Cancelled" lines of an interrupted run (the run's own line says it once)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "prefect.task_runs" and str(record.msg).startswith("Finished in state Cancelled"):
            return False
        info = record.exc_info
        if info and info[1] is not None and isinstance(info[1], DiscoveryError | asyncio.CancelledError):
            record.exc_info = None
            record.exc_text = None
        return True


class _QuietDrain(logging.Filter):
    """Drops Prefect's "Still processing items: N items remaining..." progress lines, logged every 4 s
    while its log and event workers drain at the end of a run: this program's own shutdown, not news
    for the user (a full queue that drops items is still said)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Still processing items")


_FILTER = _QuietExpected()
_DRAIN_FILTER = _QuietDrain()
_LOGGERS = ("prefect", "prefect.flow_runs", "prefect.task_runs", "prefect.engine")
_WORKER_LOGGERS = ("EventsWorker", "APILogWorker")  # Prefect's services log under their class name


def quiet_expected_errors() -> None:
    """Install the filter on Prefect's run loggers and handlers (once; not with ``--debug``)."""
    if debug_requested():
        return
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
        for handler in logger.handlers:
            if _FILTER not in handler.filters:
                handler.addFilter(_FILTER)
    for name in _WORKER_LOGGERS:
        logger = logging.getLogger(name)
        if _DRAIN_FILTER not in logger.filters:
            logger.addFilter(_DRAIN_FILTER)
