"""The Prefect UI, as a user sees it: headless Chromium finds the run and its executive summary.

Playwright drives Debian's Chromium (``executable_path``; no browser download). Each page is a JavaScript
app, so every step waits for the content it is after (the run's name, the artifact's key, the summary's
heading) before taking a screenshot. Screenshots go to a temporary folder, or to the folder named by
``DISCOVERY_E2E_SCREENSHOTS`` (``docs/img`` refreshes the README's pictures).

Without Chromium or Playwright the test is skipped locally; on CI (``CI`` set) it fails instead, so a
missing install step cannot pass unnoticed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import CompletedRun, RunningStack, chromium_path

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1400, "height": 900}
TALL_VIEWPORT = {"width": 1400, "height": 1500}  # the summary scrolls inside the page: show more of it
WAIT_MS = 60_000


def _missing(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (required on CI: .ci/run installs it)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def chromium() -> str:
    path = chromium_path()
    if path is None:
        _missing("Chromium is not installed (apt-get install chromium)")
    assert path is not None
    return path


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    chosen = os.environ.get("DISCOVERY_E2E_SCREENSHOTS")
    folder = Path(chosen) if chosen else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def first_heading(markdown: str) -> str:
    """The text of the first Markdown heading, without '#' and inline markup."""
    for line in markdown.splitlines():
        if line.startswith("#"):
            return re.sub(r"[*_`]", "", line.lstrip("#")).strip()
    raise AssertionError(f"no heading in the executive summary:\n{markdown[:500]}")


def test_ui_shows_the_run_and_its_executive_summary(
    stack: RunningStack,
    completed_run: CompletedRun,
    run_artifacts: dict[str, dict[str, Any]],
    chromium: str,
    screenshots: Path,
) -> None:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("Playwright is not installed (uv sync --group e2e)")

    flow_run = stack.api("GET", f"/flow_runs/{completed_run.flow_run_id}")
    run_name = flow_run["name"]
    summary = run_artifacts["executive-summary"]
    heading = first_heading(summary["data"])
    external: list[str] = []

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.on(
                "request",
                lambda r: (
                    external.append(r.url) if not r.url.startswith((stack.ui_url, "blob:", "data:")) else None
                ),
            )

            # The API needs the stack's auth string: the UI asks for it once (it keeps it in the
            # browser's local storage), as `discovery up` says.
            page.goto(f"{stack.ui_url}/runs")
            password = page.get_by_placeholder("admin:pass")
            password.wait_for(timeout=WAIT_MS)
            password.fill(stack.auth)
            password.press("Enter")
            password.wait_for(state="detached", timeout=WAIT_MS)  # logged in

            # The runs page lists the run under its name, with its source tag.
            page.goto(f"{stack.ui_url}/runs")
            page.get_by_text(run_name, exact=True).first.wait_for(timeout=WAIT_MS)
            page.get_by_text("source:sandbox").first.wait_for(timeout=WAIT_MS)
            page.screenshot(path=str(screenshots / "prefect-runs.png"))

            # The run's page, Artifacts tab: the executive summary and the tiers table.
            page.goto(f"{stack.ui_url}/runs/flow-run/{completed_run.flow_run_id}")
            page.get_by_text("Completed").first.wait_for(timeout=WAIT_MS)
            page.get_by_text("Artifacts", exact=True).last.click()
            page.get_by_text("executive-summary", exact=True).first.wait_for(timeout=WAIT_MS)
            page.get_by_text("tiers", exact=True).first.wait_for(timeout=WAIT_MS)
            page.screenshot(path=str(screenshots / "prefect-run-artifacts.png"))

            # The summary itself, rendered from Markdown.
            page.set_viewport_size(TALL_VIEWPORT)
            page.goto(f"{stack.ui_url}/artifacts/artifact/{summary['id']}")
            page.get_by_text(heading).first.wait_for(timeout=WAIT_MS)
            page.get_by_text(run_name).first.wait_for(timeout=WAIT_MS)
            page.screenshot(path=str(screenshots / "prefect-executive-summary.png"))

            # Further down, the drill's table fits the artifact's column.
            section = page.get_by_role("heading", name="The rotation in use")
            section.first.scroll_into_view_if_needed(timeout=WAIT_MS)
            page.get_by_text("Incident, client", exact=True).first.wait_for(timeout=WAIT_MS)
            page.evaluate("window.scrollBy(0, -80)")
            page.screenshot(path=str(screenshots / "prefect-rotation-in-use.png"))

            # The latest version is what the key's page shows.
            page.goto(f"{stack.ui_url}/artifacts/key/executive-summary")
            page.get_by_text(run_name).first.wait_for(timeout=WAIT_MS)
        finally:
            browser.close()

    for name in (
        "prefect-runs.png",
        "prefect-run-artifacts.png",
        "prefect-executive-summary.png",
        "prefect-rotation-in-use.png",
    ):
        shot = screenshots / name
        assert shot.stat().st_size > 10_000, f"{shot} looks empty"
    assert not external, f"the UI tried to reach outside the machine: {external}"
