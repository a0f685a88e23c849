"""Client mechanics over httpx's MockTransport (the network seam): retries, Retry-After, timeouts, errors.

Every test runs against both the blocking and the async client: they share one method table, and
these tests pin that they behave the same. Endpoint behaviour against the real app is in
tests/serve/app/test_client_e2e.py.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from hybridmem_client import (
    NO_RETRY,
    AsyncHybridMemClient,
    BadRequest,
    Conflict,
    Forbidden,
    HybridMemAPIError,
    HybridMemClient,
    HybridMemTimeout,
    HybridMemTransportError,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    RetryPolicy,
    ServerError,
    ServiceUnavailable,
    Unauthenticated,
    ValidationFailed,
)
from hybridmem_client._errors import parse_retry_after

from core.models import Episode

Handler = Callable[[httpx.Request], httpx.Response]
FAST = RetryPolicy(max_attempts=4, backoff_base_s=0.001, backoff_max_s=0.002, max_retry_after_s=0.05)
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def episode_json(**over: Any) -> dict[str, Any]:
    body = {
        "id": str(uuid.uuid4()), "tenant_id": "t", "agent_id": "a", "session_id": "s", "partition": 3,
        "role": "user", "kind": "message", "content": "hello", "metadata": {},
        "created_at": NOW.isoformat(), "content_hash": "ab",
    }  # fmt: skip
    return body | over


def error(status: int, code: str, message: str = "m", headers: dict[str, str] | None = None,
          **extra: Any) -> httpx.Response:  # fmt: skip
    return httpx.Response(
        status, json={"error": {"code": code, "message": message, **extra}}, headers=headers or {}
    )


class Recorder:
    """A scripted server: answers with each response in turn (or raises), recording requests."""

    def __init__(self, *answers: httpx.Response | Exception | Handler) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        if callable(answer):
            return answer(request)
        return answer


Caller = Callable[..., Awaitable[Any]]


@pytest.fixture(params=["sync", "async"])
def make(request: pytest.FixtureRequest) -> Callable[..., Caller]:
    """Builds ``call(method_name, *args, **kwargs)`` for a client of the parametrised kind."""

    def build(server: Recorder, *, retry: RetryPolicy = FAST, timeout: float = 5.0, **opts: Any) -> Caller:
        if request.param == "sync":
            sync = HybridMemClient(
                "http://hm.test", "k-123", retry=retry, timeout=timeout,
                transport=httpx.MockTransport(server), **opts,
            )  # fmt: skip

            async def call_sync(name: str, *args: Any, **kwargs: Any) -> Any:
                return getattr(sync, name)(*args, **kwargs)

            return call_sync
        aclient = AsyncHybridMemClient(
            "http://hm.test", "k-123", retry=retry, timeout=timeout,
            transport=httpx.MockTransport(server), **opts,
        )  # fmt: skip

        async def call_async(name: str, *args: Any, **kwargs: Any) -> Any:
            return await getattr(aclient, name)(*args, **kwargs)

        return call_async

    return build


async def test_parses_into_core_models_and_sends_the_bearer_key(make: Callable[..., Caller]) -> None:
    server = Recorder(httpx.Response(201, json=episode_json(content="hi")))
    call = make(server)
    ep = await call("store_episode", agent_id="a", session_id="s", content="hi", metadata={"speaker": "x"})
    assert isinstance(ep, Episode) and ep.content == "hi"
    sent = server.requests[0]
    assert sent.headers["authorization"] == "Bearer k-123"
    assert sent.method == "POST" and sent.url.path == "/v1/episodes"
    body = json.loads(sent.content)
    assert re.fullmatch(r"[0-9a-f]{32}", body.pop("id"))  # the client's idempotency key
    assert body == {
        "agent_id": "a", "session_id": "s", "role": "user", "kind": "message", "content": "hi",
        "metadata": {"speaker": "x"},
    }  # fmt: skip


async def test_path_segments_are_escaped(make: Callable[..., Caller]) -> None:
    entry = {"tenant_id": "t", "agent_id": "a/b", "key": "k ?/x", "value": 1, "updated_at": NOW.isoformat()}
    server = Recorder(httpx.Response(200, json=entry))
    await make(server)("get_scratchpad", "a/b", "k ?/x")
    assert server.requests[0].url.raw_path == b"/v1/agents/a%2Fb/scratchpad/k%20%3F%2Fx"


async def test_503_is_retried_honouring_retry_after(make: Callable[..., Caller]) -> None:
    busy = error(
        503, "store_unavailable", "postgres is unavailable", {"Retry-After": "0.03"}, store="postgres"
    )
    server = Recorder(busy, busy, httpx.Response(200, json=episode_json()))
    started = time.perf_counter()
    ep = await make(server)("get_episode", uuid.uuid4())
    elapsed = time.perf_counter() - started
    assert isinstance(ep, Episode)
    assert len(server.requests) == 3
    assert elapsed >= 0.06  # two waits of Retry-After each


async def test_retry_after_is_capped(make: Callable[..., Caller]) -> None:
    slow = error(429, "rate_limited", "slow down", {"Retry-After": "120"})
    server = Recorder(slow, httpx.Response(200, json=episode_json()))
    started = time.perf_counter()
    await make(server)("get_episode", "x")
    assert time.perf_counter() - started < 2.0  # capped at max_retry_after_s, not 120 s
    assert len(server.requests) == 2


async def test_gives_up_after_max_attempts_with_the_typed_error(make: Callable[..., Caller]) -> None:
    server = Recorder(error(429, "rate_limited", "rate limit exceeded", {"Retry-After": "0"}))
    with pytest.raises(RateLimited) as info:
        await make(server, retry=RetryPolicy(max_attempts=3, backoff_base_s=0.001))("list_memories")
    assert len(server.requests) == 3
    assert info.value.status == 429 and info.value.code == "rate_limited" and info.value.retry_after_s == 0


async def test_other_errors_are_not_retried(make: Callable[..., Caller]) -> None:
    server = Recorder(error(500, "internal_error", "boom"))
    with pytest.raises(ServerError):
        await make(server)("get_memory", "x")
    assert len(server.requests) == 1


async def test_readyz_reports_a_degraded_app_without_retrying(make: Callable[..., Caller]) -> None:
    body = {"status": "degraded", "stores": {"redis": "ok", "postgres": "unavailable: down"}}
    server = Recorder(httpx.Response(503, json=body, headers={"Retry-After": "5"}))
    report = await make(server)("readyz")
    assert not report.ok and report.stores["postgres"].startswith("unavailable")
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    ("status", "cls"),
    [(400, BadRequest), (401, Unauthenticated), (403, Forbidden), (404, NotFound), (409, Conflict),
     (413, PayloadTooLarge), (422, ValidationFailed), (429, RateLimited), (500, ServerError),
     (502, ServerError), (503, ServiceUnavailable)],
)  # fmt: skip
async def test_error_statuses_map_to_typed_errors(
    make: Callable[..., Caller], status: int, cls: type[HybridMemAPIError]
) -> None:
    body = error(
        status, "some_code", "what went wrong", {"X-Request-ID": "rid-1"}, field="memories[2].content",
        store="qdrant",
    )  # fmt: skip
    server = Recorder(body)
    with pytest.raises(cls) as info:
        await make(server, retry=RetryPolicy(max_attempts=1))("get_memory", "x")
    err = info.value
    assert isinstance(err, HybridMemAPIError)
    assert (err.status, err.code, err.message, err.field) == (
        status, "some_code", "what went wrong", "memories[2].content",
    )  # fmt: skip
    assert err.details == {"store": "qdrant"} and err.request_id == "rid-1"


async def test_an_error_body_that_is_not_ours_still_maps(make: Callable[..., Caller]) -> None:
    server = Recorder(httpx.Response(502, text="<html>bad gateway</html>"))
    with pytest.raises(ServerError) as info:
        await make(server)("get_memory", "x")
    assert info.value.status == 502 and "bad gateway" in info.value.message


async def test_every_call_carries_the_timeout(make: Callable[..., Caller]) -> None:
    server = Recorder(httpx.Response(200, json={"items": [], "next_cursor": None}))
    await make(server, timeout=1.5)("list_episodes", session_id="s")
    assert server.requests[0].extensions["timeout"] == {
        "connect": 1.5,
        "read": 1.5,
        "write": 1.5,
        "pool": 1.5,
    }


async def test_with_options_overrides_the_timeout_on_shared_connections() -> None:
    server = Recorder(httpx.Response(200, json={"items": [], "next_cursor": None}))
    hm = HybridMemClient("http://hm.test", transport=httpx.MockTransport(server), timeout=30)
    quick = hm.with_options(timeout=0.25)
    quick.list_memories()
    hm.list_memories()
    assert [r.extensions["timeout"]["read"] for r in server.requests] == [0.25, 30]
    quick.close()  # a derived client never closes the shared pool
    hm.list_memories()
    hm.close()


async def test_a_timed_out_post_is_not_retried(make: Callable[..., Caller]) -> None:
    server = Recorder(httpx.ReadTimeout("read timed out"))
    with pytest.raises(HybridMemTimeout):
        await make(server)("consolidate")
    assert len(server.requests) == 1  # it may have been applied, and carries no idempotency key


@pytest.mark.parametrize(
    ("method", "kwargs"),
    [
        ("create_memory", {"agent_id": "a", "content": "c"}),
        ("store_episode", {"agent_id": "a", "session_id": "s", "content": "c"}),
        ("store_episodes", {"episodes": [{"agent_id": "a", "session_id": "s", "content": "c"}]}),
        ("create_memories", {"memories": [{"agent_id": "a", "content": c} for c in "cd"]}),
        ("store_transcript", {"transcript": {"agent_id": "a", "session_id": "s", "participants": ["x"],
                                             "turns": [{"speaker": "x", "content": "c"}]}}),
    ],
)  # fmt: skip
async def test_every_write_carries_an_id_and_a_retry_resends_the_same_one(
    make: Callable[..., Caller], method: str, kwargs: dict[str, Any]
) -> None:
    """A write timed out or answered 503 after its commit is sent again with the same key (the server maps
    it to the same row), and two separate calls get two keys."""
    unavailable = error(503, "store_unavailable", "qdrant: upsert: timed out")
    server = Recorder(httpx.ReadTimeout("read timed out"), unavailable, unavailable)
    with pytest.raises(ServiceUnavailable):
        await make(server)(method, **kwargs)
    bodies = [json.loads(r.content) for r in server.requests]
    assert len(bodies) == 4  # one timeout and three 503s: all retried

    def ids(body: dict[str, Any]) -> list[str]:
        items = body.get("episodes") or body.get("memories") or [body]
        return [item["id"] for item in items]

    assert all(ids(b) == ids(bodies[0]) for b in bodies)
    assert len(set(ids(bodies[0]))) == len(ids(bodies[0]))  # each item its own key
    server = Recorder(unavailable)
    with pytest.raises(ServiceUnavailable):
        await make(server, retry=NO_RETRY)(method, **kwargs)
    assert not set(ids(json.loads(server.requests[0].content))) & set(ids(bodies[0]))


async def test_a_callers_id_is_kept(make: Callable[..., Caller]) -> None:
    server = Recorder(httpx.Response(201, json=episode_json()))
    await make(server)("store_episode", agent_id="a", session_id="s", content="c", id="my-key")
    assert json.loads(server.requests[0].content)["id"] == "my-key"


async def test_a_timed_out_get_is_retried(make: Callable[..., Caller]) -> None:
    server = Recorder(httpx.ReadTimeout("read timed out"), httpx.Response(200, json=episode_json()))
    await make(server)("get_episode", "x")
    assert len(server.requests) == 2


async def test_a_server_timeout_is_retried_for_gets_not_for_posts(make: Callable[..., Caller]) -> None:
    timed_out = error(504, "request_timeout", "the request took longer than 30 s")
    server = Recorder(timed_out, httpx.Response(200, json=episode_json()))
    await make(server)("get_episode", "x")
    assert len(server.requests) == 2
    server = Recorder(timed_out, httpx.Response(201, json=episode_json()))
    with pytest.raises(ServerError) as info:
        await make(server)("consolidate")
    assert len(server.requests) == 1 and info.value.status == 504  # it may have been applied


async def test_connection_failures_are_retried_even_for_posts(make: Callable[..., Caller]) -> None:
    server = Recorder(httpx.ConnectError("refused"), httpx.Response(201, json=episode_json()))
    await make(server)("store_episode", agent_id="a", session_id="s", content="c")
    assert len(server.requests) == 2
    down = Recorder(httpx.ConnectError("refused"))
    with pytest.raises(HybridMemTransportError) as info:
        await make(down)("get_episode", "x")
    assert len(down.requests) == FAST.max_attempts and not info.value.maybe_sent


async def test_wait_consolidation_polls_until_the_run_ends(make: Callable[..., Caller]) -> None:
    run_id = str(uuid.uuid4())

    def run(status: str) -> httpx.Response:
        return httpx.Response(200, json={"id": run_id, "status": status, "partitions": [0, 1],
                                         "started_at": NOW.isoformat()})  # fmt: skip

    server = Recorder(run("running"), run("running"), run("succeeded"))
    done = await make(server)("wait_consolidation", run_id, poll_s=0.01, timeout_s=5)
    assert done.status == "succeeded" and done.done and len(server.requests) == 3
    stuck = Recorder(run("running"))
    with pytest.raises(HybridMemTimeout):
        await make(stuck)("wait_consolidation", run_id, poll_s=0.01, timeout_s=0.05)


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    now = time.time()
    date = format_datetime(datetime.fromtimestamp(now + 30, tz=UTC), usegmt=True)
    assert parse_retry_after(date, now=now) == pytest.approx(30, abs=1.5)


def test_backoff_grows_and_is_capped() -> None:
    policy = RetryPolicy(backoff_base_s=0.5, backoff_max_s=2.0, jitter=0.0)
    assert [policy.delay(n, None) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 2.0, 2.0]
    assert policy.delay(1, 99.0) == policy.max_retry_after_s


def test_both_clients_expose_the_same_typed_methods() -> None:
    import inspect

    from hybridmem_client._endpoints import ApiMethods
    from hybridmem_client._method import AsyncMethod, SyncMethod, endpoint

    names = sorted(n for n, v in vars(ApiMethods).items() if isinstance(v, endpoint))
    assert {"store_episode", "search", "context", "consolidate", "wait_consolidation", "readyz"} <= set(names)
    sync = HybridMemClient("http://hm.test", transport=httpx.MockTransport(Recorder(httpx.Response(200))))
    aclient = AsyncHybridMemClient("http://hm.test")
    for name in names:
        s, a = getattr(sync, name), getattr(aclient, name)
        assert isinstance(s, SyncMethod) and isinstance(a, AsyncMethod)
        assert inspect.signature(s) == inspect.signature(a) and s.__doc__ == a.__doc__
    sync.close()


def test_langgraph_item_ids_are_unambiguous_and_bounded() -> None:
    from hybridmem_client.langgraph_store import MAX_ID_CHARS, item_client_id

    ids = {item_client_id("g", ("a", "b"), "c"), item_client_id("g", ("a/b",), "c"),
           item_client_id("g", ("a",), "b:c"), item_client_id("g", ("a", "b", "c"), ""),
           item_client_id("h", ("a", "b"), "c"), item_client_id("g/a", ("b",), "c")}  # fmt: skip
    assert len(ids) == 6  # the agent is part of the key: two agents' stores never share an item
    long_id = item_client_id("g", ("x" * 300,), "k")
    assert len(long_id) <= MAX_ID_CHARS and long_id != item_client_id("g", ("x" * 301,), "k")


async def test_langgraph_store_refuses_ttl_on_every_path() -> None:
    """put(ttl=...) is refused by LangGraph's BaseStore; a PutOp with a ttl in batch/abatch is refused the
    same way, before anything reaches the network (it used to be stored without its expiry)."""
    from hybridmem_client.langgraph_store import HybridMemStore
    from langgraph.store.base import PutOp

    server = Recorder(httpx.Response(500))
    store = HybridMemStore(
        HybridMemClient("http://hm.test", transport=httpx.MockTransport(server)),
        AsyncHybridMemClient("http://hm.test", transport=httpx.MockTransport(server)),
    )
    messages = []
    for attempt in (
        lambda: store.put(("ns",), "k", {"v": 1}, ttl=5),
        lambda: store.batch([PutOp(("ns",), "k", {"v": 1}, ttl=5)]),
    ):
        with pytest.raises(NotImplementedError) as info:
            attempt()
        messages.append(str(info.value))
    with pytest.raises(NotImplementedError) as info:
        await store.abatch([PutOp(("ns",), "k", {"v": 1}, ttl=5.0)])
    messages.append(str(info.value))
    assert len(set(messages)) == 1 and "TTL is not supported by HybridMemStore" in messages[0]
    assert server.requests == []
