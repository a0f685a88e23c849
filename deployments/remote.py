"""Calling other deployments: unwrap Ray's error wrappers back into core errors."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

from ray.exceptions import RayActorError, RayTaskError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

from core.errors import HybridMemError, StoreUnavailable

T = TypeVar("T")


async def call(store: str, awaitable: Awaitable[T]) -> T:
    """Await a handle call; a core error raised remotely is re-raised as itself, a dead peer as 503."""
    try:
        return await awaitable
    except RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, HybridMemError):
            raise cause from None
        raise
    except (RayActorError, DeploymentUnavailableError, BackPressureError) as exc:
        raise StoreUnavailable(store, type(exc).__name__) from exc
