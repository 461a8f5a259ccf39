"""Shared test setup.

Real OpenRouter responses live in ``../shared/fixtures/openrouter`` beside the repository (every developer
and CI have it). In a user's own clone it is absent, and the tests that need it skip with that reason.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# LiteLLM (optional dependency group `litellm`) fetches its model price map from the internet when it is
# imported, unless told to use the copy it ships. Set before any test imports it.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_FIXTURES = REPO_ROOT.parent / "shared" / "fixtures" / "openrouter"
SKIP_REASON = (
    f"shared OpenRouter fixtures not found at {SHARED_FIXTURES} "
    "(they sit beside the repository in the development checkout, not in a user's clone)"
)


def shared_fixtures() -> Path:
    """The shared fixtures folder, or skip the calling test with a clear reason."""
    if not SHARED_FIXTURES.is_dir():
        pytest.skip(SKIP_REASON)
    return SHARED_FIXTURES


def catalog_files() -> list[Path]:
    """Every real catalog file (empty list when the fixtures are absent)."""
    folder = SHARED_FIXTURES / "catalogs"
    return sorted(p for p in folder.glob("*.json")) if folder.is_dir() else []


@pytest.fixture
def fixtures_dir() -> Path:
    return shared_fixtures()


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No test reads the developer's key, data or docs: everything points at tmp_path. Secrets a
    test made the process register are forgotten after it."""
    from freemodels.secrets import forget_secrets

    for name in ("OPENROUTER_API_KEY", "DISCOVERY_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DISCOVERY_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DISCOVERY_DOCS_DIR", str(tmp_path / "docs"))
    monkeypatch.delenv("DISCOVERY_DB_PATH", raising=False)
    monkeypatch.delenv("DISCOVERY_SOURCE", raising=False)
    yield
    forget_secrets()


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """Parallel runs (pytest-xdist, ``-n``): a module's tests stay on one worker (its module-scoped
    fixtures are built once), and every end-to-end test shares one worker (one local stack).

    A scheduler of its own rather than ``xdist_group`` marks: ``--dist loadgroup`` does not group
    with pytest 9.2 (pytest-dev/pytest-xdist#1386).
    """
    from xdist.scheduler import LoadScopeScheduling

    class ByModuleAndStack(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return "tests/e2e" if path.startswith("tests/e2e/") else path

    return ByModuleAndStack(config, log)
