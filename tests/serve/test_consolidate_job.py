"""jobs.consolidate on a real local Ray: one Ray task per partition, writing through the Retriever
deployment (the embedded engine's owner) of a running "hybridmem" Serve app, the model loaded in each task."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from core.settings import Settings
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
async def job_settings(
    postgres_admin_dsn: str, template: str, redis_url: str, key_prefix: str, tmp_path: Path
) -> AsyncIterator[Settings]:
    async with cloned_database(postgres_admin_dsn, template) as dsn:
        settings = env_settings(dsn=dsn, redis_url=redis_url, key_prefix=key_prefix, data_dir=tmp_path)
        yield settings.model_copy(
            update={"qdrant": settings.qdrant.model_copy(update={"path": tmp_path / "qdrant"})}
        )


@pytest.fixture
def engine_owner(job_settings: Settings) -> Iterator[None]:
    """Ray, and a "hybridmem" app of the Retriever (owning the edge engine) and its Embedder."""
    import ray
    from ray import serve

    from deployments.embedder import Embedder
    from deployments.local import free_port
    from deployments.retriever import Retriever

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": free_port()})
        overrides = job_settings.model_dump(mode="json")
        # Small CPU shares: the job's partition tasks need Ray's (logical) CPUs to be scheduled.
        embedder = Embedder.options(ray_actor_options={"num_cpus": 0.1}).bind(overrides)  # type: ignore[attr-defined]
        app = Retriever.options(ray_actor_options={"num_cpus": 0.1}).bind(overrides, embedder)  # type: ignore[attr-defined]
        serve.run(app, name="hybridmem", route_prefix=None)
        yield
    finally:
        serve.shutdown()
        ray.shutdown()


async def test_fan_out_runs_one_task_per_partition(
    job_settings: Settings,
    engine_owner: None,
    redis_client: aioredis.Redis,
    key_prefix: str,
    tenant: str,
) -> None:
    import asyncpg
    from ray import serve

    from core.stores.postgres_episodic import PostgresEpisodeStore
    from core.stores.redis_working import RedisWorkingStore
    from deployments.retriever import HandleVectorIndex
    from jobs.consolidate import ENGINE_OWNER, app_deployments, fan_out

    settings = job_settings
    assert settings.postgres.dsn
    pool = await asyncpg.create_pool(settings.postgres.dsn, min_size=1, max_size=2)
    try:
        eps = [
            *conversation(tenant, session_in(tenant, 0), 6),
            *conversation(tenant, session_in(tenant, 1), 5),
        ]
        await PostgresEpisodeStore(pool).insert_episodes(eps[:-1])
        working = RedisWorkingStore(redis_client, prefix=key_prefix, buffer_max_len=50, buffer_ttl_s=600)
        await working.append_session(eps[-1:])  # only in Redis: the task must drain it

        assert ENGINE_OWNER in app_deployments()
        seen: list[int] = []
        record = await asyncio.to_thread(
            fan_out, settings, partitions=[0, 1], parallelism=2, trigger="test",
            progress=lambda o: seen.append(o.partition),
        )  # fmt: skip
        assert record.status == "succeeded", record.errors
        assert sorted(seen) == [0, 1]
        assert record.total("episodes") == 11 and record.total("drained") == 1
        assert record.partition_status(0) == record.partition_status(1) == "done"
        vectors = HandleVectorIndex(serve.get_deployment_handle(ENGINE_OWNER, app_name="hybridmem"))
        hits = await vectors.search(
            [1.0] + [0.0] * 383, tenant_id=tenant, k=100, filters={"record_type": "episode"}
        )
        assert sorted(h.payload["record_id"] for h in hits) == sorted(str(e.id) for e in eps)
        unmarked = await pool.fetchval("SELECT count(*) FROM episodes WHERE consolidated_at IS NULL")
        assert unmarked == 0
    finally:
        await pool.close()
