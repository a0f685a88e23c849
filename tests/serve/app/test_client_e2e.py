"""The Python client against the real Serve app: every endpoint family, errors as typed exceptions."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType

import pytest
from hybridmem_client import (
    AsyncHybridMemClient,
    Forbidden,
    HybridMemClient,
    NotFound,
    PayloadTooLarge,
    Unauthenticated,
    ValidationFailed,
)

from core.models import Episode, MemoryRecord, ScratchpadEntry, Tier
from tests.serve.conftest import AppServer

pytestmark = [pytest.mark.serve, pytest.mark.integration, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def hm(app_server: AppServer) -> Iterator[HybridMemClient]:
    with HybridMemClient(app_server.base_url, app_server.keys["a_rw"], timeout=60) as client:
        yield client


@pytest.fixture
async def ahm(app_server: AppServer) -> AsyncIterator[AsyncHybridMemClient]:
    async with AsyncHybridMemClient(app_server.base_url, app_server.keys["a_rw"], timeout=60) as client:
        yield client


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_ready_and_identity(hm: HybridMemClient, app_server: AppServer) -> None:
    assert hm.readyz().ok
    me = hm.whoami()
    assert me.tenant_id == app_server.tenants["a"] and "memory:write" in me.scopes


def test_episodes_round_trip_with_pagination_and_delete(hm: HybridMemClient) -> None:
    session = uid("s")
    t0 = datetime(2023, 5, 8, 13, 56, tzinfo=UTC)
    batch = hm.store_episodes(
        [
            {"id": f"{session}-{i}", "agent_id": "agent", "session_id": session, "content": f"turn {i}",
             "metadata": {"speaker": "Caroline"}, "created_at": t0 + timedelta(minutes=i)}
            for i in range(5)
        ]
    )  # fmt: skip
    assert batch.inserted == 5 and batch.duplicates == 0
    replay = hm.store_episodes([{"id": f"{session}-0", "agent_id": "agent", "session_id": session,
                                 "content": "turn 0", "created_at": t0}])  # fmt: skip
    assert replay.duplicates == 1 and replay.ids[0] == batch.ids[0]

    first = hm.list_episodes(session_id=session, limit=3)
    assert len(first.items) == 3 and first.next_cursor
    rest = hm.list_episodes(session_id=session, limit=3, cursor=first.next_cursor)
    contents = [e.content for e in first.items + rest.items]
    assert sorted(contents) == [f"turn {i}" for i in range(5)]

    one = hm.get_episode(batch.ids[2])
    assert isinstance(one, Episode) and one.metadata["speaker"] == "Caroline"
    assert one.created_at == t0 + timedelta(minutes=2)

    recent = hm.session_context(session, limit=2)
    assert recent.session_id == session and len(recent.episodes) == 2

    hm.delete_episode(batch.ids[2])
    with pytest.raises(NotFound) as info:
        hm.get_episode(batch.ids[2])
    assert info.value.code == "not_found"


def test_transcript_round_trip(hm: HybridMemClient) -> None:
    session = uid("neg")
    turns = [{"speaker": "buyer", "content": "I offer 90."}, {"speaker": "seller", "content": "100."}]
    stored = hm.store_transcript(
        {"agent_id": "agent", "session_id": session, "title": "price talk",
         "participants": ["buyer", "seller"], "turns": turns}
    )  # fmt: skip
    assert stored.created and len(stored.transcript.episode_ids) == 2
    again = hm.get_transcript(stored.transcript.id)
    assert [t.speaker for t in again.turns] == ["buyer", "seller"]


def test_scratchpad_round_trip(hm: HybridMemClient) -> None:
    agent = uid("agent")
    entry = hm.put_scratchpad(agent, "plan: step 1?", {"todo": ["book flight"]}, ttl_s=600)
    assert isinstance(entry, ScratchpadEntry) and entry.value == {"todo": ["book flight"]}
    assert hm.get_scratchpad(agent, "plan: step 1?").value == {"todo": ["book flight"]}
    hm.put_scratchpad(agent, "other", 3)
    assert {e.key for e in hm.list_scratchpad(agent).items} == {"plan: step 1?", "other"}
    hm.delete_scratchpad(agent, "plan: step 1?")
    with pytest.raises(NotFound):
        hm.get_scratchpad(agent, "plan: step 1?")


def test_memories_crud_and_retrieval(hm: HybridMemClient) -> None:
    agent = uid("agent")
    mem = hm.create_memory(
        agent_id=agent, content="Melanie painted a sunrise over the lake in 2022.", kind="fact",
        metadata={"topic": "painting"}, id=uid("m"),
    )  # fmt: skip
    assert isinstance(mem, MemoryRecord) and mem.model_version
    more = hm.create_memories(
        [{"agent_id": agent, "content": "Caroline moved from Sweden four years ago."},
         {"agent_id": agent, "content": "Caroline is researching adoption agencies."}]
    )  # fmt: skip
    assert len(more) == 2
    assert {m.id for m in hm.list_memories(agent_id=agent).items} == {mem.id, *(m.id for m in more)}

    patched = hm.patch_memory(mem.id, content="Melanie painted a sunrise over Lake Tahoe in 2022.")
    assert (
        patched.content.endswith("Lake Tahoe in 2022.") and hm.get_memory(mem.id).content == patched.content
    )

    found = hm.search("what did Melanie paint?", k=3, filters={"agent_id": agent})
    assert found.hits and str(mem.id) in found.hits[0].source_ids
    assert found.top_score is not None

    ctx = hm.context("Where did Caroline move from?", token_budget=64, filters={"agent_id": agent})
    assert ctx.tokens_used <= 64 and ctx.token_budget == 64
    assert any("Sweden" in s.content for s in ctx.snippets) and "Sweden" in ctx.context
    assert all(s.tier in set(Tier) for s in ctx.snippets)

    hm.delete_memory(mem.id)
    with pytest.raises(NotFound):
        hm.get_memory(mem.id)


def test_embeddings(hm: HybridMemClient) -> None:
    out = hm.embed(["a sunrise over the lake", "adoption agencies"])
    assert len(out.vectors) == 2 and len(out.vectors[0]) == out.model_version["dimension"] == 384


def test_errors_are_typed(hm: HybridMemClient, app_server: AppServer) -> None:
    with HybridMemClient(app_server.base_url, "not-a-key") as anon, pytest.raises(Unauthenticated) as info:
        anon.list_memories()
    assert info.value.status == 401

    with (
        HybridMemClient(app_server.base_url, app_server.keys["a_ro"]) as ro,
        pytest.raises(Forbidden) as denied,
    ):
        ro.create_memory(agent_id="a", content="nope")
    assert denied.value.status == 403 and denied.value.details.get("scope") == "memory:write"

    with pytest.raises(ValidationFailed) as bad:
        hm.list_episodes(cursor="!!not-a-cursor!!")
    assert bad.value.status == 422 and bad.value.field == "cursor"

    with pytest.raises(PayloadTooLarge) as big:
        hm.create_memory(agent_id="a", content="x" * 40_000)
    assert big.value.code == "limit_exceeded" and big.value.field == "memory.content"


def test_tenants_are_isolated_through_the_client(hm: HybridMemClient, app_server: AppServer) -> None:
    mine = hm.store_episode(agent_id="agent", session_id=uid("s"), content="tenant A's secret plan")
    with HybridMemClient(app_server.base_url, app_server.keys["b_rw"]) as other:
        with pytest.raises(NotFound):
            other.get_episode(mine.id)
        hits = other.search("secret plan", k=5).hits
        assert all(str(mine.id) not in h.source_ids for h in hits)


def test_consolidation_needs_admin_and_runs_to_the_end(hm: HybridMemClient, app_server: AppServer) -> None:
    with pytest.raises(Forbidden):
        hm.consolidate()
    with HybridMemClient(app_server.base_url, app_server.keys["a_admin"], timeout=60) as admin:
        started = admin.consolidate(partitions=[0])
        run = admin.wait_consolidation(started.id, poll_s=0.5, timeout_s=240)
        assert run.status == "succeeded", run
        assert run.id in {r.id for r in admin.list_consolidations(limit=10)}


async def test_async_client_round_trip(ahm: AsyncHybridMemClient) -> None:
    session = uid("s")
    ep = await ahm.store_episode(
        agent_id="agent", session_id=session, content="async hello", role="assistant"
    )
    assert (await ahm.get_episode(ep.id)).content == "async hello"
    page = await ahm.list_episodes(session_id=session)
    assert [e.id for e in page.items] == [ep.id]
    with pytest.raises(NotFound):
        await ahm.get_memory(uuid.uuid4())


def _example(name: str) -> ModuleType:
    path = Path(__file__).resolve().parents[3] / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"example_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_locomo_example_runs_end_to_end(
    app_server: AppServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def turns(*rows: tuple[str, str, str]) -> list[dict[str, str]]:
        return [{"speaker": who, "dia_id": dia, "text": text} for dia, who, text in rows]

    def qa(question: str, answer: str, dia: str) -> dict[str, object]:
        return {"question": question, "answer": answer, "evidence": [dia], "category": 4}

    sample = {
        "sample_id": uid("conv"),
        "conversation": {
            "speaker_a": "Caroline",
            "speaker_b": "Melanie",
            "session_1_date_time": "1:56 pm on 8 May, 2023",
            "session_1": turns(
                ("D1:1", "Caroline", "I went to an LGBTQ support group yesterday."),
                ("D1:2", "Melanie", "That's great! I painted a sunrise last year."),
            ),
            "session_2_date_time": "1:14 pm on 25 May, 2023",
            "session_2": turns(
                ("D2:1", "Melanie", "I ran a charity race for mental health."),
                ("D2:2", "Caroline", "I'm looking into counseling certification."),
            ),
        },
        "qa": [
            qa("What did Melanie paint?", "a sunrise", "D1:2"),
            qa("What race did Melanie run?", "charity", "D2:1"),
        ],
    }
    data = tmp_path / "locomo_small.json"
    data.write_text(json.dumps([sample]))
    example = _example("conversation_agent")
    argv = [str(data), "--url", app_server.base_url, "--key", app_server.keys["a_admin"], "--questions", "2"]
    assert example.main([*argv, "--timeout", "240"]) == 0
    out = capsys.readouterr().out
    assert "stored 4 new episodes" in out and "consolidation succeeded" in out
    assert 'Melanie said, "That\'s great! I painted a sunrise last year."' in out  # the prompt's memory
    assert "2/2 questions had all their evidence turns in the context." in out

    assert example.main([*argv, "--no-consolidate"]) == 0  # a re-run stores nothing twice
    assert "stored 0 new episodes" in capsys.readouterr().out


def test_langgraph_example_recalls_earlier_turns(
    app_server: AppServer, capsys: pytest.CaptureFixture[str]
) -> None:
    example = _example("langgraph_agent")
    assert (
        example.main(["--url", app_server.base_url, "--key", app_server.keys["a_rw"], "--user", uid("u")])
        == 0
    )
    out = capsys.readouterr().out
    answers = [line for line in out.splitlines() if line.startswith("assistant:")]
    assert len(answers) == 4
    assert "Porto" in answers[2] and "half marathon" in answers[3]


LOCOMO_DEV = Path(__file__).resolve().parents[4] / "shared" / "bench" / "locomo" / "locomo_dev.json"


def _outline(cast_text: str) -> list[str]:
    """The story a recording tells (commands, steps, questions, what was expected and found), without
    what changes from run to run (run ids, timings, scores)."""
    out = "".join(json.loads(line)[2] for line in cast_text.splitlines()[1:]).replace("\r\n", "\n")
    keep = ("$ ", "# ", "  stored ", "  consolidation ", "expected: ", "### Question")
    lines = [line for line in out.splitlines() if line.startswith(keep) or "questions had all" in line]
    lines = [re.sub(r"[0-9a-f]{8}-[0-9a-f-]{27}", "<id>", line) for line in lines]
    # A run consolidates whatever the app holds, not only this conversation: its counts are not the story.
    return [re.sub(r"^  consolidation succeeded: .*", "  consolidation succeeded", line) for line in lines]


@pytest.mark.slow
def test_demo_recording_is_regenerated_and_matches_the_committed_one(
    app_server: AppServer, tmp_path: Path
) -> None:
    """examples/record_demo.py against the real app on a real LoCoMo conversation: a valid asciinema cast
    and SVG, whose story is the one committed in docs/demo (HYBRIDMEM_WRITE_DEMO=1 rewrites it there)."""
    if not LOCOMO_DEV.is_file():
        pytest.skip(f"the demo needs the LoCoMo dev conversations at {LOCOMO_DEV}")
    demo = _example("record_demo")
    code, events = demo.record(
        str(LOCOMO_DEV), app_server.base_url, app_server.keys["a_admin"], questions=2, budget=256, idle_s=2.0,
        echo=False,
    )  # fmt: skip
    assert code == 0
    cast_path, svg_path = demo.write(events, tmp_path)
    lines = cast_path.read_text().splitlines()
    header = json.loads(lines[0])
    assert (header["version"], header["width"], header["height"]) == (2, demo.WIDTH, demo.HEIGHT)
    stamps = [json.loads(line) for line in lines[1:]]
    assert all(kind == "o" for _, kind, _ in stamps)
    assert [t for t, _, _ in stamps] == sorted(t for t, _, _ in stamps)
    story = _outline(cast_path.read_text())
    assert story[0].startswith("$ python examples/conversation_agent.py")
    assert any(line.startswith("  consolidation succeeded") for line in story), story
    assert sum(line.startswith("### Question") for line in story) == 2
    root = ET.fromstring(svg_path.read_text())
    assert root.tag.endswith("svg") and len(root.findall(".//{http://www.w3.org/2000/svg}text")) > 20

    committed = demo.OUT / f"{demo.NAME}.cast"
    if os.environ.get("HYBRIDMEM_WRITE_DEMO"):
        demo.write(events, demo.OUT)
    assert committed.is_file(), "no committed recording: run this test with HYBRIDMEM_WRITE_DEMO=1"
    assert _outline(committed.read_text()) == story
