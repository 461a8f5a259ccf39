"""Reading a catalog from a file, a mocked transport, and a real HTTP server on loopback."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from freemodels.catalog import catalog_url, parse_catalog, read_catalog_source
from freemodels.errors import CatalogError, SourceError

BODY = json.dumps({"data": [{"id": "a/m:free", "pricing": {"prompt": "0", "completion": "0"}}]}).encode()


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("https://openrouter.ai/api/v1", "https://openrouter.ai/api/v1/models"),
        ("https://openrouter.ai/api/v1/", "https://openrouter.ai/api/v1/models"),
        ("https://openrouter.ai/api/v1/models", "https://openrouter.ai/api/v1/models"),
        ("https://openrouter.ai/api/v1/models/", "https://openrouter.ai/api/v1/models/"),
        (
            "https://openrouter.ai/api/v1/models?output_modalities=all",
            "https://openrouter.ai/api/v1/models?output_modalities=all",
        ),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080/models"),
        ("  http://127.0.0.1:8080/v1  ", "http://127.0.0.1:8080/v1/models"),
    ],
)
def test_catalog_url(given: str, expected: str) -> None:
    assert catalog_url(given) == expected


def test_reads_a_local_file(tmp_path: Path) -> None:
    path = tmp_path / "catalog.json"
    path.write_bytes(BODY)
    assert read_catalog_source(str(path)) == BODY


def test_missing_file_directory_and_empty_argument(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match=r"nope\.json: no such catalog file$"):
        read_catalog_source(str(tmp_path / "nope.json"))
    with pytest.raises(CatalogError, match="is a directory, not a catalog file"):
        read_catalog_source(str(tmp_path))
    with pytest.raises(CatalogError, match="no catalog given"):
        read_catalog_source("  ")


def _mock(handler) -> httpx.MockTransport:  # type: ignore[no-untyped-def]
    return httpx.MockTransport(handler)


def test_base_url_gets_models_appended_and_is_fetched_without_a_key() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=BODY)

    raw = read_catalog_source("https://openrouter.ai/api/v1", transport=_mock(handler))
    assert raw == BODY
    assert [str(r.url) for r in seen] == ["https://openrouter.ai/api/v1/models"]
    assert "authorization" not in seen[0].headers
    assert seen[0].headers["accept"] == "application/json"


def test_http_error_is_a_source_error() -> None:
    transport = _mock(lambda request: httpx.Response(503, text="down"))
    with pytest.raises(SourceError) as info:
        read_catalog_source("https://example.test/api/v1", transport=transport)
    assert str(info.value) == "GET https://example.test/api/v1/models answered HTTP 503 Service Unavailable"


def test_connect_error_is_a_source_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(SourceError, match=r"^GET https://example.test/models failed: connection refused$"):
        read_catalog_source("https://example.test/models", transport=_mock(handler))


def test_timeout_is_a_source_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    with pytest.raises(SourceError, match=r"timed out after 2 s \(ReadTimeout\)"):
        read_catalog_source("https://example.test/models", timeout_s=2, transport=_mock(handler))


def test_too_large_a_catalog_is_refused() -> None:
    transport = _mock(lambda request: httpx.Response(200, content=b"[" + b" " * 5000 + b"]"))
    with pytest.raises(SourceError, match="larger than 1024 bytes"):
        read_catalog_source("https://example.test/models", transport=transport, max_bytes=1024)


def test_invalid_url_is_a_source_error() -> None:
    with pytest.raises(SourceError, match="not a valid URL"):
        read_catalog_source("http://[::1")


# ------------------------------------------------------------------------------------------------
# A real server on loopback


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/slow/models":
            time.sleep(1.5)
        if self.path in {"/api/v1/models", "/slow/models"}:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(BODY)  # the slow case: the client may have given up
        else:
            self.send_error(404)

    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.fixture
def loopback() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_fetches_from_a_loopback_server(loopback: str) -> None:
    raw = read_catalog_source(f"{loopback}/api/v1")
    assert parse_catalog(raw, origin=loopback).get_column("model_id").to_list() == ["a/m:free"]


def test_loopback_404_and_slow_server(loopback: str) -> None:
    with pytest.raises(SourceError, match="answered HTTP 404"):
        read_catalog_source(f"{loopback}/missing")
    with pytest.raises(SourceError, match=r"timed out after 0\.3 s"):
        read_catalog_source(f"{loopback}/slow", timeout_s=0.3)


def test_nothing_listens() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    port = server.server_address[1]
    server.server_close()  # the port is now free: the connection is refused
    with pytest.raises(SourceError, match=rf"^GET http://127.0.0.1:{port}/models failed: "):
        read_catalog_source(f"http://127.0.0.1:{port}", timeout_s=2)
