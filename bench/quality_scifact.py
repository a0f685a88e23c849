"""SciFact (BEIR layout) nDCG@10 and recall@100 through the API: abstracts ingested as episodes,
consolidated by the product's job, claims answered by ``POST /v1/search``."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from bench.data import SCIFACT_SOURCE, required, scifact_dir
from bench.quality import beir_summary, load_beir_corpus, load_beir_queries, load_qrels
from bench.quality_http import (
    against_app,
    consolidate,
    episode_uuid,
    parse_modes,
    post_batches,
    search_ids,
    shown_path,
)


def run(
    *,
    data: str | None = None,
    qrels: str | None = None,
    modes: str | None = None,
    url: str | None = None,
    key: str | None = None,
) -> dict[str, Any]:
    root = scifact_dir(data)
    qrels_path = required(Path(qrels) if qrels else root / "qrels" / "train.tsv", SCIFACT_SOURCE)
    wanted = parse_modes(modes)
    corpus = load_beir_corpus(root / "corpus.jsonl")
    queries = load_beir_queries(root / "queries.jsonl")
    relevant = load_qrels(qrels_path)
    judged = {qid: rels for qid, rels in relevant.items() if qid in queries}

    def body(base_url: str, api_key: str, tenant: str) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {api_key}"}
        # One session per abstract: neighbour-turn context must never mix two documents.
        epoch = datetime(2020, 1, 1, tzinfo=UTC)
        id_map: dict[str, str] = {}
        items = []
        for i, doc in enumerate(corpus):
            client_id = f"scifact:{doc.doc_id}"
            id_map[episode_uuid(tenant, client_id)] = doc.doc_id
            text = f"{doc.title}. {doc.text}" if doc.title else doc.text
            items.append(
                {
                    "id": client_id,
                    "agent_id": "scifact",
                    "session_id": f"doc-{doc.doc_id}",
                    "role": "observation",
                    "kind": "document",
                    "content": text[:32_000],
                    "created_at": (epoch + timedelta(seconds=i)).isoformat(),
                    "metadata": {"doc_id": doc.doc_id},
                }
            )
        with httpx.Client(base_url=base_url, headers=headers, timeout=300) as client:
            t0 = time.perf_counter()
            post_batches(client, items, batch=250)
            print(f"  ingested {len(items)} abstracts", flush=True)
            consolidate(client)
            ingest_s = time.perf_counter() - t0
            results: dict[str, Any] = {}
            for mode in wanted:
                runs: dict[str, list[str]] = {}
                q0 = time.perf_counter()
                for qid in judged:
                    runs[qid] = search_ids(client, queries[qid], mode=mode, k=100, id_map=id_map, filters={})
                summary: dict[str, Any] = dict(beir_summary(runs, judged))
                summary["mode"] = mode
                summary["query_seconds"] = round(time.perf_counter() - q0, 1)
                results[mode] = summary
                print(f"  {mode}: ndcg@10 = {summary['ndcg@10']}", flush=True)
        head = results.get("hybrid") or results[wanted[0]]
        return {
            **head,
            "modes": results,
            "data": shown_path(root),
            "qrels": shown_path(qrels_path),
            "queries": len(judged),
            "ingest_and_consolidate_s": round(ingest_s, 1),
        }

    result = against_app(body, url=url, key=key)
    result["name"] = "scifact"
    return result
