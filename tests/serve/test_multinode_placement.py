"""The whole app from serve_config.yaml on a simulated three-node Ray cluster: GPU placement and autoscaling.

One machine plays a cluster (``ray.cluster_utils.Cluster``): a head, a node advertising one GPU (labelled
like cluster.yaml's ``gpu_worker`` type) and a CPU node. serve_config.yaml is deployed as a user would on
a GPU cluster, with the one value a user flips (the Embedder's ``num_gpus``, here 0.5 so two replicas share
the GPU). The model runs on CPU; what is tested is Ray's placement and Serve's autoscaling:

- every Embedder replica lands on the GPU node, and no other deployment does;
- under load, the Embedder's autoscaling (the config's own policy) adds a replica, again on the GPU node.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from deployments.local import free_port
from tests.conftest import new_key_prefix

pytestmark = [pytest.mark.serve, pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(240)]

REPO = Path(__file__).resolve().parents[2]
APP = "hybridmem"
GPU_LABEL = {"hybridmem-tier": "gpu"}  # what cluster.yaml's gpu_worker node type advertises
EMBEDDER_GPUS = 0.5


def _status(deployment: str) -> dict[str, int]:
    from ray import serve

    app = serve.status().applications.get(APP)
    if app is None or deployment not in app.deployments:
        return {}
    return {str(k): int(v) for k, v in app.deployments[deployment].replica_states.items()}


def _replica_nodes() -> dict[str, list[str]]:
    """Deployment name → node id of each live replica actor (read from the GCS actor table)."""
    from ray._private import state

    nodes: dict[str, list[str]] = defaultdict(list)
    for actor in state.actors(actor_state_name="ALIVE").values():
        prefix, _, name = actor["ActorClassName"].rpartition(":")
        if prefix == f"ServeReplica:{APP}":
            nodes[name].append(actor["Address"]["NodeID"])
    return dict(nodes)


def _wait_running(timeout_s: float) -> None:
    from ray import serve

    deadline = time.monotonic() + timeout_s
    status: Any = None
    while time.monotonic() < deadline:
        status = serve.status().applications.get(APP)
        if status is not None and str(status.status) in {"RUNNING", "ApplicationStatus.RUNNING"}:
            return
        if status is not None and "DEPLOY_FAILED" in str(status.status):
            raise AssertionError(f"deploy failed: {status.message}")
        time.sleep(1)
    raise AssertionError(f"app not RUNNING after {timeout_s}s: {status}")


@pytest.fixture(scope="module")
def cluster(
    redis_url: str, pg_database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """Three Ray nodes in this process, serve_config.yaml deployed on them; yields role → node id."""
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster
    from ray.serve._private import api as serve_api
    from ray.serve.schema import ServeDeploySchema

    assert not ray.is_initialized(), "another test left Ray running"
    data_dir = tmp_path_factory.mktemp("hm-multinode")
    config = yaml.safe_load((REPO / "serve_config.yaml").read_text())
    # Test plumbing only: one HTTP proxy on a free port, and settings pointing at the test stores.
    config["proxy_location"] = "HeadOnly"
    config["http_options"].update(host="127.0.0.1", port=free_port())
    app = config["applications"][0]
    app["args"] = {
        "settings": {
            "env": "test",
            "data_dir": str(data_dir),
            "redis": {"url": redis_url, "key_prefix": new_key_prefix()},
            "postgres": {"dsn": pg_database, "pool_max_size": 2},
            "qdrant": {"backend": "edge", "path": str(data_dir / "qdrant")},
            "embedding": {"device": "cpu", "cpu_threads": 1, "cache_enabled": False},
            "consolidation": {"enabled": False},
        }
    }
    embedder = next(d for d in app["deployments"] if d["name"] == "Embedder")
    embedder["ray_actor_options"]["num_gpus"] = EMBEDDER_GPUS  # the user's switch for GPU clusters
    schema = ServeDeploySchema.model_validate(config)

    sim = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    try:
        gpu = sim.add_node(num_cpus=2, num_gpus=1, labels=GPU_LABEL)
        cpu = sim.add_node(num_cpus=2, labels={"hybridmem-tier": "cpu"})
        sim.wait_for_nodes()
        ray.init(address=sim.address, namespace=f"hm-{uuid.uuid4().hex[:6]}", log_to_driver=False)
        try:
            client = serve_api.serve_start(
                http_options=schema.http_options.model_dump(), proxy_location=schema.proxy_location
            )
            client.deploy_apps(schema)
            _wait_running(timeout_s=150)
            head = sim.head_node
            assert head is not None
            yield {"head": head.node_id, "gpu": gpu.node_id, "cpu": cpu.node_id}
        finally:
            try:
                serve.shutdown()
            finally:
                ray.shutdown()
    finally:
        sim.shutdown()


def test_embedder_replicas_only_on_the_gpu_node(cluster: dict[str, str]) -> None:
    placed = _replica_nodes()
    assert {"Ingress", "Retriever", "Embedder"} <= set(placed), placed
    assert placed["Embedder"] and set(placed["Embedder"]) == {cluster["gpu"]}
    for name, nodes in placed.items():
        if name != "Embedder":
            assert cluster["gpu"] not in nodes, f"{name} took a place on the GPU node"
            assert set(nodes) <= {cluster["head"], cluster["cpu"]}


async def _load(handle: Any, *, in_flight: int, until: float, scaled: Any) -> int:
    """Keep ``in_flight`` embed requests outstanding until ``scaled()`` is true or time runs out."""
    pending: set[asyncio.Future[Any]] = set()
    sent = 0
    next_check = 0.0

    async def one(i: int) -> None:
        result = await handle.embed.remote([f"load request {i} sentence {j} about travel" for j in range(4)])
        assert len(result.vectors) == 4

    while time.monotonic() < until:
        if time.monotonic() >= next_check:
            if scaled():
                break
            next_check = time.monotonic() + 1.0
        while len(pending) < in_flight:
            pending.add(asyncio.ensure_future(one(sent)))
            sent += 1
        done, pending = await asyncio.wait(pending, timeout=0.5, return_when=asyncio.FIRST_COMPLETED)
        for finished in done:
            finished.result()
    await asyncio.gather(*pending)
    return sent


def test_embedder_autoscales_under_load_on_the_gpu_node(cluster: dict[str, str]) -> None:
    from ray import serve

    config = yaml.safe_load((REPO / "serve_config.yaml").read_text())
    embedder = next(d for d in config["applications"][0]["deployments"] if d["name"] == "Embedder")
    policy = embedder["autoscaling_config"]
    assert policy["max_replicas"] >= 2 and policy.get("initial_replicas", policy["min_replicas"]) == 1
    assert _status("Embedder").get("RUNNING") == 1

    handle = serve.get_deployment_handle("Embedder", app_name=APP)
    # Several times the per-replica target in flight, so the policy wants more replicas.
    in_flight = 4 * int(policy["target_ongoing_requests"])

    def two_running() -> bool:
        return _status("Embedder").get("RUNNING", 0) >= 2

    started = time.monotonic()
    sent = asyncio.run(_load(handle, in_flight=in_flight, until=started + 100, scaled=two_running))
    assert two_running(), f"no second Embedder replica after {sent} requests: {_status('Embedder')}"
    placed = _replica_nodes()
    assert len(placed["Embedder"]) >= 2
    assert set(placed["Embedder"]) == {cluster["gpu"]}, "a scaled-up Embedder replica left the GPU node"
