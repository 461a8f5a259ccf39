"""What an interrupted or finished run prints: Prefect's own drain progress is not shown."""

from __future__ import annotations

import logging

import pytest

from flows.lifecycle import quiet_expected_errors


def _record(name: str, msg: str) -> logging.LogRecord:
    return logging.LogRecord(name, logging.WARNING, __file__, 1, msg, None, None)


@pytest.mark.parametrize("name", ["EventsWorker", "APILogWorker"])
def test_the_workers_drain_progress_is_dropped_and_a_dropped_item_is_still_said(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DISCOVERY_DEBUG", raising=False)
    quiet_expected_errors()
    logger = logging.getLogger(name)
    assert not logger.filter(_record(name, "Still processing items: 1 items remaining..."))
    assert logger.filter(_record(name, "Service %r queue is full (%d items), dropping item"))
