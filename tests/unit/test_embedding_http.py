"""The embeddings router on a bare FastAPI app with the real small model (no Ray, no stores)."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import numpy as np
import pytest
from fastapi import FastAPI, Header, HTTPException
from fastapi.testclient import TestClient

from core.embedding.sentence_model import SentenceTransformerEmbedder
from core.settings import EmbeddingSettings
from deployments.http.embeddings import build_embeddings_router


@pytest.fixture(scope="module")
def model() -> Iterator[SentenceTransformerEmbedder]:
    embedder = SentenceTransformerEmbedder(EmbeddingSettings(cpu_threads=1))
    yield embedder
    embedder.close()


def require_key(x_api_key: str | None = Header(None)) -> None:
    if x_api_key != "reader":
        raise HTTPException(401, "missing key")


@pytest.fixture(scope="module")
def client(model: SentenceTransformerEmbedder) -> Iterator[TestClient]:
    app = FastAPI()
    app.include_router(build_embeddings_router(lambda: model, require_key, max_texts=8, max_text_chars=2000))
    with TestClient(app, headers={"X-API-Key": "reader"}) as c:
        yield c


def test_openai_shape_float_and_base64(client: TestClient, model: SentenceTransformerEmbedder) -> None:
    texts = ["The food was delicious and the waiter was friendly.", "hello"]
    r = client.post("/v1/embeddings", json={"input": texts, "model": "text-embedding-3-small"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list"
    assert body["model"] == model.version.key
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert all(d["object"] == "embedding" and len(d["embedding"]) == 384 for d in body["data"])
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > 0
    np.testing.assert_allclose([d["embedding"] for d in body["data"]], model.encode(texts), atol=1e-5)

    r64 = client.post("/v1/embeddings", json={"input": "hello", "model": "x", "encoding_format": "base64"})
    assert r64.status_code == 200, r64.text
    # Decoded the way the OpenAI client does: little-endian float32.
    decoded = np.frombuffer(base64.b64decode(r64.json()["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(decoded, model.encode(["hello"])[0], atol=1e-6)
    np.testing.assert_allclose(decoded, body["data"][1]["embedding"], atol=1e-4)  # other batch: padding


def test_native_batch_reports_truncation_and_version(
    client: TestClient, model: SentenceTransformerEmbedder
) -> None:
    r = client.post("/v1/embeddings/batch", json={"texts": ["short", "token " * 300]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["truncated"] == [False, True]
    assert body["model_version"]["key"] == model.version.key
    assert body["model_version"]["dimension"] == 384 and len(body["vectors"]) == 2


def test_model_info_like_tei(client: TestClient, model: SentenceTransformerEmbedder) -> None:
    r = client.get("/v1/embeddings/model")
    assert r.status_code == 200
    assert r.json() == {
        "name": "all-MiniLM-L6-v2",
        "revision": model.version.revision,
        "dimension": 384,
        "backend": model.version.backend,
        "key": model.version.key,
        "max_seq_length": 256,
    }


@pytest.mark.parametrize(
    ("path", "body", "field", "fragment"),
    [
        ("/v1/embeddings", {"input": [], "model": "m"}, "input", "must not be empty"),
        ("/v1/embeddings", {"input": ["ok", 3], "model": "m"}, "input", "input[1] must be a string"),
        ("/v1/embeddings", {"input": [[1, 2, 3]], "model": "m"}, "input", "check_embedding_ctx_length=False"),
        ("/v1/embeddings", {"input": [101, 7592], "model": "m"}, "input", "token arrays are not accepted"),
        ("/v1/embeddings", {"input": [[1, 2], "text"], "model": "m"}, "input", "input[0] must be a string"),
        ("/v1/embeddings", {"input": [""], "model": "m"}, "input", "input[0] must not be an empty string"),
        ("/v1/embeddings", {"input": ["a"] * 9, "model": "m"}, "input", "at most 8"),
        ("/v1/embeddings", {"input": "x" * 2001, "model": "m"}, "input", "at most 2000"),
        ("/v1/embeddings", {"input": "ok", "encoding_format": "int8"}, "encoding_format", ""),
        ("/v1/embeddings", {"input": "ok", "dimensions": 512}, "dimensions", "384 dimensions"),
        ("/v1/embeddings", {"model": "m"}, "input", ""),
        ("/v1/embeddings/batch", {"texts": "not-a-list-is-fine-but-empty-is-not", "extra": 1}, "extra", ""),
        ("/v1/embeddings/batch", {"texts": [None]}, "texts", "texts[0] must be a string"),
    ],
)
def test_bad_input_is_422_naming_the_field(
    client: TestClient, path: str, body: dict[str, object], field: str, fragment: str
) -> None:
    r = client.post(path, json=body)
    assert r.status_code == 422, r.text
    errors = r.json()["detail"]
    assert any(field in [str(p) for p in e["loc"]] and fragment in e["msg"] for e in errors), errors


def test_read_scope_dependency_guards_every_route(client: TestClient) -> None:
    assert (
        client.post("/v1/embeddings", json={"input": "x"}, headers={"X-API-Key": "nope"}).status_code == 401
    )
    assert client.get("/v1/embeddings/model", headers={"X-API-Key": "nope"}).status_code == 401
