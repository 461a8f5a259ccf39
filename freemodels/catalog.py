"""The OpenRouter catalog (``GET /api/v1/models``): reading it, parsing it, and the free rule.

Reading
    :func:`read_catalog_source` returns the raw bytes of a catalog from a local file or an
    http(s) URL. A base API URL such as ``https://openrouter.ai/api/v1`` gets ``/models`` appended.

Parsing
    :func:`parse_catalog` turns the raw bytes into one polars DataFrame with exactly the columns of
    :data:`freemodels.records.CATALOG_SCHEMA`, one row per model, in the catalog's order. It
    accepts every shape OpenRouter has served or projects have stored: a UTF-8 byte order mark,
    the ``{"data": [...]}`` envelope or a bare list, missing and extra fields, ``null`` objects,
    prices as strings or numbers, ``"-1"`` price sentinels, sparse pricing keys, catalogs without
    ``architecture.input_modalities``, ``supported_parameters`` or ``canonical_slug``.

    A document that is not a catalog raises :class:`~freemodels.errors.CatalogError` with one
    sentence that names the problem and where it is (``origin`` is the file name or URL)::

        catalog.json: not JSON: Expecting value at line 1 column 1
        catalog.json: top level is a string; expected an object with 'data' or a list
        catalog.json: none of its 3 entries is a model (3 entries skipped: no id (data[0], data[1], ...))

    One bad entry is not a bad catalog: an entry that cannot be read (not an object, no ``id``, an
    ``id`` that is not a non-empty string) is skipped and counted, and
    :func:`parse_catalog_with_notes` returns a note such as ``models: 2 entries skipped: no id
    (data[12], data[40])``, which a run keeps in its notes and reports. A model id listed twice keeps
    its first entry, with a note as well.

    Every text the catalog holds passes the redaction point (:func:`freemodels.secrets.untrusted`) as
    it is read: lone surrogates and non-characters become U+FFFD, and a key, URL credentials or
    credential-looking tokens are masked, before the text reaches a frame, a file, a log or a name.

Columns (see ``CATALOG_SCHEMA`` for the types)
    ``model_id`` the id as listed; ``author`` the part before ``/`` (without a leading ``~``);
    ``variant`` the text after ``:`` (``free``, ``nitro``, ...) or null; ``family`` from
    :func:`freemodels.families.family_of` (a router's family is its own ``author/name``);
    ``context_length`` the model's, else the top provider's; ``max_completion_tokens`` and
    ``is_moderated`` from ``top_provider``; ``modality``, ``input_modalities``,
    ``output_modalities``, ``tokenizer``, ``instruct_type`` from ``architecture`` (the modality
    lists are derived from ``modality``, e.g. ``"text+image->text"``, when a catalog predates
    them); ``price_*`` the prices in USD per token (or per request/image) as floats, null when the
    key is absent or not a number;
    ``pricing_json`` the whole pricing object as compact JSON (null when absent);
    ``supported_parameters`` the list, or null when the catalog does not say; ``supports_tools`` is
    ``"tools"`` in it, ``supports_structured_outputs`` is ``"structured_outputs"`` or
    ``"response_format"`` in it, ``supports_reasoning`` is ``"reasoning"`` in it or a ``reasoning``
    object on the model. The three ``supports_*`` flags are null when the catalog lists no
    ``supported_parameters`` (unknown, not "no"), except that a ``reasoning`` object still makes
    ``supports_reasoning`` true.

The free rule (the contract other checks rely on)
    *Prices* are the values of the ``pricing`` object that read as finite numbers (strings such as
    ``"0.000001"`` or ``"-1"``, or JSON numbers), except ``discount``, which is a fraction, not a
    price. Lists and objects (``overrides``) are not prices.

    1. A *router* is a model whose ``architecture.tokenizer`` is ``Router``, or whose id starts with
       ``~`` (an alias that resolves to another model), or that has any negative price (``"-1"``:
       variable). Routers are never free and are counted apart.
    2. Otherwise a model is *free by suffix* (``free_rule = "suffix"``) if its id ends in ``:free``,
       and *free by zero price* (``free_rule = "zero_price"``) if it does not but has at least one
       price and every price is zero. A model without any price is not free: nothing says it costs
       nothing.
    3. ``is_free`` is true for both; ``free`` = free by suffix + free by zero price.
"""

from __future__ import annotations

import codecs
import gc
import json
import math
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pyarrow as pa

from freemodels import __version__
from freemodels.errors import CatalogError, SourceError
from freemodels.families import family_of, split_variant
from freemodels.records import CATALOG_SCHEMA
from freemodels.secrets import untrusted

__all__ = [
    "CatalogSummary",
    "catalog_url",
    "classify_free",
    "model_ids",
    "parse_catalog",
    "parse_catalog_with_notes",
    "read_catalog_source",
    "summarize",
]

ROUTER_TOKENIZER = "Router"
FREE_SUFFIX = ":free"
MAX_CATALOG_BYTES = 512 * 1024 * 1024
_NOT_PRICES = frozenset({"discount"})
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_JSON_TYPE_NAMES = {
    dict: "an object",
    list: "a list",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
}


def _json_type(value: object) -> str:
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


# --------------------------------------------------------------------------------------------
# Field readers: each takes whatever JSON gave and returns the column's type or None.
# --------------------------------------------------------------------------------------------


def _text(value: object) -> str | None:
    if isinstance(value, str):
        return untrusted(value) or None
    return None


def _integer(value: object) -> int | None:
    """A whole number that fits the Int64 columns; None for anything else."""
    number: int | None = None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    elif isinstance(value, float) and math.isfinite(value):
        number = int(value)
    elif isinstance(value, str):
        try:
            number = int(value.strip())
        except ValueError:
            return None
    if number is None or not _INT64_MIN <= number <= _INT64_MAX:
        return None
    return number


def _number(value: object) -> float | None:
    """A price as a float: JSON numbers and numeric strings; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def _text_list(value: object) -> list[str] | None:
    if not isinstance(value, list):
        return None
    return [untrusted(item) for item in value if isinstance(item, str)]


def _flag(value: object) -> bool | None:
    return value if isinstance(value, bool) else None


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _modalities_from(modality: str | None) -> tuple[list[str] | None, list[str] | None]:
    """``"text+image->text"`` -> ``(["text", "image"], ["text"])``."""
    if not modality or "->" not in modality:
        return None, None
    left, _, right = modality.partition("->")
    inputs = [part for part in left.split("+") if part]
    outputs = [part for part in right.split("+") if part]
    return inputs or None, outputs or None


@dataclass(frozen=True, slots=True)
class _Pricing:
    """What the parser needs from one ``pricing`` object."""

    has_negative: bool
    all_zero: bool  # at least one price, and every price is zero
    prompt: float | None
    completion: float | None
    request: float | None
    image: float | None
    json_text: str | None


_NO_PRICING = _Pricing(False, False, None, None, None, None, None)


def _read_pricing(raw: object) -> _Pricing:
    if not isinstance(raw, dict):
        return _NO_PRICING
    prices = [
        number
        for key, value in raw.items()
        if key not in _NOT_PRICES and (number := _number(value)) is not None
    ]
    return _Pricing(
        has_negative=any(p < 0 for p in prices),
        all_zero=bool(prices) and all(p == 0 for p in prices),
        prompt=_number(raw.get("prompt")),
        completion=_number(raw.get("completion")),
        request=_number(raw.get("request")),
        image=_number(raw.get("image")),
        json_text=untrusted(json.dumps(raw, separators=(",", ":"), ensure_ascii=False)),
    )


def _read_pricing_cached(raw: object, cache: dict[tuple[Any, ...], _Pricing]) -> _Pricing:
    """:func:`_read_pricing`, remembered per distinct object (catalogs repeat a few price lists)."""
    if not isinstance(raw, dict):
        return _NO_PRICING
    try:
        key = tuple(raw.items())
        hit = cache.get(key)
    except TypeError:  # unhashable values such as an 'overrides' list: no caching
        return _read_pricing(raw)
    if hit is None:
        hit = cache[key] = _read_pricing(raw)
    return hit


def _rule(model_id: str, tokenizer: str | None, pricing: _Pricing) -> tuple[bool, str | None]:
    if tokenizer == ROUTER_TOKENIZER or model_id.startswith("~") or pricing.has_negative:
        return True, None
    if model_id.endswith(FREE_SUFFIX):
        return False, "suffix"
    if pricing.all_zero:
        return False, "zero_price"
    return False, None


def classify_free(
    model_id: str, tokenizer: str | None, pricing: Mapping[str, Any] | None
) -> tuple[bool, str | None]:
    """Apply the free rule (module docstring) to one model: ``(is_router, free_rule)``."""
    return _rule(model_id, tokenizer, _read_pricing(dict(pricing) if pricing else None))


# --------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------


def _catalog_text(raw: bytes | str, origin: str) -> str:
    """The catalog as text: UTF-8 without a byte order mark, not blank."""
    if isinstance(raw, bytes):
        raw = raw.removeprefix(codecs.BOM_UTF8)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CatalogError(f"{origin}: not UTF-8 text (byte {exc.start} cannot be decoded)") from None
    else:
        text = raw.removeprefix("\ufeff")
    if not text.strip():
        raise CatalogError(f"{origin}: empty; expected a JSON catalog")
    return text


def _loads(text: str, origin: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CatalogError(f"{origin}: not JSON: {exc}") from None
    except RecursionError:
        raise CatalogError(f"{origin}: not JSON: nested too deeply") from None


class _NotStreamable(Exception):
    """The document is not a plain ``{"data": [...]}`` or ``[...]``: decode it whole instead."""


_WHITESPACE = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()
_STREAM_ERRORS = (json.JSONDecodeError, RecursionError, UnicodeDecodeError)


class _Reader:
    """JSON values read in order from UTF-8 text that is decoded a piece at a time.

    Decoded whole, a catalog becomes one string of up to four bytes per character (a single emoji in
    a description is enough) plus a tree of Python objects several times its size. Here only a piece
    of the text and one entry's objects live at a time.
    """

    PIECE = 1 << 20

    def __init__(self, raw: bytes | str) -> None:
        self._raw = raw
        self._offset = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self.buffer = ""
        self.pos = 0

    def _more(self) -> bool:
        """Append the next piece of text (dropping what was read); False at the end."""
        if self._offset >= len(self._raw):
            return False
        chunk = self._raw[self._offset : self._offset + self.PIECE]
        self._offset += self.PIECE
        final = self._offset >= len(self._raw)
        text = self._decoder.decode(chunk, final=final) if isinstance(chunk, bytes) else chunk
        self.buffer = self.buffer[self.pos :] + text
        self.pos = 0
        return True

    def skip(self) -> None:
        """Skip whitespace, reading on as needed."""
        while True:
            found = _WHITESPACE.match(self.buffer, self.pos)
            assert found is not None  # the pattern matches the empty string
            self.pos = found.end()
            if self.pos < len(self.buffer) or not self._more():
                return

    def take(self, char: str) -> bool:
        """Consume ``char`` if it comes next (after whitespace)."""
        self.skip()
        if self.buffer.startswith(char, self.pos):
            self.pos += 1
            return True
        return False

    def peek(self, char: str) -> bool:
        self.skip()
        return self.buffer.startswith(char, self.pos)

    def value(self) -> Any:
        """The next JSON value; one that may go on in the next piece is read again with it."""
        self.skip()
        while True:
            try:
                value, end = _DECODER.raw_decode(self.buffer, self.pos)
            except json.JSONDecodeError:
                if not self._more():
                    raise
                continue
            if end < len(self.buffer) or not self._more():
                self.pos = end
                return value

    def at_end(self) -> bool:
        self.skip()
        return self.pos >= len(self.buffer)


def _stream(raw: bytes | str) -> tuple[Iterator[Any], str] | None:
    """The entries of a well-formed catalog, decoded one at a time, or None for any other shape.

    The iterator raises :class:`_NotStreamable` (at once, or at the end for what follows the list)
    when the text is anything but a JSON list, or an object whose only ``data`` key holds a list; the
    caller then decodes the whole text, which gives exactly what :func:`json.loads` gives, errors
    included.
    """
    reader = _Reader(raw)
    try:
        if reader.take("["):
            return _items(reader, in_object=False), "[{}]"
        if not reader.take("{"):
            return None
        while reader.peek('"'):
            key = reader.value()
            if not reader.take(":"):
                return None
            if key == "data":
                return (_items(reader, in_object=True), "data[{}]") if reader.take("[") else None
            reader.value()
            if not reader.take(","):
                return None
    except _STREAM_ERRORS:
        return None
    return None


def _items(reader: _Reader, *, in_object: bool) -> Iterator[Any]:
    """The values of the list just opened; then checks that the document ends as it should."""
    try:
        if not reader.take("]"):
            while True:
                yield reader.value()
                if reader.take(","):
                    continue
                if reader.take("]"):
                    break
                raise _NotStreamable
        if in_object:
            while reader.take(","):  # other keys after 'data' (never 'data' again: the last one wins)
                if not reader.peek('"') or reader.value() == "data" or not reader.take(":"):
                    raise _NotStreamable
                reader.value()
            if not reader.take("}"):
                raise _NotStreamable
        if not reader.at_end():
            raise _NotStreamable
    except _STREAM_ERRORS:
        raise _NotStreamable from None


def _entries(document: Any, origin: str) -> tuple[list[Any], str]:
    """The list of model entries and how to name their position (``data[i]`` or ``[i]``)."""
    if isinstance(document, list):
        return document, "[{}]"
    if isinstance(document, dict):
        if "data" not in document:
            keys = ", ".join(repr(k) for k in list(document)[:5]) or "none"
            raise CatalogError(
                f"{origin}: top level is an object without 'data' (keys: {keys}); "
                "expected an object with 'data' or a list"
            )
        data = document["data"]
        if not isinstance(data, list):
            raise CatalogError(f"{origin}: 'data' is {_json_type(data)}; expected a list of models")
        return data, "data[{}]"
    raise CatalogError(
        f"{origin}: top level is {_json_type(document)}; expected an object with 'data' or a list"
    )


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a large JSON tree is built and read.

    Decoding creates millions of containers and none of them form cycles; left running, the
    collector walks them again and again and doubles the parse time of a large catalog.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def parse_catalog_with_notes(raw: bytes | str, *, origin: str = "catalog") -> tuple[pl.DataFrame, list[str]]:
    """Parse a catalog (see the module docstring); also return notes about what was dropped."""
    with _gc_paused():
        return _parse(raw, origin)


def _parse(raw: bytes | str, origin: str) -> tuple[pl.DataFrame, list[str]]:
    raw = raw.removeprefix(codecs.BOM_UTF8) if isinstance(raw, bytes) else raw.removeprefix("\ufeff")
    streamed = _stream(raw)
    if streamed is not None:
        try:
            return _rows(*streamed, origin)
        except (_NotStreamable, CatalogError):
            pass  # decoded whole below: the same result, or the error json.loads reports first
    text = _catalog_text(raw, origin)
    return _rows(*_entries(_loads(text, origin), origin), origin)


def _rows(entries: Iterable[Any], position: str, origin: str) -> tuple[pl.DataFrame, list[str]]:
    columns: dict[str, list[Any]] = {name: [] for name in CATALOG_SCHEMA}
    c = columns  # short alias for the hot loop
    seen: set[str] = set()
    duplicates: list[str] = []
    pricing_cache: dict[tuple[Any, ...], _Pricing] = {}

    skipped: dict[str, list[str]] = {}
    total = 0
    for index, entry in enumerate(entries):
        total += 1
        problem = _unreadable(entry)
        if problem is not None:
            skipped.setdefault(problem, []).append(position.replace("{}", str(index)))
            continue
        model_id = untrusted(entry["id"])
        if model_id in seen:
            duplicates.append(model_id)
            continue
        seen.add(model_id)

        architecture = _mapping(entry.get("architecture"))
        top_provider = _mapping(entry.get("top_provider"))
        pricing = _read_pricing_cached(entry.get("pricing"), pricing_cache)
        tokenizer = _text(architecture.get("tokenizer"))
        is_router, free_rule = _rule(model_id, tokenizer, pricing)
        base_id, variant = split_variant(model_id)
        author, slash, _name = base_id.partition("/")

        modality = _text(architecture.get("modality"))
        inputs = _text_list(architecture.get("input_modalities"))
        outputs = _text_list(architecture.get("output_modalities"))
        if inputs is None or outputs is None:
            derived_in, derived_out = _modalities_from(modality)
            inputs = derived_in if inputs is None else inputs
            outputs = derived_out if outputs is None else outputs

        parameters = _text_list(entry.get("supported_parameters"))
        has_reasoning_object = isinstance(entry.get("reasoning"), dict)
        if parameters is None:
            tools = structured = None
            reasoning: bool | None = True if has_reasoning_object else None
        else:
            names = set(parameters)
            tools = "tools" in names
            structured = "structured_outputs" in names or "response_format" in names
            reasoning = "reasoning" in names or has_reasoning_object

        context_length = _integer(entry.get("context_length"))
        if context_length is None:
            context_length = _integer(top_provider.get("context_length"))

        c["model_id"].append(model_id)
        c["canonical_slug"].append(_text(entry.get("canonical_slug")))
        c["name"].append(_text(entry.get("name")))
        c["author"].append((author.removeprefix("~") or None) if slash else None)
        c["family"].append(base_id.lower() if is_router else family_of(model_id))
        c["variant"].append(variant)
        c["created"].append(_integer(entry.get("created")))
        c["description"].append(_text(entry.get("description")))
        c["context_length"].append(context_length)
        c["max_completion_tokens"].append(_integer(top_provider.get("max_completion_tokens")))
        c["modality"].append(modality)
        c["input_modalities"].append(inputs)
        c["output_modalities"].append(outputs)
        c["tokenizer"].append(tokenizer)
        c["instruct_type"].append(_text(architecture.get("instruct_type")))
        c["price_prompt"].append(pricing.prompt)
        c["price_completion"].append(pricing.completion)
        c["price_request"].append(pricing.request)
        c["price_image"].append(pricing.image)
        c["pricing_json"].append(pricing.json_text)
        c["is_router"].append(is_router)
        c["is_free"].append(free_rule is not None)
        c["free_rule"].append(free_rule)
        c["is_moderated"].append(_flag(top_provider.get("is_moderated")))
        c["supported_parameters"].append(parameters)
        c["supports_tools"].append(tools)
        c["supports_structured_outputs"].append(structured)
        c["supports_reasoning"].append(reasoning)
        c["expiration_date"].append(_text(entry.get("expiration_date")))
        c["hugging_face_id"].append(_text(entry.get("hugging_face_id")))

    notes = []
    if skipped:
        note = _skipped_note(skipped)
        if not seen:
            what = (
                "its only entry is not a model" if total == 1 else f"none of its {total} entries is a model"
            )
            raise CatalogError(f"{origin}: {what} ({note})")
        notes.append(f"{origin}: {note}")
    if duplicates:
        shown = ", ".join(sorted(set(duplicates))[:10])
        more = "" if len(set(duplicates)) <= 10 else ", ..."
        notes.append(f"{origin}: {len(duplicates)} duplicate entries dropped (first kept): {shown}{more}")
    return _frame(columns), notes


def _unreadable(entry: object) -> str | None:
    """Why a catalog entry cannot be read as a model, or None when it can."""
    if not isinstance(entry, dict):
        return f"{_json_type(entry)}, not an object"
    model_id = entry.get("id")
    if model_id is None:
        return "no id"
    if not isinstance(model_id, str):
        return f"id is {_json_type(model_id)}, not a string"
    if not model_id.strip():
        return "empty id"
    return None


def _skipped_note(skipped: dict[str, list[str]]) -> str:
    """``2 entries skipped: no id (data[3], data[7])`` (one part per reason)."""
    count = sum(len(where) for where in skipped.values())
    parts = []
    for reason, where in skipped.items():
        shown = ", ".join(where[:3]) + (", ..." if len(where) > 3 else "")
        parts.append(f"{reason} ({shown})")
    return f"{count} {'entry' if count == 1 else 'entries'} skipped: {'; '.join(parts)}"


def _frame(columns: dict[str, list[Any]]) -> pl.DataFrame:
    """Build the frame column by column; list columns go through Arrow, which is much faster."""
    series = []
    for name, dtype in CATALOG_SCHEMA.items():
        values = columns[name]
        if isinstance(dtype, pl.List):
            array = pa.array(values, type=pa.list_(pa.string()))
            series.append(pl.Series(name, array).cast(dtype))
        else:
            series.append(pl.Series(name, values, dtype=dtype))
    return pl.DataFrame(series)


def parse_catalog(raw: bytes | str, *, origin: str = "catalog") -> pl.DataFrame:
    """Parse a catalog into a DataFrame with :data:`~freemodels.records.CATALOG_SCHEMA`.

    ``origin`` names the input in error messages. Raises :class:`CatalogError` on malformed input.
    Duplicate ids keep their first entry (use :func:`parse_catalog_with_notes` to learn of them).
    """
    frame, _notes = parse_catalog_with_notes(raw, origin=origin)
    return frame


# --------------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CatalogSummary:
    """The counts of one parsed catalog (``families`` counts the families of the free models)."""

    models: int
    free: int
    free_suffix: int
    free_zero_price: int
    routers: int
    families: int

    def as_json(self) -> dict[str, int]:
        """The six counts, in the documented order."""
        return {
            "models": self.models,
            "free": self.free,
            "free_suffix": self.free_suffix,
            "free_zero_price": self.free_zero_price,
            "routers": self.routers,
            "families": self.families,
        }

    def as_text(self) -> str:
        """A short human-readable summary."""
        return (
            f"{self.models} models: {self.free} free "
            f"({self.free_suffix} by ':free' suffix, {self.free_zero_price} by zero price) "
            f"in {self.families} families; {self.routers} routers counted apart"
        )


def summarize(frame: pl.DataFrame) -> CatalogSummary:
    """Count models, free models (by rule), routers and the families of the free models."""
    free = frame.filter(pl.col("is_free"))
    return CatalogSummary(
        models=frame.height,
        free=free.height,
        free_suffix=free.filter(pl.col("free_rule") == "suffix").height,
        free_zero_price=free.filter(pl.col("free_rule") == "zero_price").height,
        routers=frame.filter(pl.col("is_router")).height,
        families=free.get_column("family").n_unique(),
    )


# --------------------------------------------------------------------------------------------
# Reading a source
# --------------------------------------------------------------------------------------------


def _is_url(path_or_url: str) -> bool:
    return path_or_url.lower().startswith(("http://", "https://"))


def catalog_url(url: str) -> str:
    """The catalog URL for a base API URL: ``.../api/v1`` -> ``.../api/v1/models``.

    A URL whose path already ends in ``/models`` is returned unchanged (query included).
    """
    parsed = httpx.URL(url.strip())
    path = parsed.path.rstrip("/")
    if path.endswith("/models"):
        return str(parsed)
    return str(parsed.copy_with(path=f"{path}/models"))


def _read_file(path_text: str) -> bytes:
    path = Path(path_text).expanduser()
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CatalogError(f"{path}: no such catalog file") from None
    except IsADirectoryError:
        raise CatalogError(f"{path}: is a directory, not a catalog file") from None
    except OSError as exc:
        raise CatalogError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def _collect(response: httpx.Response, url: str, deadline: float, max_bytes: int, timeout_s: float) -> bytes:
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > max_bytes:
            raise SourceError(f"{url}: the catalog is larger than {max_bytes} bytes")
        if time.monotonic() > deadline:
            raise SourceError(f"{url}: the catalog did not arrive within {timeout_s:g} s")
        chunks.append(chunk)
    return b"".join(chunks)


def _fetch(
    url: str,
    timeout_s: float,
    transport: httpx.BaseTransport | None,
    max_bytes: int,
) -> bytes:
    timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0))
    headers = {"Accept": "application/json", "User-Agent": f"free-model-discovery/{__version__}"}
    deadline = time.monotonic() + timeout_s
    try:
        with (
            httpx.Client(
                timeout=timeout, headers=headers, transport=transport, follow_redirects=True
            ) as client,
            client.stream("GET", url) as response,
        ):
            if response.status_code >= 400:
                reason = response.reason_phrase or "error"
                raise SourceError(f"GET {url} answered HTTP {response.status_code} {reason}".rstrip())
            return _collect(response, url, deadline, max_bytes, timeout_s)
    except httpx.TimeoutException as exc:
        raise SourceError(f"GET {url} timed out after {timeout_s:g} s ({type(exc).__name__})") from None
    except httpx.HTTPError as exc:
        detail = str(exc) or type(exc).__name__
        raise SourceError(f"GET {url} failed: {detail}") from None


def read_catalog_source(
    path_or_url: str,
    *,
    timeout_s: float = 30.0,
    transport: httpx.BaseTransport | None = None,
    max_bytes: int = MAX_CATALOG_BYTES,
) -> bytes:
    """The raw bytes of a catalog from a local file or an http(s) URL.

    A URL is fetched with ``GET`` (no key needed); a base API URL gets ``/models`` appended (see
    :func:`catalog_url`). ``timeout_s`` bounds the whole download as well as each network step.
    ``transport`` replaces the network (tests use :class:`httpx.MockTransport`).

    Raises :class:`CatalogError` for a missing or unreadable file and :class:`SourceError` when the
    URL cannot be reached, answers an HTTP error, is too slow or too large.
    """
    text = path_or_url.strip()
    if not text:
        raise CatalogError("no catalog given: expected a file path or an http(s) URL")
    if not _is_url(text):
        return _read_file(text)
    try:
        url = catalog_url(text)
    except httpx.InvalidURL as exc:
        raise SourceError(f"{text}: not a valid URL ({exc})") from None
    return _fetch(url, timeout_s, transport, max_bytes)


def model_ids(frame: pl.DataFrame) -> list[str]:
    """The model ids of a parsed catalog, in catalog order."""
    return frame.get_column("model_id").to_list()
