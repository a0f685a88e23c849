"""A LangGraph agent whose memory is hybridmem: recall context, answer, write the turn back.

Against a running app (``make run`` serves 127.0.0.1:8000)::

    .venv/bin/python examples/langgraph_agent.py --url http://127.0.0.1:8000 --key <read+write key>

Three nodes: ``recall`` asks ``/v1/context`` for the session's best context within a token budget and
searches the user's long-term notes in the LangGraph store (:class:`HybridMemStore`); ``respond`` is a
deterministic stand-in for the LLM (it answers with the best recalled line); ``remember`` writes the
user and assistant turns back as episodes and keeps the user's statements as notes in the store.
"""

from __future__ import annotations

import argparse
import uuid
from typing import Any, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.store.base import BaseStore

from hybridmem_client import HybridMemAPIError, HybridMemClient
from hybridmem_client.langgraph_store import HybridMemStore

AGENT_ID = "langgraph-demo"


class Turn(TypedDict, total=False):
    session_id: str
    user_id: str
    message: str
    context: str
    notes: list[str]
    answer: str


def build_graph(hm: HybridMemClient, store: BaseStore, *, token_budget: int = 256) -> CompiledStateGraph[Any]:
    """The agent graph; ``hm`` serves context and episodes, ``store`` the user's long-term notes."""

    def recall(state: Turn, *, store: BaseStore) -> dict[str, Any]:
        ctx = hm.context(
            state["message"], token_budget=token_budget, filters={"session_id": state["session_id"]}
        )
        notes = store.search(("users", state["user_id"], "notes"), query=state["message"], limit=3)
        return {"context": ctx.context, "notes": [str(n.value["text"]) for n in notes]}

    def respond(state: Turn) -> dict[str, Any]:
        # Stand-in for the LLM call: the prompt would be the context and notes plus the message.
        recalled = [*state.get("notes", []), *state.get("context", "").splitlines()]
        recalled = [line for line in recalled if line.strip() and line.strip() != state["message"]]
        answer = f"From memory: {recalled[0]}" if recalled else "Noted. I'll remember that."
        return {"answer": answer}

    def remember(state: Turn, *, store: BaseStore) -> dict[str, Any]:
        session, turn_id = state["session_id"], uuid.uuid4().hex
        hm.store_episodes(
            [
                {"id": f"{turn_id}:user", "agent_id": AGENT_ID, "session_id": session, "role": "user",
                 "content": state["message"], "metadata": {"user_id": state["user_id"]}},
                {"id": f"{turn_id}:assistant", "agent_id": AGENT_ID, "session_id": session,
                 "role": "assistant", "content": state["answer"]},
            ]
        )  # fmt: skip
        if not state["message"].rstrip().endswith("?"):  # statements become long-term notes
            store.put(("users", state["user_id"], "notes"), turn_id, {"text": state["message"]})
        return {}

    graph = StateGraph(Turn)
    graph.add_node("recall", recall)
    graph.add_node("respond", respond)
    graph.add_node("remember", remember)
    graph.add_edge(START, "recall")
    graph.add_edge("recall", "respond")
    graph.add_edge("respond", "remember")
    graph.add_edge("remember", END)
    return graph.compile(store=store)


SCRIPT = [
    "My sister Ana lives in Porto and teaches chemistry.",
    "I'm training for the Lisbon half marathon in October.",
    "Where does my sister live?",
    "Which race am I training for?",
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--key", required=True, help="API key with memory:read and memory:write")
    ap.add_argument("--user", default="demo-user")
    ap.add_argument("--session", default=None, help="session id (default: a new one)")
    ap.add_argument("messages", nargs="*", help="user messages (default: a short scripted chat)")
    args = ap.parse_args(argv)

    session = args.session or f"lg-session-{uuid.uuid4().hex[:8]}"
    with HybridMemClient(args.url, args.key, timeout=60) as hm:
        store = HybridMemStore(hm, agent_id=AGENT_ID)
        app = build_graph(hm, store)
        try:
            for message in args.messages or SCRIPT:
                out = app.invoke({"session_id": session, "user_id": args.user, "message": message})
                print(f"user:      {message}\nassistant: {out['answer']}\n")
        except HybridMemAPIError as exc:
            print(f"error: {exc}")
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
