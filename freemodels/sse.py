"""Incremental Server-Sent Events parser over raw byte chunks (pure, no I/O).

Follows the WHATWG event-stream rules that matter for chat-completion streams:

* lines end in CRLF, LF or CR; a line may be split across chunks, and so may a CRLF pair;
* a line starting with ``:`` is a comment (OpenRouter's ``: OPENROUTER PROCESSING`` keep-alive);
* ``field: value`` lines build an event (one leading space of the value is dropped); several
  ``data`` lines are joined with ``\\n``; a blank line dispatches the event;
* unknown fields are ignored, as is ``retry``.

Each line is decoded as UTF-8 on its own. A line that is not valid UTF-8 yields an
:class:`SSEParseError` (with its byte offset) and is skipped; nothing raises out of the parser.
``[DONE]`` is an ordinary event whose :attr:`SSEEvent.is_done` is true.

At the end of the stream call :meth:`SSEParser.close`: a last line without a line ending is parsed,
and a pending event without its blank line is dispatched, so that a truncated stream shows up as a
truncated event (e.g. half a JSON object) for the caller to reject, not as silence.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DONE = "[DONE]"


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One dispatched event."""

    data: str
    event: str | None = None
    id: str | None = None

    @property
    def is_done(self) -> bool:
        """True for OpenAI's end-of-stream marker ``data: [DONE]``."""
        return self.data.strip() == DONE


@dataclass(frozen=True, slots=True)
class SSEComment:
    """A comment line (text after the colon, leading space dropped)."""

    text: str


@dataclass(frozen=True, slots=True)
class SSEParseError:
    """A line that could not be read; the parser skipped it and goes on."""

    message: str
    offset: int  # byte offset of the line's start in the stream


SSEItem = SSEEvent | SSEComment | SSEParseError


@dataclass(slots=True)
class SSEParser:
    """Feed it byte chunks as they arrive; it returns the items each chunk completes."""

    _buffer: bytearray = field(default_factory=bytearray)
    _offset: int = 0  # stream offset of _buffer[0]
    _skip_lf: bool = False  # the previous chunk ended in CR: a leading LF belongs to it
    _data: list[str] = field(default_factory=list)
    _has_data: bool = False
    _event: str | None = None
    _id: str | None = None
    _last_id: str | None = None
    _closed: bool = False

    def feed(self, chunk: bytes) -> list[SSEItem]:
        """Parse ``chunk`` and return the comments, events and errors it completes."""
        if self._closed or not chunk:
            return []
        if self._skip_lf:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
                self._offset += 1
        self._buffer.extend(chunk)
        items: list[SSEItem] = []
        start = 0
        buf = self._buffer
        size = len(buf)
        # Positions of the next LF and CR at or after `start` (-1: none left). Each is searched
        # again only once `start` has passed it, so a chunk is scanned in linear time.
        lf = buf.find(b"\n")
        cr = buf.find(b"\r")
        while start < size:
            if lf != -1 and lf < start:
                lf = buf.find(b"\n", start)
            if cr != -1 and cr < start:
                cr = buf.find(b"\r", start)
            if lf == -1 and cr == -1:
                break
            if cr == -1 or (lf != -1 and lf < cr):
                end, nxt = lf, lf + 1
            elif cr == size - 1:
                # A CR at the very end: the LF of a CRLF may be in the next chunk.
                end, nxt = cr, cr + 1
                self._skip_lf = True
            elif buf[cr + 1 : cr + 2] == b"\n":
                end, nxt = cr, cr + 2
            else:
                end, nxt = cr, cr + 1
            self._line(bytes(buf[start:end]), self._offset + start, items)
            start = nxt
        if start:
            del buf[:start]
            self._offset += start
        return items

    def close(self) -> list[SSEItem]:
        """End of stream: parse a last unterminated line and dispatch a pending event."""
        if self._closed:
            return []
        self._closed = True
        items: list[SSEItem] = []
        if self._buffer:
            self._line(bytes(self._buffer), self._offset, items)
            self._offset += len(self._buffer)
            self._buffer.clear()
        self._dispatch(items)
        return items

    # --- internals ---------------------------------------------------------------------------
    def _line(self, raw: bytes, offset: int, items: list[SSEItem]) -> None:
        if not raw:
            self._dispatch(items)
            return
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            items.append(SSEParseError(f"invalid UTF-8 at byte {offset + exc.start}: {exc.reason}", offset))
            return
        if offset == 0 and line.startswith("\ufeff"):
            line = line[1:]
            if not line:
                return
        if line.startswith(":"):
            text = line[1:]
            items.append(SSEComment(text[1:] if text.startswith(" ") else text))
            return
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
            self._has_data = True
        elif name == "event":
            self._event = value
        elif name == "id" and "\x00" not in value:
            self._id = value
        # "retry" and unknown fields are ignored, as the spec says.

    def _dispatch(self, items: list[SSEItem]) -> None:
        if self._id is not None:
            self._last_id = self._id
        if self._has_data:
            items.append(SSEEvent("\n".join(self._data), self._event, self._last_id))
        self._data.clear()
        self._has_data = False
        self._event = None
        self._id = None


def parse_all(body: bytes, *, chunk_size: int | None = None) -> list[SSEItem]:
    """Parse a whole body (optionally in chunks of ``chunk_size`` bytes); for tests and replays."""
    parser = SSEParser()
    items: list[SSEItem] = []
    if chunk_size is None or chunk_size <= 0:
        items.extend(parser.feed(body))
    else:
        for i in range(0, len(body), chunk_size):
            items.extend(parser.feed(body[i : i + chunk_size]))
    items.extend(parser.close())
    return items
