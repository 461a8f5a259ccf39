"""The ``monthly`` and ``watch`` deployments of the ``discovery`` flow, served by one long-running process.

``discovery serve`` (started in the background by ``discovery up``) registers two deployments with the
Prefect server named by ``PREFECT_API_URL`` and then polls it for their runs:

* ``discovery/monthly``, the full discovery: cron ``0 6 1 * *`` in UTC (06:00 on the first of every
  month);
* ``discovery/watch``, the daily watch (:mod:`flows.watch`, no chat quota): cron ``30 6 * * *`` in UTC
  (06:30 every day),

and runs started by hand (``prefect deployment run discovery/monthly``, or "Run" in the UI). Each run
executes in a child process that inherits this process's environment and working directory, so
relative ``data/`` and ``docs/`` resolve against the folder the serve process was started in.

Why ``flow.serve`` and not a work pool with a worker: on one machine it is one process instead of three
parts (pool, ``prefect deploy`` from a ``prefect.yaml``, worker) that must be kept in step; the
deployment's definition lives in this module, next to the flow and versioned with it, so nothing can
drift; and there is no code-pulling step that could fail at run time. Scaling out later (one deployment
per account on several machines) is what a process work pool is for; the flow does not change for it.

Restarts do not lose the schedule: the schedule is stored by the server (in its database) and this
process re-applies the same deployment, schedule slug included, every time it starts, keeping whether
the deployment is paused (a deployment paused in the UI stays paused across restarts).
``pause_on_shutdown=False`` keeps the schedule active while the process is stopped, so a run that falls
due meanwhile waits as *Late* and starts as soon as the process is back. ``limit=1``: one discovery at a
time, over both deployments (runs share one DuckDB file and one account's quota): a watch that falls
due while the monthly run works waits for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment
    from prefect.schedules import Schedule

from freemodels.errors import ConfigError

DEPLOYMENT_NAME = "monthly"
CRON = "0 6 1 * *"
TIMEZONE = "UTC"
SCHEDULE_SLUG = "monthly-0600-utc"
DEPLOYMENT_TAGS = ("discovery",)
DESCRIPTION = (
    "Monthly discovery of the free models on OpenRouter (or the sandbox without a key): probes, "
    "tiers, rotation, DuckDB history and the reports in docs/."
)
WATCH_DEPLOYMENT_NAME = "watch"
WATCH_CRON = "30 6 * * *"
WATCH_SCHEDULE_SLUG = "daily-0630-utc"
WATCH_TAGS = ("discovery", "watch")
WATCH_DESCRIPTION = (
    "Daily watch of the rotation without chat quota: the catalog and the rotation's endpoints "
    "listings, availability in DuckDB, lost/expiring/added events, and docs/rotation.json and "
    "docs/litellm-router.yaml repaired when a model is lost."
)
DEPLOYMENT_NAMES = (DEPLOYMENT_NAME, WATCH_DEPLOYMENT_NAME)


def monthly_schedule() -> Schedule:
    """Cron ``0 6 1 * *`` in UTC, with a fixed slug so that re-applying updates it in place."""
    from prefect.schedules import Cron

    return Cron(CRON, timezone=TIMEZONE, slug=SCHEDULE_SLUG)


def watch_schedule() -> Schedule:
    """Cron ``30 6 * * *`` in UTC (daily, after the monthly run's start), with a fixed slug."""
    from prefect.schedules import Cron

    return Cron(WATCH_CRON, timezone=TIMEZONE, slug=WATCH_SCHEDULE_SLUG)


def _paused_now(flow_name: str, deployment_name: str = DEPLOYMENT_NAME) -> bool:
    """Whether the deployment is paused on the server now (False when it does not exist yet)."""
    import httpx
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            return bool(client.read_deployment_by_name(f"{flow_name}/{deployment_name}").paused)
        except ObjectNotFound:
            return False
        except httpx.HTTPError as exc:
            raise ConfigError(f"cannot reach the Prefect server at {client.api_url}: {exc}") from None


def serve(defaults: Mapping[str, Any] | None = None) -> None:
    """Register ``discovery/monthly`` and ``discovery/watch`` and serve both until interrupted
    (SIGINT or SIGTERM).

    ``defaults`` are the default parameters of both deployments (:func:`flows.parameters.served_defaults`
    fills in the rest; each deployment takes the ones its record declares); each run may override them
    with ``--param``.
    """
    from flows.runner import configure_prefect

    configure_prefect()
    from prefect import serve as serve_deployments
    from prefect.deployments.runner import EntrypointType  # type: ignore[attr-defined]
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        raise ConfigError(
            "discovery serve needs a Prefect server: set PREFECT_API_URL (for example "
            "http://127.0.0.1:4200/api), or start both with `discovery up`"
        )
    from flows.discovery import discovery
    from flows.parameters import RunParameters, WatchParameters, defaults_for, served_defaults
    from flows.watch import watch

    given = served_defaults(defaults or {})
    monthly = discovery.to_deployment(
        name=DEPLOYMENT_NAME,
        schedules=[monthly_schedule()],
        parameters=defaults_for(RunParameters, given),
        tags=list(DEPLOYMENT_TAGS),
        description=DESCRIPTION,
        paused=_paused_now(discovery.name, DEPLOYMENT_NAME),
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
    daily = watch.to_deployment(
        name=WATCH_DEPLOYMENT_NAME,
        schedules=[watch_schedule()],
        parameters=defaults_for(WatchParameters, given),
        tags=list(WATCH_TAGS),
        description=WATCH_DESCRIPTION,
        paused=_paused_now(watch.name, WATCH_DEPLOYMENT_NAME),
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
    # Called outside an event loop, to_deployment returns the deployment itself (not a coroutine).
    serve_deployments(
        cast("RunnerDeployment", monthly), cast("RunnerDeployment", daily), pause_on_shutdown=False, limit=1
    )
