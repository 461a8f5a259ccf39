"""The daily watch, pure: what a catalog read (and the rotation's endpoints listings) says about the
rotation people deploy, compared with the previous snapshot.

A *snapshot* is one read of the catalog: a discovery run's, or a watch's. The watch compares the catalog
it just read with the latest full run's rotation and with the snapshot before it (the previous watch,
or the run when no watch came since) and finds, per model:

``lost``
    a model of the rotation that cannot serve it now: ``gone`` (neither it nor its paid slug is
    listed), ``no_longer_free`` (listed with a price, or only its paid slug remains: the rule of
    :func:`freemodels.changes.listing_of`), ``no_endpoints`` (its endpoints listing names no provider),
    or ``broken`` (a liveness probe, when asked for, failed for a reason that settles a model). Every
    watch lists every lost member; ``new`` marks those the previous watch did not (an event goes out
    for them only).
``restored``
    lost at the previous watch, usable again: it goes back into the exports.
``added``
    free now, not free at the previous snapshot (newly listed, or a paid model became free).
``removed`` / ``free_ended``
    free at the previous snapshot, now not listed / listed with a price (models outside the rotation;
    its members are ``lost``).
``expiring``
    free, with an ``expiration_date`` within :data:`EXPIRY_WINDOW_DAYS` days (or past while still
    listed); ``new`` when the previous watch did not report it with the same date.

The rotation without its lost members (:func:`repaired_rotation`) keeps each purpose's order: the
fallbacks move up. Nothing here does I/O; every text from the catalog stays in the frames as data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import StrEnum

import polars as pl

from freemodels.changes import FREE_SUFFIX, expiration_of, listing_of
from freemodels.failures import FAILURE_INFO, SETTLING, Failure
from freemodels.listings import Listing, ListingStatus
from freemodels.records import AVAILABILITY_SCHEMA, WATCH_CHANGES_SCHEMA

EXPIRY_WINDOW_DAYS = 14
"""A free model whose ``expiration_date`` is at most this many days away is reported as expiring."""


class Change(StrEnum):
    """The kinds of ``watch_changes`` rows, in the order they are listed."""

    LOST = "lost"
    RESTORED = "restored"
    ADDED = "added"
    REMOVED = "removed"
    FREE_ENDED = "free_ended"
    EXPIRING = "expiring"


class LostReason(StrEnum):
    """Why a rotation member is lost (the ``reason`` of a ``lost`` row and of its event)."""

    GONE = "gone"
    NO_LONGER_FREE = "no_longer_free"
    NO_ENDPOINTS = "no_endpoints"
    BROKEN = "broken"


REASON_WORDS: dict[str, str] = {
    LostReason.GONE: "gone from the catalog",
    LostReason.NO_LONGER_FREE: "no longer free",
    LostReason.NO_ENDPOINTS: "no endpoints",
    LostReason.BROKEN: "failed its liveness probe",
}
"""How summaries and the executive summary's notice say each reason (project text)."""

_PROBE_REASON: dict[Failure, LostReason] = {
    Failure.NO_ENDPOINTS: LostReason.NO_ENDPOINTS,
    Failure.FREE_VARIANT_ENDED: LostReason.NO_LONGER_FREE,
    Failure.WRONG_MODEL_ID: LostReason.GONE,
}


@dataclass(frozen=True, slots=True)
class Previous:
    """The snapshot a watch compares with: the previous watch, or the run when none came since."""

    snapshot_id: str | None  # None: nothing to compare with (no run and no watch of the source yet)
    free: frozenset[str] = frozenset()  # models it saw free
    lost: Mapping[str, str] = field(default_factory=dict)  # model -> reason, as the previous watch found
    expiring: Mapping[str, str] = field(default_factory=dict)  # model -> date, as the previous watch found


@dataclass(frozen=True, slots=True)
class LostMember:
    """A model of the rotation that cannot serve it now."""

    model_id: str
    reason: LostReason
    detail: str
    new: bool  # not lost at the previous watch (or lost then for another reason)


@dataclass(frozen=True, slots=True)
class Findings:
    """What one watch found."""

    changes: pl.DataFrame  # WATCH_CHANGES_SCHEMA
    lost: tuple[LostMember, ...]  # in rotation order
    restored: tuple[str, ...]
    availability: pl.DataFrame  # AVAILABILITY_SCHEMA
    members: tuple[str, ...]  # the rotation's distinct models, in order

    def ids(self, change: Change, *, new_only: bool = False) -> list[str]:
        rows = self.changes.filter(pl.col("change") == change.value)
        if new_only:
            rows = rows.filter(pl.col("new"))
        return rows.get_column("model_id").to_list()


def rotation_members(rotation: pl.DataFrame, order: Sequence[str] = ()) -> list[str]:
    """The distinct models of a stored rotation: purposes in ``order`` (then the rest by name), each
    by rank; a model shared by several chains counts once, where it first appears."""
    if rotation.is_empty():
        return []
    position = {p: i for i, p in enumerate(order)}
    rows = sorted(
        rotation.select("purpose", "rank", "model_id").iter_rows(),
        key=lambda r: (position.get(r[0], len(position)), r[0], r[1]),
    )
    return list(dict.fromkeys(model_id for _, _, model_id in rows))


def _free_now(catalog: pl.DataFrame) -> dict[str, bool]:
    """model_id -> free (a router is never free; a null flag is not free)."""
    if catalog.is_empty():
        return {}
    frame = catalog.select(
        "model_id", (pl.col("is_free").fill_null(False) & ~pl.col("is_router").fill_null(False)).alias("f")
    )
    return {model_id: bool(free) for model_id, free in frame.iter_rows()}


def find_lost(
    members: Iterable[str],
    listed: Mapping[str, bool],
    listings: Mapping[str, Listing],
    probes: Mapping[str, Failure | None],
) -> list[tuple[str, LostReason, str]]:
    """Which rotation members are lost (see the module docstring), in order: (model, reason, detail).

    ``listed`` maps every catalog id to whether it is free; ``listings`` the members' endpoints
    listings that were read; ``probes`` the members a liveness probe asked, to its failure (None:
    it passed). A listing that could not be read, or a transient probe failure, loses nothing.
    """
    lost: list[tuple[str, LostReason, str]] = []
    for model_id in dict.fromkeys(members):
        where = listing_of(model_id, listed)
        listing = listings.get(model_id)
        failure = probes.get(model_id)
        if where == "gone":
            lost.append((model_id, LostReason.GONE, "no longer listed in the catalog"))
        elif where == "no_longer_free":
            detail = (
                "listed, but no longer free"
                if model_id in listed
                else f"only the paid {model_id.removesuffix(FREE_SUFFIX)} remains"
            )
            lost.append((model_id, LostReason.NO_LONGER_FREE, detail))
        elif listing is not None and listing.status is ListingStatus.EMPTY:
            lost.append((model_id, LostReason.NO_ENDPOINTS, "its endpoints listing names no provider"))
        elif failure is not None and failure in SETTLING:
            reason = _PROBE_REASON.get(failure, LostReason.BROKEN)
            lost.append((model_id, reason, f"liveness probe: {FAILURE_INFO[failure].title}"))
    return lost


def find_changes(
    *,
    watch_id: str,
    catalog: pl.DataFrame,
    members: Sequence[str],
    listings: Mapping[str, Listing],
    probes: Mapping[str, Failure | None],
    previous: Previous,
    today: date,
    expiry_window_days: int = EXPIRY_WINDOW_DAYS,
) -> tuple[pl.DataFrame, tuple[LostMember, ...], tuple[str, ...]]:
    """The watch's ``watch_changes`` rows, its lost members and the members restored."""
    free = _free_now(catalog)
    listed_free = {m for m, f in free.items() if f}
    in_rotation = set(members)
    rows: list[dict[str, object]] = []

    def row(change: Change, model_id: str, *, reason: str | None = None, detail: str | None = None,
            new: bool = True, expires: str | None = None) -> None:  # fmt: skip
        rows.append(
            {
                "watch_id": watch_id,
                "compared_with": previous.snapshot_id,
                "model_id": model_id,
                "change": change.value,
                "reason": reason,
                "detail": detail,
                "in_rotation": model_id in in_rotation,
                "new": new,
                "expiration_date": expires,
            }
        )

    lost: list[LostMember] = []
    for model_id, reason, detail in find_lost(members, free, listings, probes):
        new = previous.lost.get(model_id) != reason.value
        lost.append(LostMember(model_id, reason, detail, new))
        row(Change.LOST, model_id, reason=reason.value, detail=detail, new=new)
    lost_ids = {m.model_id for m in lost}
    restored = tuple(m for m in members if m in previous.lost and m not in lost_ids)
    for model_id in restored:
        row(Change.RESTORED, model_id, detail=f"usable again (was {previous.lost[model_id]})")

    if previous.snapshot_id is not None:
        for model_id in sorted(listed_free - previous.free):
            row(Change.ADDED, model_id, detail="now free (was paid)" if model_id in free else "newly listed")
        for model_id in sorted(previous.free - listed_free - in_rotation):
            where = listing_of(model_id, free)
            if where == "no_longer_free":
                row(Change.FREE_ENDED, model_id, detail="no longer free")
            else:
                row(Change.REMOVED, model_id, detail="no longer listed")

    horizon = today + timedelta(days=expiry_window_days)
    if not catalog.is_empty():
        for model_id, raw in catalog.select("model_id", "expiration_date").iter_rows():
            when = expiration_of(raw)
            if model_id in listed_free and when is not None and when <= horizon:
                days = (when - today).days
                detail = f"expires {when.isoformat()}" + (
                    f" (in {days} days)" if days > 1 else " (tomorrow)" if days == 1 else " (date reached)"
                )
                new = previous.expiring.get(model_id) != when.isoformat()
                row(Change.EXPIRING, model_id, detail=detail, new=new, expires=when.isoformat())

    order = {c.value: i for i, c in enumerate(Change)}
    rows.sort(key=lambda r: (order[str(r["change"])], str(r["model_id"])))
    frame = (
        pl.DataFrame(rows, schema=WATCH_CHANGES_SCHEMA) if rows else pl.DataFrame(schema=WATCH_CHANGES_SCHEMA)
    )
    return frame, tuple(lost), restored


def availability_rows(
    *,
    snapshot_id: str,
    source: str,
    at: datetime,
    catalog: pl.DataFrame,
    listings: Mapping[str, Listing],
    also: Iterable[str] = (),
) -> pl.DataFrame:
    """The watch's snapshot in :data:`~freemodels.records.AVAILABILITY_SCHEMA`: every catalog model,
    plus the models of ``also`` the catalog no longer lists (rotation members, models free before)."""
    free = _free_now(catalog)
    expiration = (
        dict(catalog.select("model_id", "expiration_date").iter_rows()) if not catalog.is_empty() else {}
    )
    rows: list[dict[str, object]] = []

    def add(model_id: str, listed: bool) -> None:
        listing = listings.get(model_id)
        rows.append(
            {
                "snapshot_id": snapshot_id,
                "kind": "watch",
                "source": source,
                "at": at,
                "model_id": model_id,
                "listed": listed,
                "free": listed and free.get(model_id, False),
                "endpoints": len(listing.endpoints) if listing is not None else None,
                "listing": listing.status.value if listing is not None else None,
                "expiration_date": expiration.get(model_id),
            }
        )

    for model_id in free:
        add(model_id, True)
    for model_id in sorted(set(also) - set(free)):
        add(model_id, False)
    if not rows:
        return pl.DataFrame(schema=AVAILABILITY_SCHEMA)
    return pl.DataFrame(rows, schema=AVAILABILITY_SCHEMA)


def repaired_rotation(rotation: pl.DataFrame, lost: Iterable[str]) -> pl.DataFrame:
    """The rotation without the ``lost`` models: each purpose keeps its order (fallbacks move up,
    ranks from 1 again); a purpose left without any model is dropped."""
    gone = list(dict.fromkeys(lost))
    if rotation.is_empty() or not gone:
        return rotation
    kept = rotation.filter(~pl.col("model_id").is_in(gone)).sort(["purpose", "rank"])
    return kept.with_columns(
        pl.col("rank").rank("ordinal").over("purpose").cast(pl.Int64).alias("rank")
    ).select(rotation.columns)


def dropped_purposes(rotation: pl.DataFrame, repaired: pl.DataFrame) -> list[str]:
    """The purposes the repair left without any model."""
    before = set(rotation.get_column("purpose").to_list()) if not rotation.is_empty() else set()
    after = set(repaired.get_column("purpose").to_list()) if not repaired.is_empty() else set()
    return sorted(before - after)


def watch_findings(
    *,
    watch_id: str,
    source: str,
    at: datetime,
    catalog: pl.DataFrame,
    rotation: pl.DataFrame,
    order: Sequence[str],
    listings: Mapping[str, Listing],
    probes: Mapping[str, Failure | None],
    previous: Previous,
    expiry_window_days: int = EXPIRY_WINDOW_DAYS,
) -> Findings:
    """Everything the watch stores and acts on, from what it read (see the module docstring)."""
    members = rotation_members(rotation, order)
    changes, lost, restored = find_changes(
        watch_id=watch_id,
        catalog=catalog,
        members=members,
        listings=listings,
        probes=probes,
        previous=previous,
        today=at.date(),
        expiry_window_days=expiry_window_days,
    )
    availability = availability_rows(
        snapshot_id=watch_id,
        source=source,
        at=at,
        catalog=catalog,
        listings=listings,
        also=[*members, *previous.free],
    )
    return Findings(
        changes=changes, lost=lost, restored=restored, availability=availability, members=tuple(members)
    )
