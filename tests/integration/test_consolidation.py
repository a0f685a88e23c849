"""Consolidation of one partition and of whole runs against real Postgres, Redis, the edge vector store
and the packaged sentence-transformers model; plus the summarisers (the LLM one against a local stand-in).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import httpx
import pytest

from core.consolidation.partition import consolidate_partition, summary_id
from core.consolidation.runner import parse_partitions, run_consolidation
from core.consolidation.summarise import ExtractiveSummariser, OllamaSummariser, SummaryTurn
from core.points import episode_chunks, episode_point_ids
from tests.integration.consolidation_env import (  # noqa: F401  (fixtures)
    LONG,
    N_PARTITIONS,
    T0,
    Env,
    cloned_database,
    conversation,
    distinct_first,
    embedder,
    env,
    env_settings,
    episode,
    episode_point_records,
    marks,
    migrated_template,
    open_env,
    session_in,
    template,
)


def _kw(env: Env) -> dict[str, Any]:
    return {"stores": env.stores, "settings": env.settings.consolidation}


@pytest.mark.integration
async def test_partition_pass_drains_dedupes_summarises_and_checkpoints(env: Env, tenant: str) -> None:
    a, b, c = session_in(tenant, 1, "a"), session_in(tenant, 1, "b"), session_in(tenant, 2, "c")
    conv_a = conversation(tenant, a, 12)
    dup = episode(tenant, a, "dup", conv_a[3].content, T0 + timedelta(minutes=30), speaker="Ben")
    conv_b = conversation(tenant, b, 8, step_s=600)  # 70 minutes: two summary windows
    buffered_c = conversation(tenant, c, 5)
    await env.episodic.insert_episodes([*conv_a, dup, *conv_b])
    await env.working.append_session([*conv_a[-3:], *buffered_c])  # c exists only in Redis

    run = await env.runs.create(partitions=[1, 2], trigger="test")
    r1 = await consolidate_partition(1, run_id=run.id, **_kw(env))
    r2 = await consolidate_partition(2, run_id=run.id, **_kw(env))
    record = await env.runs.finish(run.id)

    assert (r1.status, r1.episodes, r1.duplicates, r1.drained) == ("done", 21, 1, 0)
    assert (r2.status, r2.episodes, r2.duplicates, r2.drained) == ("done", 5, 0, 5)
    assert r1.batches == 3  # 21 episodes in batches of 8
    ctx = await env.pool.fetchval(
        "SELECT count(*) FROM episodes WHERE tenant_id = $1 AND ctx_tsv IS NULL", tenant
    )
    assert ctx == 0
    everything = [*conv_a, dup, *conv_b, *buffered_c]
    assert await episode_point_records(env, tenant) == distinct_first(everything)
    stamped = await marks(env.pool, tenant)
    assert len(stamped) == 26 and all(at is not None and rid == run.id for at, rid in stamped.values())

    summaries = await env.pool.fetch(
        "SELECT id, session_id, source_ids FROM memory_records WHERE tenant_id = $1 AND kind = 'summary'",
        tenant,
    )
    assert {r["session_id"] for r in summaries} == {a, b, c}
    assert len([r for r in summaries if r["session_id"] == b]) == 2
    assert summary_id(tenant, a, T0) in {r["id"] for r in summaries}
    assert await env.vectors.count(tenant_id=tenant) == 26 - 1 + len(summaries)

    checkpoint = await env.pool.fetchrow("SELECT * FROM consolidation_checkpoints WHERE partition = 1")
    last = max([*conv_a, dup, *conv_b], key=lambda e: (e.created_at, e.id))
    assert (checkpoint["last_created_at"], checkpoint["last_episode_id"]) == (last.created_at, last.id)
    assert record.status == "succeeded" and record.total("episodes") == 26 and record.total("drained") == 5
    assert record.partition_status(1) == "done" and record.counts["1"]["batches"] == 3

    # A second pass finds nothing new: no marks change, no points added.
    again = await env.runs.create(partitions=[1, 2], trigger="test")
    r3 = await consolidate_partition(
        1, run_id=again.id, stores=env.stores, settings=env.settings.consolidation
    )
    assert (r3.episodes, r3.points) == (0, 0)
    assert await env.vectors.count(tenant_id=tenant) == 26 - 1 + len(summaries)


@pytest.mark.integration
async def test_a_long_episode_gets_chunk_points_that_follow_its_lifecycle(env: Env, tenant: str) -> None:
    s = session_in(tenant, 0)
    long = episode(tenant, s, "long", LONG, T0)
    dup = episode(tenant, s, "long-again", LONG, T0 + timedelta(minutes=5))
    short = episode(tenant, s, "short", "A short note about the cello.", T0 + timedelta(minutes=1))
    await env.episodic.insert_episodes([long, short, dup])
    run = await env.runs.create(partitions=[0], trigger="test")
    result = await consolidate_partition(0, run_id=run.id, **_kw(env))

    chunks = episode_chunks(LONG)
    assert len(chunks) >= 3 and episode_chunks(short.content) == []
    version = await env.embedder.model_version()
    probe = (await env.embedder.embed([chunks[-1]])).vectors[0]  # the text of the last chunk
    hits = await env.vectors.search(probe, tenant_id=tenant, k=50)
    chunk_hits = [h for h in hits if h.payload["record_type"] == "chunk"]
    assert sorted(h.payload["chunk"] for h in chunk_hits) == list(range(len(chunks)))
    assert {h.payload["record_id"] for h in chunk_hits} == {str(long.id)}  # none for the duplicate
    assert hits[0].payload["record_type"] == "chunk" and hits[0].payload["chunk"] == len(chunks) - 1
    own_and_chunks = {h.id for h in hits if h.payload["record_id"] == str(long.id)}
    assert own_and_chunks == {str(p) for p in episode_point_ids(tenant, str(long.id), LONG, version)}
    assert await episode_point_records(env, tenant) == sorted([str(long.id), str(short.id)])
    assert result.points == 2 + len(chunks) + result.summaries

    # Deleting the episode's points by source removes its chunks too; the short one stays.
    await env.vectors.delete_by_source(tenant_id=tenant, source_ids=[str(long.id)])
    left = await env.vectors.search(probe, tenant_id=tenant, k=50)
    assert all(h.payload["record_id"] != str(long.id) for h in left)
    assert any(h.payload["record_id"] == str(short.id) for h in left)


@pytest.mark.integration
async def test_late_arrival_behind_the_checkpoint_is_consolidated(env: Env, tenant: str) -> None:
    s = session_in(tenant, 0)
    first = conversation(tenant, s, 4, start=T0 + timedelta(hours=2))
    await env.episodic.insert_episodes(first)
    run = await env.runs.create(partitions=[0], trigger="test")
    await consolidate_partition(0, run_id=run.id, **_kw(env))
    late = episode(tenant, s, "late", "An old note about the cello teacher.", T0)  # dated before the mark
    await env.episodic.insert_episodes([late])
    result = await consolidate_partition(
        0, run_id=run.id, stores=env.stores, settings=env.settings.consolidation
    )
    assert result.episodes == 1
    assert str(late.id) in await episode_point_records(env, tenant)
    checkpoint = await env.pool.fetchval(
        "SELECT last_episode_id FROM consolidation_checkpoints WHERE partition = 0"
    )
    assert checkpoint == first[-1].id  # the mark never moves backwards


@pytest.mark.integration
async def test_run_consolidation_in_process_records_the_run(env: Env, tenant: str) -> None:
    sessions = [session_in(tenant, p, f"p{p}") for p in range(N_PARTITIONS)]
    eps = [ep for sid in sessions for ep in conversation(tenant, sid, 3)]
    await env.episodic.insert_episodes(eps)
    seen: list[Any] = []
    record = await run_consolidation(
        env.settings, partitions=parse_partitions("0-3", env.settings), parallelism=2, trigger="test",
        progress=seen.append, vectors=env.vectors, embedder=env.embedder,
    )  # fmt: skip
    assert record.status == "succeeded" and record.finished_at is not None
    assert record.total("episodes") == 12 and sorted(o.partition for o in seen) == [0, 1, 2, 3]
    assert all(record.partition_status(p) == "done" for p in range(N_PARTITIONS))
    assert (await env.runs.get(record.id)).total("episodes") == 12
    assert record.id in {r.id for r in await env.runs.recent(limit=5)}
    assert await episode_point_records(env, tenant) == sorted(str(e.id) for e in eps)


def test_parse_partitions() -> None:
    from core.settings import ConsolidationSettings, Settings

    settings = Settings(consolidation=ConsolidationSettings(n_partitions=8))
    assert parse_partitions("0,2,5-7", settings) == [0, 2, 5, 6, 7]
    assert parse_partitions(None, settings) == list(range(8))
    with pytest.raises(ValueError, match="outside"):
        parse_partitions("9", settings)


# ---- summarisers ------------------------------------------------------------------------------------

TURNS = [
    SummaryTurn("Ana", "We booked the train to Lisbon. The conference starts on Friday."),
    SummaryTurn("Ben", "Great, Lisbon in spring is lovely."),
    SummaryTurn("Ana", "I also need to pack the conference poster for Lisbon."),
    SummaryTurn("Ben", "Okay."),
]


async def test_extractive_summary_keeps_the_topic_in_order_and_is_deterministic() -> None:
    summariser = ExtractiveSummariser(max_sentences=2)
    text = await summariser.summarise(TURNS)
    assert text == await summariser.summarise(TURNS)
    assert "Lisbon" in text and "Okay" not in text
    assert text.index("Ben: Great") < text.index("Ana: I also need to pack the conference poster")
    assert await summariser.summarise([]) == ""


class _StandIn(BaseHTTPRequestHandler):
    """A tiny Ollama stand-in: /api/generate answers with a canned summary, or 500 when told to."""

    fail = False
    prompts: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).prompts.append(body)
        status, reply = (
            (500, b"{}") if type(self).fail else (200, json.dumps({"response": " LLM summary. "}).encode())
        )
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def ollama() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StandIn)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        _StandIn.fail = False
        _StandIn.prompts.clear()


async def test_llm_summariser_uses_the_endpoint_and_falls_back_when_it_fails(ollama: str) -> None:
    async with httpx.AsyncClient() as client:
        llm = OllamaSummariser(client, base_url=ollama, model="tiny", timeout_s=5)
        assert await llm.summarise(TURNS) == "LLM summary."
        sent = _StandIn.prompts[-1]
        assert sent["model"] == "tiny" and sent["stream"] is False and "Ana: We booked" in sent["prompt"]
        _StandIn.fail = True
        assert await llm.summarise(TURNS) == await ExtractiveSummariser().summarise(TURNS)
        assert llm.fallbacks == 1
