"""Untrusted text: the one point that server text and error messages pass through.

Everything a server sends (catalog, headers, bodies, streams), every deployment parameter and every
exception message is untrusted. Before such text is stored, logged, rendered, or put into an artifact,
an event or a Prefect state, it passes :func:`untrusted` (valid Unicode, then :func:`redact`, then cut
to a length), where bytes become text: the catalog parser, the probe's stored fields, the client's
error excerpts, the project's exceptions (:class:`~freemodels.errors.DiscoveryError` redacts its own
message) and every log record of the process (:func:`install_log_redaction`).

What :func:`redact` masks (each with ``[REDACTED]``):

* every secret this process has read (:func:`register_secret`): the API key when the settings read it,
  the variable ``--api-key-env`` names, the password of a base URL, the local stack's auth string. The
  secret in full and **any run of 8 or more of its characters** (a prefix, a suffix, a middle part), in
  any case, also URL-encoded (``%2B`` for ``+``). Shorter secrets are not registered: masking every
  occurrence of a short string would garble text without protecting much;
* credentials in URLs: ``http://user:pw@host`` becomes ``http://[REDACTED]@host``;
* secrets in query strings: the values of ``key=``, ``api_key=``, ``token=``, ``access_token=``,
  ``password=``, ``secret=``, ``sig=`` after ``?``, ``&`` or ``;``;
* tokens that look like credentials without being registered: ``Bearer …`` and ``Basic …`` followed by
  8 or more token characters that are not a plain lower-case word, OpenRouter keys (``sk-or-…``) and
  other ``sk-`` keys of 20 or more characters.

:func:`valid_text` replaces lone surrogates (a ``\\ud800`` escape in JSON decodes to one) and Unicode
non-characters (U+FFFE, U+FFFF, U+FDD0–U+FDEF and the last two code points of every plane) with U+FFFD,
so UTF-8 writers (Parquet, DuckDB, JSON files) and XML (SVG charts) always accept the text.
:func:`printable` also escapes control and bidi characters for a console or log line (``\\x1b``,
``\\x00``, ``\\u202e``).

The registry of secrets is the one piece of process-wide state here: a log record, a Prefect state
message or an exception raised deep in a library cannot be handed the key, yet must not carry it.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, quote_plus, urlsplit

MASK = "[REDACTED]"
MIN_SECRET_CHARS = 8
"""Secrets shorter than this are not registered, and runs shorter than this are not masked."""

# --- valid and printable text -----------------------------------------------------------------------

_NONCHARACTERS = "\ufdd0-\ufdef" + "".join(
    f"{chr(plane * 0x10000 + 0xFFFE)}{chr(plane * 0x10000 + 0xFFFF)}" for plane in range(17)
)
_INVALID = re.compile(f"[\ud800-\udfff{_NONCHARACTERS}]")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_CONTROL_BUT_LINES = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def valid_text(text: str) -> str:
    """``text`` with lone surrogates and non-characters replaced by U+FFFD (valid UTF-8 and XML)."""
    if text.isascii():
        return text
    return _INVALID.sub("\ufffd", text)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` for a console or log line: valid Unicode, control and bidi characters escaped
    (``ESC`` becomes ``\\x1b``). With ``keep_newlines`` line feeds and tabs stay as they are."""
    pattern = _CONTROL_BUT_LINES if keep_newlines else _CONTROL
    return pattern.sub(_escape, valid_text(text))


# --- registered secrets ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Secret:
    """One secret prepared for matching."""

    grams: frozenset[str]
    """Every run of ``MIN_SECRET_CHARS`` characters of the secret and of its URL-encoded forms,
    lower-cased."""
    candidates: re.Pattern[str]
    """Runs of ``MIN_SECRET_CHARS`` or more characters that could all belong to one of those forms."""


def _lower(text: str) -> str:
    lowered = text.lower()
    if len(lowered) == len(text):
        return lowered
    return "".join(c.lower() if len(c.lower()) == 1 else c for c in text)  # keep the indices


@functools.lru_cache(maxsize=64)
def _prepare(secret: str) -> _Secret:
    forms = {_lower(f) for f in (secret, quote(secret, safe=""), quote_plus(secret))}
    n = MIN_SECRET_CHARS
    grams = frozenset(form[i : i + n] for form in forms for i in range(len(form) - n + 1))
    alphabet = {c for form in forms for c in form}
    alphabet |= {u for c in alphabet for u in c.upper() if len(c.upper()) == 1}
    members = "".join(re.escape(c) for c in sorted(alphabet))
    return _Secret(grams=grams, candidates=re.compile(f"[{members}]{{{n},}}"))


_lock = threading.Lock()
_registered: dict[str, _Secret] = {}
_known: tuple[_Secret, ...] = ()  # the values of _registered, swapped whole (read without the lock)
_memo: dict[str, str] = {}  # untrusted() of short texts (catalogs repeat them); cleared on registration
_MEMO_TEXT_CHARS = 64
_MEMO_SIZE = 8192


def register_secret(value: str | None) -> None:
    """Mask ``value`` (and every run of 8 or more of its characters) wherever :func:`redact` runs
    in this process from now on. Values shorter than 8 characters are ignored."""
    if value is None:
        return
    value = value.strip()
    if len(value) < MIN_SECRET_CHARS:
        return
    global _known
    with _lock:
        if value not in _registered:
            _registered[value] = _prepare(value)
            _known = tuple(_registered.values())
            _memo.clear()


def forget_secrets() -> None:
    """Forget every registered secret (tests that stage a secret of their own use it)."""
    global _known
    with _lock:
        _registered.clear()
        _known = ()
        _memo.clear()


def _secret_spans(text: str, secret: _Secret) -> Iterable[tuple[int, int]]:
    n = MIN_SECRET_CHARS
    for match in secret.candidates.finditer(text):
        token, base = _lower(match.group()), match.start()
        i = 0
        while i + n <= len(token):
            if token[i : i + n] in secret.grams:
                j = i + n
                while j < len(token) and token[j - n + 1 : j + 1] in secret.grams:
                    j += 1
                yield base + i, base + j
                i = j
            else:
                i += 1


def _mask_spans(text: str, spans: Iterable[tuple[int, int]]) -> str:
    merged: list[list[int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    for start, end in reversed(merged):
        text = f"{text[:start]}{MASK}{text[end:]}"
    return text


# --- patterns ------------------------------------------------------------------------------------------

_URL_USERINFO = re.compile(r"(?i)([a-z][a-z0-9+.\-]*://)[^/\s?#]*@")
_QUERY_SECRET = re.compile(
    r"(?i)([?&;](?:api[_-]?key|apikey|key|token|access[_-]?token|auth|password|passwd|secret|sig|signature)=)"
    r"(?!\[REDACTED\])[^&\s#]+"
)
_AUTH_SCHEME = re.compile(r"(?i)\b(bearer|basic)(\s+)([A-Za-z0-9._~+/=\-]{8,})")
_OPENROUTER_KEY = re.compile(r"(?i)\bsk-or-[A-Za-z0-9_\-]+")
_SK_KEY = re.compile(r"(?i)\bsk-[A-Za-z0-9_\-]{20,}")
_KEY_HINT = re.compile(r"(?i)\bsk-")


def _auth_token(match: re.Match[str]) -> str:
    scheme, space, token = match.groups()
    plain_word = token.isalpha() and token[1:].islower()
    return match.group() if plain_word else f"{scheme}{space}{MASK}"


def _patterns(text: str) -> str:
    if "@" in text and "://" in text:
        text = _URL_USERINFO.sub(rf"\1{MASK}@", text)
    if "=" in text:
        text = _QUERY_SECRET.sub(rf"\1{MASK}", text)
    text = _AUTH_SCHEME.sub(_auth_token, text)
    if _KEY_HINT.search(text):
        text = _SK_KEY.sub(MASK, _OPENROUTER_KEY.sub(MASK, text))
    return text


# --- the redaction point -------------------------------------------------------------------------------


def redact(text: str, *secrets: str | None) -> str:
    """``text`` with every registered secret (and ``secrets``), runs of 8 or more of their
    characters, URL credentials and credential-looking tokens masked (see the module docstring)."""
    known = _known
    if secrets:
        known += tuple(_prepare(s.strip()) for s in secrets if s and len(s.strip()) >= MIN_SECRET_CHARS)
    spans = [span for secret in known for span in _secret_spans(text, secret)]
    if spans:
        text = _mask_spans(text, spans)
    return _patterns(text)


def untrusted(text: str, limit: int | None = None, *secrets: str | None) -> str:
    """Text from outside as it may be kept: valid Unicode, redacted, then cut to ``limit`` characters."""
    if len(text) <= _MEMO_TEXT_CHARS and not secrets:
        cleaned = _memo.get(text)
        if cleaned is None:
            known = _known
            cleaned = redact(valid_text(text))
            if len(_memo) >= _MEMO_SIZE:
                _memo.clear()
            if known is _known:  # no secret was registered meanwhile
                _memo[text] = cleaned
    else:
        cleaned = redact(valid_text(text), *secrets)
    return cleaned if limit is None else cleaned[:limit]


_urls: dict[str, str] = {}  # a URL as shown -> the URL as given, for this process only


def safe_url(url: str) -> str:
    """A URL as it may be shown, stored or passed on (to Prefect as a parameter): its credentials
    registered as secrets and masked. :func:`real_url` gives the URL back in this process."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return redact(url)
    if "@" in parts.netloc and MASK not in parts.netloc:
        register_secret(password)
        register_secret(parts.netloc.rpartition("@")[0])
    safe = redact(url)
    if safe != url:
        with _lock:
            _urls[safe] = url
    return safe


def real_url(url: str) -> str:
    """The URL :func:`safe_url` was given for ``url`` in this process (``url`` itself otherwise)."""
    return _urls.get(url, url)


def hides_credentials(url: str) -> bool:
    """Whether ``url`` is a masked URL whose credentials this process does not know."""
    return MASK in url and url not in _urls


# --- log records ----------------------------------------------------------------------------------------


def _clean_arg(value: object) -> object:
    return printable(redact(value)) if isinstance(value, str) else value


def redact_record(record: logging.LogRecord) -> None:
    """Make one log record safe: its message redacted with control characters escaped (arguments
    entirely, the template but for line feeds), and its traceback redacted."""
    args = record.args
    if isinstance(args, tuple):
        args = tuple(_clean_arg(a) for a in args)
    elif isinstance(args, dict):
        args = {k: _clean_arg(v) for k, v in args.items()}
    record.args = args
    try:
        message = record.getMessage()
    except (TypeError, ValueError, KeyError):
        return  # a malformed call: logging reports it itself
    record.msg = printable(redact(message), keep_newlines=True)
    record.args = None
    if record.exc_info and not record.exc_text:
        record.exc_text = redact(logging.Formatter().formatException(record.exc_info))


def install_log_redaction() -> None:
    """Every log record created in this process from now on passes :func:`redact_record` (once)."""
    current = logging.getLogRecordFactory()
    if getattr(current, "redacts", False):
        return
    factory = _redacting_factory(current)
    logging.setLogRecordFactory(factory)


def _redacting_factory(inner: Callable[..., logging.LogRecord]) -> Callable[..., logging.LogRecord]:
    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = inner(*args, **kwargs)
        redact_record(record)
        return record

    factory.redacts = True  # type: ignore[attr-defined]
    return factory
