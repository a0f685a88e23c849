"""LoCoMo evidence recall@k through the API (LoCoMo paper RAG protocol, see ../shared/bench/README.md).

Each conversation is ingested as one session stream of episodes with its real session timestamps
(``SPEAKER said, "text"``), consolidated by the product's own consolidation job, and every question is
answered by ``POST /v1/search`` restricted to that conversation's session.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from core.bench_quality import RecallAccumulator, load_locomo
from jobs.bench_quality_http import (
    consolidate,
    episode_uuid,
    parse_modes,
    post_batches,
    search_ids,
    shown_path,
)

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "bench" / "locomo" / "locomo_dev.json"


def ingest(client: httpx.Client, tenant: str, data: Path) -> tuple[dict[str, str], list[Any]]:
    conversations = load_locomo(data)
    id_map: dict[str, str] = {}
    for conv in conversations:
        items = []
        for turn in conv.turns:
            base = turn.created_at or datetime(2023, 1, 1, tzinfo=UTC)
            client_id = f"locomo:{conv.sample_id}:{turn.dia_id}"
            id_map[episode_uuid(tenant, client_id)] = turn.dia_id
            items.append({
                "id": client_id,
                "agent_id": "locomo",
                "session_id": conv.sample_id,
                "role": "user",
                "kind": "message",
                "content": turn.rendered,
                "created_at": (base + timedelta(seconds=turn.index)).isoformat(),
                "metadata": {"dia_id": turn.dia_id, "speaker": turn.speaker, "session": turn.session},
            })  # fmt: skip
        post_batches(client, items)
        print(f"  ingested {conv.sample_id}: {len(items)} turns", flush=True)
    return id_map, conversations


def run(
    *, data: str | None = None, modes: str | None = None, url: str | None = None, key: str | None = None
) -> dict[str, Any]:
    path = Path(data) if data else DEFAULT_DATA
    wanted = parse_modes(modes)

    def body(base_url: str, api_key: str, tenant: str) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {api_key}"}
        with httpx.Client(base_url=base_url, headers=headers, timeout=120) as client:
            t0 = time.perf_counter()
            id_map, conversations = ingest(client, tenant, path)
            run_info = consolidate(client)
            ingest_s = time.perf_counter() - t0
            results: dict[str, Any] = {}
            for mode in wanted:
                acc = RecallAccumulator()
                q0 = time.perf_counter()
                for conv in conversations:
                    for qa in conv.questions:
                        ranked = search_ids(
                            client,
                            qa.question,
                            mode=mode,
                            k=50,
                            id_map=id_map,
                            filters={"session_id": conv.sample_id},
                        )
                        acc.add(ranked, qa.evidence, qa.category)
                summary = acc.summary()
                summary["mode"] = mode
                summary["query_seconds"] = round(time.perf_counter() - q0, 1)
                results[mode] = summary
                print(f"  {mode}: recall@10 = {summary['recall@10']}", flush=True)
        head = results.get("hybrid") or results[wanted[0]]
        return {
            **{k: v for k, v in head.items()},
            "modes": results,
            "data": shown_path(path),
            "ingest_and_consolidate_s": round(ingest_s, 1),
            "consolidation_run": run_info.get("id"),
        }

    if url and key:
        tenant = httpx.get(f"{url}/v1/whoami", headers={"Authorization": f"Bearer {key}"}).json()["tenant_id"]
        result = body(url, key, tenant)
    else:
        from jobs.bench_env import bench_app

        with bench_app() as app:
            result = body(app.base_url, app.key, app.tenant)
    result["name"] = "locomo"
    return result
