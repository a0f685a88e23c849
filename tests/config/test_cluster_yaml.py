"""cluster.yaml is a config `ray up` accepts: Ray's own schema and config preparation, plus our intent.

Validation runs what `ray up` runs before it talks to the cloud: ``prepare_config`` (merge with the
provider's defaults) and ``validate_config`` (jsonschema against ``ray/autoscaler/ray-schema.json``).
The commented on-prem variant is extracted and validated too, so it cannot rot.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray.autoscaler
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config
from ray.serve.schema import ServeDeploySchema

REPO = Path(__file__).resolve().parents[2]
CLUSTER_YAML = REPO / "cluster.yaml"
RAY_SCHEMA = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
VARIANT_KEYS = ("provider", "auth", "available_node_types", "head_node_type")
RAY_PORT = 6380


@pytest.fixture(scope="module")
def cluster() -> dict[str, Any]:
    loaded = yaml.safe_load(CLUSTER_YAML.read_text())
    assert isinstance(loaded, dict)
    return loaded


def _on_prem_variant() -> dict[str, Any]:
    text = CLUSTER_YAML.read_text()
    found = re.search(r"^# >>> on-prem variant\n(.*?)^# <<< on-prem variant", text, re.M | re.S)
    assert found, "cluster.yaml lost its commented on-prem variant"
    block = found.group(1)
    yaml_part = block[block.index("# provider:") :]
    variant = yaml.safe_load("\n".join(line.removeprefix("# ") for line in yaml_part.splitlines()))
    assert isinstance(variant, dict)
    return variant


def _all_commands(config: dict[str, Any]) -> str:
    keys = (
        "setup_commands",
        "head_setup_commands",
        "worker_setup_commands",
        "head_start_ray_commands",
        "worker_start_ray_commands",
    )
    commands = [c for k in keys for c in config.get(k, [])]
    for node_type in config["available_node_types"].values():
        commands += node_type.get("worker_setup_commands", [])
    return "\n".join(commands)


def test_matches_ray_schema_file(cluster: dict[str, Any]) -> None:
    schema = json.loads(RAY_SCHEMA.read_text())
    jsonschema.validate(cluster, schema)


def test_schema_rejects_a_broken_config(cluster: dict[str, Any]) -> None:
    """The validation above can fail: a typo'd key or a fractional GPU count is refused."""
    schema = json.loads(RAY_SCHEMA.read_text())
    typo = {**cluster, "head_start_ray_comands": []}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(typo, schema)
    fractional = copy.deepcopy(cluster)
    fractional["available_node_types"]["gpu_worker"]["resources"]["GPU"] = 0.5
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(fractional, schema)


def test_ray_up_preparation_accepts_it(cluster: dict[str, Any]) -> None:
    prepared = prepare_config(copy.deepcopy(cluster))
    validate_config(prepared)
    assert prepared["head_node_type"] == "head"
    assert prepared["provider"]["type"] == "aws"


def test_on_prem_variant_is_valid(cluster: dict[str, Any]) -> None:
    variant = _on_prem_variant()
    assert set(variant) == {"provider", "auth"}
    on_prem = {k: v for k, v in cluster.items() if k not in VARIANT_KEYS} | variant
    prepared = prepare_config(on_prem)
    validate_config(prepared)
    assert prepared["provider"]["type"] == "local"
    assert prepared["available_node_types"]["local.cluster.node"]["max_workers"] == 3


def test_node_types_head_cpu_and_gpu(cluster: dict[str, Any]) -> None:
    types = cluster["available_node_types"]
    assert cluster["head_node_type"] in types
    gpu_types = [name for name, t in types.items() if t["resources"].get("GPU", 0) > 0]
    cpu_types = [
        name
        for name, t in types.items()
        if name != cluster["head_node_type"] and t["resources"].get("GPU", 0) == 0
    ]
    assert gpu_types == ["gpu_worker"]
    assert cpu_types == ["cpu_worker"]
    assert types[cluster["head_node_type"]]["resources"].get("GPU", 0) == 0
    # GPU nodes scale from zero; their max fits under the cluster-wide cap.
    assert types["gpu_worker"]["min_workers"] == 0
    assert sum(t.get("max_workers", 0) for t in types.values()) <= cluster["max_workers"]


def test_setup_installs_torch_first_then_the_project(cluster: dict[str, Any]) -> None:
    for commands in (
        cluster["head_setup_commands"],
        cluster["worker_setup_commands"],
        cluster["available_node_types"]["gpu_worker"]["worker_setup_commands"],
    ):
        joined = "\n".join(commands)
        assert "torch==2.13.0" in joined
        assert "-e ~/hybridmem" in joined
        assert joined.index("torch==2.13.0") < joined.index("-e ~/hybridmem")
    cpu_torch = "download.pytorch.org/whl/cpu"
    assert cpu_torch in "\n".join(cluster["head_setup_commands"])
    assert cpu_torch in "\n".join(cluster["worker_setup_commands"])
    # GPU nodes need the CUDA build, never the CPU wheel.
    assert cpu_torch not in "\n".join(cluster["available_node_types"]["gpu_worker"]["worker_setup_commands"])
    assert "--python 3.11" in "\n".join(cluster["setup_commands"])
    assert cluster["file_mounts"]["~/hybridmem"] == "."


def test_ray_never_takes_the_redis_port(cluster: dict[str, Any]) -> None:
    commands = _all_commands(cluster)
    assert "6379" not in commands
    head_start = "\n".join(cluster["head_start_ray_commands"])
    assert f"--head --port={RAY_PORT}" in head_start
    assert f"$RAY_HEAD_IP:{RAY_PORT}" in "\n".join(cluster["worker_start_ray_commands"])


def test_token_auth_on_every_node(cluster: dict[str, Any]) -> None:
    assert "export RAY_AUTH_MODE=token" in "\n".join(cluster["setup_commands"])
    assert cluster["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"


def test_every_node_gets_the_apps_serve_tuning(cluster: dict[str, Any]) -> None:
    from deployments.serve_env import SERVE_ENV_DEFAULTS

    commands = "\n".join(cluster["setup_commands"])
    for name, value in SERVE_ENV_DEFAULTS.items():
        assert f"{name}={value}" in commands, name
    # HAProxy as every node's ingress, the Ingress replicas behind it (direct ingress).
    assert "RAY_SERVE_ENABLE_HA_PROXY=1 RAY_SERVE_ENABLE_DIRECT_INGRESS=1" in commands


def test_head_migrates_then_deploys_the_serve_app(cluster: dict[str, Any]) -> None:
    """`ray up` ends with the app (and with it the consolidation schedule) deployed."""
    head_start = cluster["head_start_ray_commands"]
    starts = next(i for i, c in enumerate(head_start) if "ray start --head" in c)
    deploy = next(i for i, c in enumerate(head_start) if "serve deploy serve_config" in c)
    assert starts < deploy
    assert "hybridmem migrate upgrade &&" in head_start[deploy]
    assert head_start[deploy].index("migrate upgrade") < head_start[deploy].index("serve deploy")


def test_cluster_deploys_serve_config_with_embedder_on_gpu(cluster: dict[str, Any], tmp_path: Path) -> None:
    """Run the head's config derivation on the real serve_config.yaml; Ray's ServeDeploySchema accepts it."""
    deploy = cluster["head_start_ray_commands"][-1]
    snippet = re.search(r"python -c '([^']*)'", deploy)
    assert snippet, "the deploy command no longer derives the cluster config"
    shutil.copy(REPO / "serve_config.yaml", tmp_path / "serve_config.yaml")
    subprocess.run([sys.executable, "-c", snippet.group(1)], cwd=tmp_path, check=True, timeout=30)
    derived = yaml.safe_load((tmp_path / "serve_config.cluster.yaml").read_text())
    assert "serve deploy serve_config.cluster.yaml" in deploy
    ServeDeploySchema.model_validate(derived)
    original = yaml.safe_load((REPO / "serve_config.yaml").read_text())
    assert derived["http_options"] == {**original["http_options"], "host": "0.0.0.0"}
    gpu_node = cluster["available_node_types"]["gpu_worker"]["resources"]
    for app, original_app in zip(derived["applications"], original["applications"], strict=True):
        for dep, original_dep in zip(app["deployments"], original_app["deployments"], strict=True):
            options = dep.get("ray_actor_options", {})
            if dep["name"] == "Embedder":
                assert options["num_gpus"] == 1
                # One replica fits on one GPU node, so the autoscaler can place it.
                assert options.get("num_cpus", 1) <= gpu_node["CPU"]
                assert options["num_gpus"] <= gpu_node["GPU"]
            else:
                assert dep == original_dep
                assert options.get("num_gpus", 0) == 0
