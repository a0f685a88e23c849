"""Structured JSON logs with a request id, a hashed tenant and no secrets.

``configure_logging(level, json=True)`` installs one stderr handler on the root logger: a
:class:`JsonFormatter` (one JSON object per line) behind a :class:`RedactingFilter` that scrubs API keys,
bearer tokens, key hashes and DSN passwords from every record. The ingress sets :data:`request_id_var`
(from ``X-Request-ID``) and :data:`tenant_var`; Retriever and Embedder calls receive the request id and
re-enter :func:`request_scope`, so one id follows a request through every process.

    with observe_operation("postgres", "insert_episodes", tenant_id=t, record_ids=ids, records=len(ids)):
        await store.insert_episodes(episodes)
"""

from __future__ import annotations

import json as jsonlib
import logging
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TextIO

from core.ids import hash_tenant
from core.metrics import store_operation

request_id_var: ContextVar[str | None] = ContextVar("hybridmem_request_id", default=None)
tenant_var: ContextVar[str | None] = ContextVar("hybridmem_tenant", default=None)

MAX_RECORD_IDS = 20
REDACTED = "[REDACTED]"
_HANDLER_NAME = "hybridmem"
_OPS_LOGGER = logging.getLogger("hybridmem.ops")

# Where no request id was set explicitly, ask this (the Serve layer installs one reading Serve's context).
_request_id_fallback: Callable[[], str | None] | None = None

_KEY_NAMES = r"authorization|x-api-key|api[_-]?key|apikey|key_sha256|password|passwd|secret|token"
_REDACTIONS: tuple[tuple[re.Pattern[str], str], ...] = (
    # name = value / "name": "value" / (b'name', b'value') / name: Bearer value
    (
        re.compile(
            rf"(?i)((?:{_KEY_NAMES})[\"']?\s*[:=,]\s*(?:b(?=[\"']))?[\"']?)"
            rf"(?!\[REDACTED\])(?:bearer\s+)?[^\s\"',;}}\]&)]+"
        ),
        rf"\1{REDACTED}",
    ),
    (re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]+"), f"Bearer {REDACTED}"),
    (re.compile(r"\bhm_[A-Za-z0-9_-]{20,}"), f"hm_{REDACTED}"),
    # scheme://user:password@host  (postgresql, redis, http...)
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s/]+@"), rf"\1{REDACTED}@"),
)

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def redact(text: str) -> str:
    """``text`` with API keys, bearer tokens, key hashes and DSN passwords replaced by ``[REDACTED]``."""
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {
            k: REDACTED if re.fullmatch(_KEY_NAMES, str(k), re.I) else _redact_value(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_redact_value(v) for v in value]
    return value


class RedactingFilter(logging.Filter):
    """Scrubs secrets from the message, its args, ``extra=`` values and the exception text of every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        for key, value in list(vars(record).items()):
            if key not in _STANDARD_ATTRS:
                setattr(record, key, _redact_value(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def current_request_id() -> str | None:
    rid = request_id_var.get()
    if rid is None and _request_id_fallback is not None:
        rid = _request_id_fallback()
    return rid or None


def set_request_id_fallback(fn: Callable[[], str | None] | None) -> None:
    """Where ``request_id_var`` is unset, take the request id from ``fn`` (e.g. Serve's request context)."""
    global _request_id_fallback
    _request_id_fallback = fn


def new_request_id() -> str:
    return uuid.uuid4().hex


@contextmanager
def request_scope(request_id: str | None, tenant_id: str | None = None) -> Iterator[str]:
    """Set the request id (a new one when None) and tenant for the block; yields the request id."""
    rid = request_id or new_request_id()
    rid_token = request_id_var.set(rid)
    tenant_token = tenant_var.set(tenant_id) if tenant_id is not None else None
    try:
        yield rid
    finally:
        request_id_var.reset(rid_token)
        if tenant_token is not None:
            tenant_var.reset(tenant_token)


def _cap_ids(ids: Any) -> tuple[list[str], int] | None:
    if isinstance(ids, str | bytes) or not isinstance(ids, Iterable):
        return None
    as_list = [str(i) for i in ids]
    return as_list[:MAX_RECORD_IDS], len(as_list)


_TENANT_TAG = re.compile(r"[0-9a-f]{12}")


def _tenant_tag(record: logging.LogRecord) -> str | None:
    """``extra=`` ``tenant_id`` (raw) or ``tenant`` (raw, or already a hash_tenant tag), else tenant_var."""
    raw = getattr(record, "tenant_id", None)
    if raw is None:
        given = getattr(record, "tenant", None)
        if given is not None and _TENANT_TAG.fullmatch(str(given)):
            return str(given)
        raw = given if given is not None else tenant_var.get()
    return hash_tenant(str(raw)) if raw else None


def structured_fields(record: logging.LogRecord) -> dict[str, Any]:
    """A record's own fields: request_id, tenant (hashed; a raw ``tenant_id`` never leaves), record_ids
    (capped, with record_ids_total) and every other ``extra=`` value."""
    out: dict[str, Any] = {}
    rid = getattr(record, "request_id", None) or current_request_id()
    if rid:
        out["request_id"] = rid
    tenant = _tenant_tag(record)
    if tenant:
        out["tenant"] = tenant
    for key, value in vars(record).items():
        if key in _STANDARD_ATTRS or key in {"request_id", "tenant", "tenant_id"}:
            continue
        if key == "record_ids" and (capped := _cap_ids(value)) is not None:
            out["record_ids"], total = capped
            if total > MAX_RECORD_IDS:
                out["record_ids_total"] = total
            continue
        out[key] = value
    return out


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, request_id, tenant (hashed), extras, exc."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            **structured_fields(record),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc"] = record.exc_text
        # Defence in depth: the filter already scrubbed the parts; scrub the whole line once more.
        return redact(jsonlib.dumps(out, default=str, ensure_ascii=False))


class ForwardingHandler(logging.Handler):
    """Hands each record to ``sink``'s handlers as a structured record: the message as text, and
    request_id, tenant (hashed), logger and every ``extra=`` field as attributes with JSON-safe values.

    Inside a Ray Serve replica the sink is Serve's logger: its JSON log file then holds each of the app's
    records as one object whose fields are top-level keys (through stderr, Serve would store the app's
    JSON line as the text of its ``message``).
    """

    def __init__(self, sink: logging.Logger) -> None:
        super().__init__()
        self._sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields = jsonlib.loads(jsonlib.dumps(structured_fields(record), default=str, ensure_ascii=False))
            standard = {k: v for k, v in vars(record).items() if k in _STANDARD_ATTRS}
            out = logging.makeLogRecord(standard)
            out.msg, out.args = record.getMessage(), None
            for key, value in {"logger": record.name, **fields}.items():
                setattr(out, key, value)
            self._sink.handle(out)
        except Exception:
            self.handleError(record)


class _PlainFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        record.request_id_text = current_request_id() or "-"
        return redact(super().format(record))


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record is emitted (as ``logging.lastResort`` does).

    A handler bound to the stderr of the moment keeps a stream that a test runner or a wrapper may
    swap out and close; a later record (a library's atexit hook, say) then fails with "I/O operation
    on closed file" instead of reaching the stderr in place.
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:  # StreamHandler.__init__ assigns it; always sys.stderr
        pass


def configure_logging(
    level: str = "INFO",
    *,
    json: bool = True,
    stream: TextIO | None = None,
    sink: logging.Logger | None = None,
) -> None:
    """Install (or replace) hybridmem's root handler: JSON or plain lines on ``stream`` (default: the
    process's stderr, looked up at each record), or, with ``sink``, structured records handed to that
    logger's handlers (:class:`ForwardingHandler`; a Serve replica's log file)."""
    root = logging.getLogger()
    for old in list(root.handlers):
        if old.get_name() == _HANDLER_NAME:
            root.removeHandler(old)
    handler: logging.Handler
    if sink is not None:
        handler = ForwardingHandler(sink)
    else:
        handler = logging.StreamHandler(stream) if stream is not None else _StderrHandler()
        plain = "%(asctime)s %(levelname)s %(name)s [%(request_id_text)s] %(message)s"
        handler.setFormatter(JsonFormatter() if json else _PlainFormatter(plain))
    handler.set_name(_HANDLER_NAME)
    handler.addFilter(RedactingFilter())
    root.addHandler(handler)
    root.setLevel(level.upper())


@contextmanager
def observe_operation(
    store: str,
    operation: str,
    *,
    tenant_id: str | None = None,
    record_ids: Iterable[object] = (),
    records: int = 0,
    logger: logging.Logger | None = None,
) -> Iterator[None]:
    """Metrics (latency, records, errors) and one structured log line for one memory operation."""
    log = logger or _OPS_LOGGER
    start = time.perf_counter()
    extra: dict[str, Any] = {"store": store, "operation": operation, "record_ids": list(record_ids)}
    if tenant_id is not None:
        extra["tenant_id"] = tenant_id
    try:
        with store_operation(store, operation, records=records):
            yield
    except Exception as exc:
        extra["latency_ms"] = round((time.perf_counter() - start) * 1000, 3)
        extra["error"] = type(exc).__name__
        log.warning("%s %s failed", store, operation, extra=extra)
        raise
    extra["latency_ms"] = round((time.perf_counter() - start) * 1000, 3)
    log.info("%s %s", store, operation, extra=extra)
