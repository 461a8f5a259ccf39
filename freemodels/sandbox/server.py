"""Run the sandbox on loopback: in a background thread (tests, default source) or blocking (CLI).

``SandboxServer`` binds its socket before the thread starts (port 0 picks a free port), serves with
uvicorn on the thread's own event loop, and returns from ``start()`` once the port accepts connections.
``stop()`` first tells stalled answers to give up (their connections are reset), then shuts uvicorn down;
it returns within about a second even with streams that never finish.

Transport faults need the socket of a request: the server tracks each connection's transport by peer
address (a small subclass of uvicorn's h11 protocol) and resets one on demand (``SO_LINGER`` 0, then
abort: the peer sees a TCP RST).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from freemodels.errors import SourceError
from freemodels.sandbox.app import SandboxState, create_app
from freemodels.sandbox.scenario import Scenario, load_scenario

__all__ = ["SandboxServer", "load_scenario", "serve"]

_START_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 3.0
_GRACEFUL_S = 0.5


class _Connections:
    """Transports by peer address, for resetting a request's connection. Used on the loop thread."""

    def __init__(self) -> None:
        self._transports: dict[tuple[str, int], asyncio.Transport] = {}

    def add(self, peer: tuple[str, int] | None, transport: asyncio.Transport) -> None:
        if peer is not None:
            self._transports[peer] = transport

    def discard(self, peer: tuple[str, int] | None, transport: asyncio.Transport) -> None:
        if peer is not None and self._transports.get(peer) is transport:
            del self._transports[peer]

    def reset(self, client: tuple[str, int] | None) -> bool:
        transport = self._transports.get(tuple(client)) if client else None  # type: ignore[arg-type]
        if transport is None:
            return False
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):  # already gone: abort() below still closes it
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
        return True


def _protocol_class(connections: _Connections) -> type[H11Protocol]:
    """uvicorn's h11 protocol, registering each connection's transport."""

    class TrackingH11Protocol(H11Protocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            sock = transport.get_extra_info("socket")
            if sock is not None:  # every chunk leaves at once (timing is what the sandbox is for)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connections.add(_peer(self.client), transport)

        def connection_lost(self, exc: Exception | None) -> None:
            connections.discard(_peer(self.client), self.transport)
            super().connection_lost(exc)

    return TrackingH11Protocol


def _peer(client: Any) -> tuple[str, int] | None:
    if client is None:
        return None
    host, port = client[0], client[1]
    return (str(host), int(port))


async def _warm_up() -> None:
    """Load anyio's backend now: streaming responses use a task group, and the first one would
    otherwise pay the import (a few hundred ms) inside a timed answer."""
    async with anyio.create_task_group():
        pass


def _config(app: Any, host: str, port: int, connections: _Connections, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=_protocol_class(connections),
        lifespan="off",
        log_level=log_level,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=_GRACEFUL_S,  # type: ignore[arg-type]  # used as float seconds
        timeout_keep_alive=30,
    )


class SandboxServer:
    """The sandbox on ``http://host:port/api/v1`` in a background thread. Use as a context manager."""

    def __init__(
        self,
        scenario: Scenario | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int | None = None,
        wall_clock: Callable[[], float] = time.time,
        log_level: str = "warning",
    ) -> None:
        self._connections = _Connections()
        self._app = create_app(scenario, seed=seed, wall_clock=wall_clock, connections=self._connections)
        self._host = host
        self._requested_port = port
        self._log_level = log_level
        self._port: int | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._error: BaseException | None = None

    # -- properties ---------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the sandbox server is not started")
        return self._port

    @property
    def root_url(self) -> str:
        """``http://host:port`` (no path)."""
        return f"http://{self._host}:{self.port}"

    @property
    def base_url(self) -> str:
        """OpenRouter-style API root: ``http://host:port/api/v1``."""
        return f"{self.root_url}/api/v1"

    @property
    def requests_per_minute(self) -> int:
        """The account's per-minute limit on free models (what a client should pace itself to)."""
        return self.state.limits.requests_per_minute

    @property
    def requests_per_day(self) -> int:
        """The account's daily free-model quota."""
        return self.state.limits.requests_per_day

    @property
    def state(self) -> SandboxState:
        """The app's state (read it only while no request is in flight, or via :meth:`stats`)."""
        return self._app.state.sandbox  # type: ignore[no-any-return]

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> SandboxServer:
        """Bind, serve in a background thread, and wait until the port accepts connections."""
        if self._thread is not None:
            raise RuntimeError("the sandbox server is already started")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self._host, self._requested_port))
        except OSError as exc:
            sock.close()
            raise SourceError(
                f"cannot start the sandbox on {self._host}:{self._requested_port}: {exc.strerror or exc}"
            ) from None
        sock.listen(128)
        self._port = sock.getsockname()[1]
        config = _config(self._app, self._host, self._port, self._connections, self._log_level)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._serve, args=(sock,), name=f"sandbox-{self._port}", daemon=True
        )
        self._thread.start()
        self._wait_ready()
        return self

    def _serve(self, sock: socket.socket) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            assert self._server is not None
            loop.run_until_complete(_warm_up())
            loop.run_until_complete(self._server.serve(sockets=[sock]))
        except (OSError, RuntimeError) as exc:  # reported to start()/stop() via self._error
            self._error = exc
        finally:
            sock.close()
            loop.close()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + _START_TIMEOUT_S
        assert self._server is not None and self._thread is not None
        while time.monotonic() < deadline:
            if self._error is not None or not self._thread.is_alive():
                raise SourceError(f"the sandbox server failed to start: {self._error}")
            if self._server.started:
                try:
                    with socket.create_connection((self._host, self.port), timeout=0.5):
                        return
                except OSError:
                    pass
            time.sleep(0.01)
        self.stop()
        raise SourceError(f"the sandbox server did not start within {_START_TIMEOUT_S:.0f} s")

    def stop(self) -> None:
        """Stop serving; stalled answers are cut. Returns within about a second."""
        if self._server is None or self._thread is None:
            return
        self.state.closing.set()
        self._server.should_exit = True
        self._thread.join(_STOP_TIMEOUT_S)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(_STOP_TIMEOUT_S)
        self._thread = None
        self._server = None

    def stats(self) -> dict[str, Any]:
        """``GET /_sandbox/stats`` without HTTP (computed on the server's loop)."""
        loop = self._loop
        if loop is None or self._thread is None:
            return self.state.stats_json()

        async def collect() -> dict[str, Any]:
            return self.state.stats_json()

        return asyncio.run_coroutine_threadsafe(collect(), loop).result(timeout=5)

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def serve(
    host: str = "127.0.0.1",
    port: int = 8765,
    scenario: Scenario | str | Path | None = None,
    *,
    seed: int | None = None,
    log_level: str = "info",
) -> None:
    """Serve the sandbox in the foreground until interrupted (the ``discovery sandbox`` command).

    ``scenario`` may be a parsed :class:`Scenario` or a path to a scenario file.
    """
    if isinstance(scenario, str | Path):
        scenario = load_scenario(scenario)
    connections = _Connections()
    app = create_app(scenario, seed=seed, connections=connections)
    asyncio.run(_warm_up())
    logging.getLogger("freemodels.sandbox").info("sandbox API root: http://%s:%d/api/v1", host, port)
    uvicorn.Server(_config(app, host, port, connections, log_level)).run()
