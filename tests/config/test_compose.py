"""docker-compose.yml and the Dockerfile: Compose-spec valid, and wired to what the app's settings expect.

There is no Docker engine here, so the checks are the ones `docker compose config` and a careful reviewer
would make: the file matches the Compose spec schema, every HYBRIDMEM_* variable names a real field of
``core.settings.Settings`` (names derived from the model, so they cannot drift), the settings built from
the compose environment validate in prod, every store those settings point to is a service listening on
that port with a health check, and the Ray head's entrypoint does what it says (run with a fake ``ray``
and ``serve`` CLI, but the real ``hybridmem migrate`` against a real Postgres).
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import jsonschema
import pytest
import yaml
from pydantic import BaseModel
from ray.serve.schema import ServeDeploySchema

from core.settings import ApiKeySpec, Settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
COMPOSE_SCHEMA = REPO.parent / "shared" / "schemas" / "compose-spec.json"
APP_SERVICES = ("ray-head", "ray-worker")
STORES = ("redis", "postgres", "qdrant")
REQUIRED_VARS = {"POSTGRES_PASSWORD", "RAY_AUTH_TOKEN", "HYBRIDMEM_AUTH__API_KEYS"}
_VAR = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def _test_environment() -> dict[str, str]:
    key = ApiKeySpec(key_sha256=ApiKeySpec.hash_key(uuid.uuid4().hex), tenant_id="acme", scopes=["admin"])
    return {
        "POSTGRES_PASSWORD": "pw" + uuid.uuid4().hex,
        "RAY_AUTH_TOKEN": uuid.uuid4().hex,
        "HYBRIDMEM_AUTH__API_KEYS": json.dumps([key.model_dump()]),
    }


def interpolate(value: Any, env: Mapping[str, str], missing: set[str]) -> Any:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}`` interpolation, recursively."""
    if isinstance(value, dict):
        return {k: interpolate(v, env, missing) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env, missing) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"] or "", match["arg"] or ""
        present = env.get(name)
        unset = present is None or (op.startswith(":") and present == "")
        if op.endswith("?") and unset:
            missing.add(name)
            return ""
        if op.endswith("-") and unset:
            return arg
        return present or ""

    return _VAR.sub(one, value.replace("$$", "\0")).replace("\0", "$")


def settings_env_names(model: type[BaseModel], prefix: str = "HYBRIDMEM_") -> set[str]:
    """Every environment variable pydantic-settings reads for ``model`` (nested delimiter ``__``)."""
    names: set[str] = set()
    for field_name, field in model.model_fields.items():
        name = prefix + field_name.upper()
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names |= settings_env_names(annotation, name + "__")
        names.add(name)
    return names


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def compose(raw: dict[str, Any]) -> dict[str, Any]:
    missing: set[str] = set()
    resolved = interpolate(raw, _test_environment(), missing)
    assert not missing
    assert isinstance(resolved, dict)
    return resolved


@pytest.fixture
def app_settings(compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The Settings the app's replicas build from the ray-head environment (and nothing else)."""
    for name in list(os.environ):
        if name.startswith("HYBRIDMEM_"):
            monkeypatch.delenv(name)
    for name, value in compose["services"]["ray-head"]["environment"].items():
        monkeypatch.setenv(name, str(value))
    return Settings(_env_file=None)


def _port_of(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname and parts.port, f"{url} names no host and port"
    return parts.hostname, parts.port


# --- the Compose spec -------------------------------------------------------------------------------


def test_matches_the_compose_spec(raw: dict[str, Any]) -> None:
    if not COMPOSE_SCHEMA.exists():
        pytest.skip(f"Compose spec schema not found at {COMPOSE_SCHEMA}")
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    jsonschema.Draft7Validator(schema).validate(raw)
    broken = copy.deepcopy(raw)
    broken["services"]["ray-head"]["depends_on"]["redis"]["condition"] = "service_up"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(schema).validate(broken)


def test_only_documented_variables_are_required(raw: dict[str, Any]) -> None:
    missing: set[str] = set()
    interpolate(raw, {}, missing)
    assert missing == REQUIRED_VARS
    deploy_doc = (REPO / "docs" / "deploy.md").read_text()
    for name in REQUIRED_VARS:
        assert name in deploy_doc, f"docs/deploy.md does not say how to set {name}"


# --- services: images, health, ordering, limits, volumes -------------------------------------------


def test_store_images_are_official_and_pinned(compose: dict[str, Any]) -> None:
    # Postgres numbers its patch releases MAJOR.MINOR; the others MAJOR.MINOR.PATCH.
    expected = {
        "redis": r"redis:\d+\.\d+\.\d+-alpine$",
        "postgres": r"postgres:\d+\.\d+-alpine$",
        "qdrant": r"qdrant/qdrant:v\d+\.\d+\.\d+$",
    }
    for service, pinned in expected.items():
        image = compose["services"][service]["image"]
        assert re.match(pinned, image), f"{service}: {image} is not official and pinned"


def test_every_service_is_health_checked_limited_and_restarted(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        check = service.get("healthcheck", {})
        assert check.get("test") and not check.get("disable"), f"{name} has no health check"
        limits = service["deploy"]["resources"]["limits"]
        assert float(limits["cpus"]) > 0 and limits["memory"], f"{name} has no resource limits"
        assert service.get("restart") == "unless-stopped"


def test_every_dependency_waits_for_health(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services["ray-head"]["depends_on"]) == set(STORES)
    for name, service in services.items():
        for dep, how in service.get("depends_on", {}).items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            assert how == {"condition": "service_healthy"}, f"{name} → {dep} does not wait for health"


def test_named_volumes_are_declared_and_used(compose: dict[str, Any]) -> None:
    declared = set(compose["volumes"])
    used = set()
    for service in compose["services"].values():
        for mount in service.get("volumes", []):
            source = mount.split(":", 1)[0]
            assert not source.startswith((".", "/")), f"bind mount {mount}: use a named volume"
            used.add(source)
    assert used == declared
    for store in STORES:
        assert compose["services"][store]["volumes"], f"{store} keeps no data"


def test_only_the_app_is_published_and_only_on_loopback(compose: dict[str, Any]) -> None:
    for store in STORES:
        assert "ports" not in compose["services"][store]
    assert compose["services"]["ray-head"]["ports"] == ["127.0.0.1:8000:8000", "127.0.0.1:8265:8265"]


# --- the app's settings point at these services ------------------------------------------------------


def test_environment_names_real_settings_fields(compose: dict[str, Any]) -> None:
    known = settings_env_names(Settings)
    assert "HYBRIDMEM_REDIS__URL" in known and "HYBRIDMEM_AUTH__API_KEYS" in known
    for name in APP_SERVICES:
        env = compose["services"][name]["environment"]
        unknown = {k for k in env if k.startswith("HYBRIDMEM_")} - known
        assert not unknown, f"{name}: {unknown} are not Settings fields"
    assert compose["services"]["ray-head"]["environment"] == {
        **compose["services"]["ray-worker"]["environment"],
        "RAY_PORT": "6380",
    }


def test_settings_from_compose_validate_in_prod(app_settings: Settings) -> None:
    assert app_settings.env == "prod"
    assert app_settings.auth.api_keys[0].tenant_id == "acme"
    assert app_settings.qdrant_backend == "server"
    assert app_settings.embedding.device == "cpu"


def test_every_store_the_app_points_to_exists(app_settings: Settings, compose: dict[str, Any]) -> None:
    services = compose["services"]
    targets = {
        "redis": app_settings.redis.url,
        "postgres": app_settings.postgres.dsn,
        "qdrant": app_settings.qdrant.url,
    }
    for expected_service, url in targets.items():
        assert url, f"the app has no URL for {expected_service}: it would start an embedded one"
        host, port = _port_of(url)
        assert host == expected_service
        service = services[host]
        assert str(port) in service["expose"], f"{host} does not listen on {port}"
        assert str(port) in json.dumps(service["healthcheck"]["test"]), f"{host} health check skips {port}"
    # Nothing else is pointed at: optional URLs (Ollama) stay unset.
    assert app_settings.embedding.ollama_url is None
    assert app_settings.consolidation.ollama_summary_url is None
    assert (app_settings.redis.url or "").endswith(":6379/0")
    assert "--port" in services["redis"]["command"]
    assert services["redis"]["command"][services["redis"]["command"].index("--port") + 1] == "6379"


def test_postgres_credentials_match(app_settings: Settings, compose: dict[str, Any]) -> None:
    dsn = urlsplit(app_settings.postgres.dsn or "")
    pg_env = compose["services"]["postgres"]["environment"]
    assert dsn.username == pg_env["POSTGRES_USER"]
    assert dsn.password == pg_env["POSTGRES_PASSWORD"]
    assert dsn.path.lstrip("/") == pg_env["POSTGRES_DB"]
    assert f"-U {pg_env['POSTGRES_USER']} -d {pg_env['POSTGRES_DB']}" in " ".join(
        compose["services"]["postgres"]["healthcheck"]["test"]
    )


def test_ray_is_wired_on_6380_with_token_auth(compose: dict[str, Any]) -> None:
    head, worker = compose["services"]["ray-head"], compose["services"]["ray-worker"]
    assert head["build"] == {"context": ".", "dockerfile": "Dockerfile"}
    assert worker["image"] == head["image"]
    assert head["environment"]["RAY_PORT"] == "6380" and "6380" in head["expose"]
    assert "--address=ray-head:6380" in worker["command"]
    for service in (head, worker):
        assert service["environment"]["RAY_AUTH_MODE"] == "token"
        assert service["environment"]["RAY_AUTH_TOKEN"]
        assert service["init"] is True
    assert "/readyz" in json.dumps(head["healthcheck"]["test"])


def test_ray_processes_get_the_apps_serve_tuning(compose: dict[str, Any]) -> None:
    from deployments.serve_env import SERVE_ENV_DEFAULTS

    for name in ("ray-head", "ray-worker"):
        env = compose["services"][name]["environment"]
        assert {k: env.get(k) for k in SERVE_ENV_DEFAULTS} == SERVE_ENV_DEFAULTS, name
        assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1" == env["RAY_SERVE_ENABLE_DIRECT_INGRESS"], name


# --- the Dockerfile ------------------------------------------------------------------------------------


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"<<'EOF'.*?\nEOF\n", "<<'EOF'\n", DOCKERFILE.read_text(), flags=re.S)
    text = text.replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            word, _, rest = stripped.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _head_script() -> str:
    found = re.search(r"<<'EOF' /usr/local/bin/hybridmem-head\n(.*?\n)EOF\n", DOCKERFILE.read_text(), re.S)
    assert found, "the Dockerfile lost the hybridmem-head script"
    return found.group(1)


def test_dockerfile_shape() -> None:
    steps = _dockerfile_instructions()
    assert steps[0] == ("FROM", "python:3.11-slim")
    runs = [i for i, (word, _) in enumerate(steps) if word == "RUN"]
    torch = next(i for i in runs if "torch==2.13.0" in steps[i][1])
    project = next(i for i in runs if "pip install ." in steps[i][1])
    assert torch < project, "torch must be installed before the project"
    users = [rest for word, rest in steps if word == "USER"]
    assert users and users[-1] not in ("root", "0")
    exposed = " ".join(rest for word, rest in steps if word == "EXPOSE").split()
    assert {"8000", "8265"} <= set(exposed)
    health = [rest for word, rest in steps if word == "HEALTHCHECK"]
    assert health and "/readyz" in health[0]
    assert ("CMD", '["hybridmem-head"]') in steps


def _ignored(path: str, patterns: list[str]) -> bool:
    from fnmatch import fnmatch

    return any(fnmatch(path, p) or fnmatch(path.split("/")[0], p) for p in patterns)


def test_dockerfile_copies_exist_and_are_in_the_build_context() -> None:
    patterns = [p for p in DOCKERIGNORE.read_text().splitlines() if p and not p.startswith("#")]
    sources = []
    for word, rest in _dockerfile_instructions():
        if word == "COPY" and "<<" not in rest:
            args = [a for a in rest.split() if not a.startswith("--")]
            sources += args[:-1]
    assert {"pyproject.toml", "core", "deployments", "jobs", "serve_config.yaml"} <= set(sources)
    for source in sources:
        assert (REPO / source).exists(), f"COPY {source}: not in the repository"
        assert not _ignored(source, patterns), f"COPY {source}: excluded by .dockerignore"
    for secret in (".env", ".venv", ".git", "tests"):
        assert _ignored(secret, patterns), f"{secret} would be sent to the Docker daemon"


def test_head_script_is_valid_shell() -> None:
    subprocess.run(["sh", "-n"], input=_head_script(), text=True, check=True, timeout=10)


@pytest.fixture
async def empty_database(postgres_admin_dsn: str) -> AsyncIterator[str]:
    name = f"hm_compose_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_admin_dsn, timeout=10)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield urlunsplit(urlsplit(postgres_admin_dsn)._replace(path="/" + name))
    finally:
        admin = await asyncpg.connect(postgres_admin_dsn, timeout=10)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


_FAKE_CLI = """#!/bin/sh
echo "$(basename "$0") $*" >> "$CALLS"
case "$(basename "$0") $1" in
  "serve deploy") cp "$2" "$CALLS.deployed.yaml" ;;
  "ray status") exit 1 ;;
esac
exit 0
"""


@pytest.mark.integration
async def test_head_script_migrates_then_deploys_on_all_interfaces(
    empty_database: str, tmp_path: Path
) -> None:
    """Run hybridmem-head with fake ray/serve CLIs: real migration, then the deploy of the derived config."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("ray", "serve"):
        (bin_dir / tool).write_text(_FAKE_CLI)
        (bin_dir / tool).chmod(0o755)
    script = tmp_path / "hybridmem-head"
    script.write_text(_head_script())
    calls = tmp_path / "calls.log"
    venv_bin = Path(sys.executable).parent
    env = {
        "PATH": f"{bin_dir}:{venv_bin}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "TMPDIR": str(tmp_path),
        "CALLS": str(calls),
        "SERVE_CONFIG": str(REPO / "serve_config.yaml"),
        "RAY_PORT": "6380",
        "HYBRIDMEM_POSTGRES__DSN": empty_database,
    }
    assert shutil.which("hybridmem", path=env["PATH"]), "the hybridmem console script is not installed"
    done = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr  # the (fake) head went away: the container must exit
    assert "ray head is gone" in done.stderr
    assert "upgraded to" in done.stdout
    lines = calls.read_text().splitlines()
    assert lines[0].startswith("ray start --head --port=6380 --dashboard-host=0.0.0.0")
    assert lines[1].startswith("serve deploy ") and lines[1].endswith("--address http://127.0.0.1:8265")
    assert lines[2] == "ray status --address 127.0.0.1:6380"
    deployed = yaml.safe_load(Path(str(calls) + ".deployed.yaml").read_text())
    ServeDeploySchema.model_validate(deployed)
    assert deployed["http_options"]["host"] == "0.0.0.0"
    original = yaml.safe_load((REPO / "serve_config.yaml").read_text())
    assert deployed["applications"] == original["applications"]
    conn = await asyncpg.connect(empty_database, timeout=10)
    try:
        assert await conn.fetchval("SELECT version_num FROM alembic_version")
    finally:
        await conn.close()
