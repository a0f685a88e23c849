"""LoCoMo evidence recall@k through the API (LoCoMo paper RAG protocol, see ../shared/bench/README.md).

Each conversation is ingested as one session stream of episodes with its real session timestamps
(``SPEAKER said, "text"``), consolidated by the product's own consolidation job, and every question is
answered by ``POST /v1/search`` restricted to that conversation's session.

Then at the context level: every question through ``POST /v1/context`` at token budgets 256, 512 and
1024 (same session filter), reporting per budget the evidence recall (share of an item's evidence turns
whose text is in the packed context, every countable sentence of it; core.retrieval.repeats), the mean
tokens used and the mean ``redundancy`` (share of a context's tokens repeating a sentence packed earlier
in it), overall and per category; and the same with ``dedupe`` off, side by side, as the control.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from bench.data import locomo_file
from bench.quality import LOCOMO_CATEGORIES, LocomoConversation, RecallAccumulator, load_locomo
from bench.quality_http import (
    against_app,
    consolidate,
    episode_uuid,
    parse_modes,
    post_batches,
    search_ids,
    shown_path,
)
from core.retrieval.repeats import covers, redundancy, sentence_keys
from core.retrieval.tokens import TokenCounter, load_token_counter

BUDGETS = (256, 512, 1024)


class ContextAccumulator:
    """Per-question evidence recall, tokens used and redundancy of packed contexts, overall and per
    category (recall in percent, redundancy a fraction)."""

    def __init__(self) -> None:
        self._rows: list[tuple[str, float, int, float]] = []

    def add(self, category: int, recall: float, tokens: int, repeated: float) -> None:
        self._rows.append((LOCOMO_CATEGORIES.get(category, str(category)), recall, tokens, repeated))

    @staticmethod
    def _figures(rows: list[tuple[str, float, int, float]]) -> dict[str, float]:
        n = len(rows) or 1
        return {
            "recall": round(100.0 * sum(r[1] for r in rows) / n, 2),
            "tokens": round(sum(r[2] for r in rows) / n, 1),
            "redundancy": round(sum(r[3] for r in rows) / n, 4),
        }

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = self._figures(self._rows)
        cats = sorted({r[0] for r in self._rows})
        out["per_category"] = {
            c: self._figures([r for r in self._rows if r[0] == c])
            | {"n": sum(1 for r in self._rows if r[0] == c)}
            for c in cats
        }
        return out


def context_pass(
    client: httpx.Client,
    conversations: list[LocomoConversation],
    *,
    budget: int,
    dedupe: bool,
    counter: TokenCounter,
) -> dict[str, Any]:
    """Every question through /v1/context at ``budget`` tokens: evidence recall, tokens, redundancy."""
    acc = ContextAccumulator()
    for conv in conversations:
        texts = {t.dia_id: t.rendered for t in conv.turns}
        for qa in conv.questions:
            body = {
                "query": qa.question[:4096], "token_budget": budget, "dedupe": dedupe,
                "filters": {"session_id": conv.sample_id},
            }  # fmt: skip
            r = client.post("/v1/context", json=body)
            r.raise_for_status()
            answer = r.json()
            contents = [s["content"] for s in answer["snippets"]]
            keys = set().union(*(sentence_keys(c) for c in contents)) if contents else set()
            joined = "\n".join(contents)
            evidence = [texts[e] for e in qa.evidence if e in texts]
            recall = sum(covers(t, keys, joined) for t in evidence) / len(evidence) if evidence else 1.0
            acc.add(qa.category, recall, int(answer["tokens_used"]), redundancy(contents, counter))
    return acc.summary()


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
    path = locomo_file(data)
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
            counter = load_token_counter()
            contexts: dict[str, dict[str, Any]] = {"context": {}, "context_without_dedupe": {}}
            for budget in BUDGETS:
                for name, dedupe in (("context", True), ("context_without_dedupe", False)):
                    c0 = time.perf_counter()
                    figures = context_pass(
                        client, conversations, budget=budget, dedupe=dedupe, counter=counter
                    )
                    figures["query_seconds"] = round(time.perf_counter() - c0, 1)
                    contexts[name][str(budget)] = figures
                    print(
                        f"  {name} @{budget}: recall {figures['recall']}, tokens {figures['tokens']}, "
                        f"redundancy {figures['redundancy']}",
                        flush=True,
                    )
        head = results.get("hybrid") or results[wanted[0]]
        return {
            **{k: v for k, v in head.items()},
            "modes": results,
            **contexts,
            "data": shown_path(path),
            "ingest_and_consolidate_s": round(ingest_s, 1),
            "consolidation_run": run_info.get("id"),
        }

    result = against_app(body, url=url, key=key)
    result["name"] = "locomo"
    return result
