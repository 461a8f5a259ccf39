"""Alerting hook: tell Prefect when a model of the previous rotation is lost.

A model that the previous run put in the rotation is *lost* in the current run when

* ``gone``: the catalog lists neither it nor its paid slug;
* ``no_longer_free``: the catalog still lists it, but not as a free model, or its ``:free`` id left the
  catalog while the paid slug stays (the same rule as the ``free_ended`` change in the reports:
  :func:`freemodels.changes.listing_of`);
* ``broken``: it was probed and its verdict is ``failing`` (no probe succeeded).

A model that was not probed this time (left out by the daily quota or by ``max_models``) or that still
answers (``working``, ``degraded``) is not lost: nothing is known against it.

For each lost model the flow emits one Prefect event::

    event:    discovery.model.lost
    resource: {"prefect.resource.id": "openrouter.model.<model id>",
               "prefect.resource.name": "<model id>",
               "discovery.reason": "gone" | "no_longer_free" | "broken",
               "discovery.source": "<source>"}
    related:  the discovery run (role "discovery-run"); Prefect adds the flow run and its flow
    payload:  model_id, reason, verdict, root_cause, detail, run_id, source

An automation that matches ``discovery.model.lost`` on ``openrouter.model.*`` turns that into a
notification (see the README, "Run it monthly").

:func:`find_lost_models` is pure (DataFrames in, records out); only :func:`emit_lost_models` talks to
Prefect.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from freemodels.changes import listing_of
from freemodels.records import Verdict
from freemodels.secrets import untrusted

EVENT_MODEL_LOST = "discovery.model.lost"
RESOURCE_PREFIX = "openrouter.model."

GONE = "gone"
NO_LONGER_FREE = "no_longer_free"
BROKEN = "broken"


@dataclass(frozen=True, slots=True)
class LostModel:
    """A model of the previous rotation that the current run found gone or broken."""

    model_id: str
    reason: str  # GONE | NO_LONGER_FREE | BROKEN
    verdict: str | None
    root_cause: str | None
    detail: str


def previous_rotation_ids(rotation: pl.DataFrame, purpose: str = "general") -> list[str]:
    """The model ids of one purpose's chain in a stored rotation, in rank order."""
    if rotation.is_empty():
        return []
    chain = rotation.filter(pl.col("purpose") == purpose).sort("rank")
    return chain.get_column("model_id").to_list()


def previous_rotation_of(db_path: Path, run_id: str, purpose: str = "general") -> list[str]:
    """The rotation of the run before ``run_id`` (same source, completed), read from DuckDB.

    Empty when there is no earlier run. Call it after the run is stored.
    """
    from freemodels import storage

    con = storage.connect(db_path, read_only=True)
    try:
        previous = storage.previous_run_id(con, run_id)
        if previous is None:
            return []
        return previous_rotation_ids(storage.load_table(con, "rotation", previous), purpose)
    finally:
        con.close()


def find_lost_models(
    previous_ids: Iterable[str], results: pl.DataFrame, catalog: pl.DataFrame
) -> list[LostModel]:
    """Which models of the previous rotation are gone or broken now (in the previous order).

    ``results`` has the ``model_results`` columns (``model_id``, ``verdict``, ``root_cause``,
    ``evidence``); ``catalog`` the parsed catalog's (``model_id``, ``is_free``). Duplicates in
    ``previous_ids`` are reported once.
    """
    listed: dict[str, bool] = dict(
        zip(
            catalog.get_column("model_id").to_list(),
            catalog.get_column("is_free").fill_null(False).to_list(),
            strict=True,
        )
    )
    by_model = {row["model_id"]: row for row in results.iter_rows(named=True)}
    lost: list[LostModel] = []
    seen: set[str] = set()
    for model_id in previous_ids:
        if model_id in seen:
            continue
        seen.add(model_id)
        row = by_model.get(model_id)
        verdict = row["verdict"] if row else None
        root_cause = row.get("root_cause") if row else None
        where = listing_of(model_id, listed)
        if where == "gone":
            lost.append(LostModel(model_id, GONE, verdict, root_cause, "no longer listed in the catalog"))
        elif where == "no_longer_free":
            detail = (
                "listed, but no longer free"
                if model_id in listed
                else f"only the paid {model_id.removesuffix(':free')} remains"
            )
            lost.append(LostModel(model_id, NO_LONGER_FREE, verdict, root_cause, detail))
        elif verdict == Verdict.FAILING:
            evidence = row.get("evidence") if row else None
            detail = f"every probe failed ({root_cause or 'unknown cause'})"
            if evidence:
                detail += f": {evidence}"
            lost.append(LostModel(model_id, BROKEN, verdict, root_cause, detail))
    return lost


def event_for(lost: LostModel, *, run_id: str, source: str) -> dict[str, Any]:
    """The keyword arguments of :func:`prefect.events.emit_event` for one lost model.

    The model id and the detail come from the catalog and a server's messages: they pass the
    redaction point again (:func:`freemodels.secrets.untrusted`) before they go into an event."""
    lost = LostModel(
        model_id=untrusted(lost.model_id),
        reason=lost.reason,
        verdict=lost.verdict,
        root_cause=lost.root_cause,
        detail=untrusted(lost.detail, 1000),
    )
    return {
        "event": EVENT_MODEL_LOST,
        "resource": {
            "prefect.resource.id": f"{RESOURCE_PREFIX}{lost.model_id}",
            "prefect.resource.name": lost.model_id,
            "discovery.reason": lost.reason,
            "discovery.source": source,
        },
        "related": [
            {
                "prefect.resource.id": f"discovery.run.{run_id}",
                "prefect.resource.role": "discovery-run",
                "prefect.resource.name": run_id,
            }
        ],
        "payload": {
            "model_id": lost.model_id,
            "reason": lost.reason,
            "verdict": lost.verdict,
            "root_cause": lost.root_cause,
            "detail": lost.detail,
            "run_id": run_id,
            "source": source,
        },
    }


def emit_lost_models(
    previous_rotation_ids: Sequence[str],
    current_results: pl.DataFrame,
    catalog: pl.DataFrame,
    *,
    run_id: str,
    source: str,
) -> list[LostModel]:
    """Emit ``discovery.model.lost`` for every lost model of the previous rotation; return them.

    Call it from inside the flow run, so that Prefect relates each event to the flow run.
    """
    from prefect.events import emit_event

    lost = find_lost_models(previous_rotation_ids, current_results, catalog)
    for model in lost:
        emit_event(**event_for(model, run_id=run_id, source=source))
    return lost


# --------------------------------------------------------------------------------------------------
# the daily watch: lost, expiring and added models

EVENT_MODEL_EXPIRING = "discovery.model.expiring"
EVENT_MODEL_ADDED = "discovery.model.added"
WATCH_EVENTS = (EVENT_MODEL_LOST, EVENT_MODEL_EXPIRING, EVENT_MODEL_ADDED)
"""The events a watch emits (an automation on ``discovery.model.*`` covers all of them)."""

_WATCH_EVENT_OF: dict[str, str] = {
    "lost": EVENT_MODEL_LOST,
    "expiring": EVENT_MODEL_EXPIRING,
    "added": EVENT_MODEL_ADDED,
}


def watch_events(
    changes: pl.DataFrame, *, watch_id: str, run_id: str | None, source: str
) -> list[dict[str, Any]]:
    """The keyword arguments of :func:`prefect.events.emit_event` for what a watch found new (pure).

    One event per ``watch_changes`` row that is new since the previous watch: ``lost`` (reason
    ``gone`` | ``no_longer_free`` | ``no_endpoints`` | ``broken``), ``expiring`` (the date in the
    payload) and ``added``. Rows the previous watch already reported send nothing again. The model
    id and the detail come from the catalog: they pass the redaction point again here.
    """
    events: list[dict[str, Any]] = []
    for row in changes.filter(pl.col("new").fill_null(False)).iter_rows(named=True):
        name = _WATCH_EVENT_OF.get(row["change"])
        if name is None:
            continue
        model_id = untrusted(row["model_id"])
        reason = row["reason"] or row["change"]
        related = [
            {
                "prefect.resource.id": f"discovery.watch.{watch_id}",
                "prefect.resource.role": "discovery-watch",
                "prefect.resource.name": watch_id,
            }
        ]
        if run_id:
            related.append(
                {
                    "prefect.resource.id": f"discovery.run.{run_id}",
                    "prefect.resource.role": "discovery-run",
                    "prefect.resource.name": run_id,
                }
            )
        events.append(
            {
                "event": name,
                "resource": {
                    "prefect.resource.id": f"{RESOURCE_PREFIX}{model_id}",
                    "prefect.resource.name": model_id,
                    "discovery.reason": reason,
                    "discovery.source": source,
                },
                "related": related,
                "payload": {
                    "model_id": model_id,
                    "reason": reason,
                    "detail": untrusted(row["detail"] or "", 1000),
                    "in_rotation": bool(row["in_rotation"]),
                    "expiration_date": untrusted(row["expiration_date"]) if row["expiration_date"] else None,
                    "watch_id": watch_id,
                    "run_id": run_id,
                    "source": source,
                },
            }
        )
    return events
