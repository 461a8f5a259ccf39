"""``discovery watch`` on the command line, inside Prefect (the session's test server): exit 0 with the
lost models listed, one line and exit 2 for a mistake, one line and exit 1 when the watch itself fails;
inside a flow run the events go to Prefect."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows.cli import main
from freemodels.errors import StorageError
from tests.integration.sandbox_runs import FREE, only, run_plain, table, write_scenario

pytestmark = pytest.mark.integration

MODELS = FREE[:4]
BASE = {
    "limits": {"requests_per_minute": 6000},
    "catalog": only(MODELS),
    "defaults": {"behavior": "ok", "fault": "none", "ttft_ms": 20, "reasoning_ms": 0, "total_ms": 60},
}


def test_the_watch_command_lists_what_is_lost_exits_0_and_emits_events(
    prefect_harness: None, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import prefect.events

    base = write_scenario(tmp_path / "base.json", BASE)
    run = run_plain(tmp_path / "data", tmp_path / "docs", source="sandbox", scenario=str(base))
    primary = json.loads((tmp_path / "docs" / "rotation.json").read_text())["purposes"]["general"]["model"]
    gone = write_scenario(
        tmp_path / "gone.json", {**BASE, "catalog": {"remove": [*BASE["catalog"]["remove"], primary]}}
    )
    sent: list[dict] = []
    monkeypatch.setattr(prefect.events, "emit_event", lambda **event: sent.append(event))
    paths = ["--data-dir", str(tmp_path / "data"), "--docs-dir", str(tmp_path / "docs")]

    assert main(["watch", "--source", "sandbox", "--scenario", str(gone), *paths]) == 0
    out = capsys.readouterr().out
    assert f"lost: {primary} (" in out and "0 chat requests" in out and "rotation repaired" in out
    assert [(e["event"], e["payload"]["model_id"]) for e in sent] == [("discovery.model.lost", primary)]
    watches = table(tmp_path / "data" / "discovery.duckdb", "watches")
    assert watches.height == 1 and watches["prefect_flow_run_id"][0] is not None
    assert watches["based_on_run_id"][0] == run.run_id


def test_a_mistake_is_one_line_and_exit_2_a_failed_watch_one_line_and_exit_1(
    prefect_harness: None, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = ["--data-dir", str(tmp_path / "data"), "--docs-dir", str(tmp_path / "docs")]
    assert main(["watch", "--source", "sandbox", "--scenario", str(tmp_path / "missing.toml"), *paths]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("discovery: error: ")

    def locked(*_args: object, **_kwargs: object) -> None:
        raise StorageError("the database is locked by another process")

    monkeypatch.setattr("flows.watch.read_baseline", locked)
    assert main(["watch", "--source", "sandbox", *paths]) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        "discovery: error: the watch failed: the database is locked by another process"
    ]
