"""serve_config.yaml is a config Ray Serve accepts, and it configures the app that build_app really builds.

Validation uses Ray's own ``ServeDeploySchema`` (what ``serve deploy`` and ``serve run`` parse); the app
is built offline with Serve's own builder (no cluster), so a deployment named in the config that the app
does not contain, which ``serve deploy`` rejects, fails here first.
"""

from __future__ import annotations

import copy
import importlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml
from ray.serve.schema import ServeApplicationSchema, ServeDeploySchema

from core.settings import EmbeddingSettings

REPO = Path(__file__).resolve().parents[2]
SERVE_CONFIG = REPO / "serve_config.yaml"
DEPLOYMENTS = {"Ingress", "Retriever", "Embedder"}
BATCH_KEYS = {"max_batch_size", "batch_wait_timeout_s"}


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    loaded = yaml.safe_load(SERVE_CONFIG.read_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def config(raw: dict[str, Any]) -> ServeDeploySchema:
    return ServeDeploySchema.model_validate(raw)


@pytest.fixture(scope="module")
def app(config: ServeDeploySchema) -> ServeApplicationSchema:
    assert len(config.applications) == 1
    return config.applications[0]


def _deployments(raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["name"]: d for d in raw["applications"][0]["deployments"]}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for name in list(os.environ):
        if name.startswith("HYBRIDMEM_"):
            monkeypatch.delenv(name)
    yield monkeypatch


def test_ray_serve_schema_accepts_it(config: ServeDeploySchema, app: ServeApplicationSchema) -> None:
    assert app.name == "hybridmem"
    assert app.route_prefix == "/"
    assert app.import_path == "deployments.app:build_app"
    assert config.http_options.port == 8000


def test_schema_rejects_a_broken_copy(raw: dict[str, Any]) -> None:
    """ServeDeploySchema is a real check: a negative replica count is refused."""
    broken = copy.deepcopy(raw)
    broken["applications"][0]["deployments"][0]["num_replicas"] = -1
    with pytest.raises(pydantic.ValidationError):
        ServeDeploySchema.model_validate(broken)


def test_import_path_resolves_to_the_builder_and_args_are_typed(app: ServeApplicationSchema) -> None:
    module_name, _, attr = app.import_path.partition(":")
    module = importlib.import_module(module_name)
    builder = getattr(module, attr)
    assert callable(builder)
    args_model = module.AppArgs
    assert issubclass(args_model, pydantic.BaseModel)
    args_model.model_validate(app.args)


def test_every_core_deployment_is_configured(raw: dict[str, Any]) -> None:
    assert set(_deployments(raw)) >= DEPLOYMENTS


def test_embedder_asks_for_gpus_in_one_place(raw: dict[str, Any]) -> None:
    deployments = _deployments(raw)
    assert "num_gpus" in deployments["Embedder"]["ray_actor_options"]
    assert isinstance(deployments["Embedder"]["ray_actor_options"]["num_gpus"], int | float)
    text = SERVE_CONFIG.read_text()
    assert len(re.findall(r"^\s+num_gpus:", text, re.M)) == 1, "num_gpus must be set in exactly one place"
    for name, dep in deployments.items():
        if name != "Embedder":
            assert dep.get("ray_actor_options", {}).get("num_gpus", 0) == 0


def test_embedder_autoscales_with_room_to_grow(raw: dict[str, Any]) -> None:
    auto = _deployments(raw)["Embedder"]["autoscaling_config"]
    assert auto["max_replicas"] > auto["min_replicas"] >= 1
    assert auto["target_ongoing_requests"] >= 1
    assert "num_replicas" not in _deployments(raw)["Embedder"]


def test_every_deployment_is_sized_and_health_checked(raw: dict[str, Any]) -> None:
    for name, dep in _deployments(raw).items():
        # Serve's default of 5 in-flight requests starves batching and the async ingress.
        assert dep["max_ongoing_requests"] > 5, name
        assert "num_replicas" in dep or "autoscaling_config" in dep, name
        assert dep["health_check_period_s"] > 0 and dep["health_check_timeout_s"] > 0, name
        assert dep["ray_actor_options"]["num_cpus"] > 0, name


def test_embedder_user_config_is_batch_tuning(raw: dict[str, Any]) -> None:
    user_config = _deployments(raw)["Embedder"]["user_config"]
    assert set(user_config) >= BATCH_KEYS
    # The same names and bounds as the settings the Embedder reads: no drift between the two.
    assert set(user_config) <= set(EmbeddingSettings.model_fields)
    EmbeddingSettings.model_validate(user_config)
    auto = _deployments(raw)["Embedder"]
    assert auto["max_ongoing_requests"] >= user_config["max_batch_size"]


def test_make_run_serves_exactly_this_file() -> None:
    from deployments.cli import build_parser

    assert build_parser().parse_args(["run"]).config == "serve_config.yaml"
    makefile = (REPO / "Makefile").read_text()
    run_recipe = makefile.split("\nrun:", 1)[1].split("\n\n", 1)[0]
    assert "hybridmem run" in run_recipe and "--config" not in run_recipe


def _built_deployment_names(app: ServeApplicationSchema) -> set[str]:
    from ray.serve._private.build_app import build_app

    module_name, _, attr = app.import_path.partition(":")
    application = getattr(importlib.import_module(module_name), attr)(app.args)
    built = build_app(application, name=app.name, route_prefix=app.route_prefix)
    assert built.ingress_deployment_name == "Ingress"
    return {d.name for d in built.deployments}


@pytest.mark.parametrize("qdrant_url", [None, "http://qdrant:6333"], ids=["embedded-qdrant", "qdrant-server"])
def test_configured_deployments_exist_in_the_built_app(
    app: ServeApplicationSchema, clean_env: pytest.MonkeyPatch, tmp_path: Path, qdrant_url: str | None
) -> None:
    """`serve deploy` refuses a config naming a deployment the app lacks: check both Qdrant modes."""
    clean_env.chdir(tmp_path)  # no stray .env
    clean_env.setenv("HYBRIDMEM_DATA_DIR", str(tmp_path))
    if qdrant_url:
        clean_env.setenv("HYBRIDMEM_QDRANT__URL", qdrant_url)
    built = _built_deployment_names(app)
    configured = {d.name for d in app.deployments}
    assert configured <= built, f"configured but not in the app: {configured - built}"
    assert built <= configured, f"in the app but not configured: {built - configured}"


def _excludes(selector: str, value: str) -> bool:
    """Whether a Ray label-selector value (``!v`` or ``!in(a, b)``) refuses nodes labelled ``value``."""
    if selector.startswith("!in(") and selector.endswith(")"):
        return value in {v.strip() for v in selector[4:-1].split(",")}
    return selector == f"!{value}"


def test_cpu_deployments_keep_off_gpu_nodes(raw: dict[str, Any]) -> None:
    """Serve spreads replicas over nodes; without a selector CPU replicas take GPU nodes' CPUs.

    The GPU label is the one cluster.yaml's gpu_worker nodes advertise; nodes without it (a laptop,
    compose, CPU workers) still match, so the selector costs nothing off a cluster.
    """
    cluster = yaml.safe_load((REPO / "cluster.yaml").read_text())
    gpu_labels: dict[str, str] = cluster["available_node_types"]["gpu_worker"]["labels"]
    assert gpu_labels
    for name, dep in _deployments(raw).items():
        selector: dict[str, str] = dep.get("ray_actor_options", {}).get("label_selector") or {}
        refuses_gpu_nodes = any(_excludes(selector.get(k, ""), v) for k, v in gpu_labels.items())
        if name == "Embedder":
            assert not refuses_gpu_nodes
        else:
            assert refuses_gpu_nodes, f"{name} may be placed on a GPU node (label_selector: {selector})"
