"""Exactly-once consolidation: crash a partition pass at every step, rerun, and count what is left.

Each episode must end up marked exactly once in Postgres (the runs' counts add up to the number of
episodes) and represented by exactly one "episode" point in the vector store; duplicates (same content
in a session) own no point of their own. A second run on a locked partition skips it.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import timedelta
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from core.consolidation.partition import FAULT_POINTS, consolidate_partition
from core.consolidation.runner import run_partition
from core.embedding.sentence_model import SentenceTransformerEmbedder
from core.embedding.types import EmbedResult
from core.errors import EmbeddingError
from core.models import ModelVersion
from core.settings import EmbeddingSettings
from tests.integration.consolidation_env import (
    T0,
    Env,
    cloned_database,
    conversation,
    distinct_first,
    env_settings,
    episode,
    episode_point_records,
    marks,
    migrated_template,
    open_env,
    session_in,
)

pytestmark = [pytest.mark.integration, pytest.mark.faults]  # faults: part of make test-faults
PARTITION = 3


class Crash(Exception):
    """What the fault hook raises: the pass dies at that step."""


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
        settings = env_settings(
            dsn=dsn, redis_url=redis_url, key_prefix=key_prefix, data_dir=tmp_path, batch_size=5
        )
        async with open_env(settings, redis_client, embedder) as e:
            yield e


async def seed(env: Env, tenant: str) -> list:  # type: ignore[type-arg]
    """Two sessions of one partition: in-batch and cross-batch duplicates, one turn only in Redis,
    and the same content in another session (not a duplicate there)."""
    a, b = session_in(tenant, PARTITION, "a"), session_in(tenant, PARTITION, "b")
    conv_a = conversation(tenant, a, 9)
    conv_b = conversation(tenant, b, 4, start=T0 + timedelta(seconds=30))
    dups = [
        episode(tenant, a, "dup1", conv_a[0].content, T0 + timedelta(seconds=61)),  # same batch as the first
        episode(tenant, a, "dup2", conv_a[1].content, T0 + timedelta(minutes=20)),  # later batch
    ]
    buffered = episode(
        tenant, b, "redis-only", "Buffered turn about the ferry timetable.", T0 + timedelta(hours=1)
    )
    await env.episodic.insert_episodes([*conv_a, *conv_b, *dups])
    await env.working.append_session([buffered])
    return [*conv_a, *conv_b, *dups, buffered]


def crash_at(step: str, *, occurrence: int) -> tuple[list[int], object]:
    seen = [0]

    def hook(name: str) -> None:
        if name == step:
            seen[0] += 1
            if seen[0] == occurrence:
                raise Crash(step)

    return seen, hook


async def assert_exactly_once(env: Env, tenant: str, everything: Sequence, run_ids: Sequence) -> None:  # type: ignore[type-arg]
    points = await episode_point_records(env, tenant)
    assert points == distinct_first(everything), "each distinct episode has exactly one point"
    stamped = await marks(env.pool, tenant)
    assert set(stamped) == {e.id for e in everything}
    assert all(at is not None for at, _ in stamped.values())
    marked_total = 0
    for rid in run_ids:
        record = await env.runs.get(rid)
        marked_total += int(record.counts.get(str(PARTITION), {}).get("episodes", 0))
    assert marked_total == len(everything), "no episode was marked twice across runs"


@pytest.mark.parametrize("step", FAULT_POINTS)
async def test_crash_then_rerun_leaves_every_episode_exactly_once(env: Env, tenant: str, step: str) -> None:
    # Per-batch steps crash in the second batch: the first one is committed, the second is not.
    occurrence = 1 if step == "after_drain" else 2
    everything = await seed(env, tenant)
    settings = env.settings.consolidation
    first = await env.runs.create(partitions=[PARTITION], trigger="test")
    seen, hook = crash_at(step, occurrence=occurrence)
    with pytest.raises(Crash):
        await consolidate_partition(
            PARTITION, run_id=first.id, stores=env.stores, settings=settings, fault=hook
        )  # type: ignore[arg-type]
    assert seen[0] == occurrence
    second = await env.runs.create(partitions=[PARTITION], trigger="test")
    result = await consolidate_partition(PARTITION, run_id=second.id, stores=env.stores, settings=settings)
    assert result.status == "done"
    await assert_exactly_once(env, tenant, everything, [first.id, second.id])
    # The lock of the crashed pass is gone (a third pass can take the partition) and finds nothing.
    third = await env.runs.create(partitions=[PARTITION], trigger="test")
    again = await consolidate_partition(PARTITION, run_id=third.id, stores=env.stores, settings=settings)
    assert (again.status, again.episodes, again.points) == ("done", 0, 0)


async def test_two_crashes_in_a_row_then_rerun(env: Env, tenant: str) -> None:
    everything = await seed(env, tenant)
    settings = env.settings.consolidation
    runs = []
    for step in ("after_upsert", "before_commit"):
        run = await env.runs.create(partitions=[PARTITION], trigger="test")
        runs.append(run.id)
        _, hook = crash_at(step, occurrence=2)
        with pytest.raises(Crash):
            await consolidate_partition(
                PARTITION, run_id=run.id, stores=env.stores, settings=settings, fault=hook
            )  # type: ignore[arg-type]
    final = await env.runs.create(partitions=[PARTITION], trigger="test")
    await consolidate_partition(PARTITION, run_id=final.id, stores=env.stores, settings=settings)
    await assert_exactly_once(env, tenant, everything, [*runs, final.id])


class GatedEmbedder:
    """The real model behind a gate, so a test can hold a pass in the middle (the lock held)."""

    def __init__(self, inner: SentenceTransformerEmbedder) -> None:
        self._inner = inner
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def embed(self, texts: Sequence[str]) -> EmbedResult:
        self.entered.set()
        await self.release.wait()
        return await self._inner.embed(texts)

    async def model_version(self) -> ModelVersion:
        return await self._inner.model_version()


async def test_second_concurrent_run_skips_a_locked_partition(
    env: Env, tenant: str, embedder: SentenceTransformerEmbedder
) -> None:
    everything = await seed(env, tenant)
    settings = env.settings.consolidation
    gated = GatedEmbedder(embedder)
    slow_stores = env.stores.__class__(**{**env.stores.__dict__, "embedder": gated})
    run_a = await env.runs.create(partitions=[PARTITION], trigger="test")
    run_b = await env.runs.create(partitions=[PARTITION], trigger="test")
    task_a = asyncio.create_task(
        consolidate_partition(PARTITION, run_id=run_a.id, stores=slow_stores, settings=settings)
    )
    await asyncio.wait_for(gated.entered.wait(), 30)
    result_b = await consolidate_partition(PARTITION, run_id=run_b.id, stores=env.stores, settings=settings)
    assert (result_b.status, result_b.episodes) == ("locked", 0)
    gated.release.set()
    result_a = await asyncio.wait_for(task_a, 60)
    assert result_a.status == "done" and result_a.episodes == len(everything)
    await assert_exactly_once(env, tenant, everything, [run_a.id, run_b.id])


class SlowOnce:
    """An embedder whose first call does not answer in time (as a handle call past its timeout)."""

    def __init__(self, inner: SentenceTransformerEmbedder) -> None:
        self.inner = inner
        self.calls = 0

    async def embed(self, texts: Sequence[str]) -> EmbedResult:
        self.calls += 1
        if self.calls == 1:
            raise EmbeddingError(f"Embedder.embed of {len(texts)} texts did not answer within 60 s")
        return await self.inner.embed(texts)

    async def model_version(self) -> ModelVersion:
        return await self.inner.model_version()


async def test_a_timed_out_pass_is_retried_and_the_run_says_why(env: Env, tenant: str) -> None:
    everything = await seed(env, tenant)
    slow = SlowOnce(env.embedder)  # type: ignore[arg-type]
    stores = dataclasses.replace(env.stores, embedder=slow)
    run = await env.runs.create(partitions=[PARTITION], trigger="test")
    outcome = await run_partition(
        PARTITION, run_id=run.id, settings=env.settings, stores=stores, runs=env.runs
    )
    record = await env.runs.finish(run.id)

    assert outcome.status == "done" and record.status == "succeeded", record.errors
    counts = record.counts[str(PARTITION)]
    assert counts["retries"] == 1
    assert "did not answer within 60 s" in counts["last_retry"]
    await assert_exactly_once(env, tenant, everything, [run.id])


async def test_a_pass_that_keeps_timing_out_fails_with_the_call_named(env: Env, tenant: str) -> None:
    await seed(env, tenant)

    class NeverAnswers(SlowOnce):
        async def embed(self, texts: Sequence[str]) -> EmbedResult:
            raise EmbeddingError(f"Embedder.embed of {len(texts)} texts did not answer within 60 s")

    settings = env.settings.model_copy(
        update={"consolidation": env.settings.consolidation.model_copy(update={"partition_retries": 1})}
    )
    stores = dataclasses.replace(env.stores, embedder=NeverAnswers(env.embedder))  # type: ignore[arg-type]
    run = await env.runs.create(partitions=[PARTITION], trigger="test")
    outcome = await run_partition(PARTITION, run_id=run.id, settings=settings, stores=stores, runs=env.runs)
    record = await env.runs.finish(run.id)
    assert outcome.status == "failed" and record.status == "failed"
    assert record.counts[str(PARTITION)]["retries"] == 1
    assert "EmbeddingError: Embedder.embed of" in record.errors[0]["error"]


class UpsertTimesOut:
    """The env's vector index, except that an upsert times out the way a stalled call does: a bare
    ``TimeoutError`` with no message (what asyncio.timeout and asyncpg's statement timeout raise)."""

    def __init__(self, inner: object) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    async def upsert(self, *args: object, **kwargs: object) -> None:
        await asyncio.sleep(0.2)
        raise TimeoutError


async def test_a_bare_timeout_names_the_call_the_store_and_the_wait(env: Env, tenant: str) -> None:
    await seed(env, tenant)
    settings = env.settings.model_copy(
        update={"consolidation": env.settings.consolidation.model_copy(update={"partition_retries": 1})}
    )
    stores = dataclasses.replace(env.stores, vectors=UpsertTimesOut(env.vectors))  # type: ignore[arg-type]
    run = await env.runs.create(partitions=[PARTITION], trigger="test")
    outcome = await run_partition(PARTITION, run_id=run.id, settings=settings, stores=stores, runs=env.runs)
    record = await env.runs.finish(run.id)

    assert outcome.status == "failed" and record.status == "failed"
    error = record.errors[0]["error"]
    assert error.startswith("TimeoutError: no answer in time (during upserting "), error
    assert "points (vector index), after 0." in error and "; the pass had run " in error
    retry = record.counts[str(PARTITION)]["last_retry"]
    assert "during upserting" in retry and "(vector index)" in retry  # the retry said why, too
