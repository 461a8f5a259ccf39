"""What the stack's Prefect API gives to someone without its auth string, and what a deployment run's
parameters may reach (the threat model in docs/reliability.md).

Checked on the pinned Prefect: every REST route of ``/api`` but ``/health`` and ``/ready`` answers 401
without the auth string; the websockets (events in and out, logs, task-run subscriptions; reported open
under the same setting in PrefectHQ/prefect#17687) close without a valid token; a cross-origin
preflight from another origin is refused. A deployment run with a parameter outside the allowlists
fails at once with one line in its state message and writes nothing.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import RunningStack, start_run

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

OPEN = ("/api/health", "/api/ready", "/", "/ui-settings", "/docs", "/openapi.json")
CLOSED = ("/api/version", "/api/admin/version", "/api/csrf-token", "/api/openapi.json", "/api/docs")
WEBSOCKETS = ("/api/events/in", "/api/events/out", "/api/logs/out", "/api/task_runs/subscriptions/scheduled")


def test_rest_routes_need_the_auth_string(stack: RunningStack) -> None:
    for path in OPEN:
        assert httpx.get(f"{stack.ui_url}{path}", timeout=30).status_code == 200, path
    for path in CLOSED:
        assert httpx.get(f"{stack.ui_url}{path}", timeout=30).status_code == 401, path
    for body in ({}, {"limit": 1}):
        response = httpx.post(f"{stack.api_url}/flow_runs/filter", json=body, timeout=30)
        assert response.status_code == 401
    wrong = httpx.post(f"{stack.api_url}/flow_runs/filter", json={}, auth=("discovery", "guess"), timeout=30)
    assert wrong.status_code == 401
    user, _, password = stack.auth.partition(":")
    assert httpx.post(
        f"{stack.api_url}/flow_runs/filter", json={}, auth=(user, password), timeout=30
    ).is_success
    assert httpx.get(f"{stack.ui_url}/ui-settings", timeout=30).json()["auth"] == "BASIC"


def test_no_cross_origin_requests_but_from_the_ui(stack: RunningStack) -> None:
    def preflight(origin: str) -> httpx.Response:
        headers = {"Origin": origin, "Access-Control-Request-Method": "POST"}
        return httpx.options(f"{stack.api_url}/flow_runs/filter", headers=headers, timeout=30)

    evil = preflight("http://evil.example")
    assert evil.status_code == 400 and "access-control-allow-origin" not in evil.headers
    ui = preflight(stack.ui_url)
    assert ui.status_code == 200 and ui.headers["access-control-allow-origin"] == stack.ui_url


async def _websocket(url: str, *, subprotocol: bool, token: str | None) -> str:
    import websockets

    try:
        async with websockets.connect(
            url, subprotocols=["prefect"] if subprotocol else None, open_timeout=10
        ) as ws:
            if subprotocol:
                await ws.send(json.dumps({"type": "auth", "token": token}))
            reply: Any = await asyncio.wait_for(ws.recv(), 10)
            return "open" if json.loads(reply).get("type") == "auth_success" else f"answered {reply!r}"
    except websockets.exceptions.InvalidStatus as exc:
        return f"refused {exc.response.status_code}"
    except websockets.exceptions.ConnectionClosed as exc:
        return f"closed {exc.rcvd.code if exc.rcvd else None}"


def test_websockets_need_the_auth_string(stack: RunningStack) -> None:
    base = stack.ui_url.replace("http://", "ws://")
    for path in WEBSOCKETS:
        url = f"{base}{path}"
        assert asyncio.run(_websocket(url, subprotocol=False, token=None)) == "refused 403", path
        assert asyncio.run(_websocket(url, subprotocol=True, token=None)) == "closed 1008", path
        assert asyncio.run(_websocket(url, subprotocol=True, token="discovery:guess")) == "closed 1008", path
        assert asyncio.run(_websocket(url, subprotocol=True, token=stack.auth)) == "open", path


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            ("api_key_env=HOME", "base_url=http://127.0.0.1:9/v1"),
            "api_key_env: HOME is not a key variable a deployment run may use",
        ),
        (("base_url=http://evil.example/v1",), "base_url: http://evil.example/v1 is not a base URL"),
        (("candidates=/proc/self/environ",), "candidates: /proc/self/environ is outside "),
        (("data_dir=/tmp",), "data_dir: a deployment run writes only to "),
    ],
)
def test_a_deployment_run_refuses_what_reaches_outside(
    stack: RunningStack, params: tuple[str, ...], message: str
) -> None:
    before = (
        sorted(p.name for p in (stack.data_dir / "runs").iterdir())
        if (stack.data_dir / "runs").is_dir()
        else []
    )
    result = start_run(stack, *params)
    assert result.returncode == 1, result.stdout + result.stderr
    runs = stack.api(
        "POST",
        "/flow_runs/filter",
        {"sort": "START_TIME_DESC", "limit": 1, "flow_runs": {"state": {"type": {"any_": ["FAILED"]}}}},
    )
    state = runs[0]["state"]
    assert state["message"].startswith(message), state
    assert "\n" not in state["message"]
    after = (
        sorted(p.name for p in (stack.data_dir / "runs").iterdir())
        if (stack.data_dir / "runs").is_dir()
        else []
    )
    assert after == before  # no run folder: nothing was written or sent
