"""Metrics and one structured log line for every call of a store adapter, without touching the adapter.

``instrument_store(RedisWorkingStore(...), "redis")`` returns a proxy with the adapter's methods: each
coroutine method runs under :func:`core.metrics.store_operation` (latency per store and operation,
errors, records written) and logs ``store``, ``operation``, ``latency_ms``, ``record_ids`` and the
hashed tenant: writes and deletes at INFO, reads at DEBUG. ``hybridmem_store_up`` follows the outcome of
the store's last call (``ping`` included). Wrap once where the adapter is built (core.resources,
core.stores.vector_factory), never twice.
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar, cast

from core.errors import StoreUnavailable
from core.metrics import METRICS, store_operation

log = logging.getLogger("hybridmem.store")

T = TypeVar("T")
_WRITE_PREFIXES = ("insert", "upsert", "append", "put")
_DELETE_PREFIXES = ("delete", "remove")
_ID_KWARGS = ("episode_ids", "memory_ids", "ids", "source_ids")


def _first_sequence(args: Sequence[Any], kwargs: Mapping[str, Any]) -> Sequence[Any] | None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, list | tuple):
            return value
    return None


def _record_ids(items: Sequence[Any] | None, kwargs: Mapping[str, Any], result: Any) -> list[str]:
    if isinstance(result, list) and result and isinstance(result[0], uuid.UUID):
        return [str(i) for i in result]
    for name in _ID_KWARGS:
        if isinstance(kwargs.get(name), list | tuple):
            return [str(i) for i in kwargs[name]]
    if items:
        return [
            str(getattr(i, "id", getattr(i, "key", "")))
            for i in items
            if hasattr(i, "id") or hasattr(i, "key")
        ]
    return []


def _tenant(items: Sequence[Any] | None, kwargs: Mapping[str, Any]) -> str | None:
    tenant = kwargs.get("tenant_id")
    if tenant is None and items:
        first = items[0]
        tenant = getattr(first, "tenant_id", None)
        if tenant is None and isinstance(getattr(first, "payload", None), dict):
            tenant = first.payload.get("tenant_id")
    return str(tenant) if tenant else None


def _log(
    level: int,
    store: str,
    operation: str,
    start: float,
    items: Sequence[Any] | None,
    kwargs: Mapping[str, Any],
    result: Any,
    *,
    error: str | None = None,
) -> None:
    extra: dict[str, Any] = {
        "store": store,
        "operation": operation,
        "latency_ms": round((time.perf_counter() - start) * 1000, 3),
        "record_ids": _record_ids(items, kwargs, result),
    }
    tenant = _tenant(items, kwargs)
    if tenant is not None:
        extra["tenant_id"] = tenant
    if error is not None:
        extra["error"] = error
    log.log(level, "%s %s%s", store, operation, " failed" if error else "", extra=extra)


class InstrumentedStore:
    """Proxy over one store adapter; attributes other than coroutine methods pass through unchanged."""

    def __init__(self, inner: Any, store: str) -> None:
        self._inner = inner
        self._store = store
        self._wrapped: dict[str, Callable[..., Awaitable[Any]]] = {}

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name.startswith("_") or not inspect.iscoroutinefunction(attr):
            return attr
        wrapped = self._wrapped.get(name)
        if wrapped is None:
            wrapped = self._wrapped[name] = self._wrap(name, attr)
        return wrapped

    def _wrap(self, operation: str, method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        store = self._store
        is_write = operation.startswith(_WRITE_PREFIXES)
        level = logging.INFO if is_write or operation.startswith(_DELETE_PREFIXES) else logging.DEBUG

        @functools.wraps(method)
        async def call(*args: Any, **kwargs: Any) -> Any:
            items = _first_sequence(args, kwargs)
            start = time.perf_counter()
            try:
                with store_operation(store, operation) as stats:
                    result = await method(*args, **kwargs)
                    if is_write:
                        stats.records = len(result) if isinstance(result, list) else len(items or ()) or 1
            except StoreUnavailable as exc:
                METRICS.store_up.set(0, store=store)
                _log(logging.WARNING, store, operation, start, items, kwargs, None, error=exc.message)
                raise
            METRICS.store_up.set(1, store=store)
            if log.isEnabledFor(level):
                _log(level, store, operation, start, items, kwargs, result)
            return result

        return call

    def __repr__(self) -> str:
        return f"InstrumentedStore({self._inner!r}, store={self._store!r})"


def instrument_store(inner: T, store: str) -> T:
    """``inner`` behind an :class:`InstrumentedStore` (typed as ``inner``'s own type for its callers)."""
    if isinstance(inner, InstrumentedStore):
        return cast(T, inner)
    return cast(T, InstrumentedStore(inner, store))
