"""The sandbox: an OpenRouter-compatible server on loopback that ships with the project.

Public API (imported lazily, so ``freemodels.sandbox.scenario`` alone does not load the server stack)::

    from freemodels.sandbox import SandboxServer, Scenario, load_scenario, create_app, serve

    with SandboxServer(load_scenario("stage.toml")) as sb:
        sb.base_url  # "http://127.0.0.1:<port>/api/v1"

See :mod:`freemodels.sandbox.scenario` for the scenario format, :mod:`freemodels.sandbox.profiles` for the
default behaviour, and :mod:`freemodels.sandbox.app` for the wire behaviour and timing.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "Behavior": "freemodels.sandbox.scenario",
    "Fault": "freemodels.sandbox.scenario",
    "Scenario": "freemodels.sandbox.scenario",
    "ScenarioError": "freemodels.errors",
    "load_scenario": "freemodels.sandbox.scenario",
    "build_catalog": "freemodels.sandbox.catalog",
    "catalog_json": "freemodels.sandbox.catalog",
    "create_app": "freemodels.sandbox.app",
    "SandboxServer": "freemodels.sandbox.server",
    "serve": "freemodels.sandbox.server",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'freemodels.sandbox' has no attribute {name!r}")
    return getattr(import_module(module), name)
