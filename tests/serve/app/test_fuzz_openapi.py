"""Fuzz the real app (local Ray + Serve, loopback only) from its own OpenAPI with schemathesis.

Three runs, each with schemathesis' built-in conformance checks (status code, content type, response
schema, response headers) plus ours (no 5xx but the declared one; every 4xx carries ``error.code`` and
``error.message``, OpenAI's shape on the OpenAI routes):

- every operation with generated requests (``HYBRIDMEM_FUZZ_EXAMPLES`` per operation: 8 in ``make
  test``, 50 in the long run whose figures are in docs/reliability.md);
- negative auth: every operation without a key, with an unknown key and with a key lacking its scope
  must answer 401, 401 and 403;
- stateful sequences along the document's OpenAPI links (create → read → update → delete).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from deployments.http.errors import is_openai_route
from tests.serve.conftest import AppServer
from tests.unit.test_scopes import expected_scope

pytestmark = [pytest.mark.serve, pytest.mark.timeout(900)]

REQUEST_TIMEOUT_S = 30.0
EXAMPLES = int(os.environ.get("HYBRIDMEM_FUZZ_EXAMPLES", "8"))  # per operation
# The consolidation scheduler is not deployed with consolidation disabled: its 503 is the declared answer.
DECLARED_503 = {("POST", "/v1/admin/consolidations")}
CHECKS = [
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
UNGUARDED = {"/healthz", "/readyz"}
# The key lacking each scope (tests/serve/app/conftest.py).
UNDER_SCOPED = {"memory:read": "a_wo", "memory:write": "a_ro", "admin": "a_rw"}


def check_answer(method: str, path: str, status: int, body: Any, text: str) -> None:
    if status >= 500:
        assert (method, path) in DECLARED_503 and status == 503, f"{method} {path} -> {status}: {text[:500]}"
    if 400 <= status < 500:
        err = body.get("error") if isinstance(body, dict) else None
        assert isinstance(err, dict), f"{method} {path} -> {status} without an error object: {text[:500]}"
        if is_openai_route(path):
            assert err.get("message") and err.get("type"), f"{method} {path} -> {status}: {text[:500]}"
        else:
            assert err.get("code") and err.get("message"), f"{method} {path} -> {status}: {text[:500]}"


def _verify(case: Any, response: Any, headers: dict[str, str], failures: list[str]) -> None:
    try:
        body = response.json()
    except ValueError:
        body = None
    try:
        check_answer(case.method.upper(), case.path, response.status_code, body, response.text)
        case.validate_response(response, headers=headers, checks=CHECKS)
    except (AssertionError, Exception) as exc:  # schemathesis raises a FailureGroup
        req = response.request
        failures.append(f"{str(exc)[:1500]}\n  request: {req.method} {req.url} body={req.body!r:.300}")
        raise AssertionError(str(exc)) from exc


def _operations(app_server: AppServer) -> tuple[Any, list[Any]]:
    schema = schemathesis.openapi.from_url(f"{app_server.base_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) >= 25
    return schema, operations


def _each(operation: Any, examples: int, body: Any) -> None:
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy())
    def run(case: Any) -> None:
        body(case)

    with contextlib.suppress(AssertionError):  # recorded; keep fuzzing the other operations
        run()


def test_api_conforms_to_its_schema_and_never_5xx(app_server: AppServer) -> None:
    """Each operation in turn (schemathesis' own pytest loader does not run under this pytest)."""
    _, operations = _operations(app_server)
    headers = {"Authorization": f"Bearer {app_server.keys['a_admin']}"}
    failures: list[str] = []
    for operation in operations:
        _each(
            operation,
            EXAMPLES,
            lambda case: _verify(
                case, case.call(headers=headers, timeout=REQUEST_TIMEOUT_S), headers, failures
            ),
        )
    assert not failures, "\n".join(failures)


def test_every_operation_refuses_missing_unknown_and_under_scoped_keys(app_server: AppServer) -> None:
    _, operations = _operations(app_server)
    failures: list[str] = []
    for operation in operations:
        method, path = operation.method.upper(), operation.path
        if path in UNGUARDED:
            continue
        scope = expected_scope(method, path)
        attempts = [({}, 401), ({"Authorization": "Bearer not-a-key"}, 401)]
        attempts.append(({"Authorization": f"Bearer {app_server.keys[UNDER_SCOPED[scope]]}"}, 403))

        def probe(case: Any, attempts: list[Any] = attempts, method: str = method, path: str = path) -> None:
            for headers, want in attempts:
                response = case.call(headers=headers, timeout=REQUEST_TIMEOUT_S)
                if response.status_code != want:
                    failures.append(
                        f"{method} {path} with {headers or 'no key'}: {response.status_code}, want {want}"
                    )
                _verify(case, response, headers, failures)

        _each(operation, 1, probe)
    assert not failures, "\n".join(failures)


def test_stateful_sequences_follow_the_links(app_server: AppServer) -> None:
    schema, _ = _operations(app_server)
    headers = {"Authorization": f"Bearer {app_server.keys['a_rw']}"}
    assert schema.operations_with_incoming_links(), "the document declares no links"

    class Sequences(schema.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"headers": headers, "timeout": REQUEST_TIMEOUT_S}

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            _verify(case, response, headers, [])

    Sequences.run(
        settings=settings(
            max_examples=max(10, EXAMPLES * 2),
            stateful_step_count=6,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
    )
