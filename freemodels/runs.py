"""The run lifecycle: where every run stands, which one a resume continues, and giving one up.

A run's status (:class:`~freemodels.records.RunStatus`) lives in its ``run.json`` and is mirrored in
the ``runs`` table at every change, so both list unfinished runs too::

    running ──► completed                 every step done (store, render, artifacts, alerts, commit)
       │  ├───► interrupted               SIGINT / SIGTERM; checkpoint flushed
       │  └───► failed (reason)           an error: disk full, network gone, a bad parameter, ...
       └──────► abandoned                 by the user (``discovery runs abandon RUN_ID``), from any
                                          status but completed; never resumed

A run whose ``run.json`` still says ``running`` while the process it names is gone was killed (SIGKILL,
power loss): it is shown and resumed as ``interrupted``. A run that is ``running`` in a live process
cannot be resumed or abandoned.

Which run ``--resume`` continues (:func:`pick_run_to_resume`):

* with a run id: that run, when it is interrupted, failed, or completed with models the daily quota
  left untested;
* without one: the newest run that is interrupted, or completed with untested models while no later
  run of the same source completed. A failed run is only resumed by its id: its failure may need a
  fix first.

:class:`RunRecorder` writes every transition (``run.json`` first, then the database row).
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from freemodels import storage
from freemodels.errors import ConfigError, RunNotFoundError, StorageError, environment_error
from freemodels.records import RunInfo, RunStatus, RunStep
from freemodels.secrets import untrusted

RESUMABLE = frozenset({RunStatus.INTERRUPTED, RunStatus.FAILED})
RESERVE_FILE = ".space-reserve"
RESERVE_BYTES = 1024 * 1024
"""Disk space a running run keeps in its folder, given back when the disk fills up: enough to flush
the answers still in memory and to record why the run stopped."""
KILLED_REASON = "the process working on it ended without recording why (killed?)"


# --- the process that owns a running run -------------------------------------------------------


def process_started(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, from /proc), or None if unknown/gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    try:
        # The command name (field 2) may hold spaces and parentheses; fields after the last ")".
        return int(stat[stat.rindex(")") + 2 :].split()[19])
    except (ValueError, IndexError):
        return None


def this_process() -> tuple[int, str, int | None]:
    """(pid, host, start time) of this process, recorded as the owner of a running run."""
    pid = os.getpid()
    return pid, socket.gethostname(), process_started(pid)


def owner_alive(info: RunInfo) -> bool:
    """Whether the process recorded as working on ``info`` still runs (on this host).

    A run recorded on another host is taken to be alive: this machine cannot tell.
    """
    if info.owner_pid is None:
        return False
    if info.owner_host not in (None, socket.gethostname()):
        return True
    started = process_started(info.owner_pid)
    if started is not None:
        return info.owner_started is None or started == info.owner_started
    try:
        os.kill(info.owner_pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return info.owner_started is None


# --- where a run stands -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunView:
    """A run as the listing shows it: its record and its effective status."""

    info: RunInfo
    status: RunStatus
    reason: str | None

    @property
    def run_id(self) -> str:
        return self.info.run_id

    @property
    def untested(self) -> int:
        return self.info.untested_models or 0

    def continuable(self) -> bool:
        """Completed, but with models the daily quota left untested or with part of the suite."""
        return self.status is RunStatus.COMPLETED and self.untested > 0


def view(info: RunInfo) -> RunView:
    """The effective status of a run: a ``running`` run whose process is gone is ``interrupted``."""
    try:
        status = RunStatus(info.status)
    except ValueError:
        return RunView(info, RunStatus.FAILED, f"unknown status {info.status!r} in run.json")
    if status is RunStatus.RUNNING and not owner_alive(info):
        return RunView(info, RunStatus.INTERRUPTED, KILLED_REASON)
    return RunView(info, status, info.status_reason)


def all_runs(runs_dir: Path) -> list[RunView]:
    """Every run with a folder under ``runs_dir``, oldest first."""
    views = [view(storage.read_run_info(folder)) for folder in storage.run_folders(runs_dir)]
    return sorted(views, key=lambda v: (v.info.started_at, v.run_id))


def find_run(runs_dir: Path, run_id: str) -> RunView:
    """One run by id; :class:`RunNotFoundError` when there is none."""
    folder = storage.run_dir(runs_dir, run_id)
    if not (folder / storage.RUN_INFO_FILE).is_file():
        raise RunNotFoundError(f"no run {run_id} in {runs_dir}; `discovery runs` lists them")
    return view(storage.read_run_info(folder))


def _why_not(run: RunView) -> str | None:
    """Why ``run`` cannot be resumed, or None when it can."""
    if run.status in RESUMABLE or run.continuable():
        return None
    if run.status is RunStatus.RUNNING:
        return f"run {run.run_id} is still running (process {run.info.owner_pid} on {run.info.owner_host})"
    if run.status is RunStatus.ABANDONED:
        return f"run {run.run_id} was abandoned; start a new run instead"
    return f"run {run.run_id} is completed with every model tested; nothing to resume"


def default_resume_candidates(runs: Iterable[RunView]) -> list[RunView]:
    """The runs a plain ``--resume`` may continue, newest first (see the module docstring)."""
    ordered = sorted(runs, key=lambda v: (v.info.started_at, v.run_id), reverse=True)
    newest_completed: dict[str, datetime] = {}
    for run in ordered:
        if run.status is RunStatus.COMPLETED:
            newest_completed.setdefault(run.info.source, run.info.started_at)
    picked = []
    for run in ordered:
        if run.status is RunStatus.INTERRUPTED or (
            run.continuable() and newest_completed.get(run.info.source) == run.info.started_at
        ):
            picked.append(run)
    return picked


def pick_run_to_resume(runs_dir: Path, requested: str) -> RunView:
    """The run ``--resume`` continues: ``requested`` is a run id or ``latest`` (the newest one)."""
    if requested != "latest":
        run = find_run(runs_dir, requested)
        reason = _why_not(run)
        if reason is not None:
            raise ConfigError(reason)
        return run
    candidates = default_resume_candidates(all_runs(runs_dir))
    if not candidates:
        raise RunNotFoundError(
            f"no unfinished run to resume in {runs_dir}; `discovery runs` lists every run "
            "(a failed run is resumed by its id: discovery run --resume RUN_ID)"
        )
    return candidates[0]


# --- recording transitions ----------------------------------------------------------------------


class RunRecorder:
    """Writes a run's lifecycle: ``run.json`` first, then the ``runs`` row in the database.

    ``run.json`` is the record a resume reads, so it is always written; the database row mirrors it.
    When the database itself is the problem (locked, damaged, disk full), the mirror is skipped at
    the end of a run that already failed, and ``discovery runs`` still shows the run from its folder.
    """

    def __init__(self, folder: Path, info: RunInfo, database: Path) -> None:
        self.folder = folder
        self.info = info
        self.database = database

    @property
    def run_id(self) -> str:
        return self.info.run_id

    def done(self, step: RunStep) -> bool:
        return step.value in self.info.steps_done

    def save(self, *, mirror: bool = True, **changes: Any) -> RunInfo:
        """Apply ``changes`` to the record and write it."""
        self.info = replace(self.info, **changes)
        try:
            storage.write_run_info(self.folder, self.info)
        except OSError as exc:
            raise environment_error(exc, self.folder / storage.RUN_INFO_FILE) from exc
        if mirror:
            self.mirror()
        return self.info

    def mirror(self) -> None:
        """Copy the record into the ``runs`` table."""
        con = storage.connect(self.database)
        try:
            storage.put_run_row(con, self.info)
        finally:
            con.close()

    def begin(self) -> RunInfo:
        """Mark the run ``running`` in this process (and set aside its disk reserve)."""
        pid, host, started = this_process()
        self._reserve_space()
        return self.save(
            status=RunStatus.RUNNING.value,
            status_reason=None,
            finished_at=None,
            owner_pid=pid,
            owner_host=host,
            owner_started=started,
        )

    def _reserve_space(self) -> None:
        reserve = self.folder / RESERVE_FILE
        if reserve.is_file():
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with reserve.open("wb") as handle:
                handle.truncate(0)
                handle.write(b"\0" * RESERVE_BYTES)  # written, not sparse: the space is really taken
        except OSError as exc:
            reserve.unlink(missing_ok=True)
            raise environment_error(exc, self.folder) from exc

    def release_reserve(self) -> bool:
        """Give the run's disk reserve back (the disk is full); True when there was one to give."""
        reserve = self.folder / RESERVE_FILE
        try:
            reserve.unlink()
        except FileNotFoundError:
            return False
        except OSError:
            return False
        return True

    def step_done(self, step: RunStep) -> RunInfo:
        steps = [s for s in self.info.steps_done if s != step.value] + [step.value]
        return self.save(steps_done=steps)

    def restart_steps(self, *keep: RunStep) -> RunInfo:
        """Forget every step but ``keep`` (a continued run does the later steps again)."""
        kept = [s for s in self.info.steps_done if s in {k.value for k in keep}]
        return self.save(steps_done=kept, mirror=False)

    def end(self, status: RunStatus, reason: str | None = None) -> RunInfo:
        """Record the end of this process's work on the run; never hides the error that ended it.

        The reason passes the redaction point: it often quotes what a server said."""
        changes: dict[str, Any] = {
            "status": status.value,
            "status_reason": untrusted(reason) if reason is not None else None,
            "owner_pid": None,
            "owner_host": None,
            "owner_started": None,
        }
        self.release_reserve()
        if status is RunStatus.COMPLETED:
            changes["finished_at"] = datetime.now(UTC)
            return self.save(**changes)
        try:
            self.save(mirror=False, **changes)
        except StorageError:
            # The record cannot be written (the disk is full even after the reserve): the run will
            # show as interrupted (its process gone), and it resumes all the same.
            self.info = replace(self.info, **changes)
            return self.info
        with contextlib.suppress(StorageError, OSError):
            self.mirror()
        return self.info


def abandon(runs_dir: Path, database: Path, run_id: str, *, now: datetime | None = None) -> RunInfo:
    """Mark a run ``abandoned``: it is never resumed. A completed or live running run is refused."""
    run = find_run(runs_dir, run_id)
    if run.status is RunStatus.COMPLETED:
        raise ConfigError(f"run {run_id} is completed; only unfinished runs can be abandoned")
    if run.status is RunStatus.RUNNING:
        raise ConfigError(
            f"run {run_id} is running (process {run.info.owner_pid}); stop it first (Ctrl-C), then abandon it"
        )
    if run.status is RunStatus.ABANDONED:
        return run.info
    recorder = RunRecorder(storage.run_dir(runs_dir, run_id), run.info, database)
    stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M UTC")
    previous = run.status.value + (f": {run.reason}" if run.reason else "")
    recorder.save(
        mirror=False,
        status=RunStatus.ABANDONED.value,
        status_reason=f"abandoned on {stamp} (was {previous})",
        owner_pid=None,
        owner_host=None,
        owner_started=None,
    )
    recorder.mirror()
    return recorder.info
