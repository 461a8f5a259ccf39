"""The redaction point (:mod:`freemodels.secrets`): what it masks, what it leaves alone, and the places
that must pass through it (exceptions, log records, URLs).

Keys are generated at test time from an alphabet that ordinary text does not run through for eight
characters; no real-looking key is written down here.
"""

from __future__ import annotations

import io
import logging
import secrets
import string
import xml.etree.ElementTree as ET
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from freemodels.charts import LatencyBar, latency_svg
from freemodels.errors import ConfigError, RunFailed, SourceError
from freemodels.secrets import (
    MASK,
    forget_secrets,
    install_log_redaction,
    printable,
    real_url,
    redact,
    register_secret,
    safe_url,
    untrusted,
    valid_text,
)

KEY_ALPHABET = string.ascii_letters + string.digits + "-_+/="
# Surrounding text never shares a run of 8 characters with a key drawn from KEY_ALPHABET by chance:
# it is drawn from characters a key does not use (and no credential-looking pattern can form).
FILLER = st.text(alphabet=st.sampled_from(list(" .,;:!?()<>@#{}[]\n\t\u00e9\u4e2d\U0001f600|")), max_size=40)
KEYS = st.text(alphabet=KEY_ALPHABET, min_size=20, max_size=80).filter(lambda k: len(set(k)) > 6)


def generated_key() -> str:
    return "sk-or-v1-" + secrets.token_hex(24)


def runs_of(key: str, text: str, n: int = 8) -> list[str]:
    """Every run of ``n`` characters of ``key`` (or of its URL-encoded forms) found in ``text``, any case."""
    lowered = text.lower()
    forms = {key.lower(), quote(key, safe="").lower(), quote_plus(key).lower()}
    return sorted({f[i : i + n] for f in forms for i in range(len(f) - n + 1) if f[i : i + n] in lowered})


@pytest.fixture(autouse=True)
def _no_registered_secrets() -> None:
    forget_secrets()


# --- a registered key: in full, any run of 8 or more characters, any case, URL-encoded ---------------


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=KEYS, before=FILLER, after=FILLER, data=st.data())
@example(key="abc+def/ghi=jkl+mno/pqr", before="x ", after=" y", data=None)
def test_every_run_of_eight_or_more_characters_of_the_key_is_masked(
    key: str, before: str, after: str, data: st.DataObject | None
) -> None:
    register_secret(key)
    if data is not None:
        start = data.draw(st.integers(0, len(key) - 8))
        end = data.draw(st.integers(start + 8, len(key)))
        form = data.draw(st.sampled_from(["as is", "upper", "lower", "swapcase", "quote", "quote_plus"]))
    else:
        start, end, form = 3, 19, "quote"
    part = key[start:end]
    shown = {
        "as is": part,
        "upper": part.upper(),
        "lower": part.lower(),
        "swapcase": part.swapcase(),
        "quote": quote(part, safe=""),
        "quote_plus": quote_plus(part),
    }[form]
    text = f"{before}{shown}{after}"
    out = redact(text)
    assert MASK in out
    assert runs_of(key, out) == [], (text, out)
    assert out.startswith(before.rstrip()[:1]) or not before.strip()  # the text around it stays


@settings(max_examples=200, deadline=None)
@given(key=KEYS, text=FILLER)
def test_text_without_a_run_of_the_key_is_left_as_it_is(key: str, text: str) -> None:
    register_secret(key)
    assert redact(text) == text
    assert redact(text + key[:7] + text) == text + key[:7] + text  # seven characters are not a run


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60), KEYS)
def test_redaction_is_idempotent_and_never_grows_a_run(text: str, key: str) -> None:
    register_secret(key)
    once = redact(text + key + text)
    assert redact(once) == once
    assert runs_of(key, once) == []


def test_a_short_secret_is_not_registered() -> None:
    register_secret("abc1234")
    assert redact("abc1234 and abc1234") == "abc1234 and abc1234"


def test_the_key_given_explicitly_is_masked_like_a_registered_one() -> None:
    key = generated_key()
    assert redact(f"echo {key[-12:].upper()}", key) == f"echo {MASK}"
    assert redact(f"echo {key[-12:]}") == f"echo {key[-12:]}"  # not registered, not key-shaped


# --- patterns: URL credentials, bearer tokens, keys that were never registered ------------------------


@settings(max_examples=200, deadline=None)
@given(
    scheme=st.sampled_from(["http", "https", "HTTP", "ws", "postgresql+asyncpg"]),
    user=st.text(alphabet=string.ascii_letters + string.digits + "._-%", min_size=1, max_size=12),
    password=st.text(alphabet=string.ascii_letters + string.digits + "._-~%!$&'()*+,;=:@", max_size=20),
    host=st.sampled_from(["host", "127.0.0.1:8080", "[::1]:9", "a.example"]),
    rest=st.sampled_from(["", "/v1", "/v1/models?x=1", "#f"]),
    around=st.text(alphabet=st.sampled_from(list(" .,;:!?()<>{}\n\u00e9")), max_size=20),
)
def test_credentials_in_urls_are_masked(
    scheme: str, user: str, password: str, host: str, rest: str, around: str
) -> None:
    url = f"{scheme}://{user}:{password}@{host}{rest}"
    out = redact(f"{around}{url}{around}")
    assert f"{scheme}://{MASK}@{host}{rest}" in out
    if len(password) >= 4:
        assert f":{password}@" not in out


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: Bearer abcDEF123456789", f"Authorization: Bearer {MASK}"),
        ("authorization: bearer 0123456789abcdef", f"authorization: bearer {MASK}"),
        ("Basic dXNlcjpwYXNzd29yZA==", f"Basic {MASK}"),
        ("sk-or-v1-0123456789abcdef", MASK),
        ("key SK-OR-V1-ABCDEF0123 here", f"key {MASK} here"),
        ("sk-proj-abcdefghij0123456789xyz", MASK),
        ("sk-ant-api03-abcdefghijklmnopqrstu", MASK),
        ("https://h/v1?api_key=secretvalue&x=1", f"https://h/v1?api_key={MASK}&x=1"),
        ("https://h/v1?x=1&token=abc", f"https://h/v1?x=1&token={MASK}"),
        # What must stay: words after Bearer/Basic, ids and words that merely contain "sk-".
        ("Bearer authentication required", "Bearer authentication required"),
        ("basic reasoning and Basic English", "basic reasoning and Basic English"),
        ("the task-or-other path, risk-free", "the task-or-other path, risk-free"),
        ("deepseek/deepseek-r1:free", "deepseek/deepseek-r1:free"),
        ("sk-short", "sk-short"),
        ("http://127.0.0.1:8080/v1", "http://127.0.0.1:8080/v1"),
        ("mail me@example.com", "mail me@example.com"),
    ],
)
def test_credential_looking_tokens(text: str, expected: str) -> None:
    assert redact(text) == expected


# --- valid and printable text ----------------------------------------------------------------------------

ANY_CHAR = st.characters(codec=None, min_codepoint=0, max_codepoint=0x10FFFF)
NONCHARACTERS = [chr(c) for c in range(0xFDD0, 0xFDF0)] + [
    chr(plane * 0x10000 + low) for plane in range(17) for low in (0xFFFE, 0xFFFF)
]


def _xml_char(c: str) -> bool:
    code = ord(c)
    return code in (0x9, 0xA, 0xD) or 0x20 <= code <= 0xD7FF or 0xE000 <= code <= 0xFFFD or code >= 0x10000


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=ANY_CHAR | st.sampled_from(["\ud800", "\udfff", *NONCHARACTERS]), max_size=40))
def test_valid_text_is_valid_utf8_and_changes_only_what_is_invalid(text: str) -> None:
    out = valid_text(text)
    out.encode("utf-8")  # never raises
    assert len(out) == len(text)
    for before, after in zip(text, out, strict=True):
        invalid = 0xD800 <= ord(before) <= 0xDFFF or before in NONCHARACTERS
        assert after == ("\ufffd" if invalid else before)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=ANY_CHAR | st.sampled_from(["\ud800", "\x1b", "\x00", "\u202e", "\r"]), max_size=40))
def test_printable_text_has_no_control_character_and_stays_readable(text: str) -> None:
    out = printable(text)
    out.encode("utf-8")
    assert all(not (ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F) for c in out)
    assert not set(out) & set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
    assert printable("red\x1b[31m\x00") == "red\\x1b[31m\\x00"
    assert printable("a\nb", keep_newlines=True) == "a\nb"


def test_a_chart_of_models_with_non_characters_is_valid_xml() -> None:
    # U+FFFE and U+FFFF in a working model's id made latency.svg invalid XML.
    bars = [LatencyBar(f"evil/non\ufffe\uffff\ufdd0-{i}:free", "fast", 100.0 + i) for i in range(3)]
    bars.append(LatencyBar("evil/lone-\udfff\ud800:free", "fast", 90.0))
    svg = latency_svg(bars, tiers=["fast"])
    assert all(_xml_char(c) for c in svg)
    ET.fromstring(svg)


# --- what must pass through it --------------------------------------------------------------------------


def test_the_projects_exceptions_redact_their_own_message() -> None:
    key = generated_key()
    register_secret(key)
    for error in (
        ConfigError(f"bad value {key}"),
        SourceError(f"GET http://user:pw123456@h/v1/models answered: {key[-12:]}", transient=True),
        RunFailed(f"server said {key.upper()}", run_id="r1"),
    ):
        assert runs_of(key, str(error)) == [] and "pw123456" not in str(error)
    failed = RunFailed(f"server said {key}\ud800", run_id="r1")
    assert failed.reason == str(failed) == f"server said {MASK}\ufffd"


def test_log_records_are_redacted_and_their_control_characters_escaped() -> None:
    key = generated_key()
    register_secret(key)
    install_log_redaction()
    install_log_redaction()  # once is enough; twice changes nothing
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("tests.redaction")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("model %s answered %r", f"evil/\x1b[2J{key[:14]}\x00:free", {"k": key})
        logger.warning(f"preformatted {key.swapcase()} \x1b[31m")
        logger.warning("%(model)s", {"model": f"x{key}"})
        try:
            raise ValueError(f"server text {key}")
        except ValueError:
            logger.exception("failed with %s", "\u202eevil")
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert runs_of(key, out) == []
    assert "\x1b" not in out and "\x00" not in out and "\u202e" not in out
    assert "evil/\\x1b[2J" in out and "\\u202eevil" in out
    assert "Traceback" in out and "ValueError: server text [REDACTED]" in out


def test_a_url_with_credentials_is_shown_masked_and_kept_for_this_process() -> None:
    url = "http://user:s3cret-password@127.0.0.1:9/v1"
    shown = safe_url(url)
    assert shown == f"http://{MASK}@127.0.0.1:9/v1"
    assert real_url(shown) == url
    assert redact("echo s3cret-password") == f"echo {MASK}"  # the password is now a known secret
    assert safe_url("http://127.0.0.1:9/v1") == "http://127.0.0.1:9/v1"
    assert safe_url(shown) == shown  # masking a masked URL changes nothing
    assert untrusted(f"x{url}\ud800", 23) == f"xhttp://{MASK}@127."
    assert untrusted(f"{url}\ud800") == f"{shown}\ufffd"
