"""Embedding HTTP API: OpenAI-compatible ``POST /v1/embeddings`` and ``GET /v1/models``, a native batch
endpoint, model info.

Standalone routers: the Ingress mounts them with its auth dependency; tests mount them on a bare FastAPI
app. Bad input (empty list, empty or non-string item, too many texts, text too long, token arrays) is
refused naming the field; in the Ingress the OpenAI-compatible routes answer in OpenAI's error shape
(``deployments.http.errors``).
"""

import base64
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, Literal, cast

import numpy as np
from fastapi import APIRouter, Depends
from fastapi.params import Depends as DependsParam
from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.embedding.types import EmbedResult, TextEmbedder
from core.errors import NotFound
from core.models import ModelVersion

DEFAULT_MAX_TEXTS = 1_000
DEFAULT_MAX_TEXT_CHARS = 32_768


TOKEN_ARRAYS = (
    "token arrays are not accepted: send the texts themselves (LangChain: "
    "OpenAIEmbeddings(check_embedding_ctx_length=False); the served model tokenizes with its own "
    "tokenizer, not OpenAI's)"
)


def _is_tokens(value: Any) -> bool:
    """OpenAI's other input forms: one token array, or a list of them."""
    if not isinstance(value, list) or not value:
        return False
    items = value if isinstance(value[0], list) else [value]
    return all(isinstance(i, list) and i and all(type(t) is int for t in i) for i in items)


def _check_texts(value: Any, field: str, max_texts: int, max_chars: int) -> list[str]:
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list):
        raise ValueError(f"{field} must be a string or a list of strings")
    if not texts:
        raise ValueError(f"{field} must not be empty")
    if _is_tokens(texts):
        raise ValueError(f"{field}: {TOKEN_ARRAYS}")
    if len(texts) > max_texts:
        raise ValueError(f"{field} has {len(texts)} texts; at most {max_texts} per request")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"{field}[{i}] must be a string, got {type(text).__name__}")
        if not text:
            raise ValueError(f"{field}[{i}] must not be an empty string")
        if len(text) > max_chars:
            raise ValueError(f"{field}[{i}] has {len(text)} characters; at most {max_chars}")
    return texts


class OpenAIEmbeddingRequest(BaseModel):
    """OpenAI's embeddings request (token-array inputs are not supported)."""

    model_config = ConfigDict(extra="ignore")

    max_texts: ClassVar[int] = DEFAULT_MAX_TEXTS
    max_text_chars: ClassVar[int] = DEFAULT_MAX_TEXT_CHARS

    input: Any = Field(description="A string or a list of strings")
    model: str | None = Field(None, description="Accepted for compatibility; the served model is reported")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = None

    @field_validator("input", mode="before")
    @classmethod
    def _input(cls, v: Any) -> list[str]:
        return _check_texts(v, "input", cls.max_texts, cls.max_text_chars)


class BatchEmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_texts: ClassVar[int] = DEFAULT_MAX_TEXTS
    max_text_chars: ClassVar[int] = DEFAULT_MAX_TEXT_CHARS

    texts: Any = Field(description="The texts to embed, in order")

    @field_validator("texts", mode="before")
    @classmethod
    def _texts(cls, v: Any) -> list[str]:
        return _check_texts(v, "texts", cls.max_texts, cls.max_text_chars)


class ModelVersionOut(BaseModel):
    name: str
    revision: str
    dimension: int
    backend: str
    key: str

    @classmethod
    def of(cls, v: ModelVersion) -> "ModelVersionOut":
        return cls(name=v.name, revision=v.revision, dimension=v.dimension, backend=v.backend, key=v.key)


class BatchEmbeddingResponse(BaseModel):
    vectors: list[list[float]]
    truncated: list[bool]
    model_version: ModelVersionOut
    cache_hits: int
    token_counts: list[int]


class ModelInfo(BaseModel):
    """Like TEI's ``/info``: which model answers, its window, its version."""

    name: str
    revision: str
    dimension: int
    backend: str
    key: str
    max_seq_length: int | None = None


def _openai_body(result: EmbedResult, encoding_format: str) -> dict[str, Any]:
    data: list[dict[str, Any]] = []
    for i, vector in enumerate(result.vectors):
        embedding: Any = vector
        if encoding_format == "base64":
            embedding = base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
        data.append({"object": "embedding", "index": i, "embedding": embedding})
    tokens = sum(result.token_counts)
    return {
        "object": "list",
        "data": data,
        "model": result.version.key,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def build_embeddings_router(
    get_embedder: Callable[..., TextEmbedder | Awaitable[TextEmbedder]],
    read_scope_dependency: Any = None,
    *,
    max_texts: int = DEFAULT_MAX_TEXTS,
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS,
) -> APIRouter:
    """Routes under ``/v1/embeddings``; ``get_embedder`` is a FastAPI dependency (it may take the Request)."""
    dependencies: list[Any] = []
    if read_scope_dependency is not None:
        dep = read_scope_dependency
        dependencies.append(dep if isinstance(dep, DependsParam) else Depends(dep))
    router = APIRouter(prefix="/v1/embeddings", tags=["embeddings"], dependencies=dependencies)
    limits = {"max_texts": max_texts, "max_text_chars": max_text_chars}
    # Per-router subclasses carry this router's limits into validation (FastAPI validates the body).
    openai_model = type("OpenAIEmbeddingRequest", (OpenAIEmbeddingRequest,), dict(limits))
    batch_model = type("BatchEmbeddingRequest", (BatchEmbeddingRequest,), dict(limits))

    @router.post("", summary="Embed texts (OpenAI embeddings API shape)")
    async def create_embeddings(
        body: openai_model,  # type: ignore[valid-type]
        embedder: TextEmbedder = Depends(get_embedder),  # noqa: B008 (FastAPI dependency)
    ) -> dict[str, Any]:
        req = cast(OpenAIEmbeddingRequest, body)
        if req.dimensions is not None:
            version = await embedder.model_version()
            if req.dimensions != version.dimension:
                msg = f"the model has {version.dimension} dimensions, not {req.dimensions}"
                _raise_422("dimensions", msg)
        result = await embedder.embed(req.input)
        return _openai_body(result, req.encoding_format)

    @router.post("/batch", summary="Embed texts (native: truncation flags and the model version)")
    async def embed_batch(
        body: batch_model,  # type: ignore[valid-type]
        embedder: TextEmbedder = Depends(get_embedder),  # noqa: B008 (FastAPI dependency)
    ) -> BatchEmbeddingResponse:
        req = cast(BatchEmbeddingRequest, body)
        result = await embedder.embed(req.texts)
        return BatchEmbeddingResponse(
            vectors=result.vectors,
            truncated=result.truncated,
            model_version=ModelVersionOut.of(result.version),
            cache_hits=result.cache_hits,
            token_counts=result.token_counts,
        )

    @router.get("/model", summary="The served embedding model (name, revision, dimension, window)")
    async def model_info(
        embedder: TextEmbedder = Depends(get_embedder),  # noqa: B008 (FastAPI dependency)
    ) -> ModelInfo:
        version = await embedder.model_version()
        info_fn = getattr(embedder, "info", None)
        info: dict[str, Any] = dict(await info_fn()) if info_fn is not None else {}
        window = info.get("max_seq_length")
        return ModelInfo(**ModelVersionOut.of(version).model_dump(), max_seq_length=window)

    return router


class ModelObject(BaseModel):
    """OpenAI's model object: ``id`` is what clients pass as ``model``."""

    id: str
    object: Literal["model"] = "model"
    created: int = Field(0, description="Not tracked for a served model (0)")
    owned_by: str = "hybridmem"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelObject]


def build_models_router(
    get_embedder: Callable[..., TextEmbedder | Awaitable[TextEmbedder]], read_scope_dependency: Any = None
) -> APIRouter:
    """OpenAI's ``GET /v1/models`` and ``GET /v1/models/{model}``: the served embedding model, by its
    name (what ``model`` in an embeddings request names) or its version key (``name@revision``)."""
    dependencies: list[Any] = []
    if read_scope_dependency is not None:
        dep = read_scope_dependency
        dependencies.append(dep if isinstance(dep, DependsParam) else Depends(dep))
    router = APIRouter(prefix="/v1/models", tags=["embeddings"], dependencies=dependencies)

    @router.get("", summary="Models served (OpenAI models API shape)")
    async def list_models(
        embedder: TextEmbedder = Depends(get_embedder),  # noqa: B008 (FastAPI dependency)
    ) -> ModelList:
        version = await embedder.model_version()
        return ModelList(data=[ModelObject(id=version.name)])

    @router.get("/{model_id:path}", summary="One served model (OpenAI models API shape)")
    async def get_model(
        model_id: str,
        embedder: TextEmbedder = Depends(get_embedder),  # noqa: B008 (FastAPI dependency)
    ) -> ModelObject:
        version = await embedder.model_version()
        if model_id not in (version.name, version.key):
            raise NotFound("model", model_id)
        return ModelObject(id=version.name)

    return router


def _raise_422(field: str, message: str) -> None:
    from fastapi.exceptions import RequestValidationError

    raise RequestValidationError([{"loc": ("body", field), "msg": message, "type": "value_error"}])
