"""Sans-IO core of the client: requests as data, retries as a generator, one driver per I/O style.

Every API call is a *flow*: a generator that yields :class:`Request` (answered with an
``httpx.Response``, or a transport error thrown in) and :class:`Sleep` (answered with ``None``), and
returns the parsed result. Retries, error mapping and parsing live here once; :func:`run_sync` and
:func:`run_async` are the only code that knows about blocking versus awaiting.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx

from hybridmem_client._errors import (
    HybridMemAPIError,
    HybridMemTimeout,
    HybridMemTransportError,
    api_error,
    parse_retry_after,
)

T = TypeVar("T")

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


@dataclass(frozen=True)
class Request:
    """One HTTP exchange to perform; ``accept`` lists non-2xx statuses that are answers, not errors.

    ``idempotent`` None: by the method (GET, PUT, DELETE...); True for a POST whose body carries an
    idempotency key (the client's writes), so that a timed-out one is sent again."""

    method: str
    path: str
    params: Mapping[str, Any] | None = None
    json: Any = None
    timeout: float | None = None
    retry: bool = True
    accept: frozenset[int] = frozenset()
    idempotent: bool | None = None

    @property
    def replayable(self) -> bool:
        """Whether sending it twice has the effect of sending it once."""
        return self.method in IDEMPOTENT_METHODS if self.idempotent is None else self.idempotent


@dataclass(frozen=True)
class Sleep:
    seconds: float


Step = Request | Sleep
Flow = Generator[Step, Any, T]


@dataclass(frozen=True)
class RetryPolicy:
    """When and how long to wait before trying again.

    429 and 503 are retried (they say the request was not acted on), honouring ``Retry-After`` up to
    ``max_retry_after_s``; connection failures are retried for every request, timeouts (the client's,
    or the server's ``504 request_timeout``) only for replayable ones: idempotent methods and the writes,
    which carry an idempotency key (a timed-out write may have been applied; its replay overwrites it).
    """

    max_attempts: int = 4
    statuses: frozenset[int] = frozenset({429, 503})
    timeout_statuses: frozenset[int] = frozenset({504})
    backoff_base_s: float = 0.25
    backoff_max_s: float = 8.0
    max_retry_after_s: float = 30.0
    jitter: float = 0.1
    rng: Callable[[], float] = field(default=random.random, repr=False, compare=False)

    def delay(self, attempt: int, retry_after_s: float | None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        if retry_after_s is not None:
            return min(retry_after_s, self.max_retry_after_s)
        backoff = min(self.backoff_base_s * 2.0 ** (attempt - 1), self.backoff_max_s)
        return backoff * (1.0 + self.jitter * self.rng())

    def retries_transport(self, exc: HybridMemTransportError, request: Request) -> bool:
        return not exc.maybe_sent or (isinstance(exc, HybridMemTimeout) and request.replayable)


NO_RETRY = RetryPolicy(max_attempts=1)


def send(request: Request, policy: RetryPolicy) -> Flow[httpx.Response]:
    """Perform ``request`` with retries; returns the last response (error statuses included)."""
    attempts = policy.max_attempts if request.retry else 1
    attempt = 1
    while True:
        try:
            response: httpx.Response = yield request
        except HybridMemTransportError as exc:
            if attempt >= attempts or not policy.retries_transport(exc, request):
                raise
            wait = policy.delay(attempt, None)
        else:
            retryable = response.status_code in policy.statuses or (
                response.status_code in policy.timeout_statuses and request.replayable
            )
            if attempt >= attempts or not retryable:
                return response
            wait = policy.delay(attempt, parse_retry_after(response.headers.get("retry-after")))
        attempt += 1
        yield Sleep(wait)


def checked(response: httpx.Response, accept: frozenset[int] = frozenset()) -> httpx.Response:
    """The response if its status is a success (or accepted); else the typed API error."""
    if response.is_success or response.status_code in accept:
        return response
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    raise api_error(response.status_code, body, response.headers, fallback_message=response.text[:200])


def call(request: Request, policy: RetryPolicy, parse: Callable[[httpx.Response], T]) -> Flow[T]:
    """Send with retries, raise the typed error on failure, parse on success."""
    response = yield from send(request, policy)
    return parse(checked(response, request.accept))


def _transport_error(exc: httpx.TransportError) -> HybridMemTransportError:
    maybe_sent = not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
    cls = HybridMemTimeout if isinstance(exc, httpx.TimeoutException) else HybridMemTransportError
    return cls(f"{type(exc).__name__}: {exc}", maybe_sent=maybe_sent)


def _build(http: httpx.Client | httpx.AsyncClient, req: Request) -> httpx.Request:
    timeout: Any = httpx.USE_CLIENT_DEFAULT if req.timeout is None else req.timeout
    return http.build_request(req.method, req.path, params=req.params, json=req.json, timeout=timeout)


def run_sync(http: httpx.Client, flow: Flow[T]) -> T:
    """Drive a flow with a blocking httpx client."""
    try:
        step = next(flow)
        while True:
            if isinstance(step, Sleep):
                time.sleep(step.seconds)
                step = flow.send(None)
                continue
            try:
                response = http.send(_build(http, step))
            except httpx.TransportError as exc:
                step = flow.throw(_transport_error(exc))
            else:
                step = flow.send(response)
    except StopIteration as stop:
        result: T = stop.value
        return result


async def run_async(http: httpx.AsyncClient, flow: Flow[T]) -> T:
    """Drive a flow with an async httpx client."""
    try:
        step = next(flow)
        while True:
            if isinstance(step, Sleep):
                await asyncio.sleep(step.seconds)
                step = flow.send(None)
                continue
            try:
                response = await http.send(_build(http, step))
            except httpx.TransportError as exc:
                step = flow.throw(_transport_error(exc))
            else:
                step = flow.send(response)
    except StopIteration as stop:
        result: T = stop.value
        return result


__all__ = [
    "NO_RETRY",
    "Flow",
    "HybridMemAPIError",
    "Request",
    "RetryPolicy",
    "Sleep",
    "call",
    "checked",
    "run_async",
    "run_sync",
    "send",
]
