"""The id contract shared by the server and its clients.

A write's row id is ``deterministic_id(tenant, kind, client id)``: a client that sends the same id twice
(a retry after a lost answer or a 503) writes the same row and point, never a second copy. The client
therefore gives every write an id (:func:`new_write_id` when the caller names none).
"""

from __future__ import annotations

import uuid

# Fixed namespace so ids are stable across processes, machines and releases.
HYBRIDMEM_NAMESPACE = uuid.UUID("6f1c2a52-3f0e-5b8e-9a43-2d1e7c0b9a11")


def deterministic_id(tenant_id: str, kind: str, source_id: str, model_version: str = "") -> uuid.UUID:
    """UUIDv5 over (tenant, kind, source id, model version): a replayed write maps to the same row/point."""
    name = "\x1f".join((tenant_id, kind, source_id, model_version))
    return uuid.uuid5(HYBRIDMEM_NAMESPACE, name)


def new_write_id() -> str:
    """A fresh idempotency key for one write (32 hex digits, random)."""
    return uuid.uuid4().hex
