"""Ollama fallback against a local stand-in that speaks Ollama's /api/embed and /api/show.

Ollama itself is outside the product, so a tiny HTTP server on 127.0.0.1 plays its part.
"""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from core.embedding.loader import load_embedder
from core.embedding.ollama import OllamaEmbedder
from core.embedding.sentence_model import SentenceTransformerEmbedder
from core.errors import InvalidInput, ModelUnavailable
from core.settings import EmbeddingSettings, QdrantSettings

pytestmark = pytest.mark.integration

DIM = 16
DIGEST = "sha256:7f3c2a9d1e0b5c4a8f6e2d1c0b9a8f7e6d5c4b3a2918f7e6d5c4b3a2918f7e6d"


def fake_vector(text: str) -> list[float]:
    raw = hashlib.sha256(text.encode()).digest()
    return [b - 128.0 for b in raw[:DIM]]  # deliberately not normalised: the client must normalise


class FakeOllama(BaseHTTPRequestHandler):
    requests: list[tuple[str, dict[str, Any]]]

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.requests.append((self.path, body))
        if self.path == "/api/embed":
            inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
            reply: dict[str, Any] = {"model": body["model"], "embeddings": [fake_vector(t) for t in inputs]}
        elif self.path == "/api/show":
            reply = {"details": {"family": "nomic-bert", "digest": DIGEST}, "model_info": {}}
        else:
            self.send_error(404)
            return
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        return


@pytest.fixture(scope="module")
def ollama_url() -> Iterator[str]:
    handler = type("Handler", (FakeOllama,), {"requests": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _unloadable(tmp_path: Path, **kw: Any) -> EmbeddingSettings:
    broken = tmp_path / "broken-model"
    broken.mkdir(exist_ok=True)
    (broken / "config.json").write_text("{not json")
    return EmbeddingSettings(model=str(broken), ollama_model="nomic-embed-text", ollama_timeout_s=5, **kw)


async def test_fallback_to_ollama_when_the_local_model_cannot_load(ollama_url: str, tmp_path: Path) -> None:
    async with httpx.AsyncClient() as client:
        embedder = await load_embedder(_unloadable(tmp_path, ollama_url=ollama_url), client=client)
        assert isinstance(embedder, OllamaEmbedder)
        version = await embedder.model_version()
        result = await embedder.embed(["alpha", "beta"])
    assert version.key == "ollama/nomic-embed-text@7f3c2a9d1e0b"
    assert version.dimension == DIM and version.backend == "ollama"
    assert result.version == version
    arr = np.asarray(result.vectors)
    np.testing.assert_allclose(np.linalg.norm(arr, axis=1), 1.0, atol=1e-6)
    expected = np.asarray(fake_vector("alpha"), dtype=np.float32)
    np.testing.assert_allclose(arr[0], expected / np.linalg.norm(expected), atol=1e-6)


async def test_no_fallback_configured_raises_model_unavailable(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable, match="no fallback configured"):
        await load_embedder(_unloadable(tmp_path))


async def test_unreachable_ollama_names_both_failures(tmp_path: Path) -> None:
    settings = _unloadable(tmp_path, ollama_url="http://127.0.0.1:9")  # discard port: nothing listens
    with pytest.raises(ModelUnavailable, match=r"Ollama fallback .* failed too"):
        await load_embedder(settings)


async def test_fallback_vectors_get_their_own_collection(ollama_url: str, tmp_path: Path) -> None:
    """A fallback model has its own version, hence its own collection; the two never mix."""
    from datetime import UTC, datetime

    from core.models import MemoryRecord
    from core.points import memory_point
    from core.stores.edge_index import EdgeVectorIndex

    local = SentenceTransformerEmbedder(EmbeddingSettings(cpu_threads=1))
    try:
        local_version = await local.model_version()
        local_vec = (await local.embed(["the same text"])).vectors[0]
    finally:
        local.close()
    async with httpx.AsyncClient() as client:
        fallback = OllamaEmbedder(ollama_url, "nomic-embed-text", 5.0, client)
        fb_result = await fallback.embed(["the same text"])
    fb_version = fb_result.version
    assert fb_version != local_version and fb_version.key != local_version.key

    now = datetime.now(UTC)
    record = MemoryRecord(
        id=uuid.uuid4(),
        tenant_id="t1",
        agent_id="a1",
        content="the same text",
        created_at=now,
        updated_at=now,
    )
    index = await EdgeVectorIndex.open(tmp_path / "qdrant", settings=QdrantSettings())
    try:
        local_coll = await index.ensure_collection(local_version)
        fb_coll = await index.ensure_collection(fb_version)
        assert local_coll != fb_coll
        assert await index.live_version() == fb_version.key
        await index.upsert([memory_point(record, local_vec, local_version)], collection=local_coll)
        await index.upsert([memory_point(record, fb_result.vectors[0], fb_version)], collection=fb_coll)
        with pytest.raises(InvalidInput):  # the index refuses another model's vectors
            await index.upsert(
                [memory_point(record, fb_result.vectors[0], fb_version)], collection=local_coll
            )
        hits = await index.search(fb_result.vectors[0], tenant_id="t1", k=5, collection=fb_coll)
        assert [h.payload["model_version"] for h in hits] == [fb_version.key]
        assert hits[0].payload["dimension"] == DIM
        local_hits = await index.search(local_vec, tenant_id="t1", k=5, collection=local_coll)
        assert [h.payload["model_version"] for h in local_hits] == [local_version.key]
        assert await index.count(collection=local_coll) == await index.count(collection=fb_coll) == 1
    finally:
        await index.close()
