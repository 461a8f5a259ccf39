"""The alerting hook end to end: a lost model emits ``discovery.model.lost`` and an automation notifies.

A webhook receiver on loopback stands in for Slack or a pager. The test creates a notification block for
it and the automation from the README, then runs the deployment a second time with a sandbox scenario
that removes the previous run's primary model from the catalog, and waits for the event and for the
notification that names the model.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import duckdb
import pytest

from tests.e2e.conftest import CompletedRun, RunningStack, trigger_run

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

# The automation as the README documents it (only the block id differs).
AUTOMATION_YAML = """\
name: discovery-model-lost
description: A model of the previous rotation is gone, no longer free, or broken
trigger:
  type: event
  posture: Reactive
  expect: ["discovery.model.lost"]
  match:
    prefect.resource.id: "openrouter.model.*"
  threshold: 1
  within: 0
actions:
  - type: send-notification
    block_document_id: "{block_id}"
    subject: "Free model lost: {{{{ event.resource['prefect.resource.name'] }}}}"
    body: >-
      {{{{ event.payload.model_id }}}} is {{{{ event.payload.reason }}}}: {{{{ event.payload.detail }}}}
      (run {{{{ event.payload.run_id }}}}, source {{{{ event.payload.source }}}})
"""

CREATE_BLOCK = """\
import sys
from prefect.blocks.notifications import CustomWebhookNotificationBlock
block = CustomWebhookNotificationBlock(
    name="e2e receiver", url=sys.argv[1], json_data={"subject": "{{subject}}", "body": "{{body}}"}
)
print(block.save("discovery-alerts-e2e", overwrite=True))
"""


class Receiver:
    """A loopback HTTP server that records the JSON bodies posted to it."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                received.append(json.loads(self.rfile.read(length) or b"{}"))
                self.send_response(200)
                self.end_headers()

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


def primary_model(stack: RunningStack, completed_run: CompletedRun) -> str:
    con = duckdb.connect(str(stack.data_dir / "discovery.duckdb"), read_only=True)
    try:
        row = con.execute(
            "SELECT r.model_id FROM rotation r JOIN runs USING (run_id) "
            "WHERE runs.prefect_flow_run_id = ? AND r.purpose = 'general' ORDER BY r.rank LIMIT 1",
            [completed_run.flow_run_id],
        ).fetchone()
    finally:
        con.close()
    assert row is not None, "the first run has no rotation to lose a model from"
    return str(row[0])


def test_a_lost_model_emits_an_event_and_the_automation_notifies(
    stack: RunningStack, completed_run: CompletedRun, receiver: Receiver, tmp_path: Path
) -> None:
    lost = primary_model(stack, completed_run)

    made = subprocess.run(
        [sys.executable, "-c", CREATE_BLOCK, receiver.url],
        env={**stack.env, "PREFECT_API_URL": stack.api_url},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    block_id = made.stdout.strip().splitlines()[-1]
    automation = tmp_path / "model-lost.yaml"
    automation.write_text(AUTOMATION_YAML.format(block_id=block_id))
    created = stack.prefect("automation", "create", "--from-file", str(automation))
    assert created.returncode == 0, created.stdout + created.stderr

    scenario = tmp_path / "lost.toml"
    scenario.write_text(f'[catalog]\nremove = ["{lost}"]\n')
    second = trigger_run(stack, f"scenario={json.dumps(str(scenario))}")

    # Events are sent in the background and stored in batches: wait for it to be stored.
    query = {
        "filter": {
            "event": {"name": ["discovery.model.lost"]},
            "resource": {"id": [f"openrouter.model.{lost}"]},
            "related": {"id": [f"prefect.flow-run.{second.flow_run_id}"]},
        },
        "limit": 10,
    }
    deadline = time.monotonic() + 60
    while not (found := stack.api("POST", "/events/filter", query)["events"]):
        assert time.monotonic() < deadline, (
            f"no discovery.model.lost event for {lost} of {second.flow_run_id}"
        )
        time.sleep(1)
    # Its :free id left the catalog: "gone", or "no_longer_free" while the paid slug stays listed.
    from freemodels.sandbox.catalog import build_catalog
    from freemodels.sandbox.scenario import Scenario

    paid_listed = lost.removesuffix(":free") in build_catalog(Scenario().catalog).models
    reason = "no_longer_free" if paid_listed else "gone"
    assert found[0]["resource"]["discovery.reason"] == reason
    assert found[0]["payload"]["model_id"] == lost
    assert found[0]["payload"]["source"] == "sandbox"

    deadline = time.monotonic() + 120
    while not any(lost in json.dumps(body) for body in receiver.bodies):
        assert time.monotonic() < deadline, f"no notification naming {lost}; received: {receiver.bodies}"
        time.sleep(1)
    note = next(body for body in receiver.bodies if lost in json.dumps(body))
    assert note["subject"] == f"Free model lost: {lost}"
    assert f"is {reason}" in note["body"]
