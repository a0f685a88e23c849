"""LangGraph ``BaseStore`` backed by hybridmem (install the extra ``hybridmem[langgraph]``).

Each item is a semantic memory of the store's ``agent_id`` and kind ``lg_item``. Its client id is
``lg:<json [agent_id, *namespace, key]>``, so the memory's UUID is known without a lookup (the API
derives it with :func:`hybridmem_client.ids.deterministic_id` from the tenant and that id), and two
stores of different agents never share an item. The memory's metadata holds
``lg_namespace``, ``lg_key``, the value as JSON text (``lg_value``; metadata is size-limited by the
service) and one ``lg_ns_<i>`` label per namespace level, so a namespace prefix is a metadata
equality filter on the server.

Semantics follow LangGraph's own stores (tests/serve/app/test_langgraph_fidelity.py runs the same
operations against ``InMemoryStore``; where that and LangGraph's Postgres store disagree, this store
follows the Postgres store):

- Indexing: ``index=False``, or ``index=[paths]`` (or the store's ``index_fields``) that find no text in
  the value, stores the item unindexed (``MemoryIn.index`` false): never embedded, never found by a
  query search, still read by ``get`` and listed by a search without a query. Otherwise only the text at
  those paths is embedded (the whole value as JSON by default).
- A query search ranks the matching items by the service's hybrid score (dense + BM25, fused), with the
  service's near-duplicate removal and MMR off, so distinct keys are never merged. The best 200 are
  ranked; when a page reaches past them, the remaining matching indexed items follow, most recently
  updated first, without a score. Pages are slices of that one ordering, so they tile it.
- A search without a query lists the matching items most recently updated first (the Postgres store's
  order; ties by namespace and key).
- In a batch every read sees the state before the batch's writes, and of several writes to one key the
  last wins (both LangGraph stores do this).
- Hits carry the item's own ``created_at`` and ``updated_at``; an update keeps ``created_at``.

TTL is not supported: ``put(ttl=...)`` and a ``PutOp`` with a ``ttl`` in ``batch``/``abatch`` are refused
alike (``NotImplementedError``, as LangGraph's ``BaseStore.put`` does), before anything is sent.

Limits: a value's JSON must fit the service's metadata limit (16 KiB by default); searches that need the
full set (no query, a page past the best 200, a value filter that few of them pass) and
``list_namespaces`` page through every item of the agent, so give each large key space its own agent.

Batches run as one flow per call, on the blocking client (``batch``) or the async one (``abatch``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from langgraph.store.base import (
    BaseStore,
    GetOp,
    Item,
    ListNamespacesOp,
    MatchCondition,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
    get_text_at_path,
    tokenize_path,
    validate_op_namespace,
)

from hybridmem_client._errors import NotFound
from hybridmem_client._flow import Flow
from hybridmem_client.client import AsyncHybridMemClient, HybridMemClient
from hybridmem_client.ids import deterministic_id
from hybridmem_client.models import MemoryIn, MemoryRecord

ITEM_KIND = "lg_item"
MAX_ID_CHARS = 256
MAX_CONTENT_CHARS = 8_000  # what is embedded and searched; the full value lives in metadata
PAGE = 500  # list page size (the API's maximum)
PUT_CHUNK = 500  # memories per batch upsert
RANKED = 200  # hits a query search asks the service for (its maximum k)
Api = HybridMemClient | AsyncHybridMemClient


def item_client_id(agent_id: str, namespace: tuple[str, ...], key: str) -> str:
    """The memory's idempotency key, one per (agent, namespace, key): unambiguous for any labels; hashed
    when it would be too long."""
    raw = "lg:" + json.dumps([agent_id, *namespace, key], ensure_ascii=False, separators=(",", ":"))
    if len(raw) <= MAX_ID_CHARS:
        return raw
    return "lg:sha256:" + hashlib.sha256(raw.encode()).hexdigest()


def _matches(condition: MatchCondition, namespace: tuple[str, ...]) -> bool:
    path = condition.path
    if len(namespace) < len(path):
        return False
    pairs = (
        zip(namespace, path, strict=False)
        if condition.match_type == "prefix"
        else zip(reversed(namespace), reversed(path), strict=False)
    )
    return all(want == "*" or have == want for have, want in pairs)


_MISSING = object()


def _json_form(value: Any) -> Any:
    """A form whose equality is JSON equality: typed (``true`` is not ``1``), numbers by value (1 = 1.0)."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int | float):
        return ("number", value)
    if isinstance(value, list | tuple):
        return ("array", tuple(_json_form(v) for v in value))
    if isinstance(value, dict):
        return ("object", frozenset((k, _json_form(v)) for k, v in value.items()))
    return (type(value).__name__, value)


def _json_equal(a: Any, b: Any) -> bool:
    return bool(_json_form(a) == _json_form(b))


def _filter_matches(value: dict[str, Any], filters: dict[str, Any]) -> bool:
    """LangGraph's Postgres store's filter: one condition per top-level key, all must hold; a missing key
    matches no condition (SQL NULL: not ``$ne`` either, nor ``None``); equality is JSON equality;
    ``$eq``/``$ne``/``$gt``/``$gte``/``$lt``/``$lte``. Beyond it: a plain dict matches a nested subset (as
    InMemoryStore does; the Postgres store refuses it), and order operators compare numbers as numbers."""
    return all(_matches_value(value.get(k, _MISSING), wanted) for k, wanted in filters.items())


def _matches_value(have: Any, wanted: Any) -> bool:
    if have is _MISSING:
        return False
    if isinstance(wanted, dict) and any(k.startswith("$") for k in wanted):
        return all(_operator(have, op, arg) for op, arg in wanted.items())
    if isinstance(wanted, dict):
        return isinstance(have, dict) and all(
            _matches_value(have.get(k, _MISSING), v) for k, v in wanted.items()
        )
    return _json_equal(have, wanted)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return float(value)
    except ValueError:
        return None


def _operator(value: Any, op: str, arg: Any) -> bool:
    if op == "$eq":
        return _json_equal(value, arg)
    if op == "$ne":
        return not _json_equal(value, arg)
    if op not in ("$gt", "$gte", "$lt", "$lte"):
        raise ValueError(f"unsupported filter operator: {op}")
    have, bound = _number(value), _number(arg)
    if have is None or bound is None:
        return False
    if op == "$gt":
        return have > bound
    if op == "$gte":
        return have >= bound
    if op == "$lt":
        return have < bound
    return have <= bound


class HybridMemStore(BaseStore):
    """A LangGraph store whose items are hybridmem memories of one agent (see the module docstring)."""

    supports_ttl = False

    def __init__(
        self,
        client: HybridMemClient | None = None,
        aclient: AsyncHybridMemClient | None = None,
        *,
        agent_id: str = "langgraph",
        index_fields: Sequence[str] | None = None,
    ) -> None:
        if client is None and aclient is None:
            raise ValueError("HybridMemStore needs a HybridMemClient, an AsyncHybridMemClient, or both")
        self._client = client
        self._aclient = aclient
        self._agent_id = agent_id
        self._index_fields = list(index_fields) if index_fields else None
        self._tenant: str | None = None

    @classmethod
    def from_url(cls, base_url: str, api_key: str, **options: Any) -> HybridMemStore:
        """A store with its own blocking and async clients (``close``/``aclose`` release them)."""
        timeout = options.pop("timeout", 30.0)
        return cls(
            HybridMemClient(base_url, api_key, timeout=timeout),
            AsyncHybridMemClient(base_url, api_key, timeout=timeout),
            **options,
        )

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    async def aclose(self) -> None:
        if self._aclient is not None:
            await self._aclient.aclose()
        self.close()

    # ---- BaseStore ---------------------------------------------------------------------------------

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        if self._client is None:
            raise RuntimeError("this HybridMemStore has no blocking client; use the async methods")
        todo = self._validated(ops)
        result: list[Result] = self._client._run(self._batch(self._client, todo))
        return result

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        if self._aclient is None:
            return await asyncio.to_thread(self.batch, ops)
        todo = self._validated(ops)
        result: list[Result] = await self._aclient._run(self._batch(self._aclient, todo))
        return result

    def _validated(self, ops: Iterable[Op]) -> list[Op]:
        todo = list(ops)
        for op in todo:
            validate_op_namespace(op)
            if isinstance(op, PutOp) and op.ttl is not None and not self.supports_ttl:
                # The message and the error of BaseStore.put(ttl=...): the same refusal on every path.
                raise NotImplementedError(
                    f"TTL is not supported by {self.__class__.__name__}. "
                    "Use a store implementation that supports TTL or set ttl=None."
                )
        return todo

    # ---- flows (one implementation for both clients) -----------------------------------------------

    def _batch(self, api: Api, ops: list[Op]) -> Flow[list[Result]]:
        """Reads in order against the state before the batch, then the writes (the last one per key)."""
        results: list[Result] = []
        writes: dict[tuple[tuple[str, ...], str], PutOp] = {}
        for op in ops:
            if isinstance(op, PutOp):
                writes[(tuple(op.namespace), op.key)] = op
                results.append(None)
            elif isinstance(op, GetOp):
                results.append((yield from self._get(api, op)))
            elif isinstance(op, SearchOp):
                results.append((yield from self._search(api, op)))
            elif isinstance(op, ListNamespacesOp):
                results.append((yield from self._list_namespaces(api, op)))
            else:
                raise ValueError(f"unknown store operation: {type(op).__name__}")
        puts = [op for op in writes.values() if op.value is not None]
        for start in range(0, len(puts), PUT_CHUNK):
            yield from api.create_memories.flow([self._memory_in(p) for p in puts[start : start + PUT_CHUNK]])
        for op in writes.values():
            if op.value is None:
                yield from self._delete(api, op)
        return results

    def _memory_id(self, api: Api, namespace: tuple[str, ...], key: str) -> Flow[str]:
        if self._tenant is None:
            self._tenant = (yield from api.whoami.flow()).tenant_id
        return str(deterministic_id(self._tenant, "memory", item_client_id(self._agent_id, namespace, key)))

    def _content(self, op: PutOp) -> tuple[str, bool]:
        """The text to embed and whether the item is indexed: not for ``index=False``, nor when the
        index paths find no text in the value (LangGraph's stores embed nothing for it then)."""
        value = op.value or {}
        whole = json.dumps(value, ensure_ascii=False, default=str)[:MAX_CONTENT_CHARS] or "{}"
        fields = op.index if isinstance(op.index, list) else self._index_fields
        if op.index is False:
            return whole, False
        if not fields or fields == ["$"]:
            return whole, True
        parts: list[str] = []
        for path in fields:
            parts.extend(str(t) for t in get_text_at_path(value, tokenize_path(path)) if t)
        text = " ".join(parts)[:MAX_CONTENT_CHARS]
        return (text, True) if text.strip() else (whole, False)

    def _memory_in(self, op: PutOp) -> MemoryIn:
        ns = tuple(op.namespace)
        metadata: dict[str, Any] = {
            "lg_namespace": list(ns), "lg_key": op.key, "lg_depth": len(ns),
            "lg_value": json.dumps(op.value, ensure_ascii=False, default=str),
            **{f"lg_ns_{level}": label for level, label in enumerate(ns)},
        }  # fmt: skip
        content, indexed = self._content(op)
        return MemoryIn(
            id=item_client_id(self._agent_id, ns, op.key),
            agent_id=self._agent_id,
            kind=ITEM_KIND,
            content=content,
            metadata=metadata,
            index=indexed,
        )

    def _delete(self, api: Api, op: PutOp) -> Flow[None]:
        memory_id = yield from self._memory_id(api, tuple(op.namespace), op.key)
        try:
            yield from api.delete_memory.flow(memory_id)
        except NotFound:
            return

    def _get(self, api: Api, op: GetOp) -> Flow[Item | None]:
        memory_id = yield from self._memory_id(api, tuple(op.namespace), op.key)
        try:
            record = yield from api.get_memory.flow(memory_id)
        except NotFound:
            return None
        item = self._item(record)
        if item is None or record.agent_id != self._agent_id:
            return None
        if item.namespace != tuple(op.namespace) or item.key != op.key:
            return None
        return item

    def _item(self, record: MemoryRecord) -> Item | None:
        meta = record.metadata
        if record.kind != ITEM_KIND or "lg_value" not in meta:
            return None
        return Item(
            value=json.loads(meta["lg_value"]),
            key=str(meta["lg_key"]),
            namespace=tuple(str(x) for x in meta["lg_namespace"]),
            created_at=record.created_at,
            updated_at=record.updated_at,
        )

    def _all_items(self, api: Api) -> Flow[list[tuple[Item, bool]]]:
        """Every item of the agent, with whether it is indexed."""
        items: list[tuple[Item, bool]] = []
        cursor: str | None = None
        while True:
            page = yield from api.list_memories.flow(agent_id=self._agent_id, cursor=cursor, limit=PAGE)
            for record in page.items:
                item = self._item(record)
                if item is not None:
                    items.append((item, record.indexed))
            if not page.next_cursor:
                return items
            cursor = page.next_cursor

    @staticmethod
    def _newest_first(items: list[Item]) -> list[Item]:
        ordered = sorted(items, key=lambda it: (it.namespace, it.key))
        return sorted(ordered, key=lambda it: it.updated_at, reverse=True)  # stable: ties by ns, key

    @staticmethod
    def _keep(item: Item, op: SearchOp) -> bool:
        prefix = tuple(op.namespace_prefix)
        if item.namespace[: len(prefix)] != prefix:
            return False
        return _filter_matches(item.value, dict(op.filter or {}))

    def _search(self, api: Api, op: SearchOp) -> Flow[list[SearchItem]]:
        page = slice(max(op.offset, 0), max(op.offset, 0) + max(op.limit, 0))
        if not op.query:
            items = [it for it, _ in (yield from self._all_items(api)) if self._keep(it, op)]
            return [
                SearchItem(it.namespace, it.key, it.value, it.created_at, it.updated_at)
                for it in self._newest_first(items)[page]
            ]
        labels = {f"lg_ns_{level}": label for level, label in enumerate(op.namespace_prefix)}
        filters: dict[str, Any] = {"agent_id": self._agent_id, "kind": ITEM_KIND}
        if labels:
            filters["metadata"] = labels
        found = yield from api.search.flow(op.query, k=RANKED, filters=filters, diversify=False)  # type: ignore[arg-type]
        ranked: list[SearchItem] = []
        seen: set[tuple[tuple[str, ...], str]] = set()
        for hit in found.hits:
            meta = hit.metadata
            if hit.kind != ITEM_KIND or "lg_value" not in meta or "lg_namespace" not in meta:
                continue
            namespace = tuple(str(x) for x in meta["lg_namespace"])
            key = str(meta["lg_key"])
            created = hit.created_at or datetime.fromtimestamp(0).astimezone()
            item = SearchItem(
                namespace,
                key,
                json.loads(meta["lg_value"]),
                created,
                hit.updated_at or created,
                score=hit.score,
            )
            if (namespace, key) in seen:
                continue
            seen.add((namespace, key))
            if self._keep(item, op):
                ranked.append(item)
        # Fewer hits than asked for means every indexed item under the prefix was ranked (unless a tier
        # could not answer): the ordering is complete. Otherwise, a page past the ranked ones goes on
        # with the rest of the matching indexed items, newest first, unscored.
        complete = len(found.hits) < RANKED and not found.degraded
        if complete or len(ranked) >= page.stop:
            return ranked[page]
        rest = [
            it
            for it, indexed in (yield from self._all_items(api))
            if indexed and (it.namespace, it.key) not in seen and self._keep(it, op)
        ]
        tail = [
            SearchItem(it.namespace, it.key, it.value, it.created_at, it.updated_at)
            for it in self._newest_first(rest)
        ]
        return (ranked + tail)[page]

    def _list_namespaces(self, api: Api, op: ListNamespacesOp) -> Flow[list[tuple[str, ...]]]:
        namespaces = {it.namespace for it, _ in (yield from self._all_items(api))}
        if op.match_conditions:
            namespaces = {ns for ns in namespaces if all(_matches(c, ns) for c in op.match_conditions)}
        if op.max_depth is not None:
            namespaces = {ns[: op.max_depth] for ns in namespaces}
        return sorted(namespaces)[op.offset : op.offset + op.limit]
