"""Integration fixtures: a Prefect test harness (one temporary server per session) for flow runs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """Run flows against a throwaway Prefect server and database (started once per session)."""
    from flows.runner import configure_prefect

    configure_prefect()
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
