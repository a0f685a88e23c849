"""LangGraph ``BaseStore`` backed by hybridmem (install the extra ``hybridmem[langgraph]``).

Each item is a semantic memory of the store's ``agent_id`` and kind ``lg_item``. Its client id is
``lg:<json [*namespace, key]>``, so the memory's UUID is known without a lookup (the API derives it
with :func:`hybridmem_client.ids.deterministic_id` from the tenant and that id). The memory's metadata holds
``lg_namespace``, ``lg_key``, the value as JSON text (``lg_value``; metadata is size-limited by the
service) and one ``lg_ns_<i>`` label per namespace level, so a namespace prefix is a metadata
equality filter on the server. Search with a query goes through ``/v1/search`` (hybrid retrieval);
without one it lists the agent's memories. Both are exact-filtered here afterwards.

TTL is not supported: ``put(ttl=...)`` and a ``PutOp`` with a ``ttl`` in ``batch``/``abatch`` are refused
alike (``NotImplementedError``, as LangGraph's ``BaseStore.put`` does), before anything is sent.

Limits: a value's JSON must fit the service's metadata limit (16 KiB by default); search hits carry
the item's creation time as both ``created_at`` and ``updated_at``; listing without a query and
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
Api = HybridMemClient | AsyncHybridMemClient


def item_client_id(namespace: tuple[str, ...], key: str) -> str:
    """The memory's idempotency key: unambiguous for any labels; hashed when it would be too long."""
    raw = "lg:" + json.dumps([*namespace, key], ensure_ascii=False, separators=(",", ":"))
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


def _compare(value: Any, wanted: Any) -> bool:
    """LangGraph's filter semantics: equality, nested objects, and $eq/$ne/$gt/$gte/$lt/$lte."""
    if isinstance(wanted, dict):
        if any(k.startswith("$") for k in wanted):
            return all(_operator(value, op, arg) for op, arg in wanted.items())
        return isinstance(value, dict) and all(_compare(value.get(k), v) for k, v in wanted.items())
    if isinstance(wanted, list | tuple):
        return (
            isinstance(value, list | tuple)
            and len(value) == len(wanted)
            and all(_compare(a, b) for a, b in zip(value, wanted, strict=False))
        )
    return bool(value == wanted)


def _operator(value: Any, op: str, arg: Any) -> bool:
    if op == "$eq":
        return bool(value == arg)
    if op == "$ne":
        return bool(value != arg)
    if value is None:
        return False
    if op == "$gt":
        return float(value) > float(arg)
    if op == "$gte":
        return float(value) >= float(arg)
    if op == "$lt":
        return float(value) < float(arg)
    if op == "$lte":
        return float(value) <= float(arg)
    raise ValueError(f"unsupported filter operator: {op}")


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
        results: list[Result] = []
        i = 0
        while i < len(ops):
            op = ops[i]
            if isinstance(op, PutOp) and op.value is not None:
                j = i
                while j < len(ops) and isinstance(ops[j], PutOp) and ops[j].value is not None:  # type: ignore[union-attr]
                    j += 1
                yield from self._put_many(api, ops[i:j])  # type: ignore[arg-type]
                results.extend([None] * (j - i))
                i = j
                continue
            if isinstance(op, PutOp):
                yield from self._delete(api, op)
                results.append(None)
            elif isinstance(op, GetOp):
                results.append((yield from self._get(api, op)))
            elif isinstance(op, SearchOp):
                results.append((yield from self._search(api, op)))
            elif isinstance(op, ListNamespacesOp):
                results.append((yield from self._list_namespaces(api, op)))
            else:
                raise ValueError(f"unknown store operation: {type(op).__name__}")
            i += 1
        return results

    def _memory_id(self, api: Api, namespace: tuple[str, ...], key: str) -> Flow[str]:
        if self._tenant is None:
            self._tenant = (yield from api.whoami.flow()).tenant_id
        return str(deterministic_id(self._tenant, "memory", item_client_id(namespace, key)))

    def _content(self, op: PutOp) -> str:
        value = op.value or {}
        fields = op.index if isinstance(op.index, list) else self._index_fields
        if op.index is False or not fields:
            text = json.dumps(value, ensure_ascii=False, default=str)
        else:
            parts: list[str] = []
            for path in fields:
                parts.extend(str(t) for t in get_text_at_path(value, tokenize_path(path)) if t)
            text = " ".join(parts) or json.dumps(value, ensure_ascii=False, default=str)
        return text[:MAX_CONTENT_CHARS]

    def _memory_in(self, op: PutOp) -> MemoryIn:
        ns = tuple(op.namespace)
        metadata: dict[str, Any] = {
            "lg_namespace": list(ns), "lg_key": op.key, "lg_depth": len(ns),
            "lg_value": json.dumps(op.value, ensure_ascii=False, default=str),
            **{f"lg_ns_{level}": label for level, label in enumerate(ns)},
        }  # fmt: skip
        return MemoryIn(
            id=item_client_id(ns, op.key),
            agent_id=self._agent_id,
            kind=ITEM_KIND,
            content=self._content(op),
            metadata=metadata,
        )

    def _put_many(self, api: Api, puts: list[PutOp]) -> Flow[None]:
        latest = {(tuple(p.namespace), p.key): p for p in puts}  # last write wins within a batch
        items = [self._memory_in(p) for p in latest.values()]
        for start in range(0, len(items), PUT_CHUNK):
            yield from api.create_memories.flow(items[start : start + PUT_CHUNK])

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
        if item is None or item.namespace != tuple(op.namespace) or item.key != op.key:
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

    def _all_items(self, api: Api) -> Flow[list[Item]]:
        items: list[Item] = []
        cursor: str | None = None
        while True:
            page = yield from api.list_memories.flow(agent_id=self._agent_id, cursor=cursor, limit=PAGE)
            items.extend(it for it in (self._item(r) for r in page.items) if it is not None)
            if not page.next_cursor:
                return items
            cursor = page.next_cursor

    @staticmethod
    def _keep(item: Item, op: SearchOp) -> bool:
        prefix = tuple(op.namespace_prefix)
        if item.namespace[: len(prefix)] != prefix:
            return False
        return all(_compare(item.value.get(k), v) for k, v in (op.filter or {}).items())

    def _search(self, api: Api, op: SearchOp) -> Flow[list[SearchItem]]:
        if not op.query:
            items = [it for it in (yield from self._all_items(api)) if self._keep(it, op)]
            items.sort(key=lambda it: it.updated_at, reverse=True)
            return [
                SearchItem(it.namespace, it.key, it.value, it.created_at, it.updated_at)
                for it in items[op.offset : op.offset + op.limit]
            ]
        wanted = op.offset + op.limit
        k = min(200, wanted * (4 if op.filter else 1))
        labels = {f"lg_ns_{level}": label for level, label in enumerate(op.namespace_prefix)}
        filters: dict[str, Any] = {"agent_id": self._agent_id, "kind": ITEM_KIND}
        if labels:
            filters["metadata"] = labels
        found = yield from api.search.flow(op.query, k=k, filters=filters)  # type: ignore[arg-type]
        out: list[SearchItem] = []
        seen: set[tuple[tuple[str, ...], str]] = set()
        for hit in found.hits:
            meta = hit.metadata
            if "lg_value" not in meta or "lg_namespace" not in meta:
                continue
            namespace = tuple(str(x) for x in meta["lg_namespace"])
            key = str(meta["lg_key"])
            when = hit.created_at or datetime.fromtimestamp(0).astimezone()
            item = SearchItem(namespace, key, json.loads(meta["lg_value"]), when, when, score=hit.score)
            if (namespace, key) in seen or not self._keep(item, op):
                continue
            seen.add((namespace, key))
            out.append(item)
        return out[op.offset : op.offset + op.limit]

    def _list_namespaces(self, api: Api, op: ListNamespacesOp) -> Flow[list[tuple[str, ...]]]:
        namespaces = {it.namespace for it in (yield from self._all_items(api))}
        if op.match_conditions:
            namespaces = {ns for ns in namespaces if all(_matches(c, ns) for c in op.match_conditions)}
        if op.max_depth is not None:
            namespaces = {ns[: op.max_depth] for ns in namespaces}
        return sorted(namespaces)[op.offset : op.offset + op.limit]
