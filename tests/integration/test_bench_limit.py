"""The retrieve benchmark's limit: the app's own routes over stores, model and retriever in one process."""

from __future__ import annotations

from pathlib import Path

import httpx
import redis.asyncio as aioredis

from bench.limit import limit_app
from core.auth import new_api_key
from core.settings import ALL_SCOPES, ApiKeySpec, load_settings


async def test_limit_app_stores_and_retrieves_memories(
    pg_database: str,
    redis_url: str,
    redis_client: aioredis.Redis,
    key_prefix: str,
    tenant: str,
    tmp_path: Path,
) -> None:
    key = new_api_key()
    settings = load_settings(
        {
            "env": "test",
            "data_dir": str(tmp_path),
            "postgres": {"dsn": pg_database},
            "redis": {"url": redis_url, "key_prefix": key_prefix},
            "qdrant": {"backend": "edge", "path": str(tmp_path / "qdrant")},
            "auth": {
                "api_keys": [
                    ApiKeySpec(
                        key_sha256=ApiKeySpec.hash_key(key), tenant_id=tenant, scopes=list(ALL_SCOPES)
                    ).model_dump()
                ]
            },
        }
    )
    facts = {
        "m-flight": "The user booked a window seat on the flight to Lisbon.",
        "m-allergy": "The user is allergic to peanuts and shellfish.",
        "m-budget": "The hotel budget is 150 EUR a night.",
    }
    app = limit_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(transport=transport, base_url="http://limit", headers=headers) as c:
            items = [{"id": k, "agent_id": "a", "content": v} for k, v in facts.items()]
            r = await c.post("/v1/memories/batch", json={"memories": items})
            assert r.status_code < 300, r.text
            r = await c.post("/v1/search", json={"query": "food allergies", "mode": "vector", "k": 1})
            assert r.status_code == 200, r.text
            assert r.json()["degraded"] == []
            assert [h["content"] for h in r.json()["hits"]] == [facts["m-allergy"]]
            r = await c.post("/v1/context", json={"query": "which seat on the flight?", "token_budget": 64})
            assert r.status_code == 200, r.text
            assert facts["m-flight"] in r.json()["context"]
            assert r.json()["degraded"] == []
