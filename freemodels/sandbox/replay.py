"""Recorded responses to replay verbatim: the body file plus status and headers from ``<name>.meta.json``.

The meta file is the one that sits beside each recording in the shared fixtures (``status``,
``response_headers`` as name -> list of values). Framing headers (content-length, transfer-encoding,
connection, content-encoding) and the recorder's date/server are left out; the server sets its own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from freemodels.errors import ScenarioError

_DROPPED_HEADERS = frozenset(
    {"content-length", "transfer-encoding", "connection", "content-encoding", "keep-alive", "date", "server"}
)


@dataclass(frozen=True, slots=True)
class Recording:
    """A response to play back."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    is_sse: bool

    def media_type(self) -> str:
        for name, value in self.headers:
            if name.lower() == "content-type":
                return value
        return "text/event-stream" if self.is_sse else "application/json"

    def extra_headers(self) -> dict[str, str]:
        """Headers other than content-type (those are set from :meth:`media_type`)."""
        return {name: value for name, value in self.headers if name.lower() != "content-type"}


def load_recording(path: Path) -> Recording:
    """Read a recorded body and its sibling meta file (status 200 and no headers when it is absent)."""
    try:
        body = path.read_bytes()
    except OSError as exc:
        raise ScenarioError(f"replay file {path} cannot be read: {exc.strerror or exc}") from None
    is_sse = path.suffix.lower() == ".sse" or body.lstrip().startswith((b"data:", b":"))
    meta_path = path.with_suffix(".meta.json")
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            status = int(meta.get("status", 200))
            headers = tuple(_headers(meta.get("response_headers") or {}))
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            raise ScenarioError(f"replay meta file {meta_path} is not usable: {exc}") from None
    return Recording(status=status, headers=headers, body=body, is_sse=is_sse)


def sse_events(body: bytes) -> list[bytes]:
    """Split an SSE transcript into events, each with its trailing blank line, bytes kept as recorded."""
    normalized = body.replace(b"\r\n", b"\n")
    events = []
    for part in normalized.split(b"\n\n"):
        if part.strip():
            events.append(part.lstrip(b"\n") + b"\n\n")
    return events


def is_data_event(event: bytes) -> bool:
    """True for ``data:`` events (False for ``:`` comments)."""
    return event.startswith(b"data:")


def _headers(raw: dict[str, object]) -> list[tuple[str, str]]:
    result = []
    for name, values in raw.items():
        if name.lower() in _DROPPED_HEADERS:
            continue
        for value in values if isinstance(values, list) else [values]:
            result.append((str(name), str(value)))
    return result
