"""The OpenAI-compatible surface (POST /v1/embeddings, GET /v1/models[/{id}]) as OpenAI's own Python
client sees it: the Ingress's app (same routers, auth and error handlers) with the real small model."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import openai
import pytest

from core.embedding.sentence_model import SentenceTransformerEmbedder
from core.service import HybridMemoryService
from core.settings import EmbeddingSettings, load_settings
from tests.fakes import InMemoryEpisodicStore, InMemoryWorkingStore
from tests.unit.test_scopes import ingress_app

KEYS = {"key-read": ("tenant-a", ["memory:read"]), "key-write": ("tenant-a", ["memory:write"])}


@pytest.fixture(scope="module")
def model() -> Iterator[SentenceTransformerEmbedder]:
    embedder = SentenceTransformerEmbedder(EmbeddingSettings(cpu_threads=1))
    yield embedder
    embedder.close()


@pytest.fixture
async def transport(model: SentenceTransformerEmbedder) -> AsyncIterator[httpx.ASGITransport]:
    settings = load_settings({"limits": {"max_batch_items": 8}})
    service = HybridMemoryService(
        working=InMemoryWorkingStore(), episodic=InMemoryEpisodicStore(), settings=settings
    )
    app = ingress_app(settings, service, KEYS, embedder=model)
    async with app.router.lifespan_context(app):
        yield httpx.ASGITransport(app=app)


def _client(transport: httpx.ASGITransport, key: str = "key-read") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url="http://test/v1",
        api_key=key,
        http_client=httpx.AsyncClient(transport=transport, base_url="http://test"),
        max_retries=0,
    )


async def test_openai_client_lists_models_and_embeds(
    transport: httpx.ASGITransport, model: SentenceTransformerEmbedder
) -> None:
    client = _client(transport)
    models = [m async for m in client.models.list()]
    assert [(m.id, m.object, m.owned_by) for m in models] == [("all-MiniLM-L6-v2", "model", "hybridmem")]
    assert (await client.models.retrieve("all-MiniLM-L6-v2")).id == "all-MiniLM-L6-v2"
    assert (await client.models.retrieve(model.version.key)).id == "all-MiniLM-L6-v2"
    out = await client.embeddings.create(input=["window seat", "aisle seat"], model="all-MiniLM-L6-v2")
    assert [d.index for d in out.data] == [0, 1] and len(out.data[0].embedding) == 384
    assert out.model == model.version.key and out.usage.total_tokens > 0
    # The client's default base64 transfer decodes to the same vectors as floats.
    floats = await client.embeddings.create(input="window seat", model="m", encoding_format="float")
    assert floats.data[0].embedding == pytest.approx(out.data[0].embedding, abs=1e-4)


@pytest.mark.parametrize(
    ("kwargs", "param", "fragment"),
    [
        ({"input": []}, "input", "must not be empty"),
        ({"input": [[101, 2054, 102]]}, "input", "check_embedding_ctx_length=False"),
        ({"input": ["a"] * 9}, "input", "at most 8"),
        ({"input": "ok", "dimensions": 512}, "dimensions", "384 dimensions"),
    ],
)
async def test_bad_input_is_openais_400_naming_the_param(
    transport: httpx.ASGITransport, kwargs: dict[str, Any], param: str, fragment: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await _client(transport).embeddings.create(model="m", **kwargs)
    err = caught.value
    assert err.status_code == 400
    assert (err.type, err.param, err.code) == ("invalid_request_error", param, "invalid_input")
    assert fragment in err.message


async def test_auth_and_unknown_model_errors_are_openais(transport: httpx.ASGITransport) -> None:
    with pytest.raises(openai.AuthenticationError) as unauthenticated:
        await _client(transport, key="not-a-key").embeddings.create(input="x", model="m")
    assert unauthenticated.value.code == "invalid_api_key"
    with pytest.raises(openai.PermissionDeniedError) as unscoped:
        await _client(transport, key="key-write").models.list()
    assert unscoped.value.code == "forbidden"
    with pytest.raises(openai.NotFoundError) as missing:
        await _client(transport).models.retrieve("text-embedding-3-small")
    assert (missing.value.code, missing.value.type) == ("model_not_found", "invalid_request_error")
    assert "text-embedding-3-small" in missing.value.message


async def test_native_routes_keep_hybridmems_error_shape(transport: httpx.ASGITransport) -> None:
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        r = await http.post("/v1/embeddings/batch", json={"texts": []}, headers={"X-API-Key": "key-read"})
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "invalid_input" and r.json()["error"]["field"] == "texts"


async def test_langchain_openai_embeddings(
    transport: httpx.ASGITransport, model: SentenceTransformerEmbedder
) -> None:
    """LangChain's ``OpenAIEmbeddings`` pointed at hybridmem. With its defaults it tokenises with tiktoken
    (which downloads its tables, so not offline) and sends token arrays, which the server refuses naming
    ``check_embedding_ctx_length=False`` (test above); with that setting it sends text."""
    from langchain_openai import OpenAIEmbeddings

    embeddings = OpenAIEmbeddings(
        model="all-MiniLM-L6-v2", base_url="http://test/v1", api_key="key-read",  # type: ignore[arg-type]
        check_embedding_ctx_length=False, max_retries=0,
        http_async_client=httpx.AsyncClient(transport=transport, base_url="http://test"),
    )  # fmt: skip
    docs = await embeddings.aembed_documents(["window seat", "aisle seat"])
    query = await embeddings.aembed_query("window seat")
    direct = (await model.embed(["window seat", "aisle seat"])).vectors
    assert [len(v) for v in docs] == [384, 384]
    assert docs[0] == pytest.approx(direct[0], abs=1e-4) and docs[1] == pytest.approx(direct[1], abs=1e-4)
    assert query == pytest.approx(direct[0], abs=1e-4)


async def test_llamaindex_openai_embedding(
    transport: httpx.ASGITransport, model: SentenceTransformerEmbedder
) -> None:
    """LlamaIndex's ``OpenAIEmbedding`` accepts only OpenAI's model names: give one (the server answers
    with its own model, named in each response's ``model``)."""
    from llama_index.embeddings.openai import OpenAIEmbedding

    embedding = OpenAIEmbedding(
        model="text-embedding-3-small", api_base="http://test/v1", api_key="key-read", max_retries=0,
        async_http_client=httpx.AsyncClient(transport=transport, base_url="http://test"),
    )  # fmt: skip
    text = await embedding.aget_text_embedding("window seat")
    query = await embedding.aget_query_embedding("window seat")
    batch = await embedding.aget_text_embedding_batch(["window seat", "aisle seat"])
    direct = (await model.embed(["window seat", "aisle seat"])).vectors
    assert len(text) == 384 and text == pytest.approx(direct[0], abs=1e-4)
    assert query == pytest.approx(direct[0], abs=1e-4)
    assert [b == pytest.approx(d, abs=1e-4) for b, d in zip(batch, direct, strict=True)] == [True, True]
