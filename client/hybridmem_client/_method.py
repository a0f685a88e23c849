"""The ``@endpoint`` descriptor: one flow-returning definition, bound as a sync or async method.

An endpoint is written once as ``def name(self, ...) -> Flow[T]``. Read on a client whose ``_is_async``
is False it is a plain method returning ``T``; on an async client it returns an awaitable of ``T``.
``.flow(...)`` exposes the underlying flow, so higher-level flows (the LangGraph store) compose calls.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, Generic, Literal, ParamSpec, Protocol, TypeVar, overload

from hybridmem_client._flow import Flow

P = ParamSpec("P")
T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class SyncRunner(Protocol):
    _is_async: Literal[False]

    def _run(self, flow: Flow[Any]) -> Any: ...


class AsyncRunner(Protocol):
    _is_async: Literal[True]

    def _run(self, flow: Flow[Any]) -> Coroutine[Any, Any, Any]: ...


class SyncMethod(Generic[P, T]):
    """An endpoint bound to a blocking client."""

    def __init__(self, owner: SyncRunner, fn: Callable[Concatenate[Any, P], Flow[T]]) -> None:
        self._owner = owner
        self._fn = fn
        functools.update_wrapper(self, fn)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> T:
        result: T = self._owner._run(self._fn(self._owner, *args, **kwargs))
        return result

    def flow(self, *args: P.args, **kwargs: P.kwargs) -> Flow[T]:
        return self._fn(self._owner, *args, **kwargs)


class AsyncMethod(Generic[P, T]):
    """An endpoint bound to an async client."""

    def __init__(self, owner: AsyncRunner, fn: Callable[Concatenate[Any, P], Flow[T]]) -> None:
        self._owner = owner
        self._fn = fn
        functools.update_wrapper(self, fn)

    async def __call__(self, *args: P.args, **kwargs: P.kwargs) -> T:
        result: T = await self._owner._run(self._fn(self._owner, *args, **kwargs))
        return result

    def flow(self, *args: P.args, **kwargs: P.kwargs) -> Flow[T]:
        return self._fn(self._owner, *args, **kwargs)


class endpoint(Generic[P, T]):
    """Declares an API method once; see the module docstring."""

    def __init__(self, fn: Callable[Concatenate[Any, P], Flow[T]]) -> None:
        self._fn = fn
        self.__doc__ = fn.__doc__
        self.__name__ = fn.__name__

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> endpoint[P, T]: ...

    @overload
    def __get__(self, obj: AsyncRunner, owner: type[Any]) -> AsyncMethod[P, T]: ...

    @overload
    def __get__(self, obj: SyncRunner, owner: type[Any]) -> SyncMethod[P, T]: ...

    def __get__(
        self, obj: SyncRunner | AsyncRunner | None, owner: type[Any]
    ) -> endpoint[P, T] | SyncMethod[P, T] | AsyncMethod[P, T]:
        if obj is None:
            return self
        if obj._is_async:
            return AsyncMethod(obj, self._fn)
        return SyncMethod(obj, self._fn)
