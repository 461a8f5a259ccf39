"""A hostile corpus: canary keys made at test time, a hostile OpenAI-compatible server on loopback,
and scans that look for a canary everywhere a run may have written.

The hostile server lists models whose ids, names and descriptions carry format fields (``{x}``,
``{ctx.client.auth.secret}``, ``%s``), lone surrogates and non-characters (as JSON escapes), ANSI and
bidi controls, NUL, and the canary in every form the redaction point must catch; two entries have no
id. Its models answer correctly, or with the canary split across SSE events and TCP writes, in error
bodies, headers, finish reasons, provider names, a broken chunk header, invalid bytes.
"""

from __future__ import annotations

import json
import secrets
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import polars as pl

from freemodels import storage
from freemodels.suite import solve

ALPHABET = "ghjkmnpqrstuvwxyz"
"""Letters only, none of them hexadecimal: a run of eight never turns up by chance in UUIDs, hashes,
timestamps or English text."""


@dataclass(frozen=True)
class Canary:
    """A fake key, and every run of 8 of its characters to look for (URL-encoded too)."""

    value: str
    prefix: str = ""

    @classmethod
    def make(cls, prefix: str = "sk-or-v1-", *, specials: bool = False) -> Canary:
        parts = ["".join(secrets.choice(ALPHABET) for _ in range(12)) for _ in range(4)]
        body = ("+".join(parts[:2]) + "/" + "=".join(parts[2:])) if specials else "".join(parts)
        return cls(prefix + body, prefix)

    @property
    def needles(self) -> frozenset[str]:
        """Lower-cased runs of 8 characters of the key or its URL-encoded forms that reach into its
        random part (a run of the fixed prefix alone, ``sk-or-v1``, proves nothing)."""
        found: set[str] = set()
        for form in {self.value, quote(self.value, safe=""), quote_plus(self.value)}:
            fixed = len(quote(self.prefix, safe=""))
            found |= {form[i : i + 8].lower() for i in range(len(form) - 7) if i + 8 > fixed}
        return frozenset(found)

    def forms(self) -> list[str]:
        """The key as a hostile server would echo it."""
        v = self.value
        middle = len(v) // 2
        return [
            v,
            v[:14],
            v[-12:],
            v[middle - 6 : middle + 6],
            v.upper(),
            v.swapcase(),
            quote(v, safe=""),
            f"Bearer {v}",
            f"http://user:{quote(v, safe='')}@evil.example/v1",
            f"https://evil.example/v1?api_key={quote(v, safe='')}",
        ]

    def hits(self, text: str) -> list[str]:
        lowered = text.lower()
        return sorted(n for n in self.needles if n in lowered)


def leaks(text: str, canaries: Iterable[Canary], where: str) -> list[str]:
    return [f"{where}: {hit}" for canary in canaries for hit in canary.hits(text)]


# --- scanning what a run wrote ----------------------------------------------------------------------


def duckdb_text(path: Path) -> str:
    """Every value of every table of a DuckDB file, as text."""
    parts = []
    with storage.connect(path, read_only=True, wait_s=10) as con:
        names = [n for (n,) in con.execute("SELECT table_name FROM information_schema.tables").fetchall()]
        for name in names:
            frame = storage.query(con, f'SELECT * FROM "{name}"')
            parts.append(json.dumps(frame.to_dicts(), default=str, ensure_ascii=False))
    return "\n".join(parts)


def scan_files(root: Path, canaries: Iterable[Canary], *, since: float | None = None) -> list[str]:
    """Leaks in every file under ``root``: raw bytes, and decoded Parquet and DuckDB contents."""
    canaries = list(canaries)
    found: list[str] = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if since is not None and path.stat().st_mtime < since:
            continue
        found += leaks(path.read_bytes().decode("latin-1"), canaries, str(path))
        if path.suffix == ".parquet":
            text = json.dumps(pl.read_parquet(path).to_dicts(), default=str, ensure_ascii=False)
            found += leaks(text, canaries, f"{path} (decoded)")
        elif path.suffix == ".duckdb":
            found += leaks(duckdb_text(path), canaries, f"{path} (decoded)")
    return found


async def _events(http: Any, since: str) -> list[str]:
    """Every event the server stored since ``since`` (ISO time), page by page, as JSON text."""
    pages: list[str] = []
    response = await http.post("/events/filter", json={"filter": {"occurred": {"since": since}}, "limit": 50})
    while True:
        response.raise_for_status()
        pages.append(response.text)
        next_page = response.json().get("next_page")
        if not next_page:
            return pages
        response = await http.get(next_page)


async def flow_runs_since(since: float) -> list[str]:
    """The ids of the flow runs the session's Prefect server created since ``since`` (epoch seconds)."""
    from datetime import UTC, datetime

    from prefect.client.orchestration import get_client

    start = datetime.fromtimestamp(since, UTC)
    async with get_client() as client:
        runs = await client.read_flow_runs()
    return [str(r.id) for r in runs if r.created is not None and r.created >= start]


async def prefect_text(flow_run_ids: list[str], since: float) -> dict[str, str]:
    """What the Prefect API holds about these flow runs: the runs (names, states, parameters), their
    task runs, logs and artifacts, and every event since ``since`` (epoch seconds), as text per kind."""
    import uuid
    from datetime import UTC, datetime

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    await APILogHandler.aflush()
    since_iso = datetime.fromtimestamp(since, UTC).isoformat()
    ids = [uuid.UUID(i) for i in flow_run_ids]
    by_run = FlowRunFilter(id=FlowRunFilterId(any_=ids))
    text: dict[str, str] = {}
    async with get_client() as client:
        runs = [await client.read_flow_run(i) for i in ids]
        text["flow runs"] = "\n".join(r.model_dump_json() for r in runs)
        states = [s for i in ids for s in await client.read_flow_run_states(i)]
        text["flow run states"] = "\n".join(s.model_dump_json() for s in states)
        tasks = await client.read_task_runs(flow_run_filter=by_run)
        text["task runs"] = "\n".join(t.model_dump_json() for t in tasks)
        logs = await client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=ids)))
        text["logs"] = "\n".join(log.model_dump_json() for log in logs)
        artifacts = await client.read_artifacts(flow_run_filter=by_run)
        text["artifacts"] = "\n".join(a.model_dump_json() for a in artifacts)
        text["events"] = "\n".join(await _events(client._client, since_iso))
    return text


# --- the hostile server ---------------------------------------------------------------------------------

FORMAT_IDS = (
    "evil/{ctx.client.auth.secret}:free",
    "evil/{x}:free",
    "evil/{0}{1}%s%(x)s{{}}{!r:>{9}}:free",
)
SURROGATE_ID = "evil/lone-\udfff\ud800:free"  # two lone surrogates once the JSON escapes are decoded
NONCHARACTER_ID = "evil/nonchar-\ufffe\uffff\ufdd0:free"
CONTROL_ID = "evil/ansi-\x1b[31mred\x1b[0m-\x00nul-\u202ebidi:free"
GOOD_ID = "good/answers-right:free"

DIRTY_REPLY = "hostile/dirty-reply:free"
ECHO_401 = "hostile/echo-401-\x1b[31mred\x1b[0m-\x00nul:free"  # ruled out (auth): named in the logs
ECHO_500 = "hostile/echo-500:free"
MID_STREAM = "hostile/mid-stream:free"
BAD_CHUNK = "hostile/bad-chunk:free"
BAD_BYTES = "hostile/bad-bytes:free"
JSON_ERROR = "hostile/json-error:free"
HEADERS = "hostile/headers:free"

WORKING = (GOOD_ID, *FORMAT_IDS, SURROGATE_ID, NONCHARACTER_ID, CONTROL_ID, HEADERS)
"""Models that answer every task correctly (and so appear in tiers, charts and the rotation)."""
FAILING = (DIRTY_REPLY, ECHO_401, ECHO_500, MID_STREAM, BAD_CHUNK, BAD_BYTES, JSON_ERROR)


def catalog_entries(canary: Canary) -> list[Any]:
    """The hostile catalog's entries: every model above, one whose id holds the canary, two without id."""
    forms = canary.forms()
    hostile_text = " | ".join(
        [*forms, "{ctx.client.auth.secret} {0} %s %(x)s", "\x1b[2J\x00\u202e\ud800\uffff"]
    )
    entries: list[Any] = []
    for n, model_id in enumerate([*WORKING, *FAILING, f"evil/key-{canary.value}:free"]):
        entries.append(
            {
                "id": model_id,
                "canonical_slug": f"{model_id}-{forms[n % len(forms)]}",
                "name": f"{forms[n % len(forms)]} {{0}} %s \x1b[1m",
                "description": hostile_text,
                "context_length": 8192,
                "pricing": {"prompt": "0", "completion": "0", forms[0]: "0"},
                "architecture": {"modality": "text->text", "tokenizer": forms[(n + 1) % len(forms)]},
                "supported_parameters": ["max_tokens", forms[(n + 2) % len(forms)]],
            }
        )
    entries.insert(3, {"name": "no id at all", "description": forms[0]})
    entries.insert(7, {"name": forms[1], "pricing": {"prompt": "0"}})
    return entries


def _sse(chunks: list[dict[str, Any]]) -> list[bytes]:
    return [b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks] + [b"data: [DONE]\n\n"]


def _answer(answer: str, **extra: Any) -> list[dict[str, Any]]:
    return [
        {"id": "gen-1", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
        {"id": "gen-1", "choices": [{"index": 0, "delta": {"content": answer}}]},
        {"id": "gen-1", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], **extra},
    ]


class HostileServer:
    """An OpenAI-compatible server on 127.0.0.1 that sends everything a run must survive."""

    def __init__(self, canary: Canary) -> None:
        self.canary = canary
        self.requests: list[tuple[str, str]] = []
        self.catalog = json.dumps({"data": catalog_entries(canary)}).encode()  # ensure_ascii: \udXXX escapes
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                server.requests.append(("GET", self.path))
                if self.path.endswith("/models"):
                    self._send(200, server.catalog)
                elif self.path.endswith("/key"):
                    label = json.dumps({"data": {"label": " ".join(server.canary.forms()), "usage": 0}})
                    self._send(200, label.encode())
                else:
                    self._send(404, b'{"error": {"message": "not here"}}')

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                model = str(body.get("model"))
                server.requests.append(("POST", model))
                prompt = str((body.get("messages") or [{}])[-1].get("content", ""))
                server.answer(self, model, solve(prompt) or "42")

            def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

        self.handler = Handler
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> HostileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # --- the answers ----------------------------------------------------------------------------------

    def answer(self, handler: Any, model: str, right: str) -> None:
        v, forms = self.canary.value, self.canary.forms()
        if model == DIRTY_REPLY:
            # The canary split across events and writes, lone surrogates, non-characters, controls.
            pieces = [v[:5], v[5:11], v[11:19], v[19:]]
            chunks = [{"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}]
            chunks += [{"choices": [{"index": 0, "delta": {"content": p}}]} for p in ["key: ", *pieces]]
            chunks += [{"choices": [{"index": 0, "delta": {"content": " \ud800\uffff\x1b[2J\x00"}}]}]
            chunks += [
                {"choices": [{"index": 0, "delta": {}, "finish_reason": v[-12:]}], "provider": forms[7]}
            ]
            return self._stream(handler, _sse(chunks), split=True)
        if model == ECHO_401:  # quotes the key's last 12 characters
            body = {
                "error": {"code": 401, "message": f"Invalid key ending in ...{v[-12:]}"},
                "user_id": forms[3],
            }
            return handler._send(401, json.dumps(body).encode())
        if model == ECHO_500:
            meta = {"raw": " ".join(forms), "provider_name": forms[7], "error_type": forms[5]}
            body = {
                "error": {"code": 502, "message": f"Provider returned error {forms[8]}", "metadata": meta}
            }
            return handler._send(502, json.dumps(body).encode())
        if model == MID_STREAM:
            chunks = [
                {"choices": [{"index": 0, "delta": {"content": "4"}}]},
                {
                    "error": {"code": 502, "message": f"upstream died {forms[6]} {forms[4]}"},
                    "choices": [{"index": 0, "delta": {}, "finish_reason": "error"}],
                },
            ]
            return self._stream(handler, _sse(chunks))
        if model == BAD_CHUNK:  # h11 quotes the bytes it could not read
            head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
            return self._raw(handler, head + b"zz" + v.encode() + b"\r\n\r\n")
        if model == BAD_BYTES:
            body = b"\xff\xfe" + v.encode() + b"\x00\x1b[2J\xc3\x28" + quote(v).encode()
            return handler._send(502, body, {"Content-Type": "text/plain"})
        if model == JSON_ERROR:
            message = f"bad \ud800 request \uffff {v.upper()} {{0}} %s"
            return handler._send(400, json.dumps({"error": {"code": 400, "message": message}}).encode())
        if model == HEADERS:
            headers = {"X-Generation-Id": f"gen-{v}", "X-OpenRouter-Cache-Status": v[-14:]}
            return self._stream(handler, _sse(_answer(right, provider=forms[2])), headers=headers)
        return self._stream(handler, _sse(_answer(right)))

    def _stream(
        self, handler: Any, events: list[bytes], *, split: bool = False, headers: dict[str, str] | None = None
    ) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Connection", "close")
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.flush()
        for event in events:
            parts = [event[i : i + 7] for i in range(0, len(event), 7)] if split else [event]
            for part in parts:
                handler.wfile.write(part)
                handler.wfile.flush()
                if split:
                    time.sleep(0.001)
        handler.close_connection = True

    def _raw(self, handler: Any, data: bytes) -> None:
        handler.wfile.write(data)
        handler.wfile.flush()
        handler.close_connection = True
        handler.connection.shutdown(socket.SHUT_WR)
