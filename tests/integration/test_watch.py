"""The daily watch against the sandbox, with the catalog changing between watches.

One discovery on a small sandbox (every model working, so every chain is full) gives the rotation. Then
watches follow, each with its own scenario file (the sandbox starts afresh for each read):

1. the same catalog: nothing lost, no chat request (the sandbox's own counter), exports untouched;
2. the catalog changed: the primary gone (its paid slug too), a fallback no longer free, another
   without endpoints, a member expiring in 5 days (one in 30 days is not reported), a new free model.
   The events, the repaired exports (``litellm.Router`` still loads the YAML), the executive summary's
   notice, and the tables are checked;
3. the same changed catalog again: everything still listed, but no event goes out twice;
4. the catalog as it was: the models are back, the exports are the run's again, byte for byte.

Liveness probes spend at most what they are given and never more than the quota left.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml

from flows.parameters import WatchParameters
from flows.watch import WatchSummary, watch_without_prefect
from freemodels.sandbox.catalog import build_catalog
from freemodels.sandbox.scenario import Scenario
from tasks.rank import GENERAL
from tests.integration.sandbox_runs import FREE, only, run_plain, table, write_scenario

pytestmark = pytest.mark.integration

MODELS = FREE[:8]
FAST_AND_WORKING = {
    "behavior": "ok",
    "fault": "none",
    "ttft_ms": 20,
    "reasoning_ms": 0,
    "total_ms": 60,
    "keepalive_ms": 0,
}
BASE: dict[str, Any] = {
    "limits": {"requests_per_minute": 6000},
    "catalog": only(MODELS),
    "defaults": FAST_AND_WORKING,
}
NEW_MODEL = "newlab/shiny-model-7b:free"
DOCUMENTS = ("rotation.json", "litellm-router.yaml", "executive-summary.md", "final-report.md")


def watch(tmp: Path, scenario: Path, **params: Any) -> WatchSummary:
    return asyncio.run(
        watch_without_prefect(
            WatchParameters(
                source="sandbox",
                scenario=str(scenario),
                data_dir=str(tmp / "data"),
                docs_dir=str(tmp / "docs"),
                **params,
            )
        )
    )


def documents(docs: Path) -> dict[str, str]:
    return {name: (docs / name).read_text(encoding="utf-8") for name in DOCUMENTS}


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One discovery on the small sandbox: its folders, its rotation and the documents it wrote."""
    tmp = tmp_path_factory.mktemp("watch")
    scenario = write_scenario(tmp / "base.json", BASE)
    summary = run_plain(tmp / "data", tmp / "docs", source="sandbox", scenario=str(scenario))
    assert summary.status == "completed" and summary.working_models == len(MODELS)
    rotation = table(tmp / "data" / "discovery.duckdb", "rotation", summary.run_id)
    general = rotation.filter(pl.col("purpose") == GENERAL).sort("rank").get_column("model_id").to_list()
    assert len(general) >= 5, general
    return {
        "tmp": tmp,
        "run_id": summary.run_id,
        "base": scenario,
        "rotation": rotation,
        "general": general,
        "documents": documents(tmp / "docs"),
    }


def rotation_ids(measured: dict[str, Any]) -> set[str]:
    return set(measured["rotation"].get_column("model_id").to_list())


def changed_scenario(measured: dict[str, Any]) -> dict[str, Any]:
    """The base catalog with the changes of the module docstring (step 2)."""
    primary, second, third, fourth, fifth = measured["general"][:5]
    listed = build_catalog(Scenario.from_mapping(BASE).catalog).models
    gone = [primary] + ([primary.removesuffix(":free")] if primary.removesuffix(":free") in listed else [])
    return {
        **BASE,
        "catalog": {
            "remove": [*BASE["catalog"]["remove"], *gone],
            "paid": [second],
            "add_free": [NEW_MODEL],
            "expires": {fourth: 5, fifth: 30},
        },
        "models": {third: {"behavior": "no_endpoints"}},
    }


def test_a_watch_of_the_same_catalog_sends_no_chat_request_and_changes_nothing(
    measured: dict[str, Any],
) -> None:
    tmp = measured["tmp"]
    summary = watch(tmp, measured["base"])

    assert summary.chat_requests == 0
    assert summary.source_counted is not None and summary.source_counted["chat_requests"] == 0
    assert summary.based_on_run_id == measured["run_id"]
    assert summary.lost == [] and summary.added == [] and summary.events == []
    assert summary.listings_read == summary.rotation_models == measured["rotation"]["model_id"].n_unique()
    assert documents(tmp / "docs") == measured["documents"]
    row = table(tmp / "data" / "discovery.duckdb", "watches").filter(pl.col("watch_id") == summary.watch_id)
    assert row.select("status", "lost", "chat_requests", "rotation_repaired").row(0) == (
        "completed",
        0,
        0,
        False,
    )
    snapshot = table(tmp / "data" / "discovery.duckdb", "availability").filter(
        pl.col("snapshot_id") == summary.watch_id
    )
    assert snapshot.height == summary.catalog_models
    assert snapshot.filter(pl.col("free")).height == summary.free_models == len(MODELS)


def test_catalog_changes_between_watches_repair_the_rotation_emit_events_and_are_stored(
    measured: dict[str, Any],
) -> None:
    tmp, docs, db = measured["tmp"], measured["tmp"] / "docs", measured["tmp"] / "data" / "discovery.duckdb"
    primary, second, third, fourth, fifth = measured["general"][:5]
    changed = write_scenario(tmp / "changed.json", changed_scenario(measured))

    # 2. the catalog changed
    summary = watch(tmp, changed)
    assert summary.chat_requests == 0 and summary.source_counted["chat_requests"] == 0  # type: ignore[index]
    reasons = {model: reason for model, reason, _detail, _new in summary.lost}
    assert reasons == {primary: "gone", second: "no_longer_free", third: "no_endpoints"}
    assert summary.added == [NEW_MODEL]
    assert [m for m, _ in summary.expiring] == [fourth]  # fifth expires in 30 days: not yet
    assert fifth in rotation_ids(measured)
    events = {(e["event"], e["payload"]["model_id"], e["payload"]["reason"]) for e in summary.events}
    assert events == {
        ("discovery.model.lost", primary, "gone"),
        ("discovery.model.lost", second, "no_longer_free"),
        ("discovery.model.lost", third, "no_endpoints"),
        ("discovery.model.expiring", fourth, "expiring"),
        ("discovery.model.added", NEW_MODEL, "added"),
    }
    expiring = next(e for e in summary.events if e["event"] == "discovery.model.expiring")
    assert expiring["payload"]["in_rotation"] is True and expiring["payload"]["expiration_date"]
    assert all(e["related"][0]["prefect.resource.name"] == summary.watch_id for e in summary.events)

    # the exports: lost models gone, fallbacks moved up, the models cap holds, LiteLLM loads it
    lost = {primary, second, third}
    rotation = json.loads((docs / "rotation.json").read_text(encoding="utf-8"))
    measured_rotation = json.loads(measured["documents"]["rotation.json"])
    for purpose, chain in measured_rotation["chains"].items():
        kept = [m for m in chain if m not in lost]
        if kept:
            assert rotation["chains"][purpose] == kept
            assert rotation["purposes"][purpose] == {"model": kept[0], "models": kept[:3]}
        else:
            assert (
                purpose not in rotation["chains"] and purpose in rotation["repaired"]["purposes_left_empty"]
            )
    assert rotation["purposes"][GENERAL]["model"] == fourth
    assert {r["model"] for r in rotation["repaired"]["removed"]} == lost
    assert rotation["measurements"][GENERAL][0]["model"] == fourth
    config = yaml.safe_load((docs / "litellm-router.yaml").read_text(encoding="utf-8"))
    named = {e["model_name"] for e in config["model_list"]}
    assert not named & lost
    assert all(not set(chain) & lost for f in config["router_settings"]["fallbacks"] for chain in f.values())
    litellm = pytest.importorskip("litellm", reason="litellm is not installed (optional group `litellm`)")
    router = litellm.Router(model_list=config["model_list"], **config["router_settings"])  # loads
    assert router is not None and GENERAL in named

    # the summary says so at its top; the measured reports are untouched
    summary_text = (docs / "executive-summary.md").read_text(encoding="utf-8")
    title, _, rest = summary_text.partition("\n")
    assert title == measured["documents"]["executive-summary.md"].partition("\n")[0]
    assert rest.lstrip().startswith("<!-- rotation-repair -->")
    assert f"Rotation repaired on {summary.watch_id[6:10]}-" in rest.split("<!-- /rotation-repair -->")[0]
    for model in lost:
        assert f"`{model}` removed" in summary_text
    assert (docs / "final-report.md").read_text(encoding="utf-8") == measured["documents"]["final-report.md"]
    month = f"{measured['run_id'][:4]}-{measured['run_id'][4:6]}"
    archived = docs / "history" / month / "rotation.json"  # the month's measured copy stays as it was
    assert archived.read_text(encoding="utf-8") == measured["documents"]["rotation.json"]

    # the tables
    row = table(db, "watches").filter(pl.col("watch_id") == summary.watch_id).row(0, named=True)
    assert (row["lost"], row["added"], row["expiring"], row["rotation_repaired"]) == (3, 1, 1, True)
    assert row["based_on_run_id"] == measured["run_id"] and row["chat_requests"] == 0
    changes = table(db, "watch_changes").filter(pl.col("watch_id") == summary.watch_id)
    assert set(changes.select("change", "model_id").iter_rows()) >= {
        ("lost", primary),
        ("lost", second),
        ("lost", third),
        ("added", NEW_MODEL),
        ("expiring", fourth),
    }
    snapshot = table(db, "availability").filter(pl.col("snapshot_id") == summary.watch_id)
    by_model = {r["model_id"]: r for r in snapshot.iter_rows(named=True)}
    assert (by_model[primary]["listed"], by_model[primary]["free"]) == (False, False)
    assert by_model[second]["free"] is False
    assert (by_model[third]["listing"], by_model[third]["endpoints"]) == ("empty", 0)
    assert by_model[NEW_MODEL]["free"] is True and by_model[NEW_MODEL]["endpoints"] is None

    # 3. the same changes again: still lost and still repaired, but no event twice
    again = watch(tmp, changed)
    assert {m for m, *_ in again.lost} == lost
    assert not any(new for *_, new in again.lost)
    assert again.events == [] and again.added == []
    assert json.loads((docs / "rotation.json").read_text(encoding="utf-8"))["chains"] == rotation["chains"]

    # 4. the catalog as it was: everything is back, the exports are the run's again
    back = watch(tmp, measured["base"])
    assert back.lost == [] and set(back.restored) == lost
    assert documents(docs) == measured["documents"]
    assert table(db, "watches").height == 4


def test_liveness_probes_spend_at_most_what_they_are_given_and_find_an_ended_free_variant(
    measured: dict[str, Any], tmp_path: Path
) -> None:
    primary = measured["general"][0]
    scenario = write_scenario(
        tmp_path / "ended.json",
        {**BASE, "models": {primary: {"behavior": "free_variant_ended"}}},
    )
    summary = watch(measured["tmp"], scenario, liveness=2)
    assert summary.chat_requests == summary.source_counted["chat_requests"] == 2  # type: ignore[index]
    assert [(m, reason) for m, reason, *_ in summary.lost] == [(primary, "no_longer_free")]

    short = write_scenario(
        tmp_path / "short.json",
        {**BASE, "limits": {**BASE["limits"], "requests_per_day": 10, "requests_used_today": 9}},
    )
    limited = watch(measured["tmp"], short, liveness=5)
    assert limited.chat_requests == limited.source_counted["chat_requests"] == 1  # type: ignore[index]


def test_a_watch_without_a_run_records_the_catalog_and_repairs_nothing(tmp_path: Path) -> None:
    scenario = write_scenario(tmp_path / "base.json", BASE)
    summary = watch(tmp_path, scenario)
    assert summary.based_on_run_id is None and summary.rotation_models == 0 and summary.listings_read == 0
    assert summary.lost == [] and summary.events == [] and summary.written == []
    assert not (tmp_path / "docs" / "rotation.json").exists()
    assert "no completed run yet" in summary.describe()
    snapshot = table(tmp_path / "data" / "discovery.duckdb", "availability")
    assert snapshot.filter(pl.col("free")).height == len(MODELS)


def test_rendering_the_run_again_keeps_the_latest_watchs_repair(tmp_path: Path) -> None:
    from flows.runner import render_reports

    base = write_scenario(tmp_path / "base.json", BASE)
    run = run_plain(tmp_path / "data", tmp_path / "docs", source="sandbox", scenario=str(base))
    primary = json.loads((tmp_path / "docs" / "rotation.json").read_text())["purposes"][GENERAL]["model"]
    gone = write_scenario(
        tmp_path / "gone.json", {**BASE, "catalog": {"remove": [*BASE["catalog"]["remove"], primary]}}
    )
    watched = watch(tmp_path, gone)
    assert [m for m, *_ in watched.lost] == [primary]
    repaired = documents(tmp_path / "docs")

    render_reports(run_id=run.run_id, data_dir=str(tmp_path / "data"), docs_dir=str(tmp_path / "docs"))
    again = documents(tmp_path / "docs")
    before, after = json.loads(repaired["rotation.json"]), json.loads(again["rotation.json"])
    assert after["chains"] == before["chains"] and after["repaired"] == before["repaired"]
    assert primary not in after["chains"][GENERAL]  # a re-render writes the run's time as generated_at
    assert again["litellm-router.yaml"] == repaired["litellm-router.yaml"]
    assert "<!-- rotation-repair -->" in again["executive-summary.md"]
