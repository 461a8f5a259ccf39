"""The shared HTTP client and the two non-inference calls: the catalog (``GET models``) and the key's
quota (``GET key``).

One ``httpx.AsyncClient`` serves a whole run. It has explicit, named timeouts from the settings,
connection limits sized from ``max_concurrency``, OpenRouter's attribution headers, never follows
redirects, and adds the API key only to requests for the configured base URL's origin (scheme, host
and port): an absolute URL elsewhere never carries the key.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Generator, Mapping
from dataclasses import dataclass

import httpx

from freemodels.errors import SourceError
from freemodels.secrets import untrusted
from freemodels.settings import Settings

DEFAULT_CATALOG_MAX_BYTES = 256_000_000
"""Cap on a catalog download: today's entries average about 1.3 KB, so this allows some 200,000 models
(a 100,000-model catalog is about 130 MB), while a runaway body is still cut off."""
_KEY_INFO_MAX_BYTES = 1_000_000
MIN_SCRUBBED_SECRET = 8  # shorter keys are not scrubbed from server text (see sent_secret)


class _OriginBearerAuth(httpx.Auth):
    """``Authorization: Bearer <key>`` on requests to one origin only."""

    def __init__(self, api_key: str, origin: httpx.URL) -> None:
        self._key = api_key
        self._header = f"Bearer {api_key}"
        self._origin = _origin_of(origin)

    @property
    def secret(self) -> str:
        """The key itself, so that text from a server can be scrubbed of it (never log this)."""
        return self._key

    def __repr__(self) -> str:  # never show the key
        return f"{type(self).__name__}(origin={self._origin!r})"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if _origin_of(request.url) == self._origin:
            request.headers["Authorization"] = self._header
        else:
            request.headers.pop("Authorization", None)
        yield request


def sent_secret(client: httpx.AsyncClient) -> str | None:
    """The API key ``client`` sends (from :func:`build_http_client`), or None.

    Only for :func:`~freemodels.secrets.redact`: a server may echo the key in an error message, and
    a key that does not look like OpenRouter's (``--api-key-env`` for any base URL) is not caught by
    redaction patterns alone.
    """
    auth = client.auth
    if not isinstance(auth, _OriginBearerAuth) or len(auth.secret) < MIN_SCRUBBED_SECRET:
        return None  # masking every occurrence of a very short string would garble the text
    return auth.secret


def _origin_of(url: httpx.URL) -> tuple[str, str, int | None]:
    default_port = {"http": 80, "https": 443}.get(url.scheme)
    return (url.scheme, url.host.lower(), url.port or default_port)


def build_http_client(
    settings: Settings,
    *,
    base_url: str,
    api_key: str | None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """The run's shared client: ``base_url`` joined with relative paths such as ``models``."""
    root = httpx.URL(base_url.rstrip("/") + "/")
    headers = {
        "HTTP-Referer": settings.http_referer,
        "X-Title": settings.app_title,
        "X-OpenRouter-Title": settings.app_title,
        "User-Agent": "free-model-discovery",
    }
    limits = httpx.Limits(
        max_connections=settings.max_concurrency + 4,  # probes plus catalog/key calls
        max_keepalive_connections=settings.max_concurrency + 4,
        keepalive_expiry=30.0,
    )
    return httpx.AsyncClient(
        base_url=root,
        headers=headers,
        auth=_OriginBearerAuth(api_key, root) if api_key else None,
        timeout=httpx.Timeout(**settings.timeouts()),
        limits=limits,
        follow_redirects=False,
        transport=transport,
    )


async def _read_capped(response: httpx.Response, max_bytes: int) -> bytes:
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body.extend(chunk)
        if len(body) > max_bytes:
            raise SourceError(
                f"{response.request.url} answered with more than {max_bytes} bytes; refusing to read further"
            )
    return bytes(body)


async def fetch_catalog_bytes(
    client: httpx.AsyncClient,
    *,
    timeout_s: float | None = None,
    max_bytes: int = DEFAULT_CATALOG_MAX_BYTES,
) -> bytes:
    """The raw body of ``GET models``. Raises :class:`SourceError` on any failure.

    ``timeout_s`` (e.g. ``settings.catalog_timeout_s``) bounds the whole download, on top of the
    client's per-read timeout.
    """
    url = client.base_url.join("models")
    try:
        async with client.stream("GET", "models", headers={"Accept": "application/json"}) as response:
            if timeout_s is None:
                body = await _read_capped(response, max_bytes)
            else:
                async with asyncio.timeout(timeout_s):
                    body = await _read_capped(response, max_bytes)
    except TimeoutError:
        raise SourceError(f"GET {url} took longer than {timeout_s} s", transient=True) from None
    except httpx.HTTPError as exc:
        raise network_error(exc, url) from None
    if not 200 <= response.status_code < 300:
        excerpt = untrusted(body[:2000].decode("utf-8", "replace"), 300, sent_secret(client))
        raise SourceError(
            f"GET {url} answered HTTP {response.status_code}: {excerpt}",
            transient=response.status_code >= 500,
        )
    return body


def network_error(exc: httpx.HTTPError, url: httpx.URL | str) -> SourceError:
    """One line for a request that got no answer: what failed, and the host it failed on."""
    target = httpx.URL(str(url))
    host = target.host or str(target)
    text = str(exc)
    lowered = text.lower()
    if isinstance(exc, httpx.TimeoutException):
        return SourceError(
            f"{host} did not answer in time ({type(exc).__name__}) for GET {target}", transient=True
        )
    if isinstance(exc, httpx.ConnectError):
        if (
            "name or service not known" in lowered
            or "nodename nor servname" in lowered
            or "getaddrinfo" in lowered
            or "temporary failure in name resolution" in lowered
        ):
            return SourceError(f"cannot resolve {host} (DNS): no network, or a wrong host name in {target}")
        if "certificate" in lowered or "ssl" in lowered or "tls" in lowered:
            return SourceError(f"TLS failed with {host}: {text[:200]}")
        if "network is unreachable" in lowered or "no route to host" in lowered:
            return SourceError(f"no network route to {host} ({target})")
        return SourceError(f"cannot connect to {host} ({target}): connection refused or no network")
    return SourceError(f"GET {target} failed: {type(exc).__name__}: {text[:200]}", transient=True)


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """What ``GET key`` says about the account's free-model quota."""

    daily_limit: int | None  # free_model_daily_requests.limit
    daily_remaining: int | None  # free_model_daily_requests.remaining
    daily_used: int | None  # free_model_daily_requests.used
    is_free_tier: bool | None  # "whether the user has paid for credits before" (inverted)
    label: str | None  # the key's label (OpenRouter shows a masked key here; redacted anyway)


async def fetch_key_info(client: httpx.AsyncClient) -> KeyInfo | None:
    """The key's quota, or None when the server has no such endpoint, refuses it, or is unreachable.

    Never raises for a missing endpoint: many OpenAI-compatible servers have no ``/key``.
    """
    try:
        async with client.stream("GET", "key", headers={"Accept": "application/json"}) as resp:
            if resp.status_code != 200:
                return None
            body = await _read_capped(resp, _KEY_INFO_MAX_BYTES)
    except (httpx.HTTPError, SourceError):
        return None
    return parse_key_info(body)


def parse_key_info(body: bytes | str) -> KeyInfo | None:
    """Parse a ``GET key`` body; None when it is not the expected JSON object."""
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, Mapping):
        return None
    data = value.get("data")
    if not isinstance(data, Mapping):
        return None
    quota = data.get("free_model_daily_requests")
    quota = quota if isinstance(quota, Mapping) else {}
    is_free = data.get("is_free_tier")
    label = data.get("label")
    return KeyInfo(
        daily_limit=_count(quota.get("limit")),
        daily_remaining=_count(quota.get("remaining")),
        daily_used=_count(quota.get("used")),
        is_free_tier=is_free if isinstance(is_free, bool) else None,
        label=untrusted(label, 200) if isinstance(label, str) else None,
    )


def _count(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return max(0, value)
    if isinstance(value, float) and math.isfinite(value):
        return max(0, int(value))
    return None
