"""Redaction helpers: the API key must never reach logs, the database, reports or artifacts."""

from __future__ import annotations

import re

_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._\-]+")
_OR_KEY = re.compile(r"sk-or-[A-Za-z0-9_\-]+")


def redact(text: str, *secrets: str | None) -> str:
    """Return ``text`` with every given secret, bearer token and OpenRouter-style key masked."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[REDACTED]")
    text = _BEARER.sub(r"\1[REDACTED]", text)
    return _OR_KEY.sub("[REDACTED]", text)
