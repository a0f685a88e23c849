"""Property: whatever tenants write and however they read, no response carries another tenant's data.

Hypothesis drives random writes (episodes, transcripts, memories, scratchpads) and reads (every read
endpoint, every filter, guessed ids of other tenants, cross-tenant deletes) through the Ingress's HTTP app.
Stores are the in-memory fakes plus the real embedded vector index (Qdrant Edge) and the real
HybridRetriever; the embedder is a stand-in (hashed bag of words). Every content string carries a unique
marker, so a leak shows up as a foreign marker, a foreign id, or a foreign ``tenant_id`` in a response.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import math
import re
import tempfile
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from core.embedding.types import EmbedResult
from core.models import ModelVersion
from core.retrieval.hybrid import HybridRetriever
from core.retrieval.tokens import load_token_counter
from core.service import HybridMemoryService
from core.settings import load_settings
from core.stores.edge_index import EdgeVectorIndex
from tests.fakes import InMemoryEpisodicStore, InMemoryWorkingStore
from tests.unit.test_scopes import ingress_app

TENANTS = ["t0", "t1", "t2"]
AGENTS = ["a0", "a1"]  # the same agent and session names in every tenant, on purpose
SESSIONS = ["s0", "s1"]
WORDS = ["apple", "budget", "contract", "deadline", "engine", "forest", "garden", "harbor"]
MARKER = re.compile(r"mk\d{8}")
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
VERSION = ModelVersion(name="hash-bow", revision="1", dimension=64)


class HashedBagOfWords:
    """Stand-in for the model: texts sharing words get similar vectors (fast, deterministic)."""

    async def embed(self, texts: Sequence[str]) -> EmbedResult:
        vectors = []
        for text in texts:
            v = [0.0] * VERSION.dimension
            for w in re.findall(r"\w+", text.lower()):
                v[int(hashlib.blake2b(w.encode(), digest_size=4).hexdigest(), 16) % VERSION.dimension] += 1.0
            norm = math.sqrt(sum(x * x for x in v)) or 1.0
            vectors.append([x / norm for x in v])
        return EmbedResult(vectors=vectors, truncated=[False] * len(texts), version=VERSION)

    async def model_version(self) -> ModelVersion:
        return VERSION


_MARKERS = itertools.count()  # process-wide: a ledger shared across examples never reuses a marker


class World:
    """The app plus a ledger of who owns which marker and id.

    Operations name the logical tenants t0..t2; ``real`` maps them to the tenant ids the keys carry
    (unique per example where stores outlive it). ``owner`` may be shared across examples: data an
    earlier example left in a shared store then still counts as foreign."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        real: dict[str, str] | None = None,
        owner: dict[str, str] | None = None,
    ) -> None:
        self.client = client
        self.real = real or {t: t for t in TENANTS}
        self.owner: dict[str, str] = {} if owner is None else owner  # marker or id -> real tenant
        self.ids: dict[str, list[str]] = {"episode": [], "transcript": [], "memory": []}
        self.log: list[str] = []

    def marker(self, tenant: str) -> str:
        m = f"mk{next(_MARKERS):08d}"
        self.owner[m] = self.real[tenant]
        return m

    def own(self, kind: str, ident: str, tenant: str) -> None:
        self.owner[ident] = self.real[tenant]
        self.ids[kind].append(ident)

    def check(self, logical: str, r: httpx.Response, what: str) -> None:
        tenant = self.real[logical]
        assert r.status_code < 500, (what, r.status_code, r.text)
        text = r.text
        # An error may echo what the caller itself sent (e.g. the id in a 404); a success may not.
        sent = set(MARKER.findall(str(r.request.url)) + UUID.findall(str(r.request.url)))
        sent = sent if r.status_code >= 400 else set()
        foreign = {
            tok: self.owner[tok]
            for tok in MARKER.findall(text) + UUID.findall(text)
            if tok in self.owner and self.owner[tok] != tenant and tok not in sent
        }
        assert not foreign, f"{what} as {tenant} leaked {foreign}: {text[:500]}"
        for value in _values_of(r.json() if text else None, "tenant_id"):
            assert value == tenant, f"{what} as {tenant} returned tenant_id={value}"


def _values_of(doc: Any, key: str) -> list[Any]:
    if isinstance(doc, dict):
        return [v for k, v in doc.items() if k == key] + [x for v in doc.values() for x in _values_of(v, key)]
    if isinstance(doc, list):
        return [x for v in doc for x in _values_of(v, key)]
    return []


def tenant_keys(real: dict[str, str]) -> dict[str, tuple[str, list[Any]]]:
    """API keys ``{t}-rw`` and ``{t}-ro`` of each logical tenant, carrying its real tenant id."""
    keys: dict[str, tuple[str, list[Any]]] = {
        f"{t}-rw": (r, ["memory:read", "memory:write"]) for t, r in real.items()
    }
    return keys | {f"{t}-ro": (r, ["memory:read"]) for t, r in real.items()}


@contextlib.asynccontextmanager
async def world() -> AsyncIterator[World]:
    keys = tenant_keys({t: t for t in TENANTS})
    app_settings = load_settings({})
    with tempfile.TemporaryDirectory(prefix="hm-iso-") as tmp:
        vectors = await EdgeVectorIndex.open(Path(tmp) / "edge", settings=app_settings.qdrant)
        try:
            working, episodic, embedder = InMemoryWorkingStore(), InMemoryEpisodicStore(), HashedBagOfWords()
            service = HybridMemoryService(
                working=working, episodic=episodic, vectors=vectors, embedder=embedder, settings=app_settings
            )
            core = HybridRetriever(
                working=working, lexical=episodic, vectors=vectors, embedder=embedder,
                settings=app_settings.retrieval, token_counter=load_token_counter(),
            )  # fmt: skip
            app = ingress_app(app_settings, service, keys, retriever=core, embedder=embedder)
            async with app.router.lifespan_context(app):
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                    yield World(client)
        finally:
            await vectors.close()


def h(tenant: str, scope: str = "rw") -> dict[str, str]:
    return {"Authorization": f"Bearer {tenant}-{scope}"}


tenant = st.sampled_from(TENANTS)
agent = st.sampled_from(AGENTS)
session = st.sampled_from(SESSIONS)
words = st.lists(st.sampled_from(WORDS), min_size=1, max_size=4).map(" ".join)
meta = st.dictionaries(st.sampled_from(["topic", "lang"]), st.sampled_from(["x", "y", 1, True]), max_size=2)

write = st.one_of(
    st.tuples(st.just("episode"), tenant, agent, session, words, meta),
    st.tuples(st.just("transcript"), tenant, agent, session, words, meta),
    st.tuples(st.just("memory"), tenant, agent, session, words, meta),
    st.tuples(st.just("scratchpad"), tenant, agent, st.sampled_from(["k0", "k1"]), words, meta),
)
filters = st.fixed_dictionaries(
    {},
    optional={
        "agent_id": agent,
        "session_id": session,
        "kind": st.sampled_from(["message", "fact", ["message", "fact"]]),
        "metadata": meta,
    },
)
read = st.tuples(
    st.sampled_from(
        [
            "list_episodes",
            "get_episode",
            "get_transcript",
            "session",
            "scratchpads",
            "scratchpad",
            "list_memories",
            "get_memory",
            "search",
            "context",
            "delete_episode",
            "delete_memory",
        ]
    ),
    tenant,
    st.sampled_from(["rw", "ro"]),
    agent,
    session,
    filters,
    st.sampled_from(["hybrid", "vector", "lexical"]),
    st.integers(min_value=0, max_value=50),  # picks a (possibly foreign) id or marker
    words,
)


async def do_write(w: World, op: tuple[Any, ...]) -> None:
    kind, t, a, s, text, md = op
    m = w.marker(t)
    c = w.client
    if kind == "episode":
        r = await c.post("/v1/episodes", json={"agent_id": a, "session_id": s, "content": f"{text} {m}",
                                               "metadata": md}, headers=h(t))  # fmt: skip
        assert r.status_code == 201, r.text
        w.own("episode", r.json()["id"], t)
    elif kind == "transcript":
        turns = [{"speaker": "x", "content": f"{text} {m}"}, {"speaker": "y", "content": f"re {m}"}]
        body = {"agent_id": a, "session_id": s, "participants": ["x", "y"], "turns": turns, "metadata": md}
        r = await c.post("/v1/transcripts", json=body, headers=h(t))
        assert r.status_code == 201, r.text
        w.own("transcript", r.json()["transcript"]["id"], t)
        for eid in r.json()["transcript"]["episode_ids"]:
            w.own("episode", eid, t)
    elif kind == "memory":
        body = {"agent_id": a, "session_id": s, "content": f"{text} {m}", "metadata": md}
        r = await c.post("/v1/memories", json=body, headers=h(t))
        assert r.status_code == 201, r.text
        w.own("memory", r.json()["id"], t)
    else:
        r = await c.put(f"/v1/agents/{a}/scratchpad/{s}", json={"value": {"note": f"{text} {m}"}},
                        headers=h(t))  # fmt: skip
        assert r.status_code == 200, r.text


async def do_read(w: World, op: tuple[Any, ...]) -> None:
    name, t, scope, a, s, flt, mode, pick, text = op
    c, hdr = w.client, h(t, scope)

    def some(kind: str) -> str:
        known = w.ids[kind]
        return known[pick % len(known)] if known else str(uuid.uuid4())

    foreign_markers = [m for m, owner in w.owner.items() if m.startswith("mk") and owner != w.real[t]]
    query = f"{text} {foreign_markers[pick % len(foreign_markers)]}" if foreign_markers else text
    if name == "list_episodes":
        params = {k: v for k, v in flt.items() if k in ("agent_id", "session_id")}
        r = await c.get("/v1/episodes", params=params, headers=hdr)
    elif name == "get_episode":
        r = await c.get(f"/v1/episodes/{some('episode')}", headers=hdr)
    elif name == "get_transcript":
        r = await c.get(f"/v1/transcripts/{some('transcript')}", headers=hdr)
    elif name == "session":
        pref = "postgres_only" if pick % 2 else "redis_first"
        r = await c.get(f"/v1/sessions/{s}/context", params={"read_preference": pref}, headers=hdr)
    elif name == "scratchpads":
        r = await c.get(f"/v1/agents/{a}/scratchpad", headers=hdr)
    elif name == "scratchpad":
        r = await c.get(f"/v1/agents/{a}/scratchpad/{s}", headers=hdr)
    elif name == "list_memories":
        r = await c.get("/v1/memories", params={"agent_id": a} if pick % 2 else {}, headers=hdr)
    elif name == "get_memory":
        r = await c.get(f"/v1/memories/{some('memory')}", headers=hdr)
    elif name == "search":
        r = await c.post(
            "/v1/search", json={"query": query, "k": 20, "mode": mode, "filters": flt}, headers=hdr
        )
    elif name == "context":
        body = {"query": query, "token_budget": 2000, "mode": mode, "filters": flt}
        r = await c.post("/v1/context", json=body, headers=hdr)
    else:  # a delete of a possibly foreign id: must not remove another tenant's record
        kind = "episode" if name == "delete_episode" else "memory"
        ident = some(kind)
        path = f"/v1/{'episodes' if kind == 'episode' else 'memories'}/{ident}"
        r = await c.delete(path, headers=h(t))
        owner = w.owner.get(ident)
        logical_owner = next((lt for lt, real in w.real.items() if real == owner), None)
        if owner is not None and owner != w.real[t]:
            assert r.status_code == 404 and r.json()["error"]["message"] != "Not Found", r.text
            if logical_owner is not None:  # an id of this example: its owner still reads it
                still = await c.get(path, headers=h(logical_owner))
                assert still.status_code == 200, (kind, ident, owner, t, still.text, w.log)
        elif owner == w.real[t] and r.status_code == 204:
            w.ids[kind] = [i for i in w.ids[kind] if i != ident]  # replays may list an id twice
    w.log.append(f"{name} {t} {r.request.method} {r.request.url.path} {r.status_code}")
    w.check(t, r, f"{name} {json.dumps(flt)} {mode}")


@settings(
    max_examples=15,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],  # no shrinking: the failure message is enough
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(writes=st.lists(write, min_size=3, max_size=14), reads=st.lists(read, min_size=5, max_size=25))
async def test_no_response_carries_another_tenants_data(
    writes: list[tuple[Any, ...]], reads: list[tuple[Any, ...]]
) -> None:
    async with world() as w:
        await run_example(w, writes, reads)


async def run_example(w: World, writes: list[tuple[Any, ...]], reads: list[tuple[Any, ...]]) -> None:
    for op in writes:
        await do_write(w, op)
    for op in reads:
        await do_read(w, op)


async def test_the_checker_sees_a_leak() -> None:
    """The oracle itself: a response naming a foreign marker, id or tenant_id fails the check."""
    async with world() as w:
        await do_write(w, ("memory", "t0", "a0", "s0", "apple", {}))
        mid = w.ids["memory"][0]
        own = await w.client.get(f"/v1/memories/{mid}", headers=h("t0"))
        w.check("t0", own, "own read")
        planted = httpx.Response(200, json={"tenant_id": "t0"}, request=own.request)
        for fake_leak in (own, planted):
            try:
                w.check("t1", fake_leak, "planted leak")
            except AssertionError:
                continue
            raise AssertionError("the leak checker missed a planted leak")
