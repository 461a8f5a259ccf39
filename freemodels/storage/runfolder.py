"""The run folder on disk: one folder per run, every file written atomically.

Layout::

    <runs_dir>/<run_id>/
        run.json                     the RunInfo as JSON, rewritten as the run progresses
        catalog.parquet              the parsed catalog (CATALOG_SCHEMA; no run_id column)
        probes/part-000001.parquet   append-only checkpoint parts written while probing
        probes.parquet               every probe attempt (PROBES_SCHEMA), written when probing ends
        model_results.parquet        MODEL_RESULTS_SCHEMA
        rotation.parquet             ROTATION_SCHEMA
        changes.parquet              CHANGES_SCHEMA
        endpoints.parquet            ENDPOINTS_SCHEMA: the free models' endpoints listings
        candidates.json              candidate ids given with the run (kept for a resume)

Atomic writes: a file is written to a hidden temporary name in the same folder
(``.<name>.<pid>.<random>.tmp``), flushed and fsynced, then renamed over the final name
(``Path.replace``) and the folder is fsynced. A process killed at any moment leaves either the old file
or the new one, plus at most a temporary file that no reader looks at. Checkpoint parts are never
overwritten: a part takes the next free sequence number with ``os.link``, which fails instead of
replacing, so two writers (threads or processes) cannot clobber each other's part.

``run.json`` carries the run's lifecycle: its status (:class:`~freemodels.records.RunStatus`), the
steps already done (:class:`~freemodels.records.RunStep`) and, while it runs, the process working on
it. :mod:`freemodels.runs` decides from these which runs can be resumed.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import shutil
import threading
from collections.abc import Callable, Iterable
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import polars as pl

from freemodels.errors import RunNotFoundError, StorageError
from freemodels.failures import FAILURE_INFO, Failure
from freemodels.records import (
    ADDED_COLUMNS,
    PROBES_SCHEMA,
    ProbeResult,
    RunInfo,
    empty_frame,
    probes_frame,
)

RUN_INFO_FILE = "run.json"
CANDIDATES_FILE = "candidates.json"
CHECKPOINT_DIR = "probes"

# Parquet file of each table in a run folder; the ``runs`` row comes from run.json.
TABLE_FILES: dict[str, str] = {
    "catalog": "catalog.parquet",
    "probes": "probes.parquet",
    "model_results": "model_results.parquet",
    "rotation": "rotation.parquet",
    "changes": "changes.parquet",
    "endpoints": "endpoints.parquet",
    "drill": "drill.parquet",
}

# Written by earlier versions: a completed run whose quota left models untested.
_LEGACY_STATUSES = {"partial": "completed"}

ProbeKey = tuple[str, str, int]  # (model_id, task, sample)
PROBE_KEY_COLUMNS = ("model_id", "task", "sample")
ATTEMPT_KEY_COLUMNS = (*PROBE_KEY_COLUMNS, "attempt")

_RUN_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_PART_RE = re.compile(r"part-(\d+)\.parquet")
_NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EXDEV}
# One lock per process for picking the next part number; os.link guards across processes.
_PART_LOCK = threading.Lock()

_DATETIME_FIELDS = frozenset({"started_at", "finished_at", "catalog_fetched_at"})
_INT_FIELDS = frozenset(
    {"quota_before", "quota_after", "quota_limit", "untested_models", "owner_pid", "owner_started"}
)
_REQUIRED_FIELDS = frozenset({"run_id", "started_at", "source", "base_url"})
_OPTIONAL_STR_FIELDS = frozenset({"prefect_flow_run_id", "status_reason", "owner_host"})
_LIST_FIELDS = frozenset({"notes", "steps_done"})


# --- run ids and folders ----------------------------------------------------------------------


def as_utc(value: datetime) -> datetime:
    """``value`` in UTC; a naive datetime is taken to be UTC already."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def new_run_id(now: datetime) -> str:
    """A new run id such as ``20261101T060000Z-3fa9c1``: UTC time, then a random suffix.

    Ids sort by start time (to the second) and are safe as folder names on every platform.
    """
    return f"{as_utc(now):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def check_run_id(run_id: str) -> str:
    """``run_id`` if it is safe as a folder name (letters, digits, ``.``, ``_``, ``-``)."""
    if not _RUN_ID_RE.fullmatch(run_id) or ".." in run_id:
        raise StorageError(
            f"invalid run id {run_id!r}: use letters, digits, '.', '_' and '-' "
            "(at most 128 characters, not starting with a punctuation mark)"
        )
    return run_id


def run_dir(runs_dir: Path | str, run_id: str) -> Path:
    """The folder of one run: ``<runs_dir>/<run_id>`` (not created)."""
    return Path(runs_dir) / check_run_id(run_id)


# --- atomic files ------------------------------------------------------------------------------


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a folder; the rename itself is still atomic
    finally:
        os.close(fd)


def _write_temp(target: Path, write: Callable[[IO[bytes]], object]) -> Path:
    """Write a hidden temporary file beside ``target`` and fsync it; returns its path."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with tmp.open("wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
    except pl.exceptions.PolarsError as exc:
        tmp.unlink(missing_ok=True)
        # Polars' writer loses the errno of a full disk ("Invalid thrift: transport error"): ask the
        # file system, so a full disk reads as one everywhere above.
        if _nearly_full(target.parent):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target.parent)) from exc
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _nearly_full(folder: Path, *, below_bytes: int = 1024 * 1024) -> bool:
    """Whether the file system of ``folder`` has less than ``below_bytes`` free."""
    try:
        return shutil.disk_usage(folder).free < below_bytes
    except OSError:
        return False


def _atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> Path:
    tmp = _write_temp(path, write)
    try:
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    return path


def write_text_atomic(path: Path | str, text: str) -> Path:
    """Write ``text`` (UTF-8, ``\\n`` line ends) to ``path`` atomically, creating its folder.

    The file gets the permissions the user's umask gives a new file (0644 with the usual 022).
    """
    return _atomic_write(Path(path), lambda fh: fh.write(text.encode("utf-8")))


def _link_new(tmp: Path, path: Path) -> None:
    """Give ``tmp`` the name ``path`` unless ``path`` exists (FileExistsError)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        # No hard links here (some network or FAT file systems): fall back to exists + replace,
        # which is still safe between the threads of this process (the caller holds _PART_LOCK).
        if path.exists():
            raise FileExistsError(path) from exc
        tmp.replace(path)


def conform(frame: pl.DataFrame, schema: dict[str, pl.DataType], *, origin: str) -> pl.DataFrame:
    """``frame`` with exactly the columns of ``schema``, in order and cast to its types.

    Columns added to a schema later (:data:`~freemodels.records.ADDED_COLUMNS`) read as nulls from
    files written before them; any other missing column is an error.
    """
    added = frozenset().union(*ADDED_COLUMNS.values())
    missing = [name for name in schema if name not in frame.columns and name not in added]
    if missing:
        raise StorageError(f"{origin}: missing column(s) {', '.join(missing)}")
    try:
        return frame.select(
            (pl.col(name) if name in frame.columns else pl.lit(None)).cast(dtype).alias(name)
            for name, dtype in schema.items()
        )
    except pl.exceptions.PolarsError as exc:
        raise StorageError(f"{origin}: a column has the wrong type: {exc}") from exc


def write_table(path: Path | str, df: pl.DataFrame, *, schema: dict[str, pl.DataType] | None = None) -> Path:
    """Write ``df`` as Parquet to ``path`` atomically (creating folders); returns the path.

    With ``schema`` the frame is first reduced to exactly those columns and cast to their types.
    """
    target = Path(path)
    frame = df if schema is None else conform(df, schema, origin=str(target))
    return _atomic_write(target, frame.write_parquet)


def read_table(path: Path | str, schema: dict[str, pl.DataType] | None = None) -> pl.DataFrame:
    """Read one Parquet file (optionally conformed to ``schema``); unreadable -> StorageError."""
    source = Path(path)
    try:
        frame = pl.read_parquet(source)
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise StorageError(f"cannot read {source}: {exc}") from exc
    return frame if schema is None else conform(frame, schema, origin=str(source))


# --- run.json ------------------------------------------------------------------------------------


def run_info_to_dict(info: RunInfo) -> dict[str, Any]:
    """The RunInfo as JSON-ready values (datetimes as ISO 8601 in UTC)."""
    out: dict[str, Any] = {}
    for f in fields(RunInfo):
        value = getattr(info, f.name)
        if isinstance(value, datetime):
            value = as_utc(value).isoformat()
        elif isinstance(value, list):
            value = list(value)
        out[f.name] = value
    return out


def _field_value(name: str, value: Any, origin: str) -> Any:
    def bad(expected: str) -> StorageError:
        return StorageError(f"{origin}: {name} must be {expected}, not {value!r}")

    if name in _DATETIME_FIELDS:
        if value is None and name != "started_at":
            return None
        if not isinstance(value, str):
            raise bad("an ISO 8601 date-time")
        try:
            return as_utc(datetime.fromisoformat(value))
        except ValueError:
            raise bad("an ISO 8601 date-time") from None
    if name in _INT_FIELDS:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer or null")
        return value
    if name in _LIST_FIELDS:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad("a list of strings")
        return list(value)
    if value is None and name in _OPTIONAL_STR_FIELDS:
        return None
    if not isinstance(value, str):
        raise bad("a string")
    return value


def run_info_from_dict(data: object, *, origin: str = "run.json") -> RunInfo:
    """Parse the JSON form of a RunInfo; anything malformed -> StorageError naming ``origin``."""
    if not isinstance(data, dict):
        raise StorageError(f"{origin}: expected a JSON object")
    known = {f.name for f in fields(RunInfo)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise StorageError(f"{origin}: unknown key(s) {', '.join(unknown)}")
    missing = sorted(_REQUIRED_FIELDS - set(data))
    if missing:
        raise StorageError(f"{origin}: missing key(s) {', '.join(missing)}")
    values = {name: _field_value(name, value, origin) for name, value in data.items()}
    status = values.get("status")
    if status in _LEGACY_STATUSES:
        values["status"] = _LEGACY_STATUSES[status]
    return RunInfo(**values)


def write_run_info(run_dir: Path | str, info: RunInfo) -> Path:
    """Write ``run.json`` into the run folder atomically (creating it); returns the file."""
    folder = Path(run_dir)
    text = json.dumps(run_info_to_dict(info), indent=2, ensure_ascii=False) + "\n"
    return _atomic_write(folder / RUN_INFO_FILE, lambda fh: fh.write(text.encode("utf-8")))


def read_run_info(run_dir: Path | str) -> RunInfo:
    """The RunInfo of a run folder. No run.json -> RunNotFoundError; a bad one -> StorageError."""
    path = Path(run_dir) / RUN_INFO_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise RunNotFoundError(f"no run in {path.parent} ({RUN_INFO_FILE} is missing)") from None
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc}") from exc
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StorageError(f"{path}: not valid JSON: {exc}") from None
    info = run_info_from_dict(data, origin=str(path))
    if info.run_id != path.parent.name:
        raise StorageError(f"{path}: run_id {info.run_id!r} does not match its folder {path.parent.name!r}")
    return info


def run_folders(runs_dir: Path | str) -> list[Path]:
    """Every run folder under ``runs_dir`` that holds a ``run.json`` (a run killed before it wrote
    one left nothing to resume), in name order (= start time)."""
    root = Path(runs_dir)
    if not root.is_dir():
        return []
    return sorted(f for f in root.iterdir() if f.is_dir() and (f / RUN_INFO_FILE).is_file())


def write_candidates(run_dir: Path | str, ids: Iterable[str]) -> Path:
    """Keep the run's candidate ids in its folder, so a resumed run checks the same ones."""
    text = json.dumps(list(ids), ensure_ascii=False) + "\n"
    return _atomic_write(Path(run_dir) / CANDIDATES_FILE, lambda fh: fh.write(text.encode("utf-8")))


def read_candidates_of(run_dir: Path | str) -> list[str]:
    """The candidate ids kept with a run (empty when it had none)."""
    path = Path(run_dir) / CANDIDATES_FILE
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StorageError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, list) or not all(isinstance(v, str) for v in data):
        raise StorageError(f"{path}: expected a JSON list of model ids")
    return data


# --- probe checkpoints ---------------------------------------------------------------------------


def _part_seqs(folder: Path) -> list[tuple[int, Path]]:
    if not folder.is_dir():
        return []
    parts = []
    for path in folder.iterdir():
        match = _PART_RE.fullmatch(path.name)
        if match and path.is_file():
            parts.append((int(match.group(1)), path))
    return sorted(parts)


def append_probe_checkpoint(
    run_dir: Path | str, results: Iterable[ProbeResult] | pl.DataFrame
) -> Path | None:
    """Append probe results as a new part ``probes/part-<seq>.parquet``; returns it (None if empty).

    The part is written in full under a temporary name and then linked to the next free sequence
    number, so a reader sees whole parts only, and concurrent writers never overwrite a part.
    """
    if isinstance(results, pl.DataFrame):
        frame = conform(results, PROBES_SCHEMA, origin="probe checkpoint")
    else:
        frame = probes_frame(list(results))
    if frame.is_empty():
        return None
    folder = Path(run_dir) / CHECKPOINT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    tmp = _write_temp(folder / "part.parquet", frame.write_parquet)
    try:
        with _PART_LOCK:
            parts = _part_seqs(folder)
            seq = parts[-1][0] + 1 if parts else 1
            while True:
                path = folder / f"part-{seq:06d}.parquet"
                try:
                    _link_new(tmp, path)
                    break
                except FileExistsError:
                    seq += 1
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(folder)
    return path


def read_probe_checkpoints(run_dir: Path | str) -> pl.DataFrame:
    """Every checkpointed probe attempt of a run (PROBES_SCHEMA), in the order written.

    Rows are unique on (model_id, task, sample, attempt): a part written twice before a kill
    counts once (the later copy wins). Temporary files of an interrupted write are ignored.
    """
    parts = _part_seqs(Path(run_dir) / CHECKPOINT_DIR)
    if not parts:
        return empty_frame(PROBES_SCHEMA)
    frames = [read_table(path, PROBES_SCHEMA) for _, path in parts]
    return pl.concat(frames, how="vertical").unique(
        subset=list(ATTEMPT_KEY_COLUMNS), keep="last", maintain_order=True
    )


def _asked(probes: pl.DataFrame) -> pl.DataFrame:
    """The attempts that reached the model: an account rate limit means it was never asked."""
    return probes.filter(
        pl.col("failure").is_null() | (pl.col("failure") != Failure.RATE_LIMIT_ACCOUNT.value)
    )


def attempts_used(probes: pl.DataFrame) -> dict[ProbeKey, int]:
    """Attempts per (model_id, task, sample) that reached the model (account 429s left out)."""
    asked = _asked(probes)
    if asked.is_empty():
        return {}
    counts = asked.group_by(list(PROBE_KEY_COLUMNS)).agg(pl.len().alias("n"))
    return {(m, t, int(s)): int(n) for m, t, s, n in counts.iter_rows()}


def completed_probe_keys(probes: pl.DataFrame, *, max_attempts: int | None = None) -> set[ProbeKey]:
    """(model_id, task, sample) of every probe that already has its final result.

    A probe is done when its latest attempt succeeded, or failed in a class where a retry cannot
    help, or used up ``max_attempts`` attempts (None: any recorded answer is final). It is not done
    when its latest attempt got an account rate limit (the model was never asked), nor after a
    retryable failure with attempts left: a resumed run sends it again.
    """
    if probes.is_empty():
        return set()
    latest = probes.sort("attempt").group_by(list(PROBE_KEY_COLUMNS)).last()
    used = attempts_used(probes)
    done: set[ProbeKey] = set()
    for model_id, task, sample, failure in latest.select(*PROBE_KEY_COLUMNS, "failure").iter_rows():
        key = (model_id, task, int(sample))
        if failure == Failure.RATE_LIMIT_ACCOUNT.value:
            continue
        if failure is None or max_attempts is None or used.get(key, 0) >= max_attempts:
            done.add(key)
            continue
        try:
            retryable = FAILURE_INFO[Failure(failure)].retryable
        except ValueError:
            retryable = False  # a class this program does not know: keep the recorded answer
        if not retryable:
            done.add(key)
    return done


def max_attempts_by_probe(probes: pl.DataFrame) -> dict[ProbeKey, int]:
    """The highest attempt number recorded per (model_id, task, sample).

    A resumed run numbers its new attempts of a probe after these, so no attempt is stored twice.
    """
    if probes.is_empty():
        return {}
    top = probes.group_by(list(PROBE_KEY_COLUMNS)).agg(pl.col("attempt").max())
    return {(m, t, int(s)): int(a) for m, t, s, a in top.iter_rows()}
