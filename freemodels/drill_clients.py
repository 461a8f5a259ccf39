"""The two clients the drill drives (see :mod:`freemodels.drill`), each sending one workload.

- :func:`models_array_workload`: OpenRouter chat requests carrying the exported ``model`` and
  ``models``, sent by :func:`freemodels.scheduler.run_plan`, the project's one retry loop, one request
  at a time. Every attempt is a streamed probe (:func:`freemodels.probe.probe_attempt`): classified,
  timed, graded, and the response's ``model`` names the model that served.
- :func:`litellm_workload`: ``litellm.Router`` built from the exported configuration, every deployment
  pointed at the source (``api_base``; the key is handed over in memory, never written). Its HTTP
  goes through :class:`PacedTransport`, which takes every attempt's start from the run's
  :class:`~freemodels.scheduler.RateLimiter` (pacing and budget, as for the probes), refuses attempts
  once the budget is spent, and notes each attempt's status and failure class. LiteLLM retries,
  waits and falls back on its own, as its ``router_settings`` say: that is what is drilled.

LiteLLM is optional (dependency group ``litellm``); :func:`litellm_available` tells whether it is
installed. It is imported only when a LiteLLM workload runs, with its price map read from the copy it
ships (``LITELLM_LOCAL_MODEL_COST_MAP``), so nothing is fetched from the internet.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
import json
import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any

import httpx

from freemodels.classify import answer_channel, classify, parse_error_envelope
from freemodels.drill import Cell, DrillOutcome, DrillRequest
from freemodels.failures import Failure
from freemodels.probe import AttemptOutcome
from freemodels.records import ProbeSpec
from freemodels.scheduler import RateLimiter, run_plan
from freemodels.secrets import redact
from freemodels.settings import Settings
from freemodels.suite import TaskInstance

MESSAGE_CHARS = 300
ERROR_BODY_MAX_BYTES = 100_000


@dataclass(frozen=True, slots=True)
class Workload:
    """What one cell sends: ``requests`` requests for ``purpose``, the suite's tasks in turn."""

    run_id: str
    cell: Cell
    purpose: str
    requests: int
    tasks: Sequence[TaskInstance]

    def task(self, seq: int) -> TaskInstance:
        return self.tasks[(seq - 1) % len(self.tasks)]

    def row(
        self, seq: int, started_at: datetime | None, outcome: DrillOutcome, **values: Any
    ) -> DrillRequest:
        return DrillRequest(
            run_id=self.run_id,
            client=self.cell.client.value,
            arm=self.cell.arm.value,
            incident=self.cell.incident.value,
            purpose=self.purpose,
            seq=seq,
            started_at=started_at,
            outcome=outcome.value,
            **values,
        )


def _clip(text: str | None, secret: str | None) -> str | None:
    return redact(text, secret)[:MESSAGE_CHARS] if text else None


# --------------------------------------------------------------------------------------------------
# OpenRouter's models array


async def models_array_workload(
    client: httpx.AsyncClient,
    workload: Workload,
    *,
    model: str,
    models: Sequence[str] | None,
    settings: Settings,
    limiter: RateLimiter,
    cost_guard: bool,
    reset_epoch_ms: bool,
) -> list[DrillRequest]:
    """Send the workload as chat requests for ``model`` (with the ``models`` array when given)."""
    specs = [
        ProbeSpec(model_id=model, family="drill", task=workload.task(seq).name, sample=seq, priority=seq)
        for seq in range(1, workload.requests + 1)
    ]
    attempts: dict[int, list[tuple[AttemptOutcome, datetime]]] = {}

    def on_attempt(spec: ProbeSpec, outcome: AttemptOutcome) -> None:
        attempts.setdefault(spec.sample, []).append((outcome, datetime.now(UTC)))

    tasks = {t.name: t for t in workload.tasks}
    await run_plan(
        client,
        specs,
        tasks,
        settings,
        limiter,
        run_id=workload.run_id,
        semaphore=asyncio.Semaphore(1),
        cost_guard=cost_guard,
        reset_epoch_ms=reset_epoch_ms,
        models=models,
        on_attempt=on_attempt,
    )
    return [
        _models_array_row(workload, seq, attempts.get(seq, [])) for seq in range(1, workload.requests + 1)
    ]


def _models_array_row(
    workload: Workload, seq: int, attempts: Sequence[tuple[AttemptOutcome, datetime]]
) -> DrillRequest:
    if not attempts:
        return workload.row(seq, None, DrillOutcome.NOT_SENT, message="the run's request budget was spent")
    first = attempts[0][0].result
    last, ended = attempts[-1]
    result = last.result
    if result.failure is None:
        outcome = DrillOutcome.OK
    elif result.failure is Failure.WRONG_ANSWER:
        outcome = DrillOutcome.WRONG_ANSWER
    else:
        outcome = DrillOutcome.ERROR
    answered = outcome is not DrillOutcome.ERROR
    if answered and result.total_ms is not None:
        ended = result.started_at + timedelta(milliseconds=result.total_ms)
    failed = [o.result for o, _ in attempts if o.result.failure is not None]
    return workload.row(
        seq,
        first.started_at,
        outcome,
        failure=failed[-1].failure.value if failed and failed[-1].failure else None,
        http_status=result.http_status,
        answered_by=last.served_model if answered else None,
        latency_ms=round((ended - first.started_at).total_seconds() * 1000, 3),
        attempts=len(attempts),
        message=failed[-1].message if failed else None,
    )


# --------------------------------------------------------------------------------------------------
# LiteLLM


def litellm_available() -> bool:
    """Whether LiteLLM (optional dependency group ``litellm``) is installed."""
    return importlib.util.find_spec("litellm") is not None


LITELLM_LOGGERS = ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy")


def import_litellm() -> ModuleType:
    """LiteLLM, imported with its shipped price map (it would otherwise fetch one from the internet)."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    litellm = importlib.import_module("litellm")
    setattr(litellm, "suppress_debug_info", True)  # no "Give Feedback / Get Help" banners on stdout  # noqa: B010
    return litellm


@contextlib.contextmanager
def quiet_litellm() -> Iterator[None]:
    """LiteLLM's own log lines off while the drill drives it: they repeat every error body it met
    (server text, unredacted), and the drill records each outcome itself."""
    loggers = [logging.getLogger(name) for name in LITELLM_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


class BudgetSpentError(httpx.TransportError):
    """The run's request budget is spent: the attempt is not sent."""


@dataclass(slots=True)
class Attempt:
    """One HTTP attempt LiteLLM made, as the transport saw it."""

    model: str | None
    status: int | None = None
    failure: Failure | None = None
    message: str | None = None


@dataclass(slots=True)
class PacedTransport(httpx.AsyncBaseTransport):
    """LiteLLM's transport in the drill: the run's pacing and budget for every chat attempt.

    ``attempts`` lists what the current request sent (cleared by the caller between requests).
    Other requests (none are expected) pass through untouched.
    """

    limiter: RateLimiter
    secret: str | None = None
    inner: httpx.AsyncBaseTransport = field(default_factory=httpx.AsyncHTTPTransport)
    attempts: list[Attempt] = field(default_factory=list)
    refused: int = 0  # attempts of the current request refused for want of budget

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not request.url.path.endswith("/chat/completions"):
            return await self.inner.handle_async_request(request)
        if not await self.limiter.acquire():
            self.refused += 1
            raise BudgetSpentError("the run's request budget is spent", request=request)
        attempt = Attempt(model=_requested_model(request))
        self.attempts.append(attempt)
        try:
            response = await self.inner.handle_async_request(request)
        except httpx.TransportError as exc:
            attempt.failure = classify(http_status=None, envelope=None, exception=exc)
            attempt.message = type(exc).__name__
            raise
        attempt.status = response.status_code
        if response.status_code < 400:
            return response
        raw = await _read_raw(response)
        envelope = parse_error_envelope(raw)
        attempt.failure = classify(http_status=response.status_code, envelope=envelope)
        if envelope is not None:
            text = envelope.message or ""
            if envelope.raw and envelope.raw not in text:
                text = f"{text}: {envelope.raw}" if text else envelope.raw
            attempt.message = _clip(text, self.secret)
        return httpx.Response(
            response.status_code, headers=response.headers, content=raw, extensions=response.extensions
        )

    async def aclose(self) -> None:
        await self.inner.aclose()


def _requested_model(request: httpx.Request) -> str | None:
    try:
        body = json.loads(request.content)
    except (ValueError, httpx.RequestNotRead):
        return None
    model = body.get("model") if isinstance(body, dict) else None
    return model if isinstance(model, str) else None


async def _read_raw(response: httpx.Response) -> bytes:
    """The undecoded body of an error answer (capped): the client decodes it as it would have."""
    body = bytearray()
    stream = response.stream
    assert isinstance(stream, httpx.AsyncByteStream)
    try:
        async for chunk in stream:
            body.extend(chunk)
            if len(body) > ERROR_BODY_MAX_BYTES:
                break
    finally:
        await stream.aclose()
    return bytes(body[:ERROR_BODY_MAX_BYTES])


def router_config(
    config: Mapping[str, Any],
    *,
    api_base: str,
    api_key: str | None,
    only: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The exported configuration (``model_list``, ``router_settings``) pointed at ``api_base``.

    ``only`` replaces the model list (the ``openrouter/free`` arm) and drops the fallbacks. The key
    is put into the deployments in memory; the exported file refers to an environment variable.
    """
    entries = [dict(e) for e in (only if only is not None else config.get("model_list", []))]
    model_list = []
    for entry in entries:
        params = {**entry.get("litellm_params", {}), "api_base": api_base, "api_key": api_key or "none"}
        model_list.append({**entry, "litellm_params": params})
    settings = dict(config.get("router_settings", {}))
    if only is not None:
        settings.pop("fallbacks", None)
    return {"model_list": model_list, "router_settings": settings}


async def litellm_workload(
    workload: Workload,
    *,
    config: Mapping[str, Any],
    model_name: str,
    settings: Settings,
    transport: PacedTransport,
    extra_body: Mapping[str, Any] | None = None,
) -> list[DrillRequest]:
    """Send the workload through a ``litellm.Router`` built from ``config`` (see :func:`router_config`),
    asking for ``model_name`` (a purpose, or one model's own entry)."""
    litellm = import_litellm()
    from litellm.llms.custom_httpx.http_handler import AsyncHTTPHandler
    from litellm.types.router import RouterRateLimitError, RouterRateLimitErrorBasic
    from openai import OpenAIError

    failures = (OpenAIError, RouterRateLimitError, RouterRateLimitErrorBasic)
    router = litellm.Router(model_list=config["model_list"], **config["router_settings"])
    handler: Any = AsyncHTTPHandler(transport=transport)  # untyped: its close() has no annotations
    extra = {"extra_body": dict(extra_body)} if extra_body else {}
    rows: list[DrillRequest] = []
    with quiet_litellm():
        try:
            await _send_litellm(
                workload, router, handler, model_name, settings, transport, extra, failures, rows
            )
        finally:
            await handler.close()
    return rows


async def _send_litellm(
    workload: Workload,
    router: Any,
    handler: Any,
    model_name: str,
    settings: Settings,
    transport: PacedTransport,
    extra: Mapping[str, Any],
    failures: tuple[type[BaseException], ...],
    rows: list[DrillRequest],
) -> None:
    for seq in range(1, workload.requests + 1):
        task = workload.task(seq)
        transport.attempts.clear()
        transport.refused = 0
        started_at = datetime.now(UTC)
        t0 = time.perf_counter()
        response: Any = None
        refusal: str | None = None
        try:
            response = await router.acompletion(
                model=model_name,
                messages=task.messages(),
                client=handler,
                timeout=settings.probe_deadline_s,
                max_tokens=settings.max_tokens,
                temperature=0,
                **extra,
            )
        except failures as exc:
            refusal = type(exc).__name__
        latency_ms = round((time.perf_counter() - t0) * 1000, 3)
        rows.append(_litellm_row(workload, seq, task, started_at, latency_ms, response, transport, refusal))


def _litellm_row(
    workload: Workload,
    seq: int,
    task: TaskInstance,
    started_at: datetime,
    latency_ms: float,
    response: Any,
    transport: PacedTransport,
    refusal: str | None,
) -> DrillRequest:
    attempts = list(transport.attempts)
    failed = [a for a in attempts if a.failure is not None]
    last_failure = failed[-1].failure.value if failed and failed[-1].failure else None
    last_message = failed[-1].message if failed else None
    status = attempts[-1].status if attempts else None
    if response is None:
        if not attempts and transport.refused:
            return workload.row(
                seq, None, DrillOutcome.NOT_SENT, message="the run's request budget was spent"
            )
        if not attempts:
            # LiteLLM refused by itself: every deployment it may use is cooling down.
            last_message = f"LiteLLM sent no request ({refusal}): every deployment it may use is cooling down"
        return workload.row(
            seq,
            started_at,
            DrillOutcome.ERROR,
            failure=last_failure,
            http_status=status,
            latency_ms=latency_ms,
            attempts=len(attempts),
            message=last_message,
        )
    message = response.choices[0].message if response.choices else None
    content = getattr(message, "content", None) or ""
    reasoning = getattr(message, "reasoning_content", None) or ""
    finish = response.choices[0].finish_reason if response.choices else None
    channel = answer_channel(content, reasoning, finish)
    if channel == "content":
        passed: bool | None = task.grade(content)
    elif channel == "reasoning":
        passed = task.grade_reasoning(reasoning)
    else:
        passed = None
    failure = classify(
        http_status=200,
        envelope=None,
        finish_reason=finish,
        content=content,
        reasoning=reasoning,
        passed=passed,
    )
    if failure is None:
        outcome = DrillOutcome.OK
    elif failure is Failure.WRONG_ANSWER:
        outcome = DrillOutcome.WRONG_ANSWER
    else:
        outcome = DrillOutcome.ERROR
        last_failure, last_message = failure.value, None
    served = response.model if isinstance(response.model, str) else None
    return workload.row(
        seq,
        started_at,
        outcome,
        failure=last_failure,
        http_status=status,
        answered_by=_clip(served, transport.secret) if outcome is not DrillOutcome.ERROR else None,
        latency_ms=latency_ms,
        attempts=len(attempts),
        message=last_message,
    )
