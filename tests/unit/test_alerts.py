"""Which models of the previous rotation are lost, and the event emitted for each."""

from __future__ import annotations

import polars as pl
import pytest

from flows import alerts
from flows.alerts import (
    BROKEN,
    EVENT_MODEL_LOST,
    GONE,
    NO_LONGER_FREE,
    LostModel,
    event_for,
    find_lost_models,
    previous_rotation_ids,
)
from freemodels.records import MODEL_RESULTS_SCHEMA, ROTATION_SCHEMA


def results(*rows: tuple[str, str, str | None, str | None]) -> pl.DataFrame:
    data = [
        {"run_id": "r2", "model_id": m, "verdict": v, "root_cause": rc, "evidence": ev}
        for m, v, rc, ev in rows
    ]
    return (
        pl.DataFrame(data, schema=MODEL_RESULTS_SCHEMA) if data else pl.DataFrame(schema=MODEL_RESULTS_SCHEMA)
    )


def catalog(**free_by_id: bool) -> pl.DataFrame:
    return pl.DataFrame(
        {"model_id": list(free_by_id), "is_free": list(free_by_id.values())},
        schema={"model_id": pl.String(), "is_free": pl.Boolean()},
    )


def test_gone_no_longer_free_and_broken_are_lost_in_previous_order() -> None:
    previous = ["a/broken:free", "a/gone:free", "a/paid", "a/ok:free"]
    cur = results(
        ("a/broken:free", "failing", "provider_error", "502 Provider returned error"),
        ("a/ok:free", "working", None, None),
    )
    cat = catalog(**{"a/broken:free": True, "a/paid": False, "a/ok:free": True})

    lost = find_lost_models(previous, cur, cat)

    assert [(m.model_id, m.reason) for m in lost] == [
        ("a/broken:free", BROKEN),
        ("a/gone:free", GONE),
        ("a/paid", NO_LONGER_FREE),
    ]
    broken = lost[0]
    assert broken.verdict == "failing" and broken.root_cause == "provider_error"
    assert "provider_error" in broken.detail and "502 Provider returned error" in broken.detail


@pytest.mark.parametrize("verdict", ["working", "degraded", "untested_quota"])
def test_models_that_answer_or_were_not_probed_are_not_lost(verdict: str) -> None:
    cur = results(("a/m:free", verdict, None, None))
    assert find_lost_models(["a/m:free"], cur, catalog(**{"a/m:free": True})) == []


def test_listed_free_model_left_out_of_the_probes_is_not_lost() -> None:
    # e.g. max_models cut it: listed and free, but no verdict this run.
    assert find_lost_models(["a/m:free"], results(), catalog(**{"a/m:free": True})) == []


def test_gone_wins_over_a_failing_verdict_and_duplicates_are_reported_once() -> None:
    cur = results(("a/x:free", "not_listed", "wrong_model_id", None))
    lost = find_lost_models(["a/x:free", "a/x:free"], cur, catalog())
    assert lost == [
        LostModel("a/x:free", GONE, "not_listed", "wrong_model_id", "no longer listed in the catalog")
    ]


def test_no_previous_rotation_means_nothing_lost() -> None:
    assert find_lost_models([], results(("a/m:free", "failing", None, None)), catalog()) == []


def test_previous_rotation_ids_take_one_purpose_in_rank_order() -> None:
    rows = [
        {"run_id": "r1", "purpose": "general", "rank": 2, "model_id": "b"},
        {"run_id": "r1", "purpose": "json", "rank": 1, "model_id": "j"},
        {"run_id": "r1", "purpose": "general", "rank": 1, "model_id": "a"},
    ]
    rotation = pl.DataFrame(rows, schema=ROTATION_SCHEMA)
    assert previous_rotation_ids(rotation) == ["a", "b"]
    assert previous_rotation_ids(rotation, "json") == ["j"]
    assert previous_rotation_ids(pl.DataFrame(schema=ROTATION_SCHEMA)) == []


def test_event_names_the_model_as_resource_and_carries_the_reason() -> None:
    lost = LostModel(
        "meta-llama/llama-3.3-70b-instruct:free", BROKEN, "failing", "timeout", "every probe failed"
    )
    kwargs = event_for(lost, run_id="20261101T060000Z-ab12", source="sandbox")

    assert kwargs["event"] == EVENT_MODEL_LOST == "discovery.model.lost"
    assert kwargs["resource"] == {
        "prefect.resource.id": "openrouter.model.meta-llama/llama-3.3-70b-instruct:free",
        "prefect.resource.name": "meta-llama/llama-3.3-70b-instruct:free",
        "discovery.reason": "broken",
        "discovery.source": "sandbox",
    }
    assert kwargs["related"][0]["prefect.resource.role"] == "discovery-run"
    assert kwargs["payload"]["run_id"] == "20261101T060000Z-ab12"
    assert kwargs["payload"]["root_cause"] == "timeout"
    assert all(isinstance(v, str) for v in kwargs["resource"].values())


def test_emit_lost_models_emits_one_event_per_lost_model(monkeypatch: pytest.MonkeyPatch) -> None:
    import prefect.events

    sent: list[dict] = []
    monkeypatch.setattr(prefect.events, "emit_event", lambda **kw: sent.append(kw))
    cur = results(("a/ok:free", "working", None, None), ("a/bad:free", "failing", "timeout", None))
    cat = catalog(**{"a/ok:free": True, "a/bad:free": True})

    lost = alerts.emit_lost_models(
        ["a/ok:free", "a/bad:free", "a/gone:free"], cur, cat, run_id="r2", source="sandbox"
    )

    assert [m.model_id for m in lost] == ["a/bad:free", "a/gone:free"]
    assert [e["resource"]["prefect.resource.id"] for e in sent] == [
        "openrouter.model.a/bad:free",
        "openrouter.model.a/gone:free",
    ]
    assert {e["event"] for e in sent} == {"discovery.model.lost"}


def test_a_free_id_gone_while_its_paid_slug_stays_is_no_longer_free_as_in_the_changes() -> None:
    from datetime import date

    from freemodels.changes import compute_changes

    previous = ["x/model:free", "y/gone:free"]
    cat = catalog(**{"x/model": False})
    lost = find_lost_models(previous, results(), cat)
    assert [(m.model_id, m.reason) for m in lost] == [("x/model:free", NO_LONGER_FREE), ("y/gone:free", GONE)]
    assert lost[0].detail == "only the paid x/model remains"

    # The reports' change list says the same of both models.
    def full(frame: pl.DataFrame) -> pl.DataFrame:
        return frame.with_columns(pl.lit(None, pl.String()).alias("expiration_date")).select(
            "model_id", "is_free", "expiration_date"
        )

    prev = full(catalog(**{"x/model:free": True, "y/gone:free": True}))
    changes = compute_changes(
        run_id="r2",
        prev_run_id="r1",
        prev_catalog=prev,
        cur_catalog=full(cat),
        prev_results=None,
        cur_results=None,
        today=date(2026, 12, 1),
    )
    kinds = dict(zip(changes.get_column("model_id"), changes.get_column("change"), strict=True))
    assert kinds == {"x/model:free": "free_ended", "y/gone:free": "removed"}
