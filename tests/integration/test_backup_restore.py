"""Backup a populated system (Postgres, embedded vector store, Redis), restore into fresh stores, compare.

Counts per tier must match, and the same lexical (PostgresEpisodeStore.search_text) and vector
(VectorIndex.search) queries must return the same ids. Restore refuses non-empty targets; backup refuses an
embedded vector store that a running process owns.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from core import migrate
from core.backup import TABLES, BackupError, backup, restore
from core.embedding.sentence_model import SentenceTransformerEmbedder
from core.models import Role
from core.points import episode_point
from core.resources import open_resources
from core.schemas import EpisodeIn, MemoryIn, TranscriptIn, TranscriptTurnIn
from core.service import HybridMemoryService
from core.settings import EmbeddingSettings, Settings, load_settings
from core.stores.vector_factory import open_vector_index
from tests.conftest import _dsn_for_database, new_key_prefix

pytestmark = pytest.mark.integration

TEXTS = [
    "The quarterly budget review moved to Thursday afternoon.",
    "Alice prefers green tea over coffee in the morning.",
    "The deployment failed because the database migration timed out.",
    "We agreed to cap the contract price at forty thousand euros.",
    "Bob is allergic to peanuts; avoid them at the team dinner.",
    "The garden needs watering twice a week during summer.",
]
QUERIES = ["budget meeting", "what does Alice drink", "why did the deploy fail", "allergic to peanuts"]


@contextlib.asynccontextmanager
async def fresh_database(admin_dsn: str, *, migrated: bool) -> AsyncIterator[str]:
    name = f"hm_bk_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(admin_dsn, timeout=10)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = _dsn_for_database(admin_dsn, name)
    try:
        if migrated:
            await migrate.upgrade(dsn)
        yield dsn
    finally:
        admin = await asyncpg.connect(admin_dsn, timeout=10)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def settings_for(dsn: str, redis_url: str, prefix: str, root: Path) -> Settings:
    return load_settings(
        {
            "env": "test",
            "data_dir": str(root),
            "postgres": {"dsn": dsn, "pool_max_size": 2},
            "redis": {"url": redis_url, "key_prefix": prefix},
            "qdrant": {"backend": "edge", "path": str(root / "qdrant")},
        }
    )


async def populate(settings: Settings, embedder: SentenceTransformerEmbedder, tenant: str) -> None:
    async with open_resources(settings) as res, open_vector_index(settings) as vectors:
        service = HybridMemoryService(
            working=res.working, episodic=res.episodic, vectors=vectors, embedder=embedder, settings=settings
        )
        items = [EpisodeIn(agent_id="a1", session_id=f"s{i % 2}", content=t) for i, t in enumerate(TEXTS)]
        stored = await service.store_episodes(tenant, items)
        turns = [
            TranscriptTurnIn(speaker=s, content=c) for s, c in (("buyer", TEXTS[3]), ("seller", "Deal."))
        ]
        await service.store_transcript(
            tenant,
            TranscriptIn(agent_id="a1", session_id="neg", participants=["buyer", "seller"], turns=turns),
        )
        await service.upsert_memories(
            tenant,
            [MemoryIn(id=f"m{i}", agent_id="a1", content=t, kind="fact") for i, t in enumerate(TEXTS[:4])],
        )
        # A fact that replaces another: the relation must survive the round trip (issue 26).
        await service.upsert_memory(
            tenant, MemoryIn(agent_id="a1", content=f"{TEXTS[0]} No longer.", supersedes=["m0"])
        )
        result = await embedder.embed([e.content for e in stored.episodes])
        collection = await vectors.ensure_collection(result.version)
        await vectors.upsert(
            [
                episode_point(e, v, result.version)
                for e, v in zip(stored.episodes, result.vectors, strict=True)
            ],
            collection=collection,
        )
        await service.put_scratchpad(tenant, "a1", "plan", {"step": 3}, 3600)
        await service.put_scratchpad(tenant, "a1", "forever", ["x"], None)
        assert stored.episodes[0].role == Role.USER


async def observe(settings: Settings, embedder: SentenceTransformerEmbedder, tenant: str) -> dict[str, Any]:
    """Row counts, Redis keys and TTLs, and the ids the same searches return."""
    seen: dict[str, Any] = {}
    async with open_resources(settings) as res, open_vector_index(settings) as vectors:
        async with res.pool.acquire() as conn:
            seen["rows"] = {t: await conn.fetchval(f"SELECT count(*) FROM {t}") for t in TABLES}
        keys = sorted([k async for k in res.redis.scan_iter(match=f"{settings.redis.key_prefix}:*")])
        seen["keys"] = [k[len(settings.redis.key_prefix) :] for k in keys]
        seen["persistent"] = [
            k for k, key in zip(seen["keys"], keys, strict=True) if await res.redis.pttl(key) == -1
        ]
        seen["points"] = await vectors.count(tenant_id=tenant)
        seen["lexical"] = {
            q: [str(e.id) for e, _ in await res.episodic.search_text(tenant_id=tenant, query=q, k=5)]
            for q in QUERIES
        }
        vecs = (await embedder.embed(QUERIES)).vectors
        seen["vector"] = {
            q: [str(h.id) for h in await vectors.search(v, tenant_id=tenant, k=5)]
            for q, v in zip(QUERIES, vecs, strict=True)
        }
        now = {"current_at": time.time()}
        seen["current"] = {
            q: [str(h.id) for h in await vectors.search(v, tenant_id=tenant, k=5, filters=now)]
            for q, v in zip(QUERIES, vecs, strict=True)
        }
        async with res.pool.acquire() as conn:
            seen["superseded"] = [
                tuple(r)
                for r in await conn.fetch(
                    "SELECT id, superseded_by FROM memory_records WHERE superseded_by IS NOT NULL"
                )
            ]
        working = await res.working.recent_session(tenant_id=tenant, session_id="s0", limit=10)
        seen["buffer"] = [str(e.id) for e in working]
    return seen


@pytest.fixture(scope="module")
def embedder() -> Any:
    model = SentenceTransformerEmbedder(EmbeddingSettings(cpu_threads=1))
    yield model
    model.close()


async def _drop_prefix(redis_url: str, prefix: str) -> None:
    client = aioredis.Redis.from_url(redis_url, socket_timeout=2)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.mark.timeout(180)
async def test_backup_then_restore_into_fresh_stores_gives_the_same_answers(
    postgres_admin_dsn: str,
    redis_url: str,
    tmp_path: Path,
    embedder: SentenceTransformerEmbedder,
    tenant: str,
) -> None:
    src_prefix, dst_prefix = new_key_prefix(), new_key_prefix()
    try:
        async with (
            fresh_database(postgres_admin_dsn, migrated=True) as src_dsn,
            fresh_database(postgres_admin_dsn, migrated=False) as dst_dsn,
        ):
            src = settings_for(src_dsn, redis_url, src_prefix, tmp_path / "src")
            dst = settings_for(dst_dsn, redis_url, dst_prefix, tmp_path / "dst")
            await populate(src, embedder, tenant)
            before = await observe(src, embedder, tenant)
            assert before["rows"]["episodes"] == len(TEXTS) + 2
            assert before["rows"]["transcripts"] == 1 and before["rows"]["memory_records"] == 5
            assert before["points"] == len(TEXTS) + 5
            assert len(before["superseded"]) == 1 and before["current"] != before["vector"]
            assert all(before["lexical"].values()) and all(before["vector"].values())

            # The embedded store belongs to one process: no backup while someone holds it.
            async with open_vector_index(src):
                with pytest.raises(BackupError, match="owned by a running process"):
                    await backup(src, tmp_path / "refused", include_working=True)

            manifest = await backup(src, tmp_path / "bk", include_working=True)
            assert manifest["episodic"]["schema_revision"] == migrate.head_revision()
            assert {t: m["rows"] for t, m in manifest["episodic"]["tables"].items()} == before["rows"]
            assert manifest["model_version"] == (await embedder.model_version()).key
            assert sum(manifest["semantic"]["points"].values()) == before["points"]
            assert manifest["working"]["keys"] == len(before["keys"])
            with pytest.raises(BackupError, match="not empty"):
                await backup(src, tmp_path / "bk", include_working=False)

            report = await restore(dst, tmp_path / "bk")
            assert report["episodic"] == before["rows"]
            assert report["working"] == len(before["keys"])
            after = await observe(dst, embedder, tenant)
            assert after == before

            # Restore only into empty stores.
            with pytest.raises(BackupError, match="not empty"):
                await restore(dst, tmp_path / "bk")
    finally:
        await _drop_prefix(redis_url, src_prefix)
        await _drop_prefix(redis_url, dst_prefix)
