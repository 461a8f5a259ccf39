"""The local stack: a Prefect server and the ``discovery serve`` process, started in the background.

``discovery up`` starts both and waits until they are healthy; ``discovery down`` stops exactly the
processes that ``up`` recorded. Everything the stack keeps lives in one project-local folder
(``.stack/`` by default, git-ignored)::

    .stack/
      stack.json         what up started: pids, their start times, ports, URLs, folders
      auth               the API's auth string (mode 0600), generated once
      prefect/           PREFECT_HOME of both processes: the server's SQLite database (prefect.db)
      logs/server.log    the server's output
      logs/serve.log     the serve process's output, and the output of every flow run it starts

The server listens on loopback only, keeps its data in SQLite under the stack folder, has analytics
off, and needs no internet. ``~/.prefect`` is never used by the stack.

Anyone who can reach the API can start a deployment run with any parameters, so the API requires
authentication: the server gets ``PREFECT_SERVER_API_AUTH_STRING`` and every client of the project
(the serve process, ``discovery run``, ``discovery status``) sends it as ``PREFECT_API_AUTH_STRING``
(HTTP Basic). The string is generated on the first ``up`` (``discovery:<random>``) and kept in
``.stack/auth``; ``discovery status --env`` prints the lines a shell needs. Cross-origin requests are
allowed from the UI's own origin only. What stays open without the string: ``/api/health`` and
``/api/ready``, the UI's static files and its settings (which say that a login is needed).

Processes are started in their own session (``start_new_session``), so each is the leader of its own
process group: stopping sends SIGTERM to that group (the process and anything it started), then SIGKILL
after a grace period. A pid is only signalled when it is still the very process that was started: its
start time (``/proc/<pid>/stat``) must match the recorded one, so a pid reused by an unrelated process
after a reboot is never touched.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from freemodels.errors import DiscoveryError
from freemodels.secrets import register_secret

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4200
DEFAULT_START_TIMEOUT_S = 180.0
DEFAULT_STOP_TIMEOUT_S = 20.0
POLL_INTERVAL_S = 0.5
HTTP_TIMEOUT_S = 5.0
LOG_TAIL_LINES = 25

FLOW_NAME = "discovery"
DEPLOYMENT_NAME = "monthly"
WATCH_DEPLOYMENT_NAME = "watch"
DEPLOYMENT_NAMES = (DEPLOYMENT_NAME, WATCH_DEPLOYMENT_NAME)
"""The deployments the serve process registers (see :mod:`flows.serve`)."""
SERVER = "server"
SERVE = "serve"


class StackError(DiscoveryError):
    """The local stack could not be started, checked or stopped."""


# --------------------------------------------------------------------------------------------------
# where the stack keeps its state


@dataclass(frozen=True, slots=True)
class StackPaths:
    """The stack folder and the files in it."""

    root: Path

    @classmethod
    def at(cls, root: Path) -> StackPaths:
        return cls(root.expanduser().resolve())

    @property
    def state_file(self) -> Path:
        return self.root / "stack.json"

    @property
    def prefect_home(self) -> Path:
        return self.root / "prefect"

    @property
    def database(self) -> Path:
        return self.prefect_home / "prefect.db"

    @property
    def auth_file(self) -> Path:
        return self.root / "auth"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"


@dataclass(frozen=True, slots=True)
class ProcessRecord:
    """One process the stack started."""

    name: str
    pid: int
    start_ticks: int | None  # field 22 of /proc/<pid>/stat; None where /proc is missing
    argv: list[str]
    log: str


@dataclass(frozen=True, slots=True)
class StackState:
    """What ``up`` started, as written to ``stack.json``."""

    host: str
    port: int
    project_dir: str
    data_dir: str
    docs_dir: str
    started_at: str
    processes: list[ProcessRecord] = field(default_factory=list)

    @property
    def ui_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        return api_url(self.host, self.port)

    def process(self, name: str) -> ProcessRecord | None:
        return next((p for p in self.processes if p.name == name), None)

    def with_process(self, record: ProcessRecord) -> StackState:
        kept = [p for p in self.processes if p.name != record.name]
        return StackState(
            self.host,
            self.port,
            self.project_dir,
            self.data_dir,
            self.docs_dir,
            self.started_at,
            [*kept, record],
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> StackState:
        data = json.loads(text)
        processes = [ProcessRecord(**p) for p in data.pop("processes", [])]
        return cls(**data, processes=processes)


def api_url(host: str, port: int) -> str:
    """The Prefect API root of a server on ``host:port``."""
    return f"http://{host}:{port}/api"


def load_state(paths: StackPaths) -> StackState | None:
    """The recorded state, or None when nothing is recorded. A corrupt file is an error."""
    try:
        text = paths.state_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        return StackState.from_json(text)
    except (ValueError, TypeError, KeyError) as exc:
        raise StackError(
            f"{paths.state_file} is not a stack state file ({exc}); stop the processes it names by "
            "hand if any are left, then delete it"
        ) from None


def save_state(paths: StackPaths, state: StackState) -> None:
    """Write the state atomically (a reader never sees half a file)."""
    paths.root.mkdir(parents=True, exist_ok=True)
    tmp = paths.state_file.with_suffix(".json.tmp")
    tmp.write_text(state.to_json() + "\n", encoding="utf-8")
    tmp.replace(paths.state_file)


# --------------------------------------------------------------------------------------------------
# the API's auth string

AUTH_USER = "discovery"


def auth_string(paths: StackPaths, *, create: bool = False) -> str | None:
    """The stack's auth string from ``.stack/auth`` (None when there is none); ``create`` generates
    it once, readable by the user only (mode 0600). It is registered with the redaction point."""
    try:
        text = paths.auth_file.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        text = ""
    except OSError as exc:
        raise StackError(f"cannot read {paths.auth_file}: {exc.strerror or exc}") from None
    if not text and create:
        text = f"{AUTH_USER}:{secrets.token_urlsafe(32)}"
        paths.root.mkdir(parents=True, exist_ok=True)
        paths.auth_file.unlink(missing_ok=True)
        fd = os.open(paths.auth_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text + "\n")
    if text:
        with contextlib.suppress(OSError):
            paths.auth_file.chmod(0o600)
        register_secret(text.partition(":")[2] or text)  # the secret part (not the user name)
    return text or None


def auth_headers(auth: str | None) -> dict[str, str]:
    """The ``Authorization`` header Prefect's clients send for ``auth`` (none without one)."""
    if not auth:
        return {}
    return {"Authorization": f"Basic {base64.b64encode(auth.encode('utf-8')).decode('ascii')}"}


# --------------------------------------------------------------------------------------------------
# processes


def process_start_ticks(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot), or None when /proc does not tell."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after the last ')'.
    fields = stat.rsplit(")", 1)[-1].split()
    try:
        return int(fields[19])  # field 22 overall; fields[0] is field 3 (the state)
    except (IndexError, ValueError):
        return None


def _process_state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    parts = stat.rsplit(")", 1)[-1].split()
    return parts[0] if parts else None


def _reap(pid: int) -> None:
    """Collect the exit status when ``pid`` is our own child (tests start the stack in-process)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def is_running(record: ProcessRecord) -> bool:
    """True when the recorded process is alive and is still the process that was started."""
    _reap(record.pid)
    try:
        os.kill(record.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # alive, but someone else's: not ours
    if _process_state(record.pid) in {"Z", "X"}:
        return False
    if record.start_ticks is not None:
        return process_start_ticks(record.pid) == record.start_ticks
    return True


def _signal_group(record: ProcessRecord, sig: signal.Signals) -> None:
    """Send ``sig`` to the record's process group (its own, since it was started in a new session)."""
    try:
        if os.getpgid(record.pid) == record.pid:
            os.killpg(record.pid, sig)
        else:
            os.kill(record.pid, sig)
    except ProcessLookupError:
        pass


def stop_process(record: ProcessRecord, timeout_s: float) -> str:
    """Stop one recorded process: SIGTERM to its group, SIGKILL after ``timeout_s``. Says what happened."""
    if not is_running(record):
        return "was not running"
    _signal_group(record, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not is_running(record):
            return "stopped"
        time.sleep(0.1)
    _signal_group(record, signal.SIGKILL)
    kill_deadline = time.monotonic() + 5.0
    while time.monotonic() < kill_deadline:
        if not is_running(record):
            return f"killed (did not stop within {timeout_s:.0f} s)"
        time.sleep(0.1)
    raise StackError(f"{record.name} (pid {record.pid}) survived SIGKILL")


def child_environment(overrides: Mapping[str, str], *, drop: tuple[str, ...] = ()) -> dict[str, str]:
    """The environment of a stack process: this process's environment with ``overrides`` applied.

    The one place here that reads the environment: child processes need PATH, HOME, the user's
    ``DISCOVERY_*`` and ``OPENROUTER_API_KEY`` settings, and so on, exactly as the user has them.
    """
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(overrides)
    return env


def _spawn(name: str, argv: list[str], *, cwd: Path, env: Mapping[str, str], log: Path) -> ProcessRecord:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        out.write(f"\n--- {datetime.now(UTC).isoformat()} starting {name}: {' '.join(argv)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return ProcessRecord(
        name=name, pid=proc.pid, start_ticks=process_start_ticks(proc.pid), argv=argv, log=str(log)
    )


def log_tail(path: str | Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a log file ("" when it is missing)."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------------------------------
# ports and health


def port_is_free(host: str, port: int) -> bool:
    """True when nothing listens on ``host:port``.

    Checked by binding it the way servers do (``SO_REUSEADDR``), so connections of a server that just
    stopped, still in TIME_WAIT, do not count as in use.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = DEFAULT_HOST) -> int:
    """A port on ``host`` that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def server_healthy(api: str) -> bool:
    """True when the Prefect API at ``api`` answers its health check (which needs no auth string)."""
    try:
        response = httpx.get(f"{api}/health", timeout=HTTP_TIMEOUT_S)
    except httpx.HTTPError:
        return False
    return response.status_code == 200 and response.json() is True


def read_deployment(
    api: str, auth: str | None = None, name: str = DEPLOYMENT_NAME
) -> dict[str, object] | None:
    """The ``discovery/<name>`` deployment (``monthly`` by default) as the API returns it, or None when
    it does not exist."""
    try:
        response = httpx.get(
            f"{api}/deployments/name/{FLOW_NAME}/{name}",
            headers=auth_headers(auth),
            timeout=HTTP_TIMEOUT_S,
        )
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    data: dict[str, object] = response.json()
    return data


def next_scheduled_run(
    api: str, deployment: Mapping[str, object], auth: str | None = None
) -> datetime | None:
    """When the deployment's next scheduled run is expected (UTC), or None when none is scheduled."""
    body = {
        "deployments": {"id": {"any_": [str(deployment.get("id"))]}},
        "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}},
        "sort": "EXPECTED_START_TIME_ASC",
        "limit": 1,
    }
    try:
        response = httpx.post(
            f"{api}/flow_runs/filter", json=body, headers=auth_headers(auth), timeout=HTTP_TIMEOUT_S
        )
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    runs = response.json()
    if not isinstance(runs, list) or not runs or not isinstance(runs[0], dict):
        return None
    expected = runs[0].get("expected_start_time") or runs[0].get("next_scheduled_start_time")
    if not isinstance(expected, str):
        return None
    when = datetime.fromisoformat(expected.replace("Z", "+00:00"))
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def deployment_polled_since(deployment: Mapping[str, object] | None, since: datetime) -> bool:
    """True when a serve process polled the deployment for runs at or after ``since``."""
    if not deployment or not deployment.get("last_polled"):
        return False
    polled = datetime.fromisoformat(str(deployment["last_polled"]).replace("Z", "+00:00"))
    if polled.tzinfo is None:
        polled = polled.replace(tzinfo=UTC)
    return polled >= since


def wait_until(
    check: Callable[[], bool],
    *,
    timeout_s: float,
    alive: Callable[[], bool],
    what: str,
    log: str | Path,
) -> float:
    """Poll ``check`` until it is true; fail early when the process dies. Returns the seconds waited."""
    start = time.monotonic()
    while True:
        if check():
            return time.monotonic() - start
        if not alive():
            raise StackError(f"{what} exited while starting; last lines of {log}:\n{log_tail(log)}")
        if time.monotonic() - start > timeout_s:
            raise StackError(
                f"{what} was not ready within {timeout_s:.0f} s; last lines of {log}:\n{log_tail(log)}"
            )
        time.sleep(POLL_INTERVAL_S)


# --------------------------------------------------------------------------------------------------
# the two processes


def prefect_environment(paths: StackPaths, host: str, port: int, *, auth: str) -> dict[str, str]:
    """Prefect settings shared by the server and the serve process: local home, local API with its
    auth string, offline."""
    return {
        "PREFECT_API_AUTH_STRING": auth,
        "PREFECT_HOME": str(paths.prefect_home),
        "PREFECT_PROFILES_PATH": str(paths.prefect_home / "profiles.toml"),
        "PREFECT_API_URL": api_url(host, port),
        "PREFECT_UI_URL": f"http://{host}:{port}",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
    }


def server_environment(paths: StackPaths, host: str, port: int, *, auth: str) -> dict[str, str]:
    """The server's settings: SQLite under the stack folder, the UI pointed at this API, the auth
    string required, cross-origin requests only from the UI's own origin."""
    return {
        **prefect_environment(paths, host, port, auth=auth),
        "PREFECT_SERVER_API_AUTH_STRING": auth,
        "PREFECT_SERVER_API_CORS_ALLOWED_ORIGINS": f"http://{host}:{port}",
        "PREFECT_SERVER_API_HOST": host,
        "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_SERVER_UI_API_URL": api_url(host, port),
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{paths.database}",
    }


def server_command(host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)]


def serve_command(defaults: Mapping[str, Any]) -> list[str]:
    """``discovery serve`` with the deployment's default parameters (see :mod:`flows.parameters`)."""
    from flows.parameters import deployment_args

    return [sys.executable, "-m", "flows.cli", "serve", *deployment_args(defaults)]


def serve_environment(
    paths: StackPaths, host: str, port: int, *, data_dir: Path, docs_dir: Path, auth: str
) -> dict[str, str]:
    """The serve process's settings; flow runs inherit them (and its working directory)."""
    return {
        **prefect_environment(paths, host, port, auth=auth),
        "DISCOVERY_DATA_DIR": str(data_dir),
        "DISCOVERY_DOCS_DIR": str(docs_dir),
    }


# Settings a user may have set for another Prefect setup; the stack's processes must not inherit them.
FOREIGN_PREFECT_VARS = (
    "PREFECT_PROFILE",
    "PREFECT_API_KEY",
    "PREFECT_API_AUTH_STRING",
    "PREFECT_SERVER_API_AUTH_STRING",
    "PREFECT_API_DATABASE_CONNECTION_URL",
    "PREFECT_SERVER_DATABASE_CONNECTION_URL",
)


# --------------------------------------------------------------------------------------------------
# up / down / status


@dataclass(frozen=True, slots=True)
class StackConfig:
    """Everything ``up`` needs."""

    paths: StackPaths
    project_dir: Path
    data_dir: Path
    docs_dir: Path
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT  # 0: any free port
    defaults: Mapping[str, Any] = field(default_factory=dict)
    timeout_s: float = DEFAULT_START_TIMEOUT_S


@dataclass(frozen=True, slots=True)
class UpResult:
    state: StackState
    already_up: bool
    server_ready_s: float = 0.0
    serve_ready_s: float = 0.0


def running_processes(state: StackState) -> dict[str, bool]:
    """Each recorded process and whether it is still running."""
    return {p.name: is_running(p) for p in state.processes}


def start_stack(config: StackConfig) -> UpResult:
    """Start the server and the serve process unless they already run; wait until both are healthy.

    When only part of a recorded stack is still running, that part is stopped and both are started
    again. On any failure, whatever this call started is stopped before the error is raised.
    """
    paths = config.paths
    existing = load_state(paths)
    if existing is not None:
        alive = running_processes(existing)
        if alive and all(alive.values()) and {SERVER, SERVE} <= alive.keys():
            return UpResult(existing, already_up=True)
        stop_stack(paths)

    if config.host not in {"127.0.0.1", "localhost", "::1"}:
        raise StackError(f"the stack listens on loopback only, not on {config.host!r}")
    port = config.port or free_port(config.host)
    if not port_is_free(config.host, port):
        raise StackError(
            f"port {port} on {config.host} is in use; pass --port with another port (0 = any free one)"
        )
    paths.prefect_home.mkdir(parents=True, exist_ok=True)
    paths.logs.mkdir(parents=True, exist_ok=True)
    auth = auth_string(paths, create=True)
    assert auth is not None
    state = StackState(
        host=config.host,
        port=port,
        project_dir=str(config.project_dir),
        data_dir=str(config.data_dir),
        docs_dir=str(config.docs_dir),
        started_at=datetime.now(UTC).isoformat(),
    )
    try:
        server = _spawn(
            SERVER,
            server_command(config.host, port),
            cwd=config.project_dir,
            env=child_environment(
                server_environment(paths, config.host, port, auth=auth), drop=FOREIGN_PREFECT_VARS
            ),
            log=paths.log(SERVER),
        )
        state = state.with_process(server)
        save_state(paths, state)
        server_s = wait_until(
            lambda: server_healthy(state.api_url),
            timeout_s=config.timeout_s,
            alive=lambda: is_running(server),
            what="the Prefect server",
            log=server.log,
        )
        # The API's clock and ours are the same machine's; allow for a second of rounding.
        serve_started = datetime.now(UTC) - timedelta(seconds=1)
        serve = _spawn(
            SERVE,
            serve_command(config.defaults),
            cwd=config.project_dir,
            env=child_environment(
                serve_environment(
                    paths, config.host, port, data_dir=config.data_dir, docs_dir=config.docs_dir, auth=auth
                ),
                drop=FOREIGN_PREFECT_VARS,
            ),
            log=paths.log(SERVE),
        )
        state = state.with_process(serve)
        save_state(paths, state)
        serve_s = wait_until(
            lambda: all(
                deployment_polled_since(read_deployment(state.api_url, auth, name), serve_started)
                for name in DEPLOYMENT_NAMES
            ),
            timeout_s=config.timeout_s,
            alive=lambda: is_running(serve),
            what="the serve process",
            log=serve.log,
        )
    except BaseException:
        stop_stack(paths)
        raise
    return UpResult(state, already_up=False, server_ready_s=server_s, serve_ready_s=serve_s)


def stop_stack(paths: StackPaths, timeout_s: float = DEFAULT_STOP_TIMEOUT_S) -> list[tuple[str, int, str]]:
    """Stop the recorded processes (serve first, then the server) and forget them.

    Returns (name, pid, what happened) per recorded process; an empty list when nothing was recorded.
    Only pids from the state file are ever signalled.
    """
    state = load_state(paths)
    if state is None:
        return []
    outcomes: list[tuple[str, int, str]] = []
    for record in reversed(state.processes):
        outcomes.append((record.name, record.pid, stop_process(record, timeout_s)))
    paths.state_file.unlink(missing_ok=True)
    return outcomes


@dataclass(frozen=True, slots=True)
class StackStatus:
    state: StackState | None
    running: dict[str, bool]
    server_healthy: bool
    deployment: dict[str, object] | None
    next_run: datetime | None = None
    watch: dict[str, object] | None = None  # discovery/watch
    next_watch: datetime | None = None


def stack_status(paths: StackPaths) -> StackStatus:
    """What is recorded, what still runs, and what the API says."""
    state = load_state(paths)
    if state is None:
        return StackStatus(None, {}, False, None)
    running = running_processes(state)
    healthy = running.get(SERVER, False) and server_healthy(state.api_url)
    auth = auth_string(paths)
    deployment = read_deployment(state.api_url, auth) if healthy else None
    next_run = next_scheduled_run(state.api_url, deployment, auth) if deployment is not None else None
    watch = read_deployment(state.api_url, auth, WATCH_DEPLOYMENT_NAME) if healthy else None
    next_watch = next_scheduled_run(state.api_url, watch, auth) if watch is not None else None
    return StackStatus(state, running, healthy, deployment, next_run, watch, next_watch)
