"""Everything decided before a run writes anything or sends a request.

:func:`prepare` turns the parameters into settings and a source kind, picks the run a resume
continues (and takes over its parameters), reads the candidate ids, and runs the checks that need no
request (database healthy, folders writable, disk space). Any problem ends here as one
:class:`~freemodels.errors.DiscoveryError` line, before a run folder is touched or a request is sent.
The CLI calls it before starting Prefect, so a mistake is reported in a second; the flow calls it
again, for runs started from a deployment.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from flows.parameters import RunParameters
from freemodels import storage
from freemodels.candidates import read_candidates
from freemodels.checks import check_environment, check_reachable
from freemodels.errors import ConfigError
from freemodels.records import RunInfo
from freemodels.runs import RunView, pick_run_to_resume
from freemodels.settings import Settings, load_settings
from freemodels.source import (
    PROFILES,
    SourceIdentity,
    SourceKind,
    SourceProfile,
    choose_kind,
    required_key_missing,
    resolve_identity,
)


@dataclass(frozen=True, slots=True)
class Prepared:
    """A run ready to start: its parameters (a resume's taken over), settings, source kind."""

    params: RunParameters
    settings: Settings
    kind: SourceKind
    resumed: RunView | None
    candidates: tuple[str, ...]

    @property
    def profile(self) -> SourceProfile:
        return PROFILES[self.kind]


def settings_for(params: RunParameters) -> Settings:
    """The settings of a run with these parameters (environment and ``.env`` fill the rest)."""
    return load_settings(**params.setting_overrides())


def stored_settings(info: RunInfo) -> dict[str, object]:
    """The JSON object stored with a run: its parameters, source identity and measuring settings."""
    try:
        data = json.loads(info.settings_json or "{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _resume(params: RunParameters, settings: Settings) -> tuple[RunParameters, Settings, RunView]:
    assert params.resume is not None
    run = pick_run_to_resume(settings.runs_dir, params.resume)
    stored = stored_settings(run.info)
    parameters = stored.get("parameters")
    resumed = params.resumed_from(parameters if isinstance(parameters, dict) else {}, run_id=run.run_id)
    return resumed, settings_for(resumed), run


def _check_same_source(run: RunView, settings: Settings, kind: SourceKind) -> None:
    stored = SourceIdentity.from_dict(stored_settings(run.info).get("identity"))
    if stored is None:
        return  # recorded by an earlier version: the kind alone was checked
    try:
        now = resolve_identity(settings, kind=kind)
    except ConfigError:
        now = SourceIdentity(kind=kind, base_url=stored.base_url, scenario_digest=None, seed=stored.seed)
    why = stored.mismatch(now)
    if why is not None:
        raise ConfigError(f"cannot resume run {run.run_id}: {why}; it is left as it was")


def prepare(params: RunParameters) -> Prepared:
    """Resolve and check a run (see the module docstring). Raises the project's one-line errors."""
    params.check()
    settings = settings_for(params)
    resumed: RunView | None = None
    if params.resume:
        params, settings, resumed = _resume(params, settings)
        try:
            kind = SourceKind(resumed.info.source)
        except ValueError:
            raise ConfigError(
                f"run {resumed.run_id} used the source {resumed.info.source!r}, which this program "
                "does not know"
            ) from None
        missing = required_key_missing(PROFILES[kind], settings, params.api_key_env)
        if missing is not None:
            raise ConfigError(
                f"cannot resume run {resumed.run_id} ({PROFILES[kind].run_label}): {missing}. It is "
                "never resumed against another source; it is left as it was"
            )
        _check_same_source(resumed, settings, kind)
        candidates = storage.read_candidates_of(storage.run_dir(settings.runs_dir, resumed.run_id))
    else:
        kind = choose_kind(settings.source, key_present=settings.resolved_api_key() is not None)
        missing = required_key_missing(PROFILES[kind], settings, params.api_key_env)
        if missing is not None:
            raise ConfigError(missing)
        candidates = read_candidates(Path(params.candidates)) if params.candidates else []
    if params.scenario and kind is SourceKind.SANDBOX:
        from freemodels.sandbox.scenario import load_scenario

        load_scenario(Path(params.scenario))
    check_environment(settings)
    if not PROFILES[kind].simulated:
        identity = resolve_identity(settings, kind=kind)
        if identity.base_url:
            check_reachable(identity.base_url, timeout_s=settings.connect_timeout_s)
    return Prepared(
        params=params,
        settings=settings,
        kind=kind,
        resumed=resumed,
        candidates=tuple(candidates),
    )
