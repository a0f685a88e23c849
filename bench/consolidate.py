"""Consolidation throughput against the raw model: is consolidation embedding-bound?

``hybridmem bench consolidate --json``. Episodes are LoCoMo conversation turns (../shared/bench), one
session per LoCoMo session, written to fresh real stores (Postgres rows + Redis session buffers). Each
measurement consolidates every partition in-process (:func:`core.consolidation.runner.run_consolidation`:
drain, select, dedupe, summarise, embed, upsert to the embedded vector store, commit) and is timed end to
end. ``raw_embed_per_s`` embeds exactly the texts that run embedded (episodes and summaries) with the
same model and batch size and nothing else, counted per episode, so ``ratio`` = consolidation / raw is the
share of the time that is embedding (goal >= 0.8).
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.data import locomo_file
from core.consolidation.runner import run_consolidation
from core.embedding.sentence_model import SentenceTransformerEmbedder
from core.ids import content_hash, deterministic_id, partition_of
from core.models import Episode, Role
from core.resources import open_resources
from core.settings import Settings
from core.stores.vector_factory import open_vector_index

N_PARTITIONS = 8


def load_turns(limit: int, data_file: str | None = None) -> list[tuple[str, str, str, int]]:
    """(session key, speaker, text, index in session) of the first ``limit`` LoCoMo turns."""
    data = json.loads(locomo_file(data_file).read_text())
    out: list[tuple[str, str, str, int]] = []
    for sample in data:
        conv = sample["conversation"]
        n = 1
        while f"session_{n}" in conv:
            for i, turn in enumerate(conv[f"session_{n}"]):
                text = turn["text"] + (
                    f" [shared {turn['blip_caption']}]" if turn.get("blip_caption") else ""
                )
                out.append((f"{sample['sample_id']}-s{n}", turn["speaker"], text, i))
                if len(out) >= limit:
                    return out
            n += 1
    return out


def episodes_for(tenant: str, turns: list[tuple[str, str, str, int]]) -> list[Episode]:
    t0 = datetime(2023, 5, 8, 13, 0, tzinfo=UTC)
    sessions: dict[str, int] = {}
    out = []
    for key, speaker, text, i in turns:
        s_index = sessions.setdefault(key, len(sessions))
        out.append(
            Episode(
                id=deterministic_id(tenant, "episode", f"{key}:{i}"),
                tenant_id=tenant,
                agent_id="bench",
                session_id=key,
                partition=partition_of(tenant, key, N_PARTITIONS),
                role=Role.USER,
                kind="message",
                content=text,
                metadata={"speaker": speaker},
                created_at=t0 + timedelta(days=s_index, seconds=30 * i),
                content_hash=content_hash(text),
            )
        )
    return out


async def _raw_seconds(embedder: SentenceTransformerEmbedder, texts: list[str], batch: int) -> float:
    """The embedder alone on ``texts``, in calls of one consolidation batch each. Through ``embed`` so it
    runs on the embedder's own worker thread like consolidation's calls (torch's thread pool is per
    calling thread: a second calling thread would make the comparison unfair)."""
    t0 = time.perf_counter()
    for i in range(0, len(texts), batch):
        await embedder.embed(texts[i : i + batch])
    return time.perf_counter() - t0


async def _measure(
    settings: Settings, embedder: SentenceTransformerEmbedder, turns: list[Any], parallelism: int
) -> dict[str, Any]:
    """Seed a fresh tenant, consolidate it all, then embed the same texts raw; both timed."""
    tenant = f"bench-{uuid.uuid4().hex[:8]}"
    eps = episodes_for(tenant, turns)
    async with open_resources(settings) as res, open_vector_index(settings) as vectors:
        for i in range(0, len(eps), 1000):
            await res.episodic.insert_episodes(eps[i : i + 1000])
        await res.working.append_session(eps)
        await res.pool.execute("TRUNCATE consolidation_checkpoints")
        # The same texts are embedded raw right before and right after, so machine noise hits both alike.
        guess = list({(e.session_id, e.content_hash): e.content for e in eps}.values())
        raw_before = await _raw_seconds(embedder, guess, settings.consolidation.batch_size)
        outcomes: list[Any] = []
        t0 = time.perf_counter()
        record = await run_consolidation(
            settings, parallelism=parallelism, trigger="bench", vectors=vectors, embedder=embedder,
            progress=outcomes.append,
        )  # fmt: skip
        elapsed = time.perf_counter() - t0
        summaries = [
            r["content"]
            for r in await res.pool.fetch(
                "SELECT content FROM memory_records WHERE tenant_id = $1 AND kind = 'summary'", tenant
            )
        ]
    if record.status != "succeeded" or record.total("episodes") != len(eps):
        raise RuntimeError(f"consolidation run did not finish cleanly: {record.status} {record.errors}")
    distinct = list({(e.session_id, e.content_hash): e.content for e in eps}.values())
    texts = distinct + summaries
    before = raw_before * len(texts) / max(1, len(distinct))  # summaries were not known yet: scale by count
    raw = (before + await _raw_seconds(embedder, texts, settings.consolidation.batch_size)) / 2
    return {
        "episodes": len(eps),
        "embedded_texts": len(texts),
        "summaries": len(summaries),
        "seconds": round(elapsed, 3),
        "episodes_per_s": round(len(eps) / elapsed, 1),
        "raw_seconds": round(raw, 3),
        "raw_embed_per_s": round(len(eps) / raw, 1),
        "ratio": round(raw / elapsed, 3),
        # Wall time spent awaiting the embedder, from inside the same run (robust to machine noise; with
        # parallelism > 1 it includes waiting for the other partition's call, so it is capped at 1).
        "embed_share": round(min(1.0, sum(o.embed_seconds for o in outcomes) / elapsed), 3),
    }


def run(
    json: bool = False, *, episodes: int = 1200, rounds: int = 1, data: str | None = None, **_ignored: Any
) -> dict[str, Any]:
    """Measure parallelism 1 and 2 (each ``rounds`` times, best kept) over ``episodes`` LoCoMo turns
    (``data``: the LoCoMo JSON; default from bench.data)."""
    del json  # printing is the CLI's job
    from bench.env import bench_stores
    from core.settings import EmbeddingSettings

    turns = load_turns(episodes, data)
    embedder = SentenceTransformerEmbedder(EmbeddingSettings(device="cpu"))
    try:
        with (
            tempfile.TemporaryDirectory(prefix="hm-bench-cons-") as tmp,
            bench_stores(Path(tmp) / "srv") as (
                redis_url,
                dsn,
            ),
        ):
            settings = Settings(
                env="test", data_dir=Path(tmp),
                redis={"url": redis_url, "key_prefix": f"hmbench:{uuid.uuid4().hex[:8]}"},
                postgres={"dsn": dsn},
                qdrant={"backend": "edge"},
                consolidation={"n_partitions": N_PARTITIONS, "enabled": False},
            )  # fmt: skip
            asyncio.run(_measure(settings, embedder, turns[:64], 1))  # warm-up: model, pools, code paths
            by: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
            for _ in range(rounds):
                for p in (1, 2):
                    by[p].append(asyncio.run(_measure(settings, embedder, turns, p)))
            _drop_prefix(redis_url, settings.redis.key_prefix)
    finally:
        embedder.close()
    best = {p: max(runs, key=lambda r: r["episodes_per_s"]) for p, runs in by.items()}
    top = max(best.values(), key=lambda r: r["episodes_per_s"])
    return {
        "name": "consolidate",
        "episodes": top["episodes"],
        "episodes_per_s": top["episodes_per_s"],
        "raw_embed_per_s": top["raw_embed_per_s"],  # measured around that same run
        "ratio": top["ratio"],
        "by_parallelism": {p: r["episodes_per_s"] for p, r in best.items()},
        "embed_share_at_1": best[1]["embed_share"],
        "detail": {str(p): r for p, r in best.items()},
        "partitions": N_PARTITIONS,
        "device": embedder.device,
    }


def _drop_prefix(redis_url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for i in range(0, len(keys), 1000):
            client.delete(*keys[i : i + 1000])
    finally:
        client.close()
