"""jobs.consolidate on a real local Ray: one Ray task per partition, writing through the VectorStore
deployment of a running "hybridmem" Serve app (embedded store), the model loaded in each task."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from tests.integration.consolidation_env import (
    cloned_database,
    conversation,
    env_settings,
    migrated_template,
    session_in,
)

pytestmark = [pytest.mark.serve, pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
async def template(postgres_admin_dsn: str) -> AsyncIterator[str]:
    async with migrated_template(postgres_admin_dsn) as name:
        yield name


@pytest.fixture
def ray_with_vector_store(tmp_path: Path) -> Iterator[dict[str, object]]:
    import ray
    from ray import serve

    from deployments.local import free_port
    from deployments.vector_store import VectorStore

    qdrant = {
        "backend": "edge",
        "path": str(tmp_path / "qdrant"),
        "collection_prefix": "job",
        "alias": "job_live",
    }
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": free_port()})
        serve.run(VectorStore.bind({"qdrant": qdrant}), name="hybridmem", route_prefix=None)
        yield qdrant
    finally:
        serve.shutdown()
        ray.shutdown()


async def test_fan_out_runs_one_task_per_partition(
    postgres_admin_dsn: str,
    template: str,
    redis_url: str,
    redis_client: aioredis.Redis,
    key_prefix: str,
    tenant: str,
    tmp_path: Path,
    ray_with_vector_store: dict[str, object],
) -> None:
    import asyncpg
    from ray import serve

    from core.stores.postgres_episodic import PostgresEpisodeStore
    from core.stores.redis_working import RedisWorkingStore
    from deployments.vector_store import HandleVectorIndex
    from jobs.consolidate import app_deployments, fan_out

    async with cloned_database(postgres_admin_dsn, template) as dsn:
        settings = env_settings(dsn=dsn, redis_url=redis_url, key_prefix=key_prefix, data_dir=tmp_path)
        settings = settings.model_copy(
            update={"qdrant": settings.qdrant.model_copy(update=ray_with_vector_store)}
        )
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
        try:
            eps = [
                *conversation(tenant, session_in(tenant, 0), 6),
                *conversation(tenant, session_in(tenant, 1), 5),
            ]
            await PostgresEpisodeStore(pool).insert_episodes(eps[:-1])
            working = RedisWorkingStore(redis_client, prefix=key_prefix, buffer_max_len=50, buffer_ttl_s=600)
            await working.append_session(eps[-1:])  # only in Redis: the task must drain it

            assert "VectorStore" in app_deployments()
            seen: list[int] = []
            record = await asyncio.to_thread(
                fan_out, settings, partitions=[0, 1], parallelism=2, trigger="test",
                progress=lambda o: seen.append(o.partition),
            )  # fmt: skip
            assert record.status == "succeeded", record.errors
            assert sorted(seen) == [0, 1]
            assert record.total("episodes") == 11 and record.total("drained") == 1
            assert record.partition_status(0) == record.partition_status(1) == "done"
            vectors = HandleVectorIndex(serve.get_deployment_handle("VectorStore", app_name="hybridmem"))
            hits = await vectors.search(
                [1.0] + [0.0] * 383, tenant_id=tenant, k=100, filters={"record_type": "episode"}
            )
            assert sorted(h.payload["record_id"] for h in hits) == sorted(str(e.id) for e in eps)
            unmarked = await pool.fetchval("SELECT count(*) FROM episodes WHERE consolidated_at IS NULL")
            assert unmarked == 0
        finally:
            await pool.close()
