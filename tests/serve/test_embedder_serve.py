"""The Embedder deployment on a real local Ray + Serve: batching, run-time retuning, HTTP, autoscaling."""

from __future__ import annotations

import concurrent.futures
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

pytestmark = pytest.mark.serve

APP = "embedder-test"
ROUTE = "/embed-test"
# Cache off: these tests watch the model's batches; the cache has its own integration tests.
SETTINGS: dict[str, Any] = {"embedding": {"cache_enabled": False, "cpu_threads": 1}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def serve_port() -> Iterator[int]:
    import ray
    from ray import serve

    port = _free_port()
    ray.init(
        address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False
    )
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        yield port
    finally:
        serve.shutdown()
        ray.shutdown()


def _deploy(user_config: dict[str, Any], **options: Any) -> Any:
    """Deploy from a config, as ``serve deploy`` does: a user_config change then retunes in place."""
    from ray import serve
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    deployment = {
        "name": "Embedder",
        "user_config": user_config,
        "ray_actor_options": {"num_cpus": 0.5, "num_gpus": 0},
        **options,
    }
    config = ServeDeploySchema.model_validate(
        {
            "http_options": {"host": "127.0.0.1"},
            "applications": [
                {
                    "name": APP,
                    "route_prefix": ROUTE,
                    "import_path": "deployments.embedder:build_embedder_app",
                    "args": {"settings": SETTINGS},
                    "deployments": [deployment],
                }
            ],
        }
    )
    _get_global_client().deploy_apps(config, _blocking=True)
    handle = serve.get_app_handle(APP)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait until the live replica runs with this user_config
        stats = handle.batch_stats.remote().result(timeout_s=60)
        if stats["max_batch_size"] == user_config["max_batch_size"]:
            return handle
        time.sleep(0.2)
    raise TimeoutError(f"user_config {user_config} never reached the replica")


def _fire(handle: Any, n: int, texts_per_request: int = 1) -> list[Any]:
    responses = [
        handle.embed.remote([f"request {i} text {j}" for j in range(texts_per_request)]) for i in range(n)
    ]
    return [r.result(timeout_s=120) for r in responses]


def test_concurrent_requests_are_batched_and_user_config_retunes(serve_port: int) -> None:
    handle = _deploy({"max_batch_size": 64, "batch_wait_timeout_s": 0.05})
    results = _fire(handle, 32)
    assert all(len(r.vectors) == 1 and len(r.vectors[0]) == 384 for r in results)
    stats = handle.batch_stats.remote().result()
    assert max(requests for requests, *_ in stats["batches"]) > 1, stats
    assert sum(texts for _, texts, _ in stats["batches"]) == 32

    # Retune at run time: same replica (user_config only), smaller batches from now on.
    handle = _deploy({"max_batch_size": 4, "batch_wait_timeout_s": 0.05})
    _fire(handle, 24)
    stats = handle.batch_stats.remote().result()
    assert stats["max_batch_size"] == 4
    later = stats["batches"][-6:]
    assert sum(texts for _, texts, _ in stats["batches"]) == 32 + 24, "the replica was restarted, not retuned"
    assert all(texts <= 4 for _, texts, _ in later) and max(texts for _, texts, _ in later) > 1, later


def test_large_request_is_split_into_batches_and_matches_the_local_model(serve_port: int) -> None:
    from core.embedding.sentence_model import SentenceTransformerEmbedder
    from core.settings import EmbeddingSettings

    handle = _deploy({"max_batch_size": 16, "batch_wait_timeout_s": 0.0})
    texts = [f"note number {i} about the quarterly plan" for i in range(40)] + ["long " * 900]
    result = handle.embed.remote(texts).result(timeout_s=120)
    assert len(result.vectors) == 41 and result.truncated[-1] and not any(result.truncated[:-1])
    assert all(texts_ <= 16 for _, texts_, _ in handle.batch_stats.remote().result()["batches"][-3:])
    local = SentenceTransformerEmbedder(EmbeddingSettings(cpu_threads=1))
    try:
        np.testing.assert_allclose(result.vectors, local.encode(texts), atol=1e-5)
        assert result.version == local.version
    finally:
        local.close()
    info = handle.info.remote().result()
    assert info["max_seq_length"] == 256 and info["key"] == result.version.key


def test_short_requests_overtake_bulk_work(serve_port: int) -> None:
    """A query sent while a long request is being encoded is answered before that request finishes."""
    handle = _deploy({"max_batch_size": 16, "batch_wait_timeout_s": 0.0})
    calls_before = len(handle.batch_stats.remote().result()["batches"])
    bulk_texts = [f"episode {i}: the team moved the launch review to Thursday" for i in range(480)]
    done_at: dict[str, float] = {}

    def wait_for_bulk() -> Any:
        result = handle.embed.remote(bulk_texts).result(timeout_s=300)
        done_at["bulk"] = time.monotonic()
        return result

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        bulk = pool.submit(wait_for_bulk)
        deadline = time.monotonic() + 120
        while len(handle.batch_stats.remote().result()["batches"]) == calls_before:  # bulk work has begun
            assert time.monotonic() < deadline and not bulk.done(), "the bulk request never reached the model"
            time.sleep(0.02)
        queries = []
        for i in range(3):
            queries.append(handle.embed.remote([bulk_texts[i * 100]]).result(timeout_s=120))
            done_at[f"query {i}"] = time.monotonic()
        result = bulk.result()
    assert "bulk" in done_at and all(done_at[f"query {i}"] < done_at["bulk"] for i in range(3)), done_at
    assert len(result.vectors) == 480 and not any(result.truncated)
    for i, query in enumerate(queries):  # chunks came back in order
        np.testing.assert_allclose(result.vectors[i * 100], query.vectors[0], atol=1e-5)
    chunks = [texts for _, texts, _ in handle.batch_stats.remote().result()["batches"][calls_before:]]
    assert max(chunks) <= 16 and sum(chunks) == 480 + 3, chunks


def test_embed_benchmark_measures_queries_beside_bulk_work(serve_port: int) -> None:
    from bench.embed_bulk import queries_under_bulk

    _deploy({"max_batch_size": 16, "batch_wait_timeout_s": 0.002})
    texts = [f"turn {i}: we should book the venue before the end of the month" for i in range(64)]
    result = queries_under_bulk(
        f"http://127.0.0.1:{serve_port}{ROUTE}", texts, texts, seconds=2, bulk_texts=48
    )
    assert result["bulk_request_texts"] == 48 and "bulk_sent_per_s" not in result["idle"]
    for phase in ("idle", "under_bulk"):
        figures = result[phase]
        assert figures["queries"] >= 1 and 0 < figures["p50_ms"] <= figures["p95_ms"] <= figures["max_ms"]
    assert result["under_bulk"]["bulk_sent_per_s"] > 0


def test_http_and_handle_embedder(serve_port: int) -> None:
    import asyncio

    from deployments.embedder import HandleEmbedder

    handle = _deploy({"max_batch_size": 32, "batch_wait_timeout_s": 0.002})
    r = httpx.post(f"http://127.0.0.1:{serve_port}{ROUTE}", json={"texts": ["hello", "world"]}, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["vectors"]) == 2 and body["model_version"].startswith("all-MiniLM-L6-v2@")

    async def via_handle() -> tuple[Any, Any]:
        embedder = HandleEmbedder(handle)
        return await embedder.embed(["hello"]), await embedder.model_version()

    result, version = asyncio.run(via_handle())
    assert result.version == version
    np.testing.assert_allclose(result.vectors[0], body["vectors"][0], atol=1e-5)


def _running_replicas() -> int:
    from ray import serve

    status = serve.status().applications[APP].deployments["Embedder"]
    return int(status.replica_states.get("RUNNING", 0))


def test_autoscales_to_two_replicas_under_load_and_back(serve_port: int) -> None:
    handle = _deploy(
        {"max_batch_size": 8, "batch_wait_timeout_s": 0.01},
        autoscaling_config={
            "min_replicas": 1,
            "initial_replicas": 1,
            "max_replicas": 2,
            "target_ongoing_requests": 2,
            "upscale_delay_s": 0.5,
            "downscale_delay_s": 2.0,
            "look_back_period_s": 1.0,
            "metrics_interval_s": 0.5,
        },
        max_ongoing_requests=64,
    )
    handle.embed.remote(["warm up"]).result(timeout_s=60)
    assert _running_replicas() == 1
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            handle.embed.remote(["load " * 40] * 4).result(timeout_s=120)

    deadline = time.monotonic() + 60
    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        futures = [pool.submit(client) for _ in range(16)]
        try:
            while _running_replicas() < 2 and time.monotonic() < deadline:
                time.sleep(0.5)
            scaled_up = _running_replicas()
        finally:
            stop.set()
        for f in futures:
            f.result(timeout=120)
    assert scaled_up == 2, "the Embedder did not scale to 2 replicas under load"

    deadline = time.monotonic() + 25  # with the 60 s upscale bound: the test stays under 90 s
    while _running_replicas() > 1 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _running_replicas() == 1, "the Embedder did not scale back down after the load stopped"
