"""Knowledge updates: does ``/v1/context`` hold a fact's current value and not its stale ones?

Conversations come from :mod:`bench.updates_data` (seeded, generated in the repo): a user states four
facts, distractor turns follow, and later the user changes three of them (one twice). Each conversation
is ingested twice through the API, as two sessions: once with every change declaring what it replaces
(``supersedes``), once without (only what ranking does on its own: relevance, and the time each line
shows). Every question about a changed fact then goes to ``POST /v1/context`` (its session, a token
budget), before consolidation (Postgres and the session buffer answer) and after it (the engine does).

A question is answered when its packed context holds the current value and none of the stale ones.
``declared`` / ``undeclared``: that share after consolidation (0-1); ``*_fresh``: before it;
``undeclared_latest_last``: the share where the current value is at least the last value stated in the
(chronological) context, what a reader taking the latest statement would get; ``unchanged``: share of
the facts that never changed whose value is in the context (the control).
"""

from __future__ import annotations

from typing import Any

import httpx

from bench.quality_http import against_app, consolidate, post_batches
from bench.updates_data import Conversation, Question, generate

BUDGET = 256


def _episodes(conv: Conversation, session: str, *, declared: bool) -> list[dict[str, Any]]:
    out = []
    for t in conv.turns:
        item: dict[str, Any] = {
            "id": t.key.replace(conv.session, session, 1),
            "agent_id": "updates-bench",
            "session_id": session,
            "role": t.role,
            "content": t.content,
            "created_at": t.created_at.isoformat(),
        }
        if declared and t.replaces is not None:
            item["supersedes"] = [t.replaces.replace(conv.session, session, 1)]
        out.append(item)
    return out


def _ingest(client: httpx.Client, conversations: list[Conversation]) -> None:
    # One batch per conversation and flavour: a change may only name a turn stored before or with it.
    for conv in conversations:
        for flavour, declared in (("decl", True), ("und", False)):
            post_batches(client, _episodes(conv, f"{flavour}-{conv.session}", declared=declared))


def _score(text: str, q: Question) -> tuple[bool, bool, bool]:
    """(answered: current in, no stale; current in; the current value is the last value stated)."""
    current = q.current in text
    stale = [text.rfind(v) for v in q.stale if v in text]
    answered = current and not stale
    latest_last = current and all(pos < text.rfind(q.current) for pos in stale)
    return answered, current, latest_last


def _ask(client: httpx.Client, conversations: list[Conversation], flavour: str) -> dict[str, float]:
    answered = latest_last = changed = unchanged_hits = unchanged = 0
    for conv in conversations:
        for q in conv.questions:
            r = client.post(
                "/v1/context",
                json={
                    "query": q.text,
                    "token_budget": BUDGET,
                    "filters": {"session_id": f"{flavour}-{conv.session}"},
                },
            )
            r.raise_for_status()
            ok, present, last = _score(r.json()["context"], q)
            if not q.stale:
                unchanged += 1
                unchanged_hits += present
                continue
            changed += 1
            answered += ok
            latest_last += last
    return {
        "answered": round(answered / max(changed, 1), 4),
        "latest_last": round(latest_last / max(changed, 1), 4),
        "unchanged": round(unchanged_hits / max(unchanged, 1), 4),
        "questions": changed,
    }


def run(
    *, conversations: int | None = None, url: str | None = None, key: str | None = None
) -> dict[str, Any]:
    """The benchmark against the app at ``url`` (or a fresh local one). The returned dict's first keys
    are ``declared``, ``undeclared`` and ``questions``."""
    data = generate(conversations or 30)

    def body(base_url: str, api_key: str, tenant: str) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {api_key}"}
        with httpx.Client(base_url=base_url, headers=headers, timeout=120) as client:
            print(
                f"  ingesting {len(data)} conversations twice (declared and undeclared changes)", flush=True
            )
            _ingest(client, data)
            fresh = {f: _ask(client, data, f) for f in ("decl", "und")}
            print(f"  before consolidation: {fresh}", flush=True)
            consolidate(client)
            after = {f: _ask(client, data, f) for f in ("decl", "und")}
        return {
            "declared": after["decl"]["answered"],
            "undeclared": after["und"]["answered"],
            "questions": after["decl"]["questions"],
            "declared_fresh": fresh["decl"]["answered"],
            "undeclared_fresh": fresh["und"]["answered"],
            "undeclared_latest_last": after["und"]["latest_last"],
            "unchanged": min(after["decl"]["unchanged"], after["und"]["unchanged"]),
            "conversations": len(data),
            "token_budget": BUDGET,
            "seed": 7,
        }

    return against_app(body, url=url, key=key)
