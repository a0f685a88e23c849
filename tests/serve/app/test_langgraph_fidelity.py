"""HybridMemStore answers like LangGraph's own stores: the same operations, the same answers.

Every scenario of tests/langgraph_scenarios.py runs twice: against the reference (LangGraph's InMemoryStore,
normalised to LangGraph's PostgresStore where the two disagree; see that module) and against a
HybridMemStore on the real app, each on a fresh store (a new ``agent_id`` is a new key space). The answers
must be equal step by step. Answers leave out what differs by design: timestamps (compared as booleans in
the ``timestamps`` scenario) and the ranked order of a query search (compared as the set found over all
pages, the page sizes and repeats).

tests/unit/test_langgraph_scenarios.py checks the scenarios and the reference without the app.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from hybridmem_client import HybridMemClient
from hybridmem_client.langgraph_store import HybridMemStore
from langgraph.store.base import BaseStore

from tests.langgraph_scenarios import SCENARIOS, make_reference, mismatches, run_scenario
from tests.serve.conftest import AppServer

pytestmark = [pytest.mark.serve, pytest.mark.integration, pytest.mark.timeout(600)]


@pytest.fixture
def reference() -> BaseStore:
    """A fresh LangGraph InMemoryStore (fake hashed bag-of-words embedding, ``fields=["$"]``), answering as
    PostgresStore where the two disagree."""
    return make_reference()


@pytest.fixture
def candidate(app_server: AppServer) -> Iterator[BaseStore]:
    """A fresh HybridMemStore on the running app: an agent of its own is an empty key space."""
    client = HybridMemClient(app_server.base_url, app_server.keys["a_rw"], timeout=60)
    try:
        yield HybridMemStore(client, agent_id=f"lgf-{uuid.uuid4().hex[:8]}")
    finally:
        client.close()


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_store_answers_like_langgraph(name: str, reference: BaseStore, candidate: BaseStore) -> None:
    expected = run_scenario(name, reference)
    actual = run_scenario(name, candidate)
    problems = mismatches(expected, actual)
    assert not problems, f"{name}: {len(problems)} step(s) answered unlike LangGraph:\n" + "\n".join(problems)
