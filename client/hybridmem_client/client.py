"""``HybridMemClient`` (blocking) and ``AsyncHybridMemClient``: thin drivers over one method table.

Both inherit every endpoint from :class:`~hybridmem_client._endpoints.ApiMethods`; they differ only in the
httpx client they own and in how they drive a flow. Constructors open no connection.

    with HybridMemClient("http://127.0.0.1:8000", api_key="...") as hm:
        hm.store_episode(agent_id="a", session_id="s", content="hello")
        ctx = hm.context("what did I say?", token_budget=512)
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Literal, Self

import httpx

from hybridmem_client._endpoints import ApiMethods
from hybridmem_client._flow import Flow, RetryPolicy, run_async, run_sync
from hybridmem_client._version import __version__

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT_S = 30.0


def _headers(api_key: str | None, extra: Mapping[str, str] | None) -> dict[str, str]:
    headers = {"User-Agent": f"hybridmem-client/{__version__}", "Accept": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    headers.update(extra or {})
    return headers


class _ClientOptions(ApiMethods):
    """Options shared by both clients; ``with_options`` returns a copy sharing the connection pool."""

    _owns_http: bool

    def _configure(self, timeout: float | None, retry: RetryPolicy | None) -> None:
        self._timeout = timeout
        self._policy = retry if retry is not None else RetryPolicy()

    def with_options(self, *, timeout: float | None = None, retry: RetryPolicy | None = None) -> Self:
        """A client with another per-call timeout and/or retry policy over the same connections."""
        clone = copy.copy(self)
        clone._owns_http = False
        if timeout is not None:
            clone._timeout = timeout
        if retry is not None:
            clone._policy = retry
        return clone


class HybridMemClient(_ClientOptions):
    """Blocking client. ``transport`` swaps the network (tests, proxies); ``retry`` sets the policy."""

    _is_async: Literal[False] = False

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        retry: RetryPolicy | None = None,
        headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._configure(timeout, retry)
        self._http = httpx.Client(
            base_url=base_url, headers=_headers(api_key, headers), timeout=timeout, transport=transport
        )
        self._owns_http = True

    def _run(self, flow: Flow[Any]) -> Any:
        return run_sync(self._http, flow)

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncHybridMemClient(_ClientOptions):
    """Async client over ``httpx.AsyncClient``; same methods as :class:`HybridMemClient`, awaited."""

    _is_async: Literal[True] = True

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        retry: RetryPolicy | None = None,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._configure(timeout, retry)
        self._http = httpx.AsyncClient(
            base_url=base_url, headers=_headers(api_key, headers), timeout=timeout, transport=transport
        )
        self._owns_http = True

    async def _run(self, flow: Flow[Any]) -> Any:
        return await run_async(self._http, flow)

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
