"""Escaping of outside text for Markdown documents.

Model ids, names, descriptions, error messages and model replies come from the catalog, from providers
and from the models themselves. None of them may change the structure of a report: no injected link,
image, HTML tag, heading, list or table cell. Every such string goes through one of these functions
before it lands in a document:

- :func:`md_text`: running text. Collapses all whitespace (so nothing can start a new block), turns
  ``& < >`` into HTML entities (so no tag or entity survives), backslash-escapes every character that
  Markdown gives a meaning inline (emphasis, code, links, images, tables), and defuses GitHub's
  autolinks (``http://``, ``www.``, e-mail addresses) so that a URL in a description is shown, not linked.
- :func:`md_cell`: the same for a table cell; ``None`` and empty text become an em dash so the column
  stays aligned, and long text can be cut to a maximum length.
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
# GitHub turns these into links even without Markdown link syntax.
_SCHEME = re.compile(r"(?i)(?<=[a-z0-9])(:)(?=//)")
_WWW = re.compile(r"(?i)\b(www)\.")
_AT = re.compile(r"@")
# Only at the start of a line: list items, setext underlines, ordered lists.
_LEADING_MARK = re.compile(r"^([-+=])")
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


def _escape(text: str) -> str:
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = _SPECIAL.sub(r"\\\1", text)
    text = _UNDERSCORE.sub(r"\\_", text)
    text = _SCHEME.sub(r"\\\1", text)
    text = _WWW.sub(r"\1\\.", text)
    text = _AT.sub(r"\\@", text)
    # A value at the start of a line must not begin a list item or a setext underline (``#`` and
    # ``>`` are already escaped above).
    text = _LEADING_MARK.sub(r"\\\1", text)
    return _LEADING_NUMBER.sub(r"\1\\\2", text)


def md_text(value: object) -> Markup:
    """``value`` as literal Markdown text on one line (``None`` gives an empty string)."""
    return Markup(_escape(_plain(value)))


def md_cell(value: object, max_len: int | None = None) -> Markup:
    """``value`` as one literal table cell; empty becomes an em dash; cut to ``max_len`` characters."""
    text = _plain(value)
    if not text:
        return Markup(EMPTY)
    if max_len is not None and len(text) > max_len:
        text = text[: max(max_len - 1, 1)].rstrip() + "…"
    return Markup(_escape(text))


def md_code(value: object, *, table: bool = True) -> Markup:
    """``value`` verbatim as an inline code span.

    With ``table`` (the default) pipes are backslash-escaped, which GitHub needs inside a table cell
    even within a code span; outside tables pass ``table=False`` so the text shows no backslash.
    """
    text = _plain(value)
    if not text:
        return Markup(EMPTY)
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    # A code span whose content starts or ends with a backtick needs a space inside the fence.
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    body = text.replace("|", "\\|") if table else text
    return Markup(f"{fence}{pad}{body}{pad}{fence}")


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
