"""The run lifecycle as a user meets it: resume that cannot lie, interrupts, checks before spending.

A sandbox in this process plays OpenRouter (``DISCOVERY_OPENROUTER_BASE_URL`` points the ``openrouter``
source at it), so a run can be "against OpenRouter" with a key and its counters show every request.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from freemodels import storage
from freemodels.errors import ConfigError, StorageError
from freemodels.sandbox.scenario import Scenario
from freemodels.sandbox.server import SandboxServer
from tests.integration.sandbox_runs import (
    FREE,
    checkpointed,
    only,
    run_folders,
    run_plain,
    start_discovery,
    subprocess_env,
    table,
    wait_for,
    write_scenario,
)

pytestmark = pytest.mark.integration

KEY = "sk-or-v1-lifecycle-test-00000000000000000000"
MODELS = [FREE[0], FREE[2], FREE[6], FREE[11]]


def _digest(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with the hash of its bytes (to show nothing was written)."""
    if not folder.exists():
        return {}
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def openrouter(monkeypatch: pytest.MonkeyPatch) -> Iterator[SandboxServer]:
    """A sandbox standing in for openrouter.ai: 5 requests a day, so a run leaves models untested."""
    scenario = Scenario.from_mapping(
        {
            "limits": {"api_key": KEY, "requests_per_day": 5, "requests_per_minute": 6000},
            "catalog": only(MODELS),
            "defaults": {"behavior": "ok", "ttft_ms": 10, "total_ms": 20, "keepalive_ms": 0},
        }
    )
    with SandboxServer(scenario) as server:
        monkeypatch.setenv("DISCOVERY_OPENROUTER_BASE_URL", server.base_url)
        monkeypatch.setenv("DISCOVERY_MAX_CONCURRENCY", "1")
        yield server


def test_a_run_against_openrouter_is_never_resumed_against_the_sandbox(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, openrouter: SandboxServer
) -> None:
    """The worst thing the tool could do: continue an OpenRouter run on simulated numbers. Without the
    key, ``--resume`` stops with one line and writes nothing; with a contradicting ``--source`` too."""
    data, docs = tmp_path / "data", tmp_path / "docs"
    monkeypatch.setenv("OPENROUTER_API_KEY", KEY)
    first = run_plain(data, docs, source="openrouter")
    assert first.source == "openrouter" and first.untested_models > 0  # the quota ran out
    probes = table(data / "discovery.duckdb", "probes", first.run_id)
    assert set(probes.get_column("source").to_list()) == {"openrouter"}  # each row says who answered

    monkeypatch.delenv("OPENROUTER_API_KEY")
    before = (_digest(data), _digest(docs), openrouter.stats()["requests_total"])
    with pytest.raises(ConfigError) as caught:
        run_plain(data, docs, resume="latest")
    message = str(caught.value)
    assert message.startswith(f"cannot resume run {first.run_id} (openrouter): source 'openrouter' needs")
    assert "never resumed against another source" in message
    with pytest.raises(
        ConfigError, match="was started with source='openrouter'; --source 'sandbox' does not"
    ):
        run_plain(data, docs, resume=first.run_id, source="sandbox")
    assert (_digest(data), _digest(docs), openrouter.stats()["requests_total"]) == before

    # With the key back, the same run continues against the same source.
    monkeypatch.setenv("OPENROUTER_API_KEY", KEY)
    assert run_plain(data, docs, resume="latest").run_id == first.run_id


def test_a_key_without_network_fails_in_one_line_and_leaves_nothing_to_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from flows.cli import main

    monkeypatch.setenv("OPENROUTER_API_KEY", KEY)
    monkeypatch.setenv("DISCOVERY_OPENROUTER_BASE_URL", "http://127.0.0.1:9/api/v1")  # nothing listens
    data, docs = tmp_path / "data", tmp_path / "docs"
    args = ["--data-dir", str(data), "--docs-dir", str(docs)]
    started = time.monotonic()
    assert main(["run", *args]) == 2
    elapsed = time.monotonic() - started
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("discovery:")]
    assert lines == ["discovery: error: cannot connect to 127.0.0.1 (http://127.0.0.1:9/api/v1): "
                     "connection refused or no network"]  # fmt: skip
    assert "Traceback" not in err
    assert elapsed < 5, f"an unreachable source took {elapsed:.0f} s to report"
    assert run_folders(data) == []
    monkeypatch.delenv("OPENROUTER_API_KEY")
    assert main(["run", "--resume", *args]) == 2
    assert "no unfinished run to resume" in capsys.readouterr().err
    assert not docs.exists() or not any(docs.iterdir())


def test_a_damaged_database_or_unusable_docs_folder_is_refused_before_any_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, openrouter: SandboxServer
) -> None:
    monkeypatch.setenv("OPENROUTER_API_KEY", KEY)
    data, docs = tmp_path / "data", tmp_path / "docs"
    data.mkdir()
    (data / "discovery.duckdb").write_bytes(b"this is not a database" * 100)
    with pytest.raises(StorageError, match=r"is not a DuckDB database \(or it is damaged\)"):
        run_plain(data, docs, source="openrouter")
    (data / "discovery.duckdb").unlink()
    not_a_folder = tmp_path / "reports"
    not_a_folder.write_text("a file where the reports folder should be")
    with pytest.raises(StorageError, match=r"reports is a file, not a folder"):
        run_plain(data, not_a_folder, source="openrouter")
    assert openrouter.stats()["requests_total"] == 0  # not even the catalog was asked for
    assert run_folders(data) == []


def _slow_scenario(tmp_path: Path) -> Path:
    return write_scenario(
        tmp_path / "slow.json",
        {
            "catalog": only(MODELS),
            "defaults": {"behavior": "ok", "ttft_ms": 1500, "total_ms": 3000, "keepalive_ms": 0},
        },
    )


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_a_running_discovery_within_5_s_and_resume_finishes_it(
    tmp_path: Path, prefect_harness: None, sig: signal.Signals, capsys: pytest.CaptureFixture[str]
) -> None:
    import prefect.settings

    from flows.cli import main

    data, docs = tmp_path / "data", tmp_path / "docs"
    env = subprocess_env(prefect.settings.PREFECT_API_URL.value(), tmp_path / "prefect-home")
    args = ["--source", "sandbox", "--scenario", str(_slow_scenario(tmp_path)), "--data-dir", str(data),
            "--docs-dir", str(docs)]  # fmt: skip
    log = tmp_path / "run.log"
    child = start_discovery(args, env, log)
    try:
        wait_for(lambda: bool(run_folders(data)) and checkpointed(run_folders(data)[0]).height > 0, 120,
                 "the first checkpoint")  # fmt: skip
        sent = time.monotonic()
        child.send_signal(sig)
        code = child.wait(timeout=30)
        stopped_after = time.monotonic() - sent
    finally:
        if child.poll() is None:
            child.kill()
    output = log.read_text(errors="replace")
    (folder,) = run_folders(data)
    run_id = folder.name
    assert code == 130, output[-3000:]
    assert stopped_after < 5, f"stopping took {stopped_after:.1f} s"
    assert f"discovery: interrupted: resume with discovery run --resume {run_id}" in output
    assert "Traceback" not in output
    assert "Error logging to API" not in output and "EventsWorker" not in output
    assert sum("| ERROR" in line for line in output.splitlines()) <= 1  # the flow run's one line
    info = storage.read_run_info(folder)
    assert info.status == "interrupted" and info.owner_pid is None
    done = checkpointed(folder)
    assert done.height > 0

    capsys.readouterr()
    assert main(["run", "--resume", "--data-dir", str(data), "--docs-dir", str(docs)]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith(f"resuming run {run_id} (sandbox")
    probes = table(data / "discovery.duckdb", "probes", run_id)
    assert probes.height == len(MODELS) * 3
    # What was checkpointed before the signal was kept, not asked again.
    kept = done.select("model_id", "task", "sample", "attempt").rows()
    assert set(kept) <= set(probes.select("model_id", "task", "sample", "attempt").rows())
    assert storage.read_run_info(folder).status == "completed"


STOP_AFTER_STORE = """
import os, signal
from freemodels.records import RunStep
from freemodels.runs import RunRecorder

_real = RunRecorder.step_done

def _step_done_then_die(self, step):
    info = _real(self, step)
    if step is RunStep.STORED:
        os.kill(os.getpid(), signal.SIGKILL)
    return info

RunRecorder.step_done = _step_done_then_die
"""


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_a_run_killed_after_storing_is_completed_by_resume_with_reports_artifacts_and_alerts(
    tmp_path: Path, prefect_harness: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """Killed between the DuckDB commit and the reports: the database has the run, the documents do
    not. ``--resume`` renders, publishes the artifacts and emits the alerts, sending nothing."""
    import asyncio

    import prefect.settings
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.cli import main

    scenario = write_scenario(
        tmp_path / "fast.json",
        {"catalog": only(MODELS), "defaults": {"behavior": "ok", "ttft_ms": 10, "total_ms": 20}},
    )
    data, docs = tmp_path / "data", tmp_path / "docs"
    env = subprocess_env(prefect.settings.PREFECT_API_URL.value(), tmp_path / "prefect-home")
    args = [
        "--source",
        "sandbox",
        "--scenario",
        str(scenario),
        "--data-dir",
        str(data),
        "--docs-dir",
        str(docs),
    ]
    log = tmp_path / "run.log"
    child = start_discovery(args, env, log, python_prelude=STOP_AFTER_STORE)
    assert child.wait(timeout=180) == -signal.SIGKILL, log.read_text(errors="replace")[-3000:]
    (folder,) = run_folders(data)
    run_id = folder.name
    info = storage.read_run_info(folder)
    assert info.steps_done == ["probed", "stored"] and info.status == "running"
    assert table(data / "discovery.duckdb", "probes", run_id).height == len(MODELS) * 3
    assert not (docs / "final-report.md").exists()
    parts = sorted((folder / storage.CHECKPOINT_DIR).glob("part-*.parquet"))

    capsys.readouterr()
    assert main(["run", "--resume", "--data-dir", str(data), "--docs-dir", str(docs)]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith(f"resuming run {run_id} (sandbox")
    done = storage.read_run_info(folder)
    assert done.status == "completed"
    assert done.steps_done == ["probed", "stored", "rendered", "published", "alerted"]
    assert sorted((folder / storage.CHECKPOINT_DIR).glob("part-*.parquet")) == parts  # nothing sent
    assert run_id in (docs / "final-report.md").read_text()
    runs = table(data / "discovery.duckdb", "runs")
    assert runs.filter(pl.col("run_id") == run_id).item(0, "status") == "completed"

    async def artifacts() -> list[str]:
        async with get_client() as client:
            found = await client.read_artifacts(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[done.prefect_flow_run_id]))
            )
        return sorted(a.key for a in found if a.key)

    assert asyncio.run(artifacts()) == ["executive-summary", "tiers"]


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if sys.platform != "linux" or os.geteuid() != 0:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, check=False)  # fmt: skip
    return done.returncode == 0


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 24 MB tmpfs for the data folder (skipped where this test may not mount one)."""
    mount = tmp_path / "small-disk"
    if not _mount_tmpfs(mount, "24m"):
        pytest.skip(
            "a full disk is staged on a small tmpfs, and this machine does not let the test mount one"
        )
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_while_probing_ends_in_one_line_and_the_run_resumes_once_space_is_back(
    tmp_path: Path,
    small_disk: Path,
    monkeypatch: pytest.MonkeyPatch,
    prefect_harness: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from flows.cli import main

    data, docs = small_disk / "data", tmp_path / "docs"
    monkeypatch.setenv("DISCOVERY_MIN_FREE_DISK_MB", "1")
    ballast = small_disk / "ballast"
    args = ["--source", "sandbox", "--scenario", str(_slow_scenario(tmp_path)), "--data-dir", str(data),
            "--docs-dir", str(docs)]  # fmt: skip

    def fill_the_disk_once_probing() -> None:
        wait_for(lambda: bool(run_folders(data)) and checkpointed(run_folders(data)[0]).height > 0, 120,
                 "the first checkpoint")  # fmt: skip
        with ballast.open("wb") as handle, __import__("contextlib").suppress(OSError):
            while True:
                handle.write(b"\0" * 65536)

    import threading

    filler = threading.Thread(target=fill_the_disk_once_probing)
    filler.start()
    capsys.readouterr()
    try:
        code = main(["run", *args])
    finally:
        filler.join(timeout=60)
    err = capsys.readouterr().err
    (folder,) = run_folders(data)
    run_id = folder.name
    assert code == 1, err[-2000:]
    (line,) = [line for line in err.splitlines() if line.startswith("discovery:")]
    assert line.startswith("discovery: error: disk full at ")
    assert line.endswith(f"resume it with discovery run --resume {run_id})")
    assert "Traceback" not in err and "Invalid thrift" not in err
    info = storage.read_run_info(folder)
    assert info.status == "failed" and (info.status_reason or "").startswith("disk full at"), (line, info)
    kept = checkpointed(folder)
    assert kept.height > 0  # the checkpoint is intact and readable

    ballast.unlink()
    capsys.readouterr()
    assert main(["run", "--resume", run_id, "--data-dir", str(data), "--docs-dir", str(docs)]) == 0
    assert storage.read_run_info(folder).status == "completed"
    probes = table(data / "discovery.duckdb", "probes", run_id)
    assert set(kept.select("model_id", "task", "sample", "attempt").rows()) <= set(
        probes.select("model_id", "task", "sample", "attempt").rows()
    )
    finals = probes.group_by("model_id", "task", "sample").len()
    assert finals.height == len(MODELS) * 3


def test_too_little_free_space_is_refused_before_any_request(
    tmp_path: Path, small_disk: Path, monkeypatch: pytest.MonkeyPatch, openrouter: SandboxServer
) -> None:
    monkeypatch.setenv("OPENROUTER_API_KEY", KEY)
    monkeypatch.setenv("DISCOVERY_MIN_FREE_DISK_MB", "64")
    with pytest.raises(StorageError, match=r"only \d+\.\d MB free at .*, a run needs 64 MB; free some space"):
        run_plain(small_disk / "data", tmp_path / "docs", source="openrouter")
    assert openrouter.stats()["requests_total"] == 0


def test_runs_lists_every_status_and_abandon_takes_one_out_of_resume(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    openrouter: SandboxServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from flows.cli import main
    from freemodels.records import RunStatus
    from freemodels.runs import RunRecorder

    monkeypatch.setenv("OPENROUTER_API_KEY", KEY)
    data, docs = tmp_path / "data", tmp_path / "docs"
    first = run_plain(data, docs, source="openrouter")  # completed, models left untested
    folder = storage.run_dir(data / "runs", first.run_id)
    # Three more runs as other processes would have left them.
    statuses = {"interrupted": RunStatus.INTERRUPTED, "failed": RunStatus.FAILED}
    made = {}
    for name, status in statuses.items():
        copy = data / "runs" / f"{first.run_id[:-6]}{name[:6]}"
        info = storage.read_run_info(folder)
        from dataclasses import replace

        recorder = RunRecorder(copy, replace(info, run_id=copy.name), data / "discovery.duckdb")
        recorder.save(status=status.value, status_reason=f"staged as {name}")
        made[name] = copy.name
    capsys.readouterr()
    assert main(["runs", "--data-dir", str(data)]) == 0
    listing = capsys.readouterr().out
    for word in ("completed", "interrupted", "failed"):
        assert f" {word} " in listing or listing.rstrip().endswith(word), word
    assert "staged as failed" in listing

    assert main(["runs", "abandon", made["interrupted"], "--data-dir", str(data)]) == 0
    assert "abandoned (abandoned on" in capsys.readouterr().out
    assert main(["runs", "--data-dir", str(data)]) == 0
    assert " abandoned " in capsys.readouterr().out
    db_status = table(data / "discovery.duckdb", "runs").filter(pl.col("run_id") == made["interrupted"])
    assert db_status.item(0, "status") == "abandoned"
    # An abandoned run is never resumed, by default or by id; a completed one cannot be abandoned.
    assert main(["run", "--resume", made["interrupted"], "--data-dir", str(data)]) == 2
    assert "was abandoned" in capsys.readouterr().err
    assert main(["runs", "abandon", first.run_id, "--data-dir", str(data)]) == 2
    assert "only unfinished runs can be abandoned" in capsys.readouterr().err
    assert main(["runs", "abandon", "nope", "--data-dir", str(data)]) == 2
    assert "no run nope" in capsys.readouterr().err


def test_a_bad_deployment_parameter_is_named_in_the_flow_runs_state_message(
    tmp_path: Path, prefect_harness: None
) -> None:
    """A deployment run passes its parameters straight to the flow (no command line checks them):
    the refusal is the Failed state's message, which ``prefect deployment run --watch`` prints."""
    import asyncio

    from flows.discovery import discovery

    async def state_of(**params: object):  # type: ignore[no-untyped-def]
        return await discovery(data_dir=str(tmp_path / "data"), docs_dir=str(tmp_path / "docs"),
                               return_state=True, **params)  # fmt: skip

    refused = asyncio.run(state_of(budget=-1))
    assert refused.is_failed()
    assert refused.message == "parameter budget: expected a number of at least 0, got -1"
    typed = asyncio.run(state_of(budget="lots"))
    assert typed.is_failed() and "budget" in (typed.message or "")
    assert not (tmp_path / "data" / "runs").exists()
