"""The watch's pure parts: what is lost, what changed, the repaired rotation and its notice, events,
availability over time, and the sandbox's staging of expiration dates."""

from __future__ import annotations

import inspect
import json
from dataclasses import fields
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
import yaml
from markdown_it import MarkdownIt

from flows.alerts import watch_events
from flows.parameters import WatchParameters
from flows.prepare import check_deployment_run, settings_for
from freemodels import charts, exports
from freemodels.availability import AVAILABILITY_DAYS_SCHEMA, BECAME_FREE, STOPPED_FREE, summarize
from freemodels.errors import ConfigError, ScenarioError
from freemodels.failures import Failure
from freemodels.listings import Endpoint, Listing, ListingStatus
from freemodels.records import CATALOG_SCHEMA, ROTATION_SCHEMA
from freemodels.sandbox.catalog import build_catalog
from freemodels.sandbox.scenario import Scenario
from freemodels.watch import (
    Change,
    LostReason,
    Previous,
    find_changes,
    find_lost,
    repaired_rotation,
    rotation_members,
    watch_findings,
)
from tasks.repair import NOTICE_END, NOTICE_START, notice_text, with_notice

TODAY = date(2026, 12, 10)
AT = datetime(2026, 12, 10, 6, 30, tzinfo=UTC)


def catalog(*rows: tuple[str, bool] | tuple[str, bool, str | None]) -> pl.DataFrame:
    """(model_id, is_free[, expiration_date]) rows in the catalog schema."""
    data = [
        {
            "model_id": r[0],
            "is_free": r[1],
            "is_router": False,
            "expiration_date": r[2] if len(r) > 2 else None,
        }
        for r in rows
    ]
    return pl.DataFrame(data, schema=CATALOG_SCHEMA) if data else pl.DataFrame(schema=CATALOG_SCHEMA)


def rotation(chains: dict[str, list[str]]) -> pl.DataFrame:
    rows = [
        {"run_id": "r", "purpose": purpose, "rank": rank, "model_id": model_id}
        for purpose, chain in chains.items()
        for rank, model_id in enumerate(chain, start=1)
    ]
    return pl.DataFrame(rows, schema=ROTATION_SCHEMA)


def listing(model_id: str, *providers: str) -> Listing:
    endpoints = tuple(Endpoint(provider=p) for p in providers)
    return Listing(model_id, ListingStatus.ENDPOINTS if endpoints else ListingStatus.EMPTY, endpoints)


# --- what is lost ------------------------------------------------------------------------------------


def test_a_member_is_lost_when_gone_no_longer_free_without_endpoints_or_settled_by_a_probe() -> None:
    listed = {"a/paid-now:free": False, "b/only-paid": False, "c/empty:free": True, "d/ok:free": True,
              "e/ended:free": True, "f/busy:free": True, "g/unreadable:free": True}  # fmt: skip
    listings = {
        "c/empty:free": listing("c/empty:free"),
        "d/ok:free": listing("d/ok:free", "P"),
        "g/unreadable:free": Listing("g/unreadable:free", ListingStatus.UNREADABLE),
    }
    probes = {"e/ended:free": Failure.FREE_VARIANT_ENDED, "f/busy:free": Failure.RATE_LIMIT_UPSTREAM}
    members = ["x/gone:free", "a/paid-now:free", "b/only-paid:free", "c/empty:free", "d/ok:free",
               "e/ended:free", "f/busy:free", "g/unreadable:free", "x/gone:free"]  # fmt: skip
    found = find_lost(members, listed, listings, probes)
    assert [(m, r) for m, r, _ in found] == [
        ("x/gone:free", LostReason.GONE),
        ("a/paid-now:free", LostReason.NO_LONGER_FREE),
        ("b/only-paid:free", LostReason.NO_LONGER_FREE),
        ("c/empty:free", LostReason.NO_ENDPOINTS),
        ("e/ended:free", LostReason.NO_LONGER_FREE),
    ]
    assert dict((m, d) for m, _, d in found)["b/only-paid:free"] == "only the paid b/only-paid remains"


def test_changes_against_the_previous_snapshot_and_what_is_new() -> None:
    members = ["m/primary:free", "m/second:free", "m/third:free"]
    now = catalog(
        ("m/second:free", True, (TODAY + timedelta(days=14)).isoformat()),
        ("m/third:free", True, (TODAY + timedelta(days=15)).isoformat()),
        ("n/new:free", True, (TODAY - timedelta(days=1)).isoformat()),
        ("o/paid", False),
        ("p/was-free", False),
    )
    previous = Previous(
        snapshot_id="watch-before",
        free=frozenset({"m/primary:free", "m/second:free", "m/third:free", "o/paid:free", "p/was-free"}),
        lost={"m/primary:free": "gone", "m/back:free": "no_endpoints"},
        expiring={"m/second:free": (TODAY + timedelta(days=14)).isoformat()},
    )
    frame, lost, restored = find_changes(
        watch_id="w",
        catalog=now,
        members=[*members, "m/back:free"],
        listings={"m/back:free": listing("m/back:free")},
        probes={},
        previous=previous,
        today=TODAY,
    )
    rows = {(r["change"], r["model_id"]): r for r in frame.iter_rows(named=True)}
    assert set(rows) == {
        ("lost", "m/primary:free"),
        ("lost", "m/back:free"),
        ("added", "n/new:free"),
        ("free_ended", "o/paid:free"),
        ("free_ended", "p/was-free"),
        ("expiring", "m/second:free"),  # 14 days: in the window; 15 days is not
        ("expiring", "n/new:free"),  # a date already reached while still listed
    }
    assert rows[("lost", "m/primary:free")]["new"] is False  # reported by the previous watch already
    assert rows[("lost", "m/back:free")]["new"] is True  # lost then for another reason
    assert rows[("expiring", "m/second:free")]["new"] is False and rows[("expiring", "n/new:free")]["new"]
    assert rows[("expiring", "m/second:free")]["in_rotation"] is True
    assert all(r["compared_with"] == "watch-before" for r in rows.values())
    assert [m.model_id for m in lost] == ["m/primary:free", "m/back:free"] and restored == ()
    assert list(frame.get_column("change")) == sorted(
        frame.get_column("change"), key=[c.value for c in Change].index
    )


def test_nothing_to_compare_with_reports_no_added_model_and_a_member_back_is_restored() -> None:
    frame, _, _ = find_changes(
        watch_id="w", catalog=catalog(("a/x:free", True)), members=[], listings={}, probes={},
        previous=Previous(snapshot_id=None), today=TODAY,
    )  # fmt: skip
    assert frame.is_empty()
    frame, lost, restored = find_changes(
        watch_id="w", catalog=catalog(("a/x:free", True)), members=["a/x:free"], listings={}, probes={},
        previous=Previous(snapshot_id="p", free=frozenset(), lost={"a/x:free": "gone"}), today=TODAY,
    )  # fmt: skip
    assert lost == () and restored == ("a/x:free",)
    assert set(frame.select("change", "model_id").iter_rows()) == {
        ("restored", "a/x:free"),
        ("added", "a/x:free"),
    }


def test_findings_record_every_listed_model_and_the_watched_ones_no_longer_listed() -> None:
    found = watch_findings(
        watch_id="w",
        source="sandbox",
        at=AT,
        catalog=catalog(("a/x:free", True), ("b/paid", False)),
        rotation=rotation({"general": ["a/x:free", "c/gone:free"]}),
        order=["general"],
        listings={"a/x:free": listing("a/x:free", "P1", "P2")},
        probes={},
        previous=Previous(snapshot_id="r", free=frozenset({"a/x:free", "c/gone:free", "d/old:free"})),
    )
    rows = {r["model_id"]: r for r in found.availability.iter_rows(named=True)}
    assert {m: (r["listed"], r["free"], r["endpoints"]) for m, r in rows.items()} == {
        "a/x:free": (True, True, 2),
        "b/paid": (True, False, None),
        "c/gone:free": (False, False, None),
        "d/old:free": (False, False, None),
    }
    assert found.members == ("a/x:free", "c/gone:free") and found.ids(Change.REMOVED) == ["d/old:free"]


# --- the repair -----------------------------------------------------------------------------------


def test_the_repaired_rotation_moves_fallbacks_up_keeps_the_cap_and_drops_empty_purposes() -> None:
    measured = rotation({"general": ["a", "b", "c", "d", "e"], "json": ["b"], "long-context": ["c", "a"]})
    assert rotation_members(measured, ["general", "json"]) == ["a", "b", "c", "d", "e"]
    repaired = repaired_rotation(measured, ["a", "b"])
    chains = {p: g.sort("rank")["model_id"].to_list() for (p,), g in repaired.group_by("purpose")}
    assert chains == {"general": ["c", "d", "e"], "long-context": ["c"]}
    assert sorted(repaired.filter(pl.col("purpose") == "general")["rank"].to_list()) == [1, 2, 3]
    document = exports.rotation_json(
        repaired, run_id="r", source="sandbox", generated_at=None, models_limit=3
    )
    assert document["purposes"]["general"] == {"model": "c", "models": ["c", "d", "e"]}
    assert repaired_rotation(measured, []) is measured


def test_the_notice_goes_under_the_title_is_replaced_and_removed_without_a_trace() -> None:
    summary = "# Executive summary, 2026-12-01\n\n> [!WARNING]\n> sandbox\n\n## Headline\n"
    repair = exports.Repair(
        on="2026-12-10",
        watch_id="watch-1",
        measured_run_id="r",
        removed=(("evil/`x`|[y](http://e):free", "gone", "no longer listed"), ("b:free", "no_endpoints", "")),
        emptied=("json",),
    )
    notice = notice_text(repair, measured_on="2026-12-01")
    assert "**Rotation repaired on 2026-12-10:**" in notice and "no endpoints" in notice
    html = MarkdownIt("commonmark").render(notice)
    assert 'href="http://e"' not in html and "<code>evil/`x`|[y](http://e):free</code>" in html
    assert "json has no model left" in notice
    once = with_notice(summary, notice)
    assert once.startswith(f"# Executive summary, 2026-12-01\n\n{NOTICE_START}") and NOTICE_END in once
    assert with_notice(once, notice) == once
    other = notice_text(
        exports.Repair("2026-12-11", "watch-2", "r", (("c:free", "gone", ""),)), measured_on="x"
    )
    assert with_notice(once, other).count(NOTICE_START) == 1 and "watch-2" in with_notice(once, other)
    assert with_notice(once, None) == summary


def test_a_repaired_yaml_names_the_removed_models_only_in_comments_that_cannot_break_out() -> None:
    repair = exports.Repair("2026-12-10", "watch-1", "r", (("evil/x:free\nmodel_list: []", "gone", ""),))
    text = exports.litellm_router_yaml(
        rotation({"general": ["a:free", "b:free"]}), run_id="r", repaired=repair
    )
    config = yaml.safe_load(text)
    assert [e["model_name"] for e in config["model_list"]][:1] == ["general"]
    assert '#   removed "evil/x:free\\nmodel_list: []" (gone)' in text
    document = exports.rotation_json(rotation({"general": ["a:free"]}), run_id="r", source="sandbox",
                                     generated_at=None, repaired=repair)  # fmt: skip
    assert document["repaired"]["removed"][0]["reason"] == "gone"
    assert json.loads(json.dumps(document)) == document


# --- events ------------------------------------------------------------------------------------


def test_events_go_out_only_for_what_is_new_and_pass_the_redaction_point() -> None:
    frame, _, _ = find_changes(
        watch_id="w",
        catalog=catalog(
            ("n/sk-or-v1-0123456789abcdef0123456789:free", True), ("e/x:free", True, "2026-12-12")
        ),
        members=["g/gone:free", "h/old:free"],
        listings={},
        probes={},
        previous=Previous(snapshot_id="p", free=frozenset({"e/x:free"}), lost={"h/old:free": "gone"}),
        today=TODAY,
    )
    events = watch_events(frame, watch_id="w", run_id="r", source="sandbox")
    assert [(e["event"], e["payload"]["reason"]) for e in events] == [
        ("discovery.model.lost", "gone"),
        ("discovery.model.added", "added"),
        ("discovery.model.expiring", "expiring"),
    ]
    assert "0123456789abcdef0123456789" not in json.dumps(events)
    assert events[2]["payload"]["expiration_date"] == "2026-12-12"
    assert [r["prefect.resource.role"] for r in events[0]["related"]] == ["discovery-watch", "discovery-run"]


# --- availability over time -----------------------------------------------------------------------


def test_availability_counts_observed_days_only_and_names_the_last_change() -> None:
    until = date(2026, 12, 31)
    observed = [
        date(2025, 12, 1),
        date(2026, 10, 1),
        date(2026, 12, 1),
        date(2026, 12, 30),
        date(2026, 12, 31),
    ]
    rows = [
        *({"model_id": "a", "day": d, "free": True} for d in observed),
        {"model_id": "b", "day": date(2025, 12, 1), "free": True},
        {"model_id": "b", "day": date(2026, 12, 31), "free": True},
        {"model_id": "c", "day": date(2026, 12, 30), "free": True},
        {"model_id": "c", "day": date(2026, 12, 30), "free": False},  # two snapshots that day
        {"model_id": "d", "day": date(2027, 1, 5), "free": True},  # after the report's day
    ]
    found = summarize(pl.DataFrame(rows, schema=AVAILABILITY_DAYS_SCHEMA), observed, until)
    by_id = {m.model_id: m for m in found.models}
    assert list(by_id) == ["a", "b", "c"]  # free now first, then most days free
    assert (found.observed_90, found.observed_365) == (3, 4)
    a, b, c = by_id["a"], by_id["b"], by_id["c"]
    assert (a.days_free_90, a.days_free_365, a.changed_on, a.changes) == (3, 4, None, 0)
    assert (b.first_free, b.last_free, b.days_free_365, b.change, b.changes) == (
        date(2025, 12, 1), date(2026, 12, 31), 1, BECAME_FREE, 2
    )  # fmt: skip
    assert (c.free_now, c.change, c.changed_on) == (False, STOPPED_FREE, date(2026, 12, 31))
    assert [p.free for p in found.per_day] == [2, 1, 1, 2, 2]


def test_the_availability_chart_is_deterministic_and_leaves_unobserved_days_as_gaps() -> None:
    points = [charts.DayPoint(date(2026, 12, 1), 3), charts.DayPoint(date(2026, 12, 4), 5)]
    svg = charts.availability_svg(points)
    assert svg == charts.availability_svg(list(reversed(points)))
    assert 'id="availability-free"' in svg and "2026-12-04" in svg
    assert "No catalog snapshot yet." in charts.availability_svg([])


# --- the sandbox and the parameters ---------------------------------------------------------------


def test_a_scenario_stages_expiration_dates_as_a_date_or_days_from_today() -> None:
    free = build_catalog(Scenario().catalog).free_ids()
    first, second = [m for m in free if m.endswith(":free")][:2]
    scenario = Scenario.from_mapping({"catalog": {"expires": {first: 7, second: "2027-01-15"}}})
    built = build_catalog(scenario.catalog, today=TODAY)
    assert built.models[first].entry["expiration_date"] == "2026-12-17"
    assert built.models[second].entry["expiration_date"] == "2027-01-15"
    with pytest.raises(ScenarioError, match="is not a date"):
        Scenario.from_mapping({"catalog": {"expires": {first: "soon"}}})
    with pytest.raises(ScenarioError, match="not in the sandbox catalog"):
        build_catalog(Scenario.from_mapping({"catalog": {"expires": {"no/such:free": 1}}}).catalog)


def test_the_watch_flow_signature_and_a_deployment_runs_trust_checks_come_from_its_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.watch import watch

    assert list(inspect.signature(watch.fn).parameters) == [f.name for f in fields(WatchParameters)]
    assert "liveness: most one-task chat probes" in (watch.fn.__doc__ or "")
    inside = tmp_path / "inputs"
    inside.mkdir()
    (inside / "ok.toml").write_text("")
    (tmp_path / "outside.toml").write_text("")
    monkeypatch.setenv("DISCOVERY_INPUT_DIR", str(inside))
    params = WatchParameters(scenario=str(inside / "ok.toml"))
    assert check_deployment_run(params, settings_for(params)).scenario == str((inside / "ok.toml").resolve())
    outside = WatchParameters(scenario=str(tmp_path / "outside.toml"))
    with pytest.raises(ConfigError, match=r"scenario: .* is outside"):
        check_deployment_run(outside, settings_for(outside))
    with pytest.raises(ConfigError, match="parameter liveness: expected a number of at least 0"):
        WatchParameters(liveness=-1).check()
