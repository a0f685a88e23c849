"""Ingest a real LoCoMo conversation, consolidate it, and run agent steps whose prompts come from /v1/context.

Against a running app (``make run`` serves 127.0.0.1:8000)::

    .venv/bin/python examples/conversation_agent.py --key <write+admin key>

Every turn becomes an episode of session ``<sample_id>`` at its session's real time (plus its position in
seconds, to keep order), content ``SPEAKER said, "text"``, speaker and dialog id in the metadata. The
"LLM" is a deterministic stand-in: it prints the prompt an agent would send and answers with the top
snippet, and the script reports whether the retrieved context holds the question's evidence turns.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.quality import LocomoConversation, LocomoQuestion, load_locomo
from hybridmem_client import (
    Conflict,
    ContextResult,
    HybridMemAPIError,
    HybridMemClient,
    HybridMemTimeout,
    NotFound,
)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "bench" / "locomo" / "locomo_dev.json"
AGENT_ID = "locomo-agent"
BATCH = 200


def ingest(hm: HybridMemClient, conv: LocomoConversation, session_id: str) -> int:
    """Store the conversation's turns (idempotent: a re-run stores nothing twice)."""
    episodes: list[dict[str, Any]] = []
    for turn in conv.turns:
        base = turn.created_at or datetime(2023, 1, 1, tzinfo=UTC)
        episodes.append(
            {
                "id": f"{session_id}:{turn.dia_id}",
                "agent_id": AGENT_ID,
                "session_id": session_id,
                "role": "user",
                "kind": "message",
                "content": turn.rendered,
                "created_at": base + timedelta(seconds=turn.index),
                "metadata": {"speaker": turn.speaker, "dia_id": turn.dia_id, "session": turn.session},
            }
        )
    inserted = 0
    for start in range(0, len(episodes), BATCH):
        inserted += hm.store_episodes(episodes[start : start + BATCH]).inserted
    return inserted


def consolidate(hm: HybridMemClient, *, wait: bool, timeout_s: float) -> None:
    """Start a consolidation run (or join the one in progress) and, with ``wait``, poll it to the end."""
    try:
        run = hm.consolidate()
    except NotFound:
        print("! POST /v1/admin/consolidations answered 404: this app has no consolidation route; "
              "retrieval below uses the raw episodes only.")  # fmt: skip
        return
    except Conflict as exc:
        running = [r for r in hm.list_consolidations(limit=5) if not r.done]
        if not running:
            raise
        print(f"  a run is already in progress ({exc.message}); joining it")
        run = running[0]
    print(f"  consolidation run {run.id}: {run.status}")
    if not wait:
        return
    try:
        run = hm.wait_consolidation(run.id, poll_s=1.0, timeout_s=timeout_s)
    except HybridMemTimeout:
        print(f"! consolidation still running after {timeout_s:.0f}s; continuing without waiting")
        return
    print(
        f"  consolidation {run.status}: {run.total('episodes')} episodes, {run.total('summaries')} summaries"
    )


def build_prompt(question: str, ctx: ContextResult, speakers: tuple[str, str]) -> str:
    """The prompt an agent would send to its LLM: instructions, retrieved memory, the question."""
    return (
        f"You are a helpful assistant with long-term memory of a conversation between {speakers[0]} and "
        f"{speakers[1]}. Answer the question using only the memory below; cite dates when asked.\n\n"
        f"### Memory ({ctx.tokens_used}/{ctx.token_budget} tokens, {len(ctx.snippets)} snippets)\n"
        f"{ctx.context}\n\n### Question\n{question}\n\n### Answer\n"
    )


def stand_in_llm(ctx: ContextResult) -> str:
    """Deterministic stand-in for the LLM call: the highest-scoring snippet is the 'answer'."""
    if not ctx.snippets:
        return "I don't know."
    best = max(ctx.snippets, key=lambda s: s.score)
    return best.content


def evidence_found(ctx: ContextResult, question: LocomoQuestion) -> tuple[int, int]:
    """How many of the question's evidence turns the packed context holds."""
    dia_ids = {str(s.metadata.get("dia_id")) for s in ctx.snippets if s.metadata.get("dia_id")}
    return sum(1 for e in question.evidence if e in dia_ids), len(question.evidence)


def agent_step(
    hm: HybridMemClient, conv: LocomoConversation, session_id: str, q: LocomoQuestion, budget: int
) -> bool:
    ctx = hm.context(q.question, token_budget=budget, filters={"session_id": session_id})
    prompt = build_prompt(q.question, ctx, conv.speakers)
    answer = stand_in_llm(ctx)
    found, total = evidence_found(ctx, q)
    print("=" * 100)
    print(prompt + answer)
    print("-" * 100)
    print(f"expected: {q.answer!r} | evidence {q.evidence} in context: {found}/{total}")
    tiers = ", ".join(sorted({s.tier.value for s in ctx.snippets})) or "none"
    print(f"tiers used: {tiers}; degraded: {ctx.degraded or 'none'}")
    return total == 0 or found == total


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", nargs="?", default=str(DEFAULT_DATA), help="LoCoMo JSON (default: %(default)s)")
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--key", required=True, help="API key with memory:write (and admin to consolidate)")
    ap.add_argument("--conversation", type=int, default=0, help="index of the conversation in the file")
    ap.add_argument("--questions", type=int, default=3, help="how many of its QA items to ask")
    ap.add_argument("--budget", type=int, default=512, help="token budget of each context")
    ap.add_argument(
        "--wait", action=argparse.BooleanOptionalAction, default=True, help="wait for consolidation"
    )
    ap.add_argument("--no-consolidate", dest="consolidate", action="store_false")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for consolidation")
    args = ap.parse_args(argv)

    conv = load_locomo(args.data)[args.conversation]
    session_id = f"locomo-{conv.sample_id}"
    with HybridMemClient(args.url, args.key, timeout=120) as hm:
        try:
            if not hm.readyz().ok:
                print("! the app reports a degraded store; results may be partial", file=sys.stderr)
            print(f"# {conv.sample_id}: {len(conv.turns)} turns between {' and '.join(conv.speakers)}")
            print(f"  stored {ingest(hm, conv, session_id)} new episodes in session {session_id}")
            if args.consolidate:
                consolidate(hm, wait=args.wait, timeout_s=args.timeout)
            asked = [q for q in conv.questions if q.category != 5][: args.questions]  # skip adversarial
            hits = sum(agent_step(hm, conv, session_id, q, args.budget) for q in asked)
        except HybridMemAPIError as exc:
            print(f"error: {exc}" + (f" (field {exc.field})" if exc.field else ""), file=sys.stderr)
            return 1
    print("=" * 100)
    print(f"{hits}/{len(asked)} questions had all their evidence turns in the context.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
