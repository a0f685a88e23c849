"""Naming the call in progress on the error it raises, so a failed consolidation pass says which call
failed, on which store or deployment, and how long it waited (core.consolidation.runner reads the note)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

CALL_NOTE = "during "


@contextlib.contextmanager
def calling(what: str) -> Iterator[None]:
    """Name the call in progress on the error it raises: a note ``during <what>, after <s> s`` (the
    innermost call's only), so that a run record says which call failed, on which store or deployment,
    and how long it waited, even for a bare ``TimeoutError`` (a Postgres statement's has no message)."""
    started = time.perf_counter()
    try:
        yield
    except BaseException as exc:
        if not any(n.startswith(CALL_NOTE) for n in getattr(exc, "__notes__", ())):
            exc.add_note(f"{CALL_NOTE}{what}, after {time.perf_counter() - started:.1f} s")
        raise
