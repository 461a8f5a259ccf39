"""Everything decided before a run writes anything or sends a request.

:func:`prepare` turns the parameters into settings and a source kind, picks the run a resume
continues (and takes over its parameters), reads the candidate ids, and runs the checks that need no
request (database healthy, folders writable, disk space). Any problem ends here as one
:class:`~freemodels.errors.DiscoveryError` line, before a run folder is touched or a request is sent.
The CLI calls it before starting Prefect, so a mistake is reported in a second; the flow calls it
again, for runs started from a deployment.

A run started from the deployment (``prefect deployment run``, the UI, the schedule) takes its
parameters from whoever can reach the Prefect API, so :func:`check_deployment_run` treats them as
untrusted, by each field's :class:`~flows.parameters.Trust`: a key variable must be in
``DISCOVERY_ALLOWED_KEY_ENVS``, a base URL must match ``DISCOVERY_ALLOWED_BASE_URLS`` and carry no
credentials, a candidates or scenario file (and every file the scenario replays) must be a regular,
non-hidden file inside ``DISCOVERY_INPUT_DIR`` (default: the folder the run starts in) no larger than
``DISCOVERY_MAX_INPUT_FILE_BYTES``, and the data and docs folders are the serve process's own
(``DISCOVERY_DATA_DIR`` / ``DISCOVERY_DOCS_DIR``), never a parameter. A resumed run is checked with
the parameters it takes over. A refusal is one line, naming the parameter, in the flow run's state.
The command line is the user's own machine: none of these checks apply to it.
"""

from __future__ import annotations

import json
import stat
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TypeVar

import httpx

from flows.parameters import ParameterRecord, RunParameters, Trust
from freemodels import storage
from freemodels.candidates import read_candidates
from freemodels.checks import check_environment, check_reachable
from freemodels.errors import ConfigError
from freemodels.records import RunInfo
from freemodels.runs import RunView, pick_run_to_resume
from freemodels.secrets import MASK, hides_credentials, real_url
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


P = TypeVar("P", bound=ParameterRecord)


def settings_for(params: ParameterRecord) -> Settings:
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


# --------------------------------------------------------------------------------------------------
# deployment runs: the trust boundary


def url_allowed(url: str, allowlist: tuple[str, ...]) -> bool:
    """Whether ``url`` matches an entry: same scheme and host, the entry's port (any when it names
    none), and a path inside the entry's path. A URL with credentials never matches."""
    try:
        target = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        return False
    if target.userinfo or not target.host:
        return False
    path = target.path.rstrip("/") + "/"
    if "/../" in path or "/./" in path:
        return False
    for entry in allowlist:
        try:
            allowed = httpx.URL(entry)
        except (httpx.InvalidURL, TypeError):
            continue
        if (target.scheme, target.host.lower()) != (allowed.scheme, allowed.host.lower()):
            continue
        if allowed.port is not None and (target.port or _DEFAULT_PORTS.get(target.scheme)) != allowed.port:
            continue
        if path.startswith(allowed.path.rstrip("/") + "/"):
            return True
    return False


_DEFAULT_PORTS = {"http": 80, "https": 443}


def check_input_file(value: str, *, name: str, root: Path, max_bytes: int) -> Path:
    """The file a deployment run may read as ``name``: a regular file inside ``root``, not hidden and
    not inside a hidden folder, at most ``max_bytes``. Raises one line naming the parameter."""
    where = root.resolve()
    path = (where / Path(value).expanduser()).resolve()
    if not path.is_relative_to(where):
        raise ConfigError(
            f"{name}: {value} is outside {where}; a deployment run reads files only there "
            "(DISCOVERY_INPUT_DIR)"
        )
    if any(part.startswith(".") for part in path.relative_to(where).parts):
        raise ConfigError(
            f"{name}: {value} is hidden or inside a hidden folder; a deployment run never reads it"
        )
    try:
        info = path.stat()
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read {value} ({exc.strerror or exc})") from None
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{name}: {value} is not a regular file")
    if info.st_size > max_bytes:
        raise ConfigError(
            f"{name}: {value} is larger than {max_bytes} bytes (DISCOVERY_MAX_INPUT_FILE_BYTES)"
        )
    return path


def check_deployment_run(params: P, settings: Settings) -> P:
    """Refuse what a deployment run's parameters may not reach (see the module docstring); returns
    the parameters with each file as the absolute path that was checked."""
    configured = load_settings()  # the serve process's own settings, without the run's parameters
    root = settings.input_dir or Path.cwd()
    files: dict[str, str] = {}
    record = type(params)
    for f in fields(params):  # type: ignore[arg-type]
        trust = record.meta(f.name).trust
        value = getattr(params, f.name)
        if trust is None or value is None:
            continue
        if trust is Trust.KEY_ENV and value not in settings.key_env_allowlist:
            allowed = ", ".join(settings.key_env_allowlist) or "none"
            raise ConfigError(
                f"{f.name}: {value} is not a key variable a deployment run may use (allowed: {allowed}; "
                "DISCOVERY_ALLOWED_KEY_ENVS)"
            )
        is_url = str(value).startswith(("http://", "https://"))
        if trust is Trust.URL and is_url and not url_allowed(str(value), settings.base_url_allowlist):
            raise ConfigError(
                f"{f.name}: {value} is not a base URL a deployment run may probe "
                f"(allowed: {', '.join(settings.base_url_allowlist) or 'none'}, without credentials; "
                "DISCOVERY_ALLOWED_BASE_URLS)"
            )
        if trust is Trust.FILE:
            path = check_input_file(
                str(value), name=f.name, root=root, max_bytes=settings.max_input_file_bytes
            )
            files[f.name] = str(path)
        if trust is Trust.FOLDER:
            setting = record.meta(f.name).setting
            assert setting is not None
            mine = Path(getattr(configured, setting)).resolve()
            if Path(str(value)).resolve() != mine:
                raise ConfigError(
                    f"{f.name}: a deployment run writes only to {mine} (DISCOVERY_{setting.upper()} of the "
                    "serve process); leave the parameter out"
                )
    if "scenario" in files:
        from freemodels.sandbox.scenario import load_scenario

        for path in load_scenario(files["scenario"]).replay_files():
            check_input_file(
                str(path), name="scenario (replay)", root=root, max_bytes=settings.max_input_file_bytes
            )
    return replace(params, **files)  # type: ignore[type-var]


# --------------------------------------------------------------------------------------------------


def prepare(params: RunParameters, *, deployment_run: bool = False) -> Prepared:
    """Resolve and check a run (see the module docstring). Raises the project's one-line errors.

    ``deployment_run``: the run was started from the deployment; its parameters are untrusted."""
    params.check()
    if deployment_run:
        params = check_deployment_run(params, settings_for(params))
    settings = settings_for(params)
    resumed: RunView | None = None
    if params.resume:
        params, settings, resumed = _resume(params, settings)
        if deployment_run:
            params = check_deployment_run(params, settings)
            settings = settings_for(params)
        url = params.base_url or ""
        if MASK in url and hides_credentials(url):
            raise ConfigError(
                f"run {resumed.run_id} used a base URL with credentials, which are never stored: resume "
                "it with --base-url and the URL as you first gave it"
            )
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
    return Prepared(
        params=params,
        settings=settings,
        kind=kind,
        resumed=resumed,
        candidates=tuple(candidates),
    )


def check_source_reachable(prepared: Prepared) -> None:
    """The source's host resolves and accepts a connection (the sandbox is started later, locally).

    Separate from :func:`prepare`, which needs no network: the CLI calls both before Prefect starts,
    the flow before it opens the source.
    """
    if prepared.profile.simulated:
        return
    identity = resolve_identity(prepared.settings, kind=prepared.kind)
    if identity.base_url:
        check_reachable(real_url(identity.base_url), timeout_s=prepared.settings.connect_timeout_s)
