"""Shared helpers of the consolidation, retention and re-embedding tests (real Postgres, Redis, model).

Consolidation works on whole partitions and one checkpoint table, so each test gets its own database,
cloned from a migrated template (fast), instead of the shared session database.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from core import migrate
from core.consolidation.partition import PartitionStores
from core.consolidation.runs import RunStore
from core.consolidation.summarise import ExtractiveSummariser
from core.embedding.sentence_model import SentenceTransformerEmbedder
from core.embedding.types import TextEmbedder
from core.ids import content_hash, deterministic_id, partition_of
from core.models import Episode, Role
from core.ports import VectorIndex
from core.retrieval.bm25_sparse import bm25_sparse
from core.settings import ConsolidationSettings, EmbeddingSettings, QdrantSettings, Settings
from core.stores.postgres_episodic import PostgresEpisodeStore, init_connection
from core.stores.redis_working import RedisWorkingStore
from core.stores.vector_factory import open_vector_index

N_PARTITIONS = 4
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
# An episode long enough to be embedded as chunks besides its own point.
LONG = (
    "Field notes from the coastal survey. We counted the tern colony on the northern spit at dawn. "
    "Nesting pairs were fewer than last spring. A fox had crossed the dunes during the night. "
    "The warden repaired the fence near the lighthouse. Rain arrived before noon and stopped the count. "
    "We moved to the salt marsh in the afternoon. Oystercatchers were feeding along the channel. "
    "The tide gauge at the harbour needs a new battery."
)


def dsn_for(admin_dsn: str, database: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    return urlunsplit(urlsplit(admin_dsn)._replace(path="/" + database))


@asynccontextmanager
async def migrated_template(admin_dsn: str) -> AsyncIterator[str]:
    """A migrated database to clone from; dropped on exit. Yields its name."""
    name = f"hm_tmpl_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(admin_dsn, timeout=10)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        await migrate.upgrade(dsn_for(admin_dsn, name))
        yield name
    finally:
        admin = await asyncpg.connect(admin_dsn, timeout=10)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@asynccontextmanager
async def cloned_database(admin_dsn: str, template: str) -> AsyncIterator[str]:
    """A fresh database cloned from ``template``; yields its DSN and drops it on exit."""
    name = f"hm_cons_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(admin_dsn, timeout=10)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    finally:
        await admin.close()
    try:
        yield dsn_for(admin_dsn, name)
    finally:
        admin = await asyncpg.connect(admin_dsn, timeout=10)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@dataclass
class Env:
    """Everything a consolidation test touches, over real servers."""

    settings: Settings
    pool: asyncpg.Pool
    episodic: PostgresEpisodeStore
    working: RedisWorkingStore
    vectors: VectorIndex
    embedder: TextEmbedder
    runs: RunStore

    @property
    def stores(self) -> PartitionStores:
        return PartitionStores(
            pool=self.pool, episodic=self.episodic, embedder=self.embedder, vectors=self.vectors,
            summariser=ExtractiveSummariser(), buffers=self.working,
            lexical=bm25_sparse(self.settings.retrieval),
        )  # fmt: skip


def env_settings(
    *, dsn: str, redis_url: str, key_prefix: str, data_dir: Path, batch_size: int = 8, **consolidation: Any
) -> Settings:
    tag = uuid.uuid4().hex[:8]
    return Settings(
        env="test",
        data_dir=data_dir,
        postgres={"dsn": dsn, "pool_max_size": 6},  # type: ignore[arg-type]
        redis={"url": redis_url, "key_prefix": key_prefix},  # type: ignore[arg-type]
        qdrant=QdrantSettings(backend="edge", collection_prefix=f"c{tag}", alias=f"c{tag}_live", hnsw_m=8),
        consolidation=ConsolidationSettings(
            n_partitions=N_PARTITIONS, batch_size=batch_size, **consolidation
        ),
    )


@asynccontextmanager
async def open_env(settings: Settings, redis: aioredis.Redis, embedder: TextEmbedder) -> AsyncIterator[Env]:
    async with AsyncExitStack() as stack:
        assert settings.postgres.dsn
        pool = await asyncpg.create_pool(
            settings.postgres.dsn, min_size=1, max_size=6, init=init_connection, command_timeout=30
        )
        stack.push_async_callback(pool.close)
        vectors = await stack.enter_async_context(open_vector_index(settings))
        working = RedisWorkingStore(
            redis, prefix=settings.redis.key_prefix, buffer_max_len=200, buffer_ttl_s=3600
        )
        yield Env(
            settings=settings, pool=pool, episodic=PostgresEpisodeStore(pool), working=working,
            vectors=vectors, embedder=embedder, runs=RunStore(pool),
        )  # fmt: skip


def session_in(tenant: str, partition: int, tag: str = "s") -> str:
    """A session id of ``tenant`` that hashes into ``partition``."""
    for i in range(10_000):
        sid = f"{tag}-{i}"
        if partition_of(tenant, sid, N_PARTITIONS) == partition:
            return sid
    raise AssertionError("no session found")


def episode(
    tenant: str,
    session: str,
    source: str,
    content: str,
    at: datetime,
    *,
    speaker: str = "",
    agent: str = "a1",
) -> Episode:
    return Episode(
        id=deterministic_id(tenant, "episode", f"{session}:{source}"),
        tenant_id=tenant, agent_id=agent, session_id=session,
        partition=partition_of(tenant, session, N_PARTITIONS), role=Role.USER, kind="message",
        content=content, metadata={"speaker": speaker} if speaker else {}, created_at=at,
        content_hash=content_hash(content),
    )  # fmt: skip


TOPICS = [
    "We booked the train to Lisbon for the conference on Friday morning.",
    "My sister adopted a grey kitten called Pixel last week.",
    "The budget review moved to Thursday because the CFO is travelling.",
    "I started learning the cello and practise every evening for twenty minutes.",
    "The garden tomatoes finally ripened after the heatwave ended.",
    "Our team shipped the billing migration without any downtime.",
    "She recommended the novel about the lighthouse keeper in Norway.",
    "The dentist appointment is at half past two on the twelfth.",
]


def conversation(
    tenant: str, session: str, n: int, *, start: datetime = T0, step_s: int = 60
) -> list[Episode]:
    speakers = ("Ana", "Ben")
    return [
        episode(tenant, session, f"t{i}", f"{TOPICS[i % len(TOPICS)]} (turn {i})",
                start + timedelta(seconds=step_s * i), speaker=speakers[i % 2])
        for i in range(n)
    ]  # fmt: skip


async def episode_point_records(env: Env, tenant: str, *, collection: str | None = None) -> list[str]:
    """record_id of every episode point of the tenant (a list: a duplicate point would show twice)."""
    version = await env.embedder.model_version()
    hits = await env.vectors.search(
        [1.0] + [0.0] * (version.dimension - 1), tenant_id=tenant, k=10_000,
        filters={"record_type": "episode"}, collection=collection,
    )  # fmt: skip
    return sorted(str(h.payload["record_id"]) for h in hits)


async def marks(pool: asyncpg.Pool, tenant: str) -> dict[uuid.UUID, tuple[datetime | None, uuid.UUID | None]]:
    rows = await pool.fetch(
        "SELECT id, consolidated_at, consolidation_run_id FROM episodes WHERE tenant_id = $1", tenant
    )
    return {r["id"]: (r["consolidated_at"], r["consolidation_run_id"]) for r in rows}


def distinct_first(episodes: Sequence[Episode]) -> list[str]:
    """Ids of the first episode of every (session, content hash), the ones that should own a point."""
    seen: set[tuple[str, str]] = set()
    out: list[str] = []
    for ep in sorted(episodes, key=lambda e: (e.created_at, e.id)):
        key = (ep.session_id, ep.content_hash)
        if key not in seen:
            seen.add(key)
            out.append(str(ep.id))
    return sorted(out)


# ---- fixtures (import them into a test module to use them) -----------------------------------------


@pytest.fixture(scope="module")
async def template(postgres_admin_dsn: str) -> AsyncIterator[str]:
    async with migrated_template(postgres_admin_dsn) as name:
        yield name


@pytest.fixture(scope="module")
def embedder() -> Iterator[SentenceTransformerEmbedder]:
    model = SentenceTransformerEmbedder(EmbeddingSettings(device="cpu", encode_batch_size=32))
    yield model
    model.close()


@pytest.fixture
async def env(
    postgres_admin_dsn: str,
    template: str,
    redis_url: str,
    redis_client: aioredis.Redis,
    key_prefix: str,
    tmp_path: Path,
    embedder: SentenceTransformerEmbedder,
) -> AsyncIterator[Env]:
    async with cloned_database(postgres_admin_dsn, template) as dsn:
        settings = env_settings(dsn=dsn, redis_url=redis_url, key_prefix=key_prefix, data_dir=tmp_path)
        async with open_env(settings, redis_client, embedder) as e:
            yield e
