"""``discovery catalog PATH_OR_URL [--json]``: the summary a user sees."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from flows.cli import main
from tests.conftest import SKIP_REASON, catalog_files

CATALOG = {
    "data": [
        {"id": "meta-llama/llama-3.3-70b-instruct:free", "pricing": {"prompt": "0", "completion": "0"}},
        {"id": "meta-llama/llama-3.3-8b-instruct:free", "pricing": {"prompt": "0", "completion": "0"}},
        {"id": "openrouter/owl-alpha", "pricing": {"prompt": "0", "completion": "0"}},
        {"id": "openai/gpt-4o", "pricing": {"prompt": "0.0000025", "completion": "0.00001"}},
        {"id": "openrouter/auto", "pricing": {"prompt": "-1", "completion": "-1"}},
        {
            "id": "openrouter/free",
            "architecture": {"tokenizer": "Router"},
            "pricing": {"prompt": "0", "completion": "0"},
        },
    ]
}
EXPECTED = {"models": 6, "free": 3, "free_suffix": 2, "free_zero_price": 1, "routers": 2, "families": 2}


@pytest.fixture
def catalog_path(tmp_path: Path) -> Path:
    path = tmp_path / "catalog.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(CATALOG).encode())
    return path


def test_json_output_is_exactly_the_six_counts(
    catalog_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["catalog", str(catalog_path), "--json"]) == 0
    out = capsys.readouterr().out
    data = json.loads(out)
    assert data == EXPECTED
    assert list(data) == ["models", "free", "free_suffix", "free_zero_price", "routers", "families"]
    assert out.count("\n") == 1  # one JSON object, nothing else


def test_text_output_names_the_counts(catalog_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["catalog", str(catalog_path)]) == 0
    out = capsys.readouterr().out
    assert str(catalog_path) in out
    for count in EXPECTED.values():
        assert str(count) in out


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not json", "not JSON: Expecting value: line 1 column 1 (char 0)"),
        (b'"x"', "top level is a string; expected an object with 'data' or a list"),
        (
            b'{"data": [{"name": "no id"}]}',
            "its only entry is not a model (1 entry skipped: no id (data[0]))",
        ),
    ],
)
def test_malformed_catalog_is_one_line_without_traceback(
    tmp_path: Path, content: bytes, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    assert main(["catalog", str(path), "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert err.endswith(f"{path}: {message}")


@pytest.mark.parametrize("path", [pytest.param(p, id=p.name[:48]) for p in catalog_files()] or [None])
def test_json_on_every_shared_catalog(path: Path | None, capsys: pytest.CaptureFixture[str]) -> None:
    if path is None:
        pytest.skip(SKIP_REASON)
    assert main(["catalog", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) == set(EXPECTED)
    assert data["free"] == data["free_suffix"] + data["free_zero_price"]
    assert data["models"] > data["free"] > 0 and data["routers"] >= 1
    assert 0 < data["families"] <= data["free"]


class _Serve(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path != "/api/v1/models":
            self.send_error(404)
            return
        body = json.dumps(CATALOG).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.fixture
def base_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Serve)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api/v1"
    finally:
        server.shutdown()
        server.server_close()


def test_json_from_a_url(base_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["catalog", base_url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == EXPECTED


def test_unreachable_url_is_one_line(base_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["catalog", base_url + "/nothing-here", "--json"]) == 2
    err = capsys.readouterr().err.strip()
    assert "HTTP 404" in err and "\n" not in err


def test_a_catalog_with_a_lone_surrogate_is_summarised_not_a_crash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 77 bytes that ended in UnicodeEncodeError: ids with \ud800 escapes (a lone surrogate once decoded).
    path = tmp_path / "odd.json"
    path.write_bytes(b'{"data":[{"id":"a/\\ud800:free"},{"id":"b/\\udfff\\ud800\\u001b[31m:free"}]}     ')
    assert len(path.read_bytes()) == 77
    assert main(["catalog", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "models listed:            2" in out and err == ""
    out.encode("utf-8")


def test_skipped_entries_are_counted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "some-bad.json"
    path.write_text('{"data": [{"id": "a/b:free"}, {"name": "x"}, {"id": "c/d"}, {}]}', encoding="utf-8")
    assert main(["catalog", str(path)]) == 0
    out = capsys.readouterr().out
    assert "models listed:            2" in out
    assert f"  note: {path}: 2 entries skipped: no id (data[1], data[3])" in out
