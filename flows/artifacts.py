"""Run history in the Prefect UI: the flow run's name and tags, and the reports as keyed artifacts.

* Name: ``<run date>-<source>`` (``2026-11-01-sandbox``), after the source is resolved, so a run started
  with ``source=auto`` shows what it really used.
* Tags: ``discovery`` and ``source:<source>`` added to the run's own tags (deployment tags stay).
* Artifacts: the executive summary as Markdown under the key ``executive-summary`` and the speed tiers
  as a table under the key ``tiers`` (both as the render step returns them). Keyed artifacts get a new
  version per run, so the Artifacts page shows the latest and lists the earlier versions; each version
  also shows on its flow run's page.

Source names are written with dashes (``base_url`` becomes ``base-url``).

The name and tags are computed by pure functions; :func:`label_flow_run` and
:func:`publish_artifacts` are the only parts that talk to Prefect and must run inside the flow run.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from typing import Any
from uuid import UUID

SUMMARY_KEY = "executive-summary"
TIERS_KEY = "tiers"
BASE_TAG = "discovery"
SOURCE_TAG_PREFIX = "source:"


def _label(source: str) -> str:
    return source.replace("_", "-")


def run_name(run_date: date, source: str) -> str:
    """The flow run's name: ``<ISO date>-<source>``."""
    return f"{run_date.isoformat()}-{_label(source)}"


def run_tags(existing: Iterable[str], source: str) -> list[str]:
    """The run's tags plus ``discovery`` and ``source:<source>`` (one source tag, sorted, unique)."""
    kept = {t for t in existing if not t.startswith(SOURCE_TAG_PREFIX)}
    return sorted(kept | {BASE_TAG, f"{SOURCE_TAG_PREFIX}{_label(source)}"})


async def label_flow_run(source: str, *, run_date: date, kind: str | None = None) -> None:
    """Rename the current flow run to ``<date>-<source>`` (``<date>-<kind>-<source>`` for another
    kind of run than a discovery, such as ``watch``) and tag it with its source (and its kind).

    Does nothing outside a flow run.
    """
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run

    flow_run_id = flow_run.id
    if not flow_run_id:
        return
    name = run_name(run_date, f"{kind}-{source}" if kind else source)
    async with get_client() as client:
        current = await client.read_flow_run(UUID(flow_run_id))
        tags = run_tags(current.tags, source)
        await client.update_flow_run(current.id, name=name, tags=sorted({*tags, kind}) if kind else tags)


async def publish_artifacts(summary_markdown: str, tiers: list[dict[str, Any]], run_id: str) -> list[UUID]:
    """Attach the executive summary (Markdown) and the tiers (table) to the current flow run."""
    from prefect.artifacts import acreate_markdown_artifact, acreate_table_artifact

    summary_id = await acreate_markdown_artifact(
        markdown=summary_markdown,
        key=SUMMARY_KEY,
        description=f"Executive summary of discovery run {run_id}",
    )
    tiers_id = await acreate_table_artifact(
        table=tiers,
        key=TIERS_KEY,
        description=f"Speed tiers of the working models in discovery run {run_id}",
    )
    return [summary_id, tiers_id]
