"""The OpenAPI document tells the whole truth: every error an operation can answer, in the error shape
it is answered in, and the links a client follows from what it created to what it can do with it.

FastAPI documents 200s and a 422 of its own validation-error shape; the app answers errors as
``{"error": {"code", "message", ...}}`` (deployments.http.errors), OpenAI-compatible routes as OpenAI's
``{"error": {"message", "type", "param", "code"}}`` with 400 for invalid input. This module rewrites each
operation's responses to match (checked by schemathesis' status-code and response-schema conformance in
tests/serve/app/test_fuzz_openapi.py), and adds OpenAPI links (create → read → update → delete) that
its stateful run follows.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from deployments.http.errors import is_openai_route

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "description": "Machine-readable error code"},
                "message": {"type": "string"},
                "field": {"type": "string", "description": "The request field at fault"},
                "details": {"type": "array", "items": {"type": "object"}},
            },
        }
    },
}
_OPENAI_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}
_WHY = {
    400: "Invalid input (OpenAI-compatible routes)",
    401: "Missing or unknown API key",
    403: "The key lacks the scope this operation needs",
    404: "No such resource in the caller's tenant",
    409: "Conflicts with the current state",
    413: "Request body too large",
    422: "Invalid input; `error.field` names the field",
    429: "Rate limited; see Retry-After",
    500: "Internal error (logged with the request id)",
    503: "A store or model is unavailable; see Retry-After",
    504: "Not answered within the request timeout",
}
# (method, path) of operations that answer 409, and each creating operation's links: the response's
# JSON pointer to the new id, and the operations (method, path, path parameter) it feeds.
_CONFLICTS = {("post", "/v1/admin/consolidations")}
_LINKS: dict[tuple[str, str], tuple[str, list[tuple[str, str, str]]]] = {
    ("post", "/v1/memories"): (
        "/id",
        [
            ("get", "/v1/memories/{memory_id}", "memory_id"),
            ("patch", "/v1/memories/{memory_id}", "memory_id"),
            ("get", "/v1/memories/{memory_id}/history", "memory_id"),
            ("delete", "/v1/memories/{memory_id}", "memory_id"),
        ],
    ),
    ("post", "/v1/episodes"): (
        "/id",
        [
            ("get", "/v1/episodes/{episode_id}", "episode_id"),
            ("delete", "/v1/episodes/{episode_id}", "episode_id"),
        ],
    ),
    ("post", "/v1/transcripts"): (
        "/transcript/id",
        [("get", "/v1/transcripts/{transcript_id}", "transcript_id")],
    ),
    ("post", "/v1/admin/consolidations"): ("/id", [("get", "/v1/admin/consolidations/{run_id}", "run_id")]),
}


def _statuses(method: str, path: str, op: dict[str, Any]) -> list[int]:
    if not path.startswith("/v1/"):
        return [503] if path == "/readyz" else []
    out = [401, 403, 429, 500, 503, 504]
    has_input = "requestBody" in op or bool(op.get("parameters"))
    if has_input:
        out.append(400 if is_openai_route(path) else 422)
    if "requestBody" in op:
        out.append(413)
    if "{" in path:
        out.append(404)
    if (method, path) in _CONFLICTS:
        out.append(409)
    return out


def _links(spec: dict[str, Any]) -> None:
    ids = {(m, p): op.get("operationId") for p, ops in spec["paths"].items() for m, op in ops.items()}
    for (method, path), (pointer, targets) in _LINKS.items():
        op = spec["paths"].get(path, {}).get(method)
        if op is None:
            continue
        ok = next((code for code in op["responses"] if code.startswith("2")), None)
        if ok is None:
            continue
        op["responses"][ok]["links"] = {
            ids[(m, p)]: {"operationId": ids[(m, p)], "parameters": {param: f"$response.body#{pointer}"}}
            for m, p, param in targets
            if ids.get((m, p))
        }


def document(app: FastAPI) -> None:
    """Make ``app.openapi()`` return the rewritten document (built once, then cached like FastAPI's)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        spec = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        schemas = spec.setdefault("components", {}).setdefault("schemas", {})
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
        schemas["Error"] = _ERROR
        schemas["OpenAIError"] = _OPENAI_ERROR
        for path, ops in spec["paths"].items():
            ref = "#/components/schemas/" + ("OpenAIError" if is_openai_route(path) else "Error")
            for method, op in ops.items():
                responses = op.setdefault("responses", {})
                if path == "/readyz" and "200" in responses:  # not ready: the same report, with 503
                    responses["503"] = {**responses["200"], "description": "No store answers"}
                    continue
                responses.pop("422", None)
                for status in _statuses(method, path, op):
                    responses[str(status)] = {
                        "description": _WHY[status],
                        "content": {"application/json": {"schema": {"$ref": ref}}},
                    }
        _links(spec)
        app.openapi_schema = spec
        return spec

    app.openapi = openapi  # type: ignore[method-assign]
