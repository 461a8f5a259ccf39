"""Escaping of outside text for Markdown documents.

Model ids, names, descriptions, error messages and model replies come from the catalog, from providers
and from the models themselves. None of them may change the structure of a report: no injected link,
image, HTML tag, heading, list or table cell. Every such string goes through one of these functions
before it lands in a document:

- :func:`md_text`: running text. Collapses all whitespace (so nothing can start a new block), turns
  ``<`` and an ``&`` that would start an entity into HTML entities (so no tag or entity survives),
  backslash-escapes every character that Markdown gives a meaning inline (emphasis, code, links,
  images, tables) and a ``>`` that would start a quote, and shows URLs, ``www.`` addresses and e-mail
  addresses as inline code, which GitHub never links and which reads as the address itself (no backslash
  before ``://`` in the raw text).
- :func:`md_cell`: the same for a table cell; ``None`` and empty text become an em dash so the column
  stays aligned, and long text can be cut to a maximum length (at a word boundary, with "…").
- :func:`md_code`: inline code. The text is shown verbatim inside a code span whose backtick fence is
  longer than any backtick run in the text; pipes are escaped (GitHub splits table cells on them even
  inside code spans) and ``None`` becomes an em dash.

The functions return :class:`markupsafe.Markup` so that a Jinja environment whose ``finalize`` escapes
every other value (see :func:`finalize`) does not escape them twice.
"""

from __future__ import annotations

import re

from markupsafe import Markup

from freemodels.secrets import valid_text

EMPTY = "—"

# Characters with an inline meaning in CommonMark/GFM anywhere in a line: backslash, code, emphasis
# (``*``), link and image brackets, table pipes, strikethrough, GitHub math (``$``) and ``#``. A
# backslash before any ASCII punctuation renders as the character itself, so escaping is harmless.
_SPECIAL = re.compile(r"([\\`*\[\]|~$#])")
# ``_`` only opens or closes emphasis at a word boundary; inside a word (``max_tokens``) it is literal.
_UNDERSCORE = re.compile(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")
_WHITESPACE = re.compile(r"\s+")
# GitHub turns these into links even without Markdown link syntax: shown as code spans instead.
_ADDRESS = re.compile(
    r"(?i)(?:\b[a-z][a-z0-9+.-]*://|\bwww\.)[^\s<>`|]+|[a-z0-9._%+-]+@[a-z0-9.-]+\.[a-z]{2,}"
)
_TRAILING = ".,;:!?)]}'\""  # sentence punctuation after an address is not part of it
# What is left of an address outside a code span (a bare "http://", a lone "@"): escaped.
_SCHEME = re.compile(r"(?i)(?<=[a-z0-9])(:)(?=//)")
_WWW = re.compile(r"(?i)\b(www)\.")
_AT = re.compile(r"@")
_ENTITY = re.compile(r"&(?=#?[A-Za-z0-9]+;)")
# Only at the start of a line: list items, setext underlines, ordered lists, quotes.
_LEADING_MARK = re.compile(r"^([-+=>])")
_LEADING_NUMBER = re.compile(r"^(\d+)([.)])")


# C0/C1 controls, DEL and bidi overrides: terminal escapes, invisible text direction tricks, invalid XML.
CONTROL_CHARS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def neutralise(text: str) -> str:
    """``text`` with control and bidi-override characters, lone surrogates and non-characters replaced
    by U+FFFD (valid UTF-8 and XML whatever the text held)."""
    return CONTROL_CHARS.sub("\ufffd", valid_text(text))


def _plain(value: object) -> str:
    if value is None:
        return ""
    return neutralise(_WHITESPACE.sub(" ", str(value)).strip())


def _escape(text: str, *, table: bool = False) -> str:
    """``text`` escaped, with every address in it as a code span (see the module docstring)."""
    parts: list[str] = []
    last = 0
    for match in _ADDRESS.finditer(text):
        address = match.group(0).rstrip(_TRAILING)
        if not address or address[-3:] == "://":
            continue
        start, end = match.start(), match.start() + len(address)
        parts.append(_escape_plain(text[last:start], first=not parts))
        parts.append(_code_span(address, table=table))
        last = end
    parts.append(_escape_plain(text[last:], first=not parts))
    return "".join(parts)


def _escape_plain(text: str, *, first: bool = True) -> str:
    text = _ENTITY.sub("&amp;", text).replace("<", "&lt;")
    text = _SPECIAL.sub(r"\\\1", text)
    text = _UNDERSCORE.sub(r"\\_", text)
    text = _SCHEME.sub(r"\\\1", text)
    text = _WWW.sub(r"\1\\.", text)
    text = _AT.sub(r"\\@", text)
    if not first:
        return text
    # A value at the start of a line must not begin a list item, a quote or a setext underline
    # (``#`` is already escaped above).
    text = _LEADING_MARK.sub(r"\\\1", text)
    return _LEADING_NUMBER.sub(r"\1\\\2", text)


def _code_span(text: str, *, table: bool) -> str:
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    # A code span whose content starts or ends with a backtick needs a space inside the fence.
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    body = text.replace("|", "\\|") if table else text
    return f"{fence}{pad}{body}{pad}{fence}"


def clip(text: str, max_len: int) -> str:
    """``text`` cut to at most ``max_len`` characters at a word boundary, "…" marking the cut; a
    single word longer than half the limit is cut inside it."""
    if len(text) <= max_len:
        return text
    head = text[: max(max_len - 1, 1)]
    space = head.rfind(" ")
    if space >= max_len // 2:
        head = head[:space]
    return head.rstrip(" ,;:.") + "…"


def md_text(value: object) -> Markup:
    """``value`` as literal Markdown text on one line (``None`` gives an empty string)."""
    return Markup(_escape(_plain(value)))


def md_cell(value: object, max_len: int | None = None) -> Markup:
    """``value`` as one literal table cell; empty becomes an em dash; cut to ``max_len`` characters
    at a word boundary (see :func:`clip`)."""
    text = _plain(value)
    if not text:
        return Markup(EMPTY)
    if max_len is not None:
        text = clip(text, max_len)
    return Markup(_escape(text, table=True))


def md_code(value: object, *, table: bool = True) -> Markup:
    """``value`` verbatim as an inline code span.

    With ``table`` (the default) pipes are backslash-escaped, which GitHub needs inside a table cell
    even within a code span; outside tables pass ``table=False`` so the text shows no backslash.
    """
    text = _plain(value)
    if not text:
        return Markup(EMPTY)
    return Markup(_code_span(text, table=table))


def finalize(value: object) -> object:
    """Jinja ``finalize`` hook: escape every plain string that a template prints.

    Values already escaped (``Markup``) and non-strings (numbers, booleans) pass through unchanged, so a
    template that forgets a filter still cannot let outside text change the document.
    """
    if isinstance(value, Markup):
        return value
    if isinstance(value, str):
        return md_cell(value) if value else value
    if value is None:
        return ""
    return value
