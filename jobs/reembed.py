"""Re-embedding job: build the current model version's collection from Postgres, then switch the alias.

    python -m jobs.reembed [--partitions 0,1,...] [--parallelism N]

The new collection is created without touching the alias, filled partition by partition in parallel
(Ray tasks when the vector store is a server or the Serve app owns the embedded store; asyncio tasks in
this process otherwise), and made live in one alias switch at the end. Queries keep reading the old
collection until then; consolidation keeps writing the new model's vectors into the new collection.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

import ray

from core.consolidation.maintenance import ReembedResult, reembed_partition
from core.consolidation.runner import parse_partitions
from core.embedding.loader import load_embedder
from core.embedding.types import TextEmbedder
from core.ports import VectorIndex
from core.resources import postgres_pool
from core.retrieval.bm25_sparse import bm25_sparse
from core.settings import Settings, load_settings
from core.stores.vector_factory import open_vector_index
from jobs.consolidate import ENGINE_OWNER, _job_stores, app_deployments, connect_ray, say


async def reembed(
    settings: Settings,
    *,
    partitions: Sequence[int] | None = None,
    parallelism: int | None = None,
    vectors: VectorIndex | None = None,
    embedder: TextEmbedder | None = None,
    progress: Callable[[ReembedResult], None] | None = None,
) -> dict[str, Any]:
    """In-process re-embedding; returns {version, collection, previous, episodes, summaries, partitions}."""
    chosen = list(partitions) if partitions is not None else list(range(settings.consolidation.n_partitions))
    width = max(1, parallelism or settings.consolidation.parallelism)
    async with contextlib.AsyncExitStack() as stack:
        pool = await postgres_pool(settings)
        stack.push_async_callback(pool.close)
        if vectors is None:
            vectors = await stack.enter_async_context(open_vector_index(settings))
        if embedder is None:
            embedder = await load_embedder(settings.embedding)
        version = await embedder.model_version()
        previous = await vectors.live_version()
        collection = await vectors.ensure_collection(version, make_live=False)
        gate = asyncio.Semaphore(width)
        results: list[ReembedResult] = []

        async def one(p: int) -> None:
            async with gate:
                r = await reembed_partition(
                    pool, vectors, embedder, p, collection=collection,
                    batch_size=settings.consolidation.batch_size,
                    chunk_long_texts=settings.consolidation.chunk_long_texts,
                    lexical=bm25_sparse(settings.retrieval),
                    window=settings.retrieval.lexical_neighbour_window,
                )  # fmt: skip
            results.append(r)
            if progress is not None:
                progress(r)

        async with asyncio.TaskGroup() as tg:
            for p in chosen:
                tg.create_task(one(p))
        await vectors.ensure_collection(version, make_live=True)  # the one alias switch
    return _summary(version.key, collection, previous, results)


def _summary(
    version: str, collection: str, previous: str | None, results: list[ReembedResult]
) -> dict[str, Any]:
    return {
        "version": version, "collection": collection, "previous": previous,
        "episodes": sum(r.episodes for r in results), "summaries": sum(r.summaries for r in results),
        "partitions": sorted(r.partition for r in results),
    }  # fmt: skip


@ray.remote(num_cpus=1, max_retries=2)
def reembed_partition_task(
    settings_data: dict[str, Any], partition: int, collection: str, vector_handle: bool, embedder_handle: bool
) -> dict[str, Any]:
    settings = load_settings(settings_data)

    async def go() -> dict[str, Any]:
        async with _job_stores(settings, vector_handle=vector_handle, embedder_handle=embedder_handle) as (
            res,
            stores,
        ):
            r = await reembed_partition(
                res.pool, stores.vectors, stores.embedder, partition, collection=collection,
                batch_size=settings.consolidation.batch_size,
                chunk_long_texts=settings.consolidation.chunk_long_texts,
                lexical=bm25_sparse(settings.retrieval), window=settings.retrieval.lexical_neighbour_window,
            )  # fmt: skip
            return asdict(r)

    return asyncio.run(go())


def fan_out(settings: Settings, *, partitions: Sequence[int], parallelism: int) -> dict[str, Any]:
    """Ray tasks per partition where the store can be shared across processes; else in-process."""
    deployments = app_deployments()
    vector_handle = settings.qdrant_backend != "server" and ENGINE_OWNER in deployments
    if settings.qdrant_backend != "server" and not vector_handle:
        return asyncio.run(reembed(settings, partitions=partitions, parallelism=parallelism, progress=_show))
    embedder_handle = "Embedder" in deployments

    async def begin() -> tuple[Any, str, str | None]:
        async with _job_stores(settings, vector_handle=vector_handle, embedder_handle=embedder_handle) as (
            _res,
            stores,
        ):
            version = await stores.embedder.model_version()
            previous = await stores.vectors.live_version()
            return version, await stores.vectors.ensure_collection(version, make_live=False), previous

    version, collection, previous = asyncio.run(begin())
    data = settings.model_dump(mode="json")
    queue = list(partitions)
    in_flight: dict[Any, int] = {}
    results: list[ReembedResult] = []
    while queue or in_flight:
        while queue and len(in_flight) < parallelism:
            p = queue.pop(0)
            in_flight[reembed_partition_task.remote(data, p, collection, vector_handle, embedder_handle)] = p
        done, _ = ray.wait(list(in_flight), num_returns=1)
        for ref in done:
            in_flight.pop(ref)
            r = ReembedResult(**ray.get(ref))  # a failed partition fails the job: the alias stays put
            results.append(r)
            _show(r)

    async def switch() -> None:
        async with _job_stores(settings, vector_handle=vector_handle, embedder_handle=embedder_handle) as (
            _res,
            stores,
        ):
            await stores.vectors.ensure_collection(version, make_live=True)

    asyncio.run(switch())
    return _summary(version.key, collection, previous, results)


def _show(r: ReembedResult) -> None:
    say(f"partition {r.partition}: {r.episodes} episodes, {r.summaries} summaries in {r.seconds:.1f}s")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.reembed", description=__doc__.split("\n")[0])
    parser.add_argument("--partitions", help="e.g. 0,1,5-7 (default: all)")
    parser.add_argument("--parallelism", type=int, help="partitions in flight (default: settings)")
    parser.add_argument("--address", help="Ray address (default: RAY_ADDRESS, a running cluster, or local)")
    args = parser.parse_args(argv)
    settings = load_settings()
    partitions = parse_partitions(args.partitions, settings)
    parallelism = max(1, args.parallelism or settings.consolidation.parallelism)
    connect_ray(args.address)
    result = fan_out(settings, partitions=partitions, parallelism=parallelism)
    say(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
