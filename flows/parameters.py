"""The parameters of one discovery (and of one watch), declared once.

:class:`RunParameters` is the only declaration of a discovery's parameters, :class:`WatchParameters`
of a watch's (``discovery watch``, the ``discovery/watch`` deployment). Everything else is derived
from their fields, by the same functions for both records:

* the ``discovery run`` options (:func:`add_run_options`, :func:`parameters_from_args`);
* the ``discovery`` flow's signature, hence the deployment's parameters and the schema of the UI's
  "Custom run" form (:func:`flow_signature`);
* the deployment's default parameters and the matching ``discovery up`` / ``serve`` options
  (:func:`deployment_parameters`, :func:`add_deployment_options`);
* what a resumed run takes over from the run it continues (:meth:`RunParameters.resumed_from`).

Each field's metadata (:class:`Meta`) says how it appears on the command line, whether a resumed run
keeps the stored value, whether it is one of the deployment's defaults, which setting it overrides,
and what a value may reach on the machine (:class:`Trust`): :func:`flows.prepare.check_deployment_run`
checks every field by its trust kind when a run was started from the deployment, whose parameters
anyone who can reach the Prefect API may set.
"""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, TypeVar, get_type_hints

from flows.argtypes import non_negative_int, positive_int
from freemodels.errors import ConfigError
from freemodels.secrets import safe_url
from freemodels.source import NAMED_SOURCES

SOURCES = ("auto", *NAMED_SOURCES)
SUITES = ("standard",)
LATEST = "latest"
"""``resume`` value meaning the newest unfinished run."""
T = TypeVar("T")
P = TypeVar("P", bound="ParameterRecord")


class Trust(StrEnum):
    """What a parameter's value can reach on the machine, and so how a deployment run's value is checked."""

    KEY_ENV = "key_env"
    """Names an environment variable whose value is sent as the bearer key: only allowed names."""
    URL = "url"
    """A server the run sends requests (and the key) to: only allowed base URLs, no credentials."""
    FILE = "file"
    """A file the run reads: a regular file inside the input folder, not hidden, under the size cap."""
    FOLDER = "folder"
    """A folder the run writes to: fixed by whoever started the serve process, never a parameter."""


@dataclass(frozen=True, slots=True)
class Meta:
    """How one parameter appears and behaves."""

    help: str
    flag: str | None = None  # command-line flag; None: not an option of ``discovery run``
    metavar: str | None = None
    arg_type: Callable[[str], Any] | None = None
    choices: tuple[str, ...] | None = None
    resume: bool = False  # a resumed run keeps the value stored with the run
    deployment_default: bool = False  # one of the deployment's default parameters
    setting: str | None = None  # the Settings field it overrides
    accepts_url: bool = False  # an http(s) URL is a valid value besides the choices
    trust: Trust | None = None  # what the value can reach (None: nothing outside the run)


def _p(default: Any, meta: Meta) -> Any:
    return field(default=default, metadata={"meta": meta})


class ParameterRecord:
    """What every parameter record (:class:`RunParameters`, :class:`WatchParameters`) derives from its
    fields' :class:`Meta`: the checks of a deployment run's values, the settings they override, and how
    they may be shown. Subclasses are frozen, slotted dataclasses whose fields carry a ``Meta``."""

    __slots__ = ()
    command: ClassVar[str] = "run"
    """The ``discovery`` subcommand whose options the record's flags are."""

    @classmethod
    def meta(cls, name: str) -> Meta:
        return _metas(cls)[name]

    def check(self) -> None:
        """Each value within its field's bounds and choices, as the command line would check it.

        Deployment runs do not pass through the command line, so this is where a bad ``--param``
        is refused; the message names the parameter (it becomes the flow run's state message).
        """
        metas, hints = _metas(type(self)), _hints(type(self))
        for f in fields(self):  # type: ignore[arg-type]
            meta = metas[f.name]
            value = getattr(self, f.name)
            if value is None:
                continue
            expected = hints[f.name]
            if expected is bool or expected == (bool | None):
                if not isinstance(value, bool):
                    raise ConfigError(f"parameter {f.name}: expected true or false, got {value!r}")
                continue
            is_url = meta.accepts_url and isinstance(value, str) and value.startswith(("http://", "https://"))
            if meta.choices is not None and value not in meta.choices and not is_url:
                raise ConfigError(f"parameter {f.name}: {value!r} is not one of {', '.join(meta.choices)}")
            if meta.arg_type is not None:
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ConfigError(f"parameter {f.name}: expected a whole number, got {value!r}")
                try:
                    meta.arg_type(str(value))
                except argparse.ArgumentTypeError as exc:
                    raise ConfigError(f"parameter {f.name}: {exc}") from None
            elif not isinstance(value, str):
                raise ConfigError(f"parameter {f.name}: expected text, got {value!r}")

    def setting_overrides(self) -> dict[str, object]:
        """The Settings fields these parameters override (unset ones left out)."""
        overrides: dict[str, object] = {}
        metas = _metas(type(self))
        for f in fields(self):  # type: ignore[arg-type]
            target = metas[f.name].setting
            value = getattr(self, f.name)
            if target is not None and value is not None:
                overrides[target] = value
        overrides["source"] = getattr(self, "base_url", None) or getattr(self, "source", "auto")
        return overrides

    def shown(self: P) -> P:
        """These parameters as they may be shown or handed to Prefect: URLs with their credentials
        masked (this process keeps the URLs as given: :func:`freemodels.secrets.real_url`)."""
        metas = _metas(type(self))
        updates = {
            f.name: safe_url(value)
            for f in fields(self)  # type: ignore[arg-type]
            if metas[f.name].trust is Trust.URL and isinstance(value := getattr(self, f.name), str)
        }
        return replace(self, **updates)  # type: ignore[type-var]


_METAS: dict[type, dict[str, Meta]] = {}
_HINTS_OF: dict[type, dict[str, Any]] = {}


def _metas(record: type) -> dict[str, Meta]:
    """Each field's :class:`Meta`, by name (computed once per record)."""
    if record not in _METAS:
        _METAS[record] = {f.name: f.metadata["meta"] for f in fields(record)}
    return _METAS[record]


def _hints(record: type) -> dict[str, Any]:
    """Each field's type, by name (computed once per record)."""
    if record not in _HINTS_OF:
        _HINTS_OF[record] = get_type_hints(record)
    return _HINTS_OF[record]


@dataclass(frozen=True, slots=True)
class RunParameters(ParameterRecord):
    """The parameters of one discovery (the ``discovery`` flow's parameters). The API key is never
    one: it comes from the environment."""

    source: str = _p(
        "auto",
        Meta(
            "where the catalog and probes go: auto = openrouter with OPENROUTER_API_KEY set, else sandbox",
            flag="--source",
            choices=SOURCES,
            resume=True,
            deployment_default=True,
            accepts_url=True,  # like DISCOVERY_SOURCE, a base URL (the command line has --base-url)
            trust=Trust.URL,  # a deployment run may pass a URL here
        ),
    )
    base_url: str | None = _p(
        None,
        Meta(
            "probe any OpenAI-compatible server instead (e.g. http://127.0.0.1:8080/v1)",
            flag="--base-url",
            metavar="URL",
            resume=True,
            trust=Trust.URL,
        ),
    )
    api_key_env: str | None = _p(
        None,
        Meta(
            "environment variable holding the key for --base-url (default: none)",
            flag="--api-key-env",
            metavar="NAME",
            resume=True,
            trust=Trust.KEY_ENV,
        ),
    )
    scenario: str | None = _p(
        None,
        Meta(
            "sandbox scenario file (TOML or JSON)",
            flag="--scenario",
            metavar="FILE",
            resume=True,
            setting="sandbox_scenario",
            trust=Trust.FILE,
        ),
    )
    seed: int | None = _p(
        None,
        Meta(
            "seed of the sandbox's behaviour profiles",
            flag="--seed",
            metavar="N",
            arg_type=non_negative_int,
            resume=True,
            setting="sandbox_seed",
        ),
    )
    budget: int | None = _p(
        None,
        Meta(
            "most requests this run may send (default: the remaining daily quota)",
            flag="--budget",
            metavar="N",
            arg_type=non_negative_int,
            deployment_default=True,
        ),
    )
    requests_per_minute: int | None = _p(
        None,
        Meta(
            "requests per minute (default: 20 on OpenRouter, the sandbox's own limit on the sandbox)",
            flag="--rpm",
            metavar="N",
            arg_type=positive_int,
            resume=True,
            setting="requests_per_minute",
        ),
    )
    candidates: str | None = _p(
        None,
        Meta(
            "file of model ids (one per line) to check even if the catalog does not list them",
            flag="--candidates",
            metavar="FILE",
            trust=Trust.FILE,
        ),
    )
    max_models: int | None = _p(
        None,
        Meta(
            "probe at most this many free models",
            flag="--max-models",
            metavar="N",
            arg_type=positive_int,
            resume=True,
            setting="max_models",
        ),
    )
    probe_all: bool = _p(
        False,
        Meta(
            "send chat requests also to models the free signals settle (an endpoints listing without "
            "endpoints, a model the key may not route)",
            flag="--probe-all",
            resume=True,
            setting="probe_all",
        ),
    )
    resume: str | None = _p(
        None,
        Meta(
            "continue an unfinished run instead of starting one: RUN_ID, or 'latest' for the newest "
            "unfinished run (interrupted, killed, or completed with models the quota left untested)",
        ),
    )
    suite: str = _p(
        "standard",
        Meta("the probe suite", flag="--suite", choices=SUITES, deployment_default=True),
    )
    commit_docs: bool = _p(
        False,
        Meta(
            "commit docs/ with git afterwards (only docs/, never pushes)",
            flag="--commit-docs",
            deployment_default=True,
        ),
    )
    drill: bool = _p(
        False,
        Meta(
            "after ranking, drill the rotation: a small workload through OpenRouter's models array and "
            "LiteLLM's router, beside the primary alone and openrouter/free (staged incidents on the "
            "sandbox), inside the run's budget",
            flag="--drill",
            resume=True,
            deployment_default=True,
        ),
    )
    drill_requests: int | None = _p(
        None,
        Meta(
            "requests per client, arm and incident in the drill (default: 10)",
            flag="--drill-requests",
            metavar="N",
            arg_type=positive_int,
            resume=True,
            setting="drill_requests",
        ),
    )
    data_dir: str | None = _p(
        None,
        Meta(
            "runtime data folder: DuckDB file and Parquet per run (default: data/, or $DISCOVERY_DATA_DIR)",
            flag="--data-dir",
            metavar="DIR",
            setting="data_dir",
            trust=Trust.FOLDER,
        ),
    )
    docs_dir: str | None = _p(
        None,
        Meta(
            "where the Markdown reports go (default: docs/, or $DISCOVERY_DOCS_DIR)",
            flag="--docs-dir",
            metavar="DIR",
            setting="docs_dir",
            trust=Trust.FOLDER,
        ),
    )

    # --- derived views ---------------------------------------------------------------------------

    def stored(self) -> dict[str, object]:
        """The values a resumed run takes over, as stored with the run (scenario as an absolute path,
        URLs with their credentials masked)."""
        values: dict[str, object] = {}
        for f in fields(self):
            if _META[f.name].resume:
                value = getattr(self, f.name)
                if f.name == "scenario" and value:
                    value = str(Path(str(value)).resolve())
                elif _META[f.name].trust is Trust.URL and isinstance(value, str):
                    value = safe_url(value)
                values[f.name] = value
        return values

    def resumed_from(self, stored: Mapping[str, object], *, run_id: str) -> RunParameters:
        """These parameters with every resume key taken from the run being resumed.

        A value given now that contradicts the stored one is a mistake (it would mix sources or
        settings within one run): :class:`ConfigError` names it.
        """
        updates: dict[str, object] = {}
        for f in fields(self):
            if not _META[f.name].resume:
                continue
            mine = getattr(self, f.name)
            theirs = stored.get(f.name, f.default)
            if mine != f.default and mine != theirs:
                if f.name == "scenario" and theirs and Path(str(mine)).resolve() == Path(str(theirs)):
                    continue
                if _META[f.name].trust is Trust.URL and isinstance(mine, str) and safe_url(mine) == theirs:
                    updates[f.name] = mine  # the URL with the credentials the stored one masks
                    continue
                shown = _META[f.name].flag or f.name
                raise ConfigError(
                    f"run {run_id} was started with {f.name}={theirs!r}; {shown} {mine!r} does not match "
                    "(leave it out to resume the run as it was)"
                )
            updates[f.name] = theirs
        return replace(self, **updates)  # type: ignore[arg-type]


_META: dict[str, Meta] = _metas(RunParameters)
_HINTS: dict[str, Any] = _hints(RunParameters)


@dataclass(frozen=True, slots=True)
class WatchParameters(ParameterRecord):
    """The parameters of one watch (``discovery watch``, the ``discovery/watch`` deployment): the same
    source options as a discovery, and how many chat requests it may spend. No key is needed."""

    command: ClassVar[str] = "watch"

    source: str = _p("auto", RunParameters.meta("source"))
    base_url: str | None = _p(None, RunParameters.meta("base_url"))
    api_key_env: str | None = _p(None, RunParameters.meta("api_key_env"))
    scenario: str | None = _p(None, RunParameters.meta("scenario"))
    seed: int | None = _p(None, RunParameters.meta("seed"))
    liveness: int = _p(
        0,
        Meta(
            "most one-task chat probes the watch may send to rotation members (default 0: none; "
            "within the daily quota)",
            flag="--liveness",
            metavar="N",
            arg_type=non_negative_int,
            deployment_default=True,
        ),
    )
    data_dir: str | None = _p(None, RunParameters.meta("data_dir"))
    docs_dir: str | None = _p(None, RunParameters.meta("docs_dir"))


RECORDS: tuple[type[ParameterRecord], ...] = (RunParameters, WatchParameters)
"""Every parameter record: the deployments served together take the union of their defaults."""


def _default_of(record: type, name: str) -> Any:
    f = next(f for f in fields(record) if f.name == name)
    return f.default if f.default is not MISSING else None


# --- the flow's signature ------------------------------------------------------------------------


def flow_signature(fn: Callable[[Any], Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """Wrap the async ``fn(params)`` as a function of the flat keyword parameters of its record.

    The record is the class ``fn``'s one parameter is annotated with (:class:`RunParameters`,
    :class:`WatchParameters`). Prefect reads a flow's parameters (the deployment's parameter schema,
    ``--param name=value``) from its signature and their descriptions from the docstring's ``Args:``
    section; both are built here from the record.
    """
    hints = get_type_hints(fn)
    record = next(v for k, v in hints.items() if k != "return")
    metas, record_hints = _metas(record), _hints(record)
    parameters = [
        inspect.Parameter(
            f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=record_hints[f.name]
        )
        for f in fields(record)
    ]

    async def wrapper(**kwargs: Any) -> T:
        return await fn(record(**kwargs))

    args = "\n".join(f"    {f.name}: {metas[f.name].help}" for f in fields(record))
    wrapper.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
    wrapper.__module__, wrapper.__name__, wrapper.__qualname__ = fn.__module__, fn.__name__, fn.__qualname__
    wrapper.__doc__ = f"{inspect.cleandoc(fn.__doc__ or '')}\n\nArgs:\n{args}\n"
    return wrapper


# --- the command line ------------------------------------------------------------------------------


def _add_option(
    parser: argparse.ArgumentParser, name: str, *, default: Any = None, of: type = RunParameters
) -> None:
    meta = _metas(of)[name]
    assert meta.flag is not None
    if _hints(of)[name] is bool:
        parser.add_argument(meta.flag, dest=name, action="store_true", help=meta.help)
        return
    kwargs: dict[str, Any] = {"dest": name, "default": default, "help": meta.help}
    if meta.choices:
        kwargs["choices"] = list(meta.choices)
    if meta.metavar:
        kwargs["metavar"] = meta.metavar
    if meta.arg_type is not None:
        kwargs["type"] = meta.arg_type
    parser.add_argument(meta.flag, **kwargs)


def add_run_options(parser: argparse.ArgumentParser, of: type = RunParameters) -> None:
    """Every parameter of the record with a flag as an option (``discovery run``: plus ``--resume
    [RUN_ID]``; ``discovery watch`` with :class:`WatchParameters`)."""
    for f in fields(of):
        if f.name == "resume":
            parser.add_argument(
                "--resume",
                nargs="?",
                const=LATEST,
                default=None,
                metavar="RUN_ID",
                help=_META["resume"].help.replace("RUN_ID, or 'latest' for", "RUN_ID, or without one,"),
            )
        elif _metas(of)[f.name].flag is not None:
            _add_option(parser, f.name, of=of)


def parameters_from_args(args: argparse.Namespace) -> RunParameters:
    """The parameters ``discovery run``'s options give (options left out keep their defaults)."""
    return record_from_args(args, RunParameters)


def record_from_args(args: argparse.Namespace, of: type[P]) -> P:
    """The record the options give (options left out keep their defaults)."""
    values: dict[str, Any] = {}
    for f in fields(of):  # type: ignore[arg-type]
        value = getattr(args, f.name, None)
        if value is None or value is False:
            continue
        values[f.name] = str(value) if isinstance(value, Path) else value
    return of(**values)


def _deployment_fields(of: type) -> list[str]:
    return [f.name for f in fields(of) if _metas(of)[f.name].deployment_default]


def deployment_parameters(of: type = RunParameters, **overrides: Any) -> dict[str, Any]:
    """A deployment's default parameters: every field of the record marked ``deployment_default``."""
    names = _deployment_fields(of)
    unknown = set(overrides) - set(names)
    if unknown:
        raise ConfigError(f"not a deployment default: {', '.join(sorted(unknown))}")
    return {name: overrides.get(name, _default_of(of, name)) for name in names}


def _served_fields() -> dict[str, type]:
    """Every deployment default of the records served together, with the record that declares it
    first (a name two records share, such as ``source``, is one option and one value)."""
    known: dict[str, type] = {}
    for record in RECORDS:
        for name in _deployment_fields(record):
            known.setdefault(name, record)
    return known


def served_defaults(defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The defaults of every deployment served together (the union over :data:`RECORDS`)."""
    known = _served_fields()
    unknown = set(defaults) - set(known)
    if unknown:
        raise ConfigError(f"not a deployment default: {', '.join(sorted(unknown))}")
    return {name: defaults.get(name, _default_of(record, name)) for name, record in known.items()}


def defaults_for(of: type, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """One record's deployment parameters out of the defaults of every deployment served together."""
    names = set(_deployment_fields(of))
    return deployment_parameters(of, **{k: v for k, v in defaults.items() if k in names})


def deployment_args(defaults: Mapping[str, Any]) -> list[str]:
    """The deployment defaults as ``discovery serve`` options (what ``discovery up`` passes on)."""
    known = _served_fields()
    args: list[str] = []
    for name, value in served_defaults(defaults).items():
        record = known[name]
        flag = _metas(record)[name].flag
        assert flag is not None
        if _hints(record)[name] is bool:
            if value:
                args.append(flag)
        elif value is not None:
            args += [flag, str(value)]
    return args


def add_deployment_options(parser: argparse.ArgumentParser) -> None:
    """Every served deployment's defaults as options of ``discovery up`` and ``discovery serve``."""
    for name, record in _served_fields().items():
        _add_option(parser, name, default=_default_of(record, name), of=record)


def deployment_defaults_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The deployment defaults ``discovery up`` / ``serve`` options give."""
    return served_defaults({name: getattr(args, name) for name in _served_fields() if hasattr(args, name)})
