"""All configuration in one pydantic-settings model.

Env prefix ``HYBRIDMEM_``, nested delimiter ``__`` (``HYBRIDMEM_REDIS__URL``), ``.env`` supported.
Nothing here runs at import: call :func:`Settings` (or :meth:`Settings.load`) when you need it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Scope = Literal["memory:read", "memory:write", "admin"]
ALL_SCOPES: tuple[Scope, ...] = ("memory:read", "memory:write", "admin")
DEFAULT_SCOPES: tuple[Scope, ...] = ("memory:read", "memory:write")

_PLACEHOLDER_SECRETS = {"changeme", "change-me", "secret", "password", "dev", "test", "example"}


class RedisSettings(BaseModel):
    url: str | None = Field(None, description="redis:// URL; unset → an embedded Valkey server is started")
    key_prefix: str = Field("hm", description="Prefix of every key hybridmem writes (tests use their own)")
    socket_timeout_s: float = Field(2.0, gt=0, description="Timeout of every Redis call")
    session_buffer_max_len: int = Field(200, ge=1, description="Turns kept per session buffer")
    session_buffer_ttl_s: int = Field(
        7 * 24 * 3600, ge=1, description="Session buffer TTL, refreshed on write"
    )
    scratchpad_default_ttl_s: int | None = Field(24 * 3600, description="Scratchpad TTL when none is given")


class PostgresSettings(BaseModel):
    dsn: str | None = Field(None, description="postgresql:// DSN; unset → an embedded Postgres is started")
    pool_min_size: int = Field(1, ge=0, description="asyncpg pool: connections kept open")
    pool_max_size: int = Field(10, ge=1, description="asyncpg pool: most connections per process")
    command_timeout_s: float = Field(10.0, gt=0, description="Timeout of every Postgres statement")
    connect_timeout_s: float = Field(5.0, gt=0, description="Timeout of opening a connection")


class QdrantSettings(BaseModel):
    url: str | None = Field(None, description="Qdrant server URL; unset → an embedded store under data_dir")
    api_key: str | None = Field(None, description="Qdrant API key (server mode)")
    backend: Literal["auto", "server", "local", "edge"] = Field(
        "auto", description="auto: server when url is set, else the embedded HNSW engine (edge)"
    )
    path: Path | None = Field(None, description="Directory of the embedded store (default data_dir/qdrant)")
    collection_prefix: str = Field("hybridmem", description="Collections are {prefix}_{model version}")
    alias: str = Field("hybridmem_memories", description="Alias that points at the live collection")
    distance: Literal["Cosine", "Dot", "Euclid"] = Field("Cosine", description="Distance of new collections")
    hnsw_m: int = Field(16, ge=4, description="HNSW graph degree of new collections")
    hnsw_ef_construct: int = Field(100, ge=4, description="HNSW build-time candidate list size")
    search_ef: int = Field(128, ge=4, description="HNSW search-time candidate list size")
    shard_number: int = Field(1, ge=1, description="Shards of new collections (server mode)")
    replication_factor: int = Field(1, ge=1, description="Replicas of each shard (server mode)")
    timeout_s: float = Field(10.0, gt=0, description="Timeout of every Qdrant call")


class EmbeddingSettings(BaseModel):
    model: str = Field(
        "all-MiniLM-L6-v2", description="Model name or local path (default: the packaged model)"
    )
    backend: Literal["auto", "torch", "onnx", "onnx-int8"] = Field(
        "auto",
        description="auto: torch on GPU; on CPU ONNX Runtime, int8 where the CPU has VNNI (else fp32)",
    )
    int8_min_cosine: float = Field(
        0.99,
        ge=0.0,
        le=1.0,
        description=(
            "An int8 export serves only if its vectors agree with its fp32 graph's at least this well"
            " (mean cosine over fixed calibration texts, measured once at export); below it, auto takes"
            " fp32 ONNX and onnx-int8 refuses to start"
        ),
    )
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N (ONNX backends: CPU only)")
    cpu_threads: int | None = Field(
        None,
        ge=1,
        description="CPU cores inference uses: torch threads / concurrent ONNX runs (default: all)",
    )
    model_cache_dir: Path | None = Field(
        None, description="ONNX export cache (default ~/.cache/hybridmem/models; $XDG_CACHE_HOME honoured)"
    )
    max_batch_size: int = Field(64, ge=1, description="@serve.batch max batch size")
    batch_wait_timeout_s: float = Field(0.005, ge=0, description="@serve.batch wait timeout")
    encode_batch_size: int | None = Field(
        None,
        ge=1,
        description="Texts per model call (default: 32 on CPU, 512 on a GPU, the best measured on each)",
    )
    bulk_slice_ms: float = Field(
        50.0,
        gt=0,
        description=(
            "Requests longer than one model batch (consolidation, re-embeds) run in model calls of about"
            " this long while queries are coming, and queries go first in between"
        ),
    )
    cache_enabled: bool = Field(True, description="Redis embedding cache in front of the model")
    cache_ttl_s: int = Field(30 * 24 * 3600, ge=1, description="Embedding cache entry TTL")
    ollama_url: str | None = Field(None, description="Ollama base URL used as fallback model host")
    ollama_model: str = Field("nomic-embed-text", description="Ollama embedding model for the fallback")
    ollama_timeout_s: float = Field(30.0, gt=0, description="Timeout of every Ollama call")


class RetrievalSettings(BaseModel):
    # Defaults measured on ../shared/bench (LoCoMo recall@10, SciFact nDCG@10): calibrated score fusion
    # (per-tier min-max, equal weights) beat RRF on both; see core/retrieval/quality.py.
    default_k: int = Field(10, ge=1, le=200, description="Hits a search returns when it gives no k")
    fusion: Literal["rrf", "weighted"] = Field("weighted", description="How tier rankings are fused")
    rrf_k: int = Field(60, ge=1, description="RRF rank constant (fusion=rrf)")
    recency_half_life_s: float | None = Field(None, gt=0, description="Recency decay half-life (off: None)")
    mmr_lambda: float = Field(0.7, ge=0, le=1, description="1.0 turns MMR off")
    dedupe_threshold: float = Field(0.95, ge=0, le=1, description="Near-duplicate similarity")
    tokenizer: str | None = Field(None, description="Tokenizer for budgets (default: the embedding model's)")
    default_token_budget: int = Field(
        1024, ge=1, le=32_768, description="Tokens a context may use when the request gives no token_budget"
    )
    context_candidates: int = Field(
        50,
        ge=1,
        le=200,
        description="Ranked candidates a context considers for packing (and fetches from each tier) when "
        "the request gives no candidates",
    )
    # episodic 1.25: chosen by leave-one-fold-out over LoCoMo's 5 conversations and 5 SciFact query
    # folds together (engine BM25; 1.25-1.5 picked on every fold, the objective flat between them; 1.25
    # keeps SciFact where it was): LoCoMo R@10 +1.4 over 1.0, SciFact nDCG@10 -0.003.
    fusion_weights: dict[str, float] = Field(
        default_factory=lambda: {"semantic": 1.0, "episodic": 1.25, "working": 0.5},
        description="Per-tier weight in fusion (tiers: semantic, episodic, working)",
    )
    score_normalisation: Literal["minmax", "zscore"] = Field("minmax", description="Weighted fusion only")
    candidate_k: int = Field(
        100, ge=1, description="Candidates a search fetches from each tier before fusion"
    )
    recency_weight: float = Field(0.3, ge=0, le=1, description="Share of the score subject to recency decay")
    lexical_backend: Literal["engine", "bm25", "ts_rank"] = Field(
        "engine",
        description="Lexical scoring: engine = BM25 sparse vectors in the semantic engine (Postgres BM25 "
        "only for episodes not consolidated yet, and for a collection made before sparse vectors); "
        "bm25 / ts_rank = in Postgres over every episode",
    )
    bm25_k1: float = Field(0.9, gt=0, description="BM25 term-frequency saturation")
    bm25_b: float = Field(0.4, ge=0, le=1, description="BM25 length normalisation")
    bm25_avg_len: float = Field(
        64.0,
        gt=0,
        description="Engine BM25: the average length (distinct terms of a turn and its neighbours) that "
        "term weights are normalised by; fixed per collection, as the weights are written with each point",
    )
    bm25_prune_df: float = Field(
        0.05,
        ge=0,
        le=1,
        description="Query terms in more than this fraction of rows are scored but not used to find "
        "candidates (exact: puts terms back when it cannot prove the result); 0 disables",
    )
    bm25_prune_min_docs: int = Field(10_000, ge=0, description="Tenant size from which BM25 pruning applies")
    bm25_max_scan_rows: int = Field(
        10_000,
        ge=0,
        description="Work budget of a pruned search: when its exact answer needs more rows than this, "
        "only rows with a rarer term and the 2,000 newest rows are scored (scores stay exact); 0: none",
    )
    lexical_neighbour_window: int = Field(2, ge=0, le=5, description="Turns each side scored with a turn")
    lexical_neighbour_weight: float = Field(0.5, ge=0, le=1, description="Weight of neighbour-turn terms")
    chunk_sentences: int = Field(3, ge=1, description="Sentences per extra embedded chunk of long content")
    chunk_stride: int = Field(2, ge=1, description="Sentences between chunk starts")
    lexical_memories: bool = Field(True, description="Lexical tier also searches semantic-memory records")
    working_recent_n: int = Field(3, ge=0, description="Newest session turns the working tier always offers")
    tier_timeout_s: float = Field(2.0, gt=0, description="A tier slower than this is reported degraded")
    fallback_after_s: float = Field(
        5.0,
        gt=0,
        description="The Ingress answers from Postgres and Redis alone (semantic tier degraded) when the "
        "Retriever is down or has not answered in this long",
    )


class LimitSettings(BaseModel):
    max_content_chars: int = Field(32_768, ge=1, description="Largest episode/memory content")
    max_batch_items: int = Field(1_000, ge=1, description="Most items in one batch request")
    max_metadata_bytes: int = Field(16_384, ge=2, description="Largest metadata object (JSON bytes)")
    max_metadata_depth: int = Field(5, ge=1, description="Deepest metadata nesting")
    min_ttl_s: int = Field(1, ge=1, description="Shortest scratchpad TTL")
    max_ttl_s: int = Field(30 * 24 * 3600, ge=1, description="Longest scratchpad TTL")
    max_token_budget: int = Field(32_768, ge=1, description="Largest context token budget")
    max_query_chars: int = Field(4_096, ge=1, description="Longest search query")
    max_id_chars: int = Field(256, ge=1, description="Longest agent/session/client id")
    max_request_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="Largest request body (413 above)")


class ApiKeySpec(BaseModel):
    """An API key as stored in settings: its SHA-256 hash, the tenant it fixes, its scopes."""

    key_sha256: str = Field(min_length=64, max_length=64)
    tenant_id: str = Field(min_length=1)
    scopes: list[Scope] = Field(default_factory=lambda: list(DEFAULT_SCOPES))
    name: str = ""

    @staticmethod
    def hash_key(raw_key: str) -> str:
        return hashlib.sha256(raw_key.encode()).hexdigest()


class AuthSettings(BaseModel):
    api_keys: list[ApiKeySpec] = Field(
        default_factory=list, description="JSON list of {key_sha256, tenant_id, scopes}"
    )
    rate_limit_per_s: float | None = Field(None, gt=0, description="Requests/s per key (off: None)")
    rate_limit_burst: int = Field(100, ge=1, description="Token-bucket size per key")
    cors_origins: list[str] = Field(default_factory=list, description="CORS allowed origins (off when empty)")


class ConsolidationSettings(BaseModel):
    n_partitions: int = Field(16, ge=1, le=4096, description="Episode partitions; fixed once data exists")
    enabled: bool = Field(True, description="Run consolidation on an interval while the app runs")
    interval_s: float = Field(60.0, gt=0, description="Seconds between scheduled runs")
    parallelism: int = Field(2, ge=1, description="Partitions processed at once")
    batch_size: int = Field(256, ge=1, description="Episodes per consolidation batch")
    summary_window_s: int = Field(3600, ge=1, description="Summaries cover one session per time window")
    ollama_summary_url: str | None = Field(None, description="Ollama URL (unset: extractive)")
    ollama_summary_model: str = Field("llama3.2", description="Ollama model for summaries")
    retention_days: int | None = Field(None, ge=1, description="Archive episodes older than this (off: None)")
    idle_session_days: int = Field(30, ge=1, description="Days without writes before a session is idle")
    chunk_long_texts: bool = Field(
        True, description="Also embed sentence-window chunks of long episodes (scored by the best point)"
    )
    embed_slice: int = Field(
        256, ge=1, description="Texts per embedding call of a batch (each call bounded by its own timeout)"
    )
    partition_retries: int = Field(
        2, ge=0, description="A partition pass that times out or loses a store is run again this often"
    )


class Settings(BaseSettings):
    """hybridmem configuration (env prefix ``HYBRIDMEM_``, nested ``__``)."""

    model_config = SettingsConfigDict(
        env_prefix="HYBRIDMEM_", env_nested_delimiter="__", env_file=".env", extra="ignore"
    )

    env: Literal["dev", "test", "prod"] = Field("dev", description="prod refuses placeholder secrets")
    data_dir: Path = Field(Path(".hybridmem"), description="Where embedded servers and stores keep data")
    log_level: str = Field("INFO", description="Python log level")
    log_json: bool = Field(True, description="Structured JSON logs")
    memtrace_interval_s: float | None = Field(
        None, gt=0, description="Log each process's top allocation growth this often (tracemalloc; slow)"
    )
    request_timeout_s: float = Field(30.0, gt=0, description="End-to-end budget of one API request")
    redis: RedisSettings = Field(default_factory=RedisSettings)
    postgres: PostgresSettings = Field(default_factory=PostgresSettings)
    qdrant: QdrantSettings = Field(default_factory=QdrantSettings)
    embedding: EmbeddingSettings = Field(default_factory=EmbeddingSettings)
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    consolidation: ConsolidationSettings = Field(default_factory=ConsolidationSettings)

    @field_validator("log_level")
    @classmethod
    def _level(cls, v: str) -> str:
        v = v.upper()
        if v not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError(f"unknown log level {v!r}")
        return v

    @model_validator(mode="after")
    def _refuse_placeholders_in_prod(self) -> Settings:
        if self.env != "prod":
            return self
        if not self.auth.api_keys:
            raise ValueError("auth.api_keys must be set when env=prod")
        placeholders = {ApiKeySpec.hash_key(p) for p in _PLACEHOLDER_SECRETS}
        for spec in self.auth.api_keys:
            if spec.key_sha256 in placeholders:
                raise ValueError(f"API key for tenant {spec.tenant_id!r} is a placeholder secret")
        if self.qdrant.api_key and self.qdrant.api_key.lower() in _PLACEHOLDER_SECRETS:
            raise ValueError("qdrant.api_key is a placeholder secret")
        return self

    @property
    def qdrant_backend(self) -> Literal["server", "local", "edge"]:
        if self.qdrant.backend != "auto":
            return self.qdrant.backend
        return "server" if self.qdrant.url else "edge"

    @property
    def qdrant_path(self) -> Path:
        return self.qdrant.path or (self.data_dir / "qdrant")


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        cur = out.get(k)
        if isinstance(cur, dict) and isinstance(v, dict):
            out[k] = _deep_merge(cur, v)
        else:
            out[k] = v
    return out


def load_settings(overrides: dict[str, Any] | None = None) -> Settings:
    """Environment/.env first, then ``overrides`` deep-merged on top (used for app args and tests)."""
    base = Settings()
    if not overrides:
        return base
    return Settings(**_deep_merge(base.model_dump(), overrides))
