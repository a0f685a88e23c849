"""A bounded mixed load over the real HTTP API, through our own client (its retry policy included).

Each worker owns an :class:`~hybridmem_client.AsyncHybridMemClient` whose transport records the status of
every HTTP attempt, so one logical operation knows whether it was retried and which 5xx it saw. Writes
carry idempotency ids (``{phase tag}-w{writer}-{n}``) and unique content, so the ledger can find each one.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from hybridmem_client import AsyncHybridMemClient, HybridMemAPIError, HybridMemClientError

AGENT = "fault-agent"
TOPICS = ("window seat", "hotel budget", "dentist appointment", "train to Lisbon", "grey kitten", "cello")
# Writers and readers are separate clients, so reads go on while a write waits out a fault.
WRITES = ("episode", "batch", "memory", "episode", "batch")
READS = ("search", "context", "session")
BATCH_SIZE = 4


class StatusLog(httpx.AsyncBaseTransport):
    """A real transport that notes the status of every attempt (0: no response at all)."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self.seen: list[tuple[int, bool]] = []  # (status, had Retry-After)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = await self._inner.handle_async_request(request)
        except httpx.TransportError:
            self.seen.append((0, False))
            raise
        self.seen.append((response.status_code, "retry-after" in response.headers))
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


@dataclass
class Op:
    """One logical operation as the client saw it: every attempt's status and the final outcome."""

    kind: str
    worker: str
    started: float
    ended: float = 0.0
    attempts: list[tuple[int, bool]] = field(default_factory=list)
    acked: bool = False
    error: str | None = None
    sources: list[str] = field(default_factory=list)  # idempotency ids of what a write carried
    sent: dict[str, str] = field(default_factory=dict)  # idempotency id -> the content it carried
    degraded: list[str] = field(default_factory=list)
    source: str | None = None  # session context: which store answered

    @property
    def is_write(self) -> bool:
        return self.kind in ("episode", "batch", "memory")

    @property
    def http_5xx(self) -> int:
        return sum(1 for status, _ in self.attempts if status >= 500)

    @property
    def retried(self) -> bool:
        return len(self.attempts) > 1


@dataclass
class Phase:
    """The operations of one fault window, and the moments the fault began and ended."""

    name: str
    tag: str  # prefix of the phase's session and idempotency ids (URL- and id-safe)
    ops: list[Op] = field(default_factory=list)
    marks: dict[str, float] = field(default_factory=dict)

    def mark(self, label: str) -> None:
        self.marks[label] = time.monotonic()

    def during(self, start: str = "down", end: str = "up") -> list[Op]:
        """Operations that ran entirely inside the fault window."""
        lo, hi = self.marks[start], self.marks.get(end, float("inf"))
        return [op for op in self.ops if op.started >= lo and op.ended <= hi]

    async def settle(self, *, after: str = "up", writes: int = 4, timeout_s: float = 60.0) -> None:
        """Wait until ``writes`` writes that started after ``after`` were acknowledged (service recovered)."""

        async def recovered() -> bool:
            since = self.marks[after]
            return sum(1 for op in self.ops if op.is_write and op.acked and op.started >= since) >= writes

        await until(recovered, timeout_s=timeout_s, what=f"{writes} acknowledged writes after {self.name}")

    @property
    def writes(self) -> list[Op]:
        return [op for op in self.ops if op.is_write]

    @property
    def acked_episode_sources(self) -> list[str]:
        return [s for op in self.ops if op.acked and op.kind in ("episode", "batch") for s in op.sources]

    @property
    def acked_memory_sources(self) -> list[str]:
        return [s for op in self.ops if op.acked and op.kind == "memory" for s in op.sources]

    @property
    def acked_contents(self) -> dict[str, str]:
        """Idempotency id -> content, for every acknowledged record (what the ledger compares)."""
        return {s: text for op in self.ops if op.acked for s, text in op.sent.items()}


class Load:
    """``writers`` + ``readers`` clients, each cycling through its operations with ``pause_s`` between them.

    Reader ``i`` reads the session of writer ``i % writers``.
    """

    def __init__(
        self, base_url: str, api_key: str, *, writers: int = 2, readers: int = 2, pause_s: float = 0.1
    ) -> None:
        self._base_url = base_url
        self._key = api_key
        self._writers = writers
        self._readers = readers
        self._pause_s = pause_s
        self.phases: list[Phase] = []

    @contextlib.asynccontextmanager
    async def phase(self, name: str, tag: str) -> AsyncIterator[Phase]:
        """Run the load while the body injects a fault; on exit wait for in-flight operations (retries)."""
        phase = Phase(name, tag)
        self.phases.append(phase)
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as tg:
            for w in range(self._writers):
                tg.create_task(self._worker(phase, f"w{w}", WRITES, f"{tag}-w{w}", stop))
            for r in range(self._readers):
                tg.create_task(self._worker(phase, f"r{r}", READS, f"{tag}-w{r % self._writers}", stop))
            try:
                yield phase
            finally:
                stop.set()

    async def _worker(
        self, phase: Phase, worker: str, cycle: tuple[str, ...], session: str, stop: asyncio.Event
    ) -> None:
        log = StatusLog()
        async with AsyncHybridMemClient(self._base_url, self._key, transport=log, timeout=30.0) as hm:
            for n in itertools.count():
                if stop.is_set():
                    return
                kind = cycle[n % len(cycle)]
                op = Op(kind=kind, worker=worker, started=time.monotonic())
                log.seen = []
                try:
                    await self._run(hm, op, session, f"{phase.tag}-{worker}-{n}", n)
                    op.acked = True
                except HybridMemAPIError as exc:
                    op.error = f"{exc.status} {exc.code}"
                except HybridMemClientError as exc:
                    op.error = type(exc).__name__
                op.ended = time.monotonic()
                op.attempts = list(log.seen)
                phase.ops.append(op)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self._pause_s)

    async def _run(self, hm: AsyncHybridMemClient, op: Op, session: str, sid: str, n: int) -> None:
        topic = TOPICS[n % len(TOPICS)]
        if op.kind == "episode":
            op.sources = [sid]
            op.sent = {sid: _text(topic, sid)}
            await hm.store_episode(id=sid, agent_id=AGENT, session_id=session, content=op.sent[sid])
        elif op.kind == "batch":
            op.sources = [f"{sid}.{i}" for i in range(BATCH_SIZE)]
            op.sent = {s: _text(topic, s) for s in op.sources}
            await hm.store_episodes(
                [
                    {"id": s, "agent_id": AGENT, "session_id": session, "content": op.sent[s]}
                    for s in op.sources
                ]
            )
        elif op.kind == "memory":
            op.sources = [sid]
            op.sent = {sid: f"The user likes the {topic} ({sid})."}
            await hm.create_memory(id=sid, agent_id=AGENT, content=op.sent[sid])
        elif op.kind == "search":
            found = await hm.search(f"what about the {topic}?", k=5, filters={"session_id": session})
            op.degraded = list(found.degraded)
        elif op.kind == "context":
            ctx = await hm.context(f"remind me of the {topic}", token_budget=256)
            op.degraded = list(ctx.degraded)
        else:
            recent = await hm.session_context(session, limit=10)
            op.degraded, op.source = list(recent.degraded), recent.source


def _text(topic: str, sid: str) -> str:
    return f"Note {sid}: we talked about the {topic} again."


async def until(check: Callable[[], Awaitable[bool]], *, timeout_s: float, what: str) -> float:
    """Poll ``check`` every 0.25 s; seconds it took, or AssertionError naming ``what`` after the timeout."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        with contextlib.suppress(httpx.HTTPError, HybridMemClientError):
            if await check():
                return time.monotonic() - started
        await asyncio.sleep(0.25)
    raise AssertionError(f"{what} not within {timeout_s}s")


def summary(phase: Phase) -> dict[str, Any]:
    """The per-fault counters of the table (lost and duplicated come from the ledger).

    ``writes``/``acknowledged`` count records (episodes and memories), the unit the ledger checks.
    """
    return {
        "requests": len(phase.ops),
        "writes": sum(len(op.sources) for op in phase.writes),
        "acknowledged": sum(len(op.sources) for op in phase.writes if op.acked),
        "failed": sum(1 for op in phase.ops if not op.acked),
        "retried": sum(1 for op in phase.ops if op.retried),
        "http_5xx": sum(op.http_5xx for op in phase.ops),
        "degraded_reads": sum(1 for op in phase.ops if op.degraded),
        "max_write_s": round(max((op.ended - op.started for op in phase.writes), default=0.0), 1),
        "max_read_s": round(
            max((op.ended - op.started for op in phase.ops if not op.is_write), default=0.0), 1
        ),
    }
