"""LangGraph ``BaseStore`` scenarios: the same store operations against any store, answers normalised.

A scenario is a function ``(store) -> list[(label, answer)]``. It only calls the public store API (``put``,
``get``, ``search``, ``list_namespaces``, ``delete`` and ``batch`` with explicit ops), so every store sees
exactly the same operations; two stores behave alike when their answers are equal, label by label.
``tests/serve/app/test_langgraph_fidelity.py`` compares HybridMemStore with the reference below, and
``tests/unit/test_langgraph_scenarios.py`` checks the scenarios and the reference without the app.

Answers leave out what differs by design:

- Items are ``(namespace, key, value)``: timestamps differ between stores; the ``timestamps`` scenario
  compares what they must satisfy (as booleans) instead.
- Search without a query is an ordered list (LangGraph's PostgresStore orders it by ``updated_at``
  descending), except where items were written by one batch: PostgresStore gives them one
  ``CURRENT_TIMESTAMP`` (one transaction), so their order is undefined and those answers are sorted.
- Search with a query is ranked differently by design (HybridMemStore fuses dense and BM25 scores, the
  reference ranks by cosine similarity of a fake embedding), so it is compared as the set of
  ``(namespace, key)`` found over all pages, the page sizes, and the number of repeats across pages: pages
  must tile (no repeats, no gaps, full pages while enough items match).

The reference semantics are those of LangGraph's PostgresStore (langgraph-checkpoint-postgres 3.1.2,
langchain-ai/langgraph@f09cfe8, ``libs/checkpoint-postgres/langgraph/store/postgres/base.py``, cited as
"pg base.py:<line>"). The reference store is LangGraph's own InMemoryStore (langgraph-checkpoint 4.3.2,
``langgraph/store/memory/__init__.py``, cited as "memory:<line>") wrapped in :class:`PostgresSemanticsStore`,
which changes its answers only where InMemoryStore and PostgresStore disagree; each override cites both.
Three places do not follow PostgresStore, whose answer there is an error or a known defect:

- ``$gt``/``$gte``/``$lt``/``$lte`` compare numbers as numbers. PostgresStore compares the JSON text
  (``value->>key > str(x)``, pg base.py:653-660; open bug langchain-ai/langgraph#7684, so ``9 >= 10``);
  the scenarios only compare numbers whose text order is their numeric order, where both agree.
- A filter value that is a plain dict (``{"meta": {"lang": "en"}}``) matches a nested subset, as
  InMemoryStore does (memory:560-583). PostgresStore treats every key of such a dict as an operator and
  raises ``ValueError("Unsupported operator: lang")`` (pg base.py:453-459, 663-664).
- Pages of a query search tile. PostgresStore ranks at most ``limit * vectors_per_item * 2 + 1`` vector
  rows before it applies ``OFFSET`` (pg base.py:503-506, 511-546), so it returns short or empty pages
  once ``offset`` exceeds about ``limit + 1``; SearchOp documents offset as "number of matching items to
  skip" (langgraph/store/base/__init__.py:291), and InMemoryStore's pages tile (memory:339-353).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
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
)
from langgraph.store.memory import InMemoryStore
from langgraph.store.memory import _compare_values as _inmemory_compare_values

EMBED_DIMS = 256
EVERYTHING = 1_000_000  # a limit no scenario reaches
MAX_PAGES = 12

Answers = list[tuple[str, Any]]
Scenario = Callable[[BaseStore], Answers]

_WORD = re.compile(r"\w+", re.UNICODE)


def fake_embed(texts: Sequence[str]) -> list[list[float]]:
    """A deterministic hashed bag of words (lower-cased ``\\w+`` tokens), never the zero vector."""
    vectors = []
    for text in texts:
        vector = [0.0] * EMBED_DIMS
        vector[0] = 0.25
        for word in _WORD.findall(text.lower()):
            digest = hashlib.blake2b(word.encode(), digest_size=4).digest()
            vector[1 + int.from_bytes(digest, "big") % (EMBED_DIMS - 1)] += 1.0
        vectors.append(vector)
    return vectors


# ---- the reference store -----------------------------------------------------------------------------


def _json_canonical(value: Any) -> Any:
    """A form whose equality is jsonb equality: typed (``true`` is not ``1``), numbers by value (1 = 1.0)."""
    if isinstance(value, bool):
        return ("boolean", value)
    if isinstance(value, int | float):
        return ("number", value)
    if isinstance(value, str):
        return ("string", value)
    if value is None:
        return ("null",)
    if isinstance(value, list | tuple):
        return ("array", tuple(_json_canonical(v) for v in value))
    if isinstance(value, Mapping):
        return ("object", frozenset((k, _json_canonical(v)) for k, v in value.items()))
    raise TypeError(f"not a JSON value: {value!r}")


def _json_equal(a: Any, b: Any) -> bool:
    return bool(_json_canonical(a) == _json_canonical(b))


_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "$gt": lambda a, b: a > b,
    "$gte": lambda a, b: a >= b,
    "$lt": lambda a, b: a < b,
    "$lte": lambda a, b: a <= b,
}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _ordered(have: Any, op: str, arg: Any) -> bool:
    """``have <op> arg`` on numbers; a scenario may only compare numbers whose JSON text compares alike,
    since PostgresStore compares ``value->>key`` with ``str(arg)`` as text (pg base.py:653-660, #7684)."""
    if not (_is_number(have) and _is_number(arg)):
        raise AssertionError(f"scenario compares {have!r} {op} {arg!r}: compare numbers only (#7684)")
    numeric = _ORDER[op](float(have), float(arg))
    if _ORDER[op](json.dumps(have), str(arg)) != numeric:
        raise AssertionError(
            f"scenario compares {have!r} {op} {arg!r}: text and numeric order differ (#7684)"
        )
    return numeric


def postgres_filter_match(value: Mapping[str, Any], filter: Mapping[str, Any]) -> bool:
    """PostgresStore's filter (pg base.py:451-462, 649-664), save the module docstring's exceptions.

    Every top-level key is one SQL condition on ``value->key``; when the item has no such key that is SQL
    NULL, which no comparison matches: a missing field fails ``$ne`` and ``{"k": None}`` too (InMemoryStore
    compares ``value.get(key)``, None, so it matches both, memory:246-249, 583, 598-599; it raises
    TypeError for ``$gt`` and friends, memory:590-597). Equality is jsonb equality (``value->key =
    x::jsonb``), typed, where InMemoryStore uses Python's ``==`` (``True == 1``).
    """
    for key, wanted in filter.items():
        if key not in value:
            return False
        have = value[key]
        if isinstance(wanted, dict) and any(k.startswith("$") for k in wanted):
            for op, arg in wanted.items():
                if op == "$eq":
                    ok = _json_equal(have, arg)
                elif op == "$ne":
                    ok = not _json_equal(have, arg)
                elif op in _ORDER:
                    ok = _ordered(have, op, arg)
                else:
                    raise ValueError(f"Unsupported operator: {op}")
                if not ok:
                    return False
        elif isinstance(wanted, dict):
            # Nested subset match: InMemoryStore's semantics (PostgresStore raises, see the module docstring).
            if not _inmemory_compare_values(have, wanted):
                return False
        elif not _json_equal(have, wanted):
            return False
    return True


class PostgresSemanticsStore(InMemoryStore):
    """LangGraph's InMemoryStore, answering as LangGraph's PostgresStore where the two disagree.

    1. Reads in a batch see the store as it was before the batch, and duplicate puts to one key resolve
       to the last one: both stores already agree (memory:206-219, 384-411; pg base.py:318-320, 982-1013),
       nothing to change.
    2. Search without a query is ordered by ``updated_at`` descending (pg base.py:549-556); InMemoryStore
       keeps insertion order (memory:263-275, 372-382).
    3. Search with a query returns only items that have a vector (``JOIN store_vectors``, pg
       base.py:511-519): not those put with ``index=False`` or whose index paths hold no text.
       InMemoryStore appends them, unscored, to a short page, ignoring ``offset`` (memory:354-359), so its
       pages repeat them. Each item is ranked by its best vector (pg base.py:521-536 ``DISTINCT ON`` over
       the ascending distance; InMemoryStore max-pools too, memory:339-353).
    4. Filters: :func:`postgres_filter_match`.
    5. ``list_namespaces`` lists namespaces that hold items (``SELECT DISTINCT`` over the rows, pg
       base.py:596-613); InMemoryStore's ``_data`` is a defaultdict that keeps a namespace after its last
       item is deleted, or once a GetOp looked into it (memory:186, 398, 416).
    6. An update keeps ``created_at`` (``ON CONFLICT ... DO UPDATE`` leaves it, pg base.py:401-409);
       InMemoryStore stamps a new one (memory:419-425).
    7. Items whose indexed texts are equal may be written in one batch: InMemoryStore embeds each distinct
       text once and then pairs the embeddings with every (item, path), which raises ValueError
       (memory:214-217, 455-467); PostgresStore embeds one text per (item, path) (pg base.py:391-398,
       1049-1065).
    """

    __slots__ = ()

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        ops = list(ops)
        created = {
            (op.namespace, op.key): item.created_at
            for op in ops
            if isinstance(op, PutOp) and (item := self._data.get(op.namespace, {}).get(op.key)) is not None
        }
        # 2, 3: rank or order every match, then cut the page.
        wide = [op._replace(offset=0, limit=EVERYTHING) if isinstance(op, SearchOp) else op for op in ops]
        results = super().batch(wide)
        for (namespace, key), created_at in created.items():  # 6
            item = self._data.get(namespace, {}).get(key)
            if item is not None:
                item.created_at = created_at
        for i, op in enumerate(ops):
            if isinstance(op, SearchOp):
                results[i] = self._page(op, results[i])  # type: ignore[arg-type]
        return results

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        return self.batch(ops)

    def _page(self, op: SearchOp, found: list[SearchItem]) -> list[SearchItem]:
        if op.query and self.index_config:
            found = [it for it in found if it.score is not None]  # 3
        else:
            found = sorted(found, key=lambda it: it.updated_at, reverse=True)  # 2 (stable)
        return found[op.offset : op.offset + op.limit]

    def _filter_items(self, op: SearchOp) -> list[tuple[Item, list[list[float]]]]:
        everything = super()._filter_items(op._replace(filter=None, offset=0, limit=EVERYTHING))
        if not op.filter:
            return everything
        return [
            (item, vectors) for item, vectors in everything if postgres_filter_match(item.value, op.filter)
        ]

    def _handle_list_namespaces(self, op: ListNamespacesOp) -> list[tuple[str, ...]]:
        for namespace in [ns for ns, items in self._data.items() if not items]:  # 5
            del self._data[namespace]
        return super()._handle_list_namespaces(op)

    def _insertinmem_store(
        self,
        to_embed: dict[str, list[tuple[tuple[str, ...], str, str]]],
        embeddings: list[list[float]],
    ) -> None:
        for places, embedding in zip(to_embed.values(), embeddings, strict=True):  # 7
            for namespace, key, path in places:
                self._vectors[namespace][key][path] = embedding


def index_config() -> dict[str, Any]:
    return {"dims": EMBED_DIMS, "embed": fake_embed, "fields": ["$"]}


def make_reference() -> PostgresSemanticsStore:
    return PostgresSemanticsStore(index=index_config())  # type: ignore[arg-type]


# ---- answers -----------------------------------------------------------------------------------------


def item(it: Item | None) -> tuple[tuple[str, ...], str, dict[str, Any]] | None:
    return None if it is None else (tuple(it.namespace), it.key, it.value)


def items(found: Iterable[Item]) -> list[tuple[tuple[str, ...], str, dict[str, Any]] | None]:
    return [item(it) for it in found]


def keys(found: Iterable[Item]) -> list[tuple[tuple[str, ...], str]]:
    return [(tuple(it.namespace), it.key) for it in found]


def key_set(found: Iterable[Item]) -> list[tuple[tuple[str, ...], str]]:
    return sorted(set(keys(found)))


def query_pages(
    store: BaseStore,
    prefix: tuple[str, ...],
    query: str,
    *,
    limit: int,
    filter: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Every page of a query search: what was found, the page sizes, repeats, and whether all are scored."""
    sizes: list[int] = []
    seen: list[tuple[tuple[str, ...], str]] = []
    scored = True
    for page_no in range(MAX_PAGES):
        page = store.search(prefix, query=query, filter=filter, limit=limit, offset=page_no * limit)
        sizes.append(len(page))
        seen.extend(keys(page))
        scored = scored and all(it.score is not None for it in page)
        if len(page) < limit:
            break
    return {
        "found": sorted(set(seen)),
        "page_sizes": sizes,
        "repeats": len(seen) - len(set(seen)),
        "scored": scored,
    }


def batch_answers(ops: Sequence[Op], results: Sequence[Result]) -> list[Any]:
    """One answer per op: items as tuples, query searches as sets, other searches in order."""
    out: list[Any] = []
    for op, result in zip(ops, results, strict=True):
        if isinstance(op, GetOp):
            out.append(item(result))  # type: ignore[arg-type]
        elif isinstance(op, SearchOp):
            found: list[SearchItem] = result  # type: ignore[assignment]
            out.append(key_set(found) if op.query else items(found))
        elif isinstance(op, ListNamespacesOp):
            out.append(list(result))  # type: ignore[arg-type]
        else:
            out.append(result)
    return out


def raises(call: Callable[[], Any]) -> str | None:
    """The name of the exception ``call`` raises, or None."""
    try:
        call()
    except Exception as exc:
        return type(exc).__name__
    return None


def mismatches(expected: Answers, actual: Answers) -> list[str]:
    """Readable differences between two scenario runs (empty when they agree)."""
    want_labels = [label for label, _ in expected]
    got_labels = [label for label, _ in actual]
    if want_labels != got_labels:
        return [f"different steps: expected {want_labels}, got {got_labels}"]
    return [
        f"- {label}:\n    expected {want!r}\n    got      {got!r}"
        for (label, want), (_, got) in zip(expected, actual, strict=True)
        if want != got
    ]


# ---- scenarios ---------------------------------------------------------------------------------------

SCENARIOS: dict[str, Scenario] = {}


def scenario(fn: Scenario) -> Scenario:
    SCENARIOS[fn.__name__] = fn
    return fn


def put_each(store: BaseStore, rows: Iterable[tuple[tuple[str, ...], str, dict[str, Any]]]) -> None:
    """One ``put`` per item, so each has its own ``updated_at`` and unqueried search order is defined."""
    for namespace, key, value in rows:
        store.put(namespace, key, value)


def put_batch(store: BaseStore, rows: Iterable[tuple[tuple[str, ...], str, dict[str, Any]]]) -> None:
    """One batch for all items (fewer round trips; their unqueried search order is then undefined)."""
    store.batch([PutOp(namespace, key, value) for namespace, key, value in rows])


@scenario
def put_get_update_delete(store: BaseStore) -> Answers:
    ns = ("users", "alice", "prefs")
    out: Answers = [("get before any put", item(store.get(ns, "food")))]
    store.put(ns, "food", {"text": "Alice likes ramen and tacos", "likes": ["ramen", "tacos"], "spicy": True})
    out.append(("get after put", item(store.get(ns, "food"))))
    out.append(("get another key", item(store.get(ns, "drink"))))
    out.append(("get in the parent namespace", item(store.get(("users", "alice"), "food"))))
    out.append(("get in a child namespace", item(store.get((*ns, "food"), "food"))))
    store.put(ns, "food", {"text": "Alice now prefers sushi", "likes": ["sushi"]})
    out.append(("get after update", item(store.get(ns, "food"))))
    types = {
        "text": "a value with every JSON type",
        "int": 7,
        "float": 2.5,
        "bool": False,
        "null": None,
        "list": [1, "two", [3.0, None]],
        "nested": {"a": {"b": "c"}, "empty": {}},
        "unicode": "Grüße aus 東京",
    }
    store.put(ns, "types", types)
    out.append(("every JSON type round-trips", item(store.get(ns, "types"))))
    store.put(ns, "drink", {"text": "Alice drinks green tea"})
    out.append(("search the namespace", items(store.search(ns))))
    store.delete(ns, "food")
    out.append(("get after delete", item(store.get(ns, "food"))))
    out.append(("a second delete is not an error", raises(lambda: store.delete(ns, "food"))))
    out.append(("delete of a key never written", raises(lambda: store.delete(ns, "never"))))
    out.append(("search after delete", items(store.search(ns))))
    store.put(ns, "food", {"text": "Alice is back to ramen"})
    out.append(("get after put again", item(store.get(ns, "food"))))
    out.append(("search after put again", items(store.search(ns))))
    return out


@scenario
def timestamps(store: BaseStore) -> Answers:
    ns = ("clock",)
    store.put(ns, "note", {"text": "first version of the harbour note"})
    first = store.get(ns, "note")
    assert first is not None
    out: Answers = [
        (
            "timestamps are timezone-aware",
            first.created_at.tzinfo is not None and first.updated_at.tzinfo is not None,
        ),
        ("created_at <= updated_at", first.created_at <= first.updated_at),
    ]
    time.sleep(0.02)
    store.put(ns, "note", {"text": "second version of the harbour note"})
    second = store.get(ns, "note")
    assert second is not None
    out += [
        ("an update keeps created_at", second.created_at == first.created_at),
        ("an update advances updated_at", second.updated_at > first.updated_at),
        ("created_at <= updated_at after the update", second.created_at <= second.updated_at),
    ]
    listed = store.search(ns)
    out.append(
        (
            "search without a query: the item's timestamps",
            [(it.created_at, it.updated_at) == (second.created_at, second.updated_at) for it in listed],
        )
    )
    hits = store.search(ns, query="second version harbour note")
    out.append(
        (
            "search with a query: the item's timestamps",
            [(it.created_at, it.updated_at) == (second.created_at, second.updated_at) for it in hits],
        )
    )
    return out


@scenario
def batch_reads_see_the_store_before_the_batch(store: BaseStore) -> Answers:
    # PostgresStore runs a batch's gets, searches and namespace listings before its puts (pg
    # base.py:982-1013, aio.py:408-445); InMemoryStore answers reads while it collects puts and applies
    # them last (memory:206-219, 384-411). Either way no read in a batch sees a put of the same batch.
    ns = ("batch",)
    put_each(
        store,
        [
            (ns, "old", {"text": "an old note about the harbour"}),
            (ns, "gone", {"text": "a note about the lighthouse that will be deleted"}),
        ],
    )
    ops: list[Op] = [
        GetOp(ns, "old"),
        PutOp(ns, "new", {"text": "a new note about the lighthouse keeper"}),
        GetOp(ns, "new"),
        SearchOp(ns, limit=10),
        SearchOp(ns, query="lighthouse", limit=10),
        ListNamespacesOp(match_conditions=(MatchCondition("prefix", ns),)),
        PutOp(ns, "old", {"text": "the old note, rewritten"}),
        GetOp(ns, "old"),
        PutOp(ns, "gone", None),
        GetOp(ns, "gone"),
        PutOp((*ns, "sub"), "child", {"text": "a child note"}),
        ListNamespacesOp(match_conditions=(MatchCondition("prefix", ns),)),
        SearchOp(ns, filter={"text": "a new note about the lighthouse keeper"}),
    ]
    out: Answers = [("batch results", batch_answers(ops, store.batch(ops)))]
    out += [
        ("get old after", item(store.get(ns, "old"))),
        ("get new after", item(store.get(ns, "new"))),
        ("get gone after", item(store.get(ns, "gone"))),
        ("get child after", item(store.get((*ns, "sub"), "child"))),
        # Written by one batch: one CURRENT_TIMESTAMP in PostgresStore, so compared as a set.
        ("search after", key_set(store.search(ns, limit=10))),
        ("namespaces after", store.list_namespaces(prefix=ns)),
        ("query after", key_set(store.search(ns, query="lighthouse", limit=10))),
    ]
    return out


@scenario
def batch_duplicate_puts(store: BaseStore) -> Answers:
    # The last put to a (namespace, key) in a batch wins, whatever came before it (pg base.py:318-320;
    # memory:405-406).
    ns = ("dups",)
    store.put(ns, "m", {"text": "m exists before the batch"})
    before = store.get(ns, "m")
    assert before is not None
    time.sleep(0.02)
    ops: list[Op] = [
        PutOp(ns, "k", {"text": "first write"}),
        PutOp(ns, "k", {"text": "second write wins"}),
        PutOp(ns, "j", {"text": "written, then deleted"}),
        PutOp(ns, "j", None),
        PutOp(ns, "m", None),
        PutOp(ns, "m", {"text": "m deleted, then written again"}),
        PutOp(ns, "same", {"text": "the same write twice"}),
        PutOp(ns, "same", {"text": "the same write twice"}),
        GetOp(ns, "k"),
        GetOp(ns, "k"),
        GetOp(ns, "m"),
    ]
    out: Answers = [("batch results", batch_answers(ops, store.batch(ops)))]
    after = store.get(ns, "m")
    out += [
        ("get k", item(store.get(ns, "k"))),
        ("get j", item(store.get(ns, "j"))),
        ("get m", item(after)),
        ("get same", item(store.get(ns, "same"))),
        ("search", key_set(store.search(ns))),
        # PostgresStore keeps only the last op per key, an upsert here: the row, and its created_at, stay.
        ("m keeps its created_at", after is not None and after.created_at == before.created_at),
    ]
    return out


@scenario
def search_without_query(store: BaseStore) -> Answers:
    put_each(
        store,
        [
            (("docs", "team1"), "d1", {"text": "design review notes for the bridge"}),
            (("docs", "team1"), "d2", {"text": "budget for the bridge repairs"}),
            (("docs", "team2"), "d3", {"text": "tunnel inspection schedule"}),
            (("docs",), "d0", {"text": "index of all documents"}),
            (("docsx",), "x1", {"text": "a sibling namespace sharing leading characters"}),
            (("other",), "o1", {"text": "unrelated document"}),
            (("docs", "team1", "deep"), "d4", {"text": "archived drawings of the bridge"}),
        ],
    )
    store.put(("docs", "team1"), "d1", {"text": "design review notes for the bridge, revised"})
    searches = {
        "prefix docs": store.search(("docs",), limit=100),
        "prefix docs/team1": store.search(("docs", "team1")),
        "prefix docs/team1/deep": store.search(("docs", "team1", "deep")),
        "empty prefix: everything": store.search((), limit=100),
        "prefix doc (not a segment)": store.search(("doc",)),
        "prefix docs/team3 (none)": store.search(("docs", "team3")),
        "prefix deeper than any namespace": store.search(("docs", "team1", "deep", "deeper")),
        "limit 2 offset 1": store.search(("docs",), limit=2, offset=1),
        "offset past the end": store.search(("docs",), limit=5, offset=10),
        "empty query is no query": store.search(("docs",), query="", limit=100),
    }
    out: Answers = [(label, items(found)) for label, found in searches.items()]
    out.append(("no scores without a query", all(it.score is None for it in searches["prefix docs"])))
    return out


CATALOG: list[tuple[str, dict[str, Any]]] = [
    (
        "b1",
        {
            "text": "A gentle introduction to sourdough baking",
            "kind": "book",
            "year": 2015,
            "rating": 42,
            "price": 19.99,
            "tags": ["food", "baking"],
            "meta": {"lang": "en", "pages": 210},
        },
    ),
    (
        "b2",
        {
            "text": "Field guide to alpine flowers",
            "kind": "book",
            "year": 1998,
            "rating": 57,
            "price": 24.5,
            "tags": ["nature"],
            "meta": {"lang": "de", "pages": 180},
        },
    ),
    (
        "b3",
        {
            "text": "Sailing across the northern sea",
            "kind": "book",
            "year": 2015,
            "rating": 31,
            "price": 12.0,
            "tags": ["travel", "sea"],
            "meta": {"lang": "en", "pages": 320},
        },
    ),
    (
        "f1",
        {
            "text": "Documentary about whales and dolphins",
            "kind": "film",
            "year": 2009,
            "rating": 88,
            "price": 15.5,
            "tags": ["nature", "sea"],
            "meta": {"lang": "en", "minutes": 95},
        },
    ),
    (
        "f2",
        {
            "text": "Comedy about a travelling circus",
            "kind": "film",
            "year": 1987,
            "rating": 42,
            "price": 10.99,
            "tags": [],
            "meta": {"lang": "fr", "minutes": 104},
        },
    ),
    ("f3", {"text": "Silent film about a clockmaker", "kind": "film", "year": 1927, "tags": ["history"]}),
    (
        "m1",
        {
            "text": "Jazz standards recorded live in a small club",
            "kind": "album",
            "year": 1961,
            "rating": 75,
            "meta": {"lang": "en"},
        },
    ),
    (
        "m2",
        {"text": "Field recordings of rain in the forest", "kind": "album", "rating": 19, "tags": ["nature"]},
    ),
]


@scenario
def search_filters(store: BaseStore) -> Answers:
    ns = ("catalog",)
    put_each(store, [(ns, key, value) for key, value in CATALOG])
    put_each(
        store,
        [
            (
                (*ns, "archive"),
                "a1",
                {"text": "An archived sourdough pamphlet", "kind": "book", "rating": 42},
            ),
            (("elsewhere",), "e1", {"text": "A book outside the catalog", "kind": "book", "rating": 42}),
        ],
    )
    # Numbers compared with $gt and friends keep text order = numeric order (see the module docstring).
    filters: dict[str, dict[str, Any]] = {
        "string equality": {"kind": "book"},
        "two conditions": {"kind": "book", "year": 2015},
        "number equality": {"rating": 42},
        "float equality": {"price": 12.0},
        "list equality": {"tags": ["food", "baking"]},
        "list equality is ordered": {"tags": ["baking", "food"]},
        "empty list": {"tags": []},
        "nested subset (InMemoryStore semantics)": {"meta": {"lang": "en"}},
        "nested subset, two fields": {"meta": {"lang": "en", "pages": 320}},
        "$eq on a whole object": {"meta": {"$eq": {"lang": "en", "pages": 210}}},
        "$eq": {"rating": {"$eq": 42}},
        "$ne (items without rating excluded)": {"rating": {"$ne": 42}},
        "$gt": {"rating": {"$gt": 42}},
        "$gte": {"rating": {"$gte": 42}},
        "$lt": {"rating": {"$lt": 42}},
        "$lte": {"rating": {"$lte": 42}},
        "range on one field": {"rating": {"$gte": 30, "$lt": 60}},
        "$lt on four-digit years": {"year": {"$lt": 2000}},
        "$lte on floats": {"price": {"$lte": 15.5}},
        "$gt on floats": {"price": {"$gt": 19.99}},
        "equality and an operator": {"kind": "film", "rating": {"$gt": 50}},
        "three conditions": {"kind": "book", "rating": {"$lte": 42}, "meta": {"lang": "en"}},
        "$ne on a string": {"kind": {"$ne": "book"}},
        "matches nothing": {"kind": "podcast"},
        "a field no item has": {"colour": "red"},
    }
    out: Answers = [(label, keys(store.search(ns, filter=f, limit=100))) for label, f in filters.items()]
    out.append(("filter within a sub-namespace", keys(store.search((*ns, "archive"), filter={"rating": 42}))))
    out.append(("filter over every namespace", keys(store.search((), filter={"rating": 42}, limit=100))))
    out.append(
        ("filter and a page", keys(store.search(ns, filter={"rating": {"$gte": 30}}, limit=2, offset=1)))
    )
    return out


@scenario
def filter_missing_fields_and_json_types(store: BaseStore) -> Answers:
    # PostgresStore: a missing field never matches (SQL NULL), equality is typed jsonb equality
    # (pg base.py:461-462, 651-662). See postgres_filter_match.
    ns = ("types",)
    put_each(
        store,
        [
            (ns, "v_true", {"v": True}),
            (ns, "v_one", {"v": 1}),
            (ns, "v_one_float", {"v": 1.0}),
            (ns, "v_string", {"v": "1"}),
            (ns, "v_null", {"v": None}),
            (ns, "v_zero", {"v": 0}),
            (ns, "v_false", {"v": False}),
            (ns, "v_list", {"v": [1]}),
            (ns, "no_v", {"other": 1}),
        ],
    )
    filters: dict[str, dict[str, Any]] = {
        "v == 1 (not true, not '1')": {"v": 1},
        "v == 1.0": {"v": 1.0},
        "v == true (not 1)": {"v": True},
        "v == false (not 0)": {"v": False},
        "v == 0": {"v": 0},
        "v == '1'": {"v": "1"},
        "v == null (not a missing v)": {"v": None},
        "v $eq null": {"v": {"$eq": None}},
        "v == [1]": {"v": [1]},
        "v $ne 1 (a missing v excluded)": {"v": {"$ne": 1}},
        "v $ne null": {"v": {"$ne": None}},
        "other $ne 2 (only the item that has it)": {"other": {"$ne": 2}},
        "other $gt 0 (others lack it)": {"other": {"$gt": 0}},
    }
    return [(label, keys(store.search(ns, filter=f, limit=100))) for label, f in filters.items()]


# fmt: off
WORDS = (
    "apple", "birch", "cedar", "dahlia", "elm", "fern", "ginger", "hazel", "iris", "juniper", "kale",
    "lilac", "maple", "nettle", "oak", "peony", "quince", "rose", "sage", "thyme", "ulmus", "violet",
    "willow", "yarrow", "zinnia", "aster", "basil", "clover", "daisy",
)
# fmt: on


@scenario
def pagination_without_query(store: BaseStore) -> Answers:
    ns = ("pages",)
    put_each(
        store,
        [
            (ns, f"p{i:02d}", {"text": f"plant {WORDS[i]} in row {i}", "n": 10 + i, "even": i % 2 == 0})
            for i in range(27)
        ],
    )
    put_each(
        store,
        [(("elsewhere",), f"e{i}", {"text": f"plant {WORDS[i]} elsewhere", "n": 10 + i}) for i in range(3)],
    )
    out: Answers = []
    pages = [store.search(ns, limit=10, offset=offset) for offset in (0, 10, 20, 30)]
    out += [(f"limit 10 offset {10 * i}", keys(page)) for i, page in enumerate(pages)]
    everything = store.search(ns, limit=100)
    out.append(("limit 100", keys(everything)))
    out.append(("pages tile the whole list", [k for page in pages for k in keys(page)] == keys(everything)))
    out.append(("limit 4 offset 25", keys(store.search(ns, limit=4, offset=25))))
    out.append(("limit 1 offset 26", keys(store.search(ns, limit=1, offset=26))))
    out.append(("default limit is 10", len(store.search(ns))))
    out += [
        (
            f"filter even, limit 5 offset {offset}",
            keys(store.search(ns, filter={"even": True}, limit=5, offset=offset)),
        )
        for offset in (0, 5, 10, 15)
    ]
    out.append(
        (
            "filter n >= 30, limit 3 offset 2",
            keys(store.search(ns, filter={"n": {"$gte": 30}}, limit=3, offset=2)),
        )
    )
    return out


GARDEN = [
    f"In the garden the {plant} {verb} {how}"
    for plant, verb, how in zip(
        WORDS[:28],
        [
            "grows",
            "blooms",
            "climbs",
            "spreads",
            "wilts",
            "thrives",
            "sprouts",
            "ripens",
            "fades",
            "flowers",
            "leans",
            "shades",
            "tangles",
            "rises",
        ]
        * 2,
        [
            "slowly",
            "quickly",
            "early",
            "late",
            "quietly",
            "boldly",
            "gently",
            "wildly",
            "sparsely",
            "densely",
            "brightly",
            "softly",
            "steadily",
            "unevenly",
        ]
        * 2,
        strict=True,
    )
]


@scenario
def pagination_with_query(store: BaseStore) -> Answers:
    ns = ("garden",)
    put_batch(
        store, [(ns, f"g{i:02d}", {"text": text, "sunny": i % 3 == 0}) for i, text in enumerate(GARDEN)]
    )
    put_batch(
        store,
        [(("kitchen",), f"k{i}", {"text": f"garden herbs for the kitchen: {WORDS[i]}"}) for i in range(4)],
    )
    return [
        ("limit 8", query_pages(store, ns, "garden plants growing", limit=8)),
        ("limit 7", query_pages(store, ns, "garden plants growing", limit=7)),
        ("limit 30: one page", query_pages(store, ns, "garden plants growing", limit=30)),
        ("filter sunny, limit 4", query_pages(store, ns, "garden flowers", limit=4, filter={"sunny": True})),
        ("every namespace, limit 10", query_pages(store, (), "garden herbs", limit=10)),
    ]


@scenario
def sparse_filter_among_many(store: BaseStore) -> Answers:
    ns = ("inbox",)
    lunch = [f"team lunch with pizza and salad near the {w} office" for w in WORDS[:29]] + [
        f"team lunch: pizza again, this time at {w} street" for w in WORDS[:13]
    ]
    put_batch(
        store,
        [(ns, f"n{i:02d}", {"text": text, "owner": "bob", "priority": 1}) for i, text in enumerate(lunch)],
    )
    put_each(
        store,
        [
            (ns, "z1", {"text": "quarterly tax forms are due in April", "owner": "zelda", "priority": 1}),
            (ns, "z2", {"text": "renew the passport before the trip", "owner": "zelda", "priority": 2}),
            (
                ns,
                "z3",
                {"text": "call the plumber about the leaking boiler", "owner": "zelda", "priority": 3},
            ),
        ],
    )
    zelda = {"owner": "zelda"}
    return [
        ("no query: filter matches 3 of 45", keys(store.search(ns, filter=zelda))),
        (
            "no query: filter and operator",
            keys(store.search(ns, filter={"owner": "zelda", "priority": {"$gte": 2}})),
        ),
        (
            "query elsewhere, filter, limit 10",
            query_pages(store, ns, "team lunch pizza", limit=10, filter=zelda),
        ),
        (
            "query elsewhere, filter, limit 2",
            query_pages(store, ns, "team lunch pizza", limit=2, filter=zelda),
        ),
        (
            "query on target, filter, limit 10",
            query_pages(store, ns, "tax forms passport plumber", limit=10, filter=zelda),
        ),
        (
            "query, filter and operator",
            query_pages(
                store, ns, "team lunch pizza", limit=10, filter={"owner": "zelda", "priority": {"$gte": 2}}
            ),
        ),
        (
            "query, filter matching nothing",
            query_pages(store, ns, "team lunch pizza", limit=10, filter={"owner": "nobody"}),
        ),
    ]


@scenario
def list_namespaces(store: BaseStore) -> Answers:
    # Labels chosen so that PostgresStore's order (the dot-joined text, pg base.py:643) is the tuple order
    # too: no label is a prefix of a sibling's label, no punctuation.
    namespaces = [
        ("a", "b", "c"),
        ("a", "b", "d"),
        ("a", "e", "vone"),
        ("a", "e", "vtwo"),
        ("m", "n", "o", "vone"),
        ("x",),
        ("x", "y", "vone"),
    ]
    put_each(store, [(ns, "k", {"text": f"item in {'/'.join(ns)}"}) for ns in namespaces])
    store.put(("a", "b", "c"), "k2", {"text": "a second item in a/b/c"})
    store.put(("gone",), "k", {"text": "deleted below"})
    store.delete(("gone",), "k")
    store.get(("ghost",), "k")  # a read creates nothing
    store.search(("phantom",))
    listings: dict[str, dict[str, Any]] = {
        "all": {},
        "prefix a": {"prefix": ("a",)},
        "prefix a/b": {"prefix": ("a", "b")},
        "prefix a/*": {"prefix": ("a", "*")},
        "prefix */e": {"prefix": ("*", "e")},
        "prefix a/*/vone": {"prefix": ("a", "*", "vone")},
        "prefix longer than any namespace": {"prefix": ("a", "b", "c", "d")},
        "prefix of a missing namespace": {"prefix": ("q",)},
        "suffix vone": {"suffix": ("vone",)},
        "suffix */vone": {"suffix": ("*", "vone")},
        "suffix e/*": {"suffix": ("e", "*")},
        "suffix longer than a namespace": {"suffix": ("z", "x", "y", "vone")},
        "prefix a, suffix vone": {"prefix": ("a",), "suffix": ("vone",)},
        "max_depth 1": {"max_depth": 1},
        "max_depth 2": {"max_depth": 2},
        "max_depth 3": {"max_depth": 3},
        "prefix a, max_depth 2": {"prefix": ("a",), "max_depth": 2},
        "suffix vone, max_depth 2": {"suffix": ("vone",), "max_depth": 2},
        "limit 2 offset 1": {"limit": 2, "offset": 1},
        "limit 3 offset 5": {"limit": 3, "offset": 5},
        "offset past the end": {"offset": 20},
        "max_depth 2, limit 2 offset 2": {"max_depth": 2, "limit": 2, "offset": 2},
    }
    out: Answers = [(label, store.list_namespaces(**kwargs)) for label, kwargs in listings.items()]
    ops: list[Op] = [
        ListNamespacesOp(
            match_conditions=(MatchCondition("prefix", ("a",)), MatchCondition("suffix", ("d",)))
        ),
        ListNamespacesOp(match_conditions=(MatchCondition("suffix", ("*",)),), max_depth=1),
        ListNamespacesOp(match_conditions=()),
    ]
    out.append(("explicit ops in a batch", batch_answers(ops, store.batch(ops))))
    store.delete(("x",), "k")
    out.append(("after deleting the only item of x", store.list_namespaces(prefix=("x",))))
    return out


@scenario
def index_false_and_missing_paths(store: BaseStore) -> Answers:
    # PostgresStore: only items with a vector are found by a query (pg base.py:378-398, 511-519); an item put
    # with index=False, or whose index paths hold no text, is not. InMemoryStore appends such items unscored
    # to a short page (memory:354-359); we follow PostgresStore.
    ns = ("notes",)
    store.put(ns, "whole", {"text": "The violin lesson is on Tuesday evening"})
    store.put(
        ns, "field", {"title": "Practice", "body": "Scales and arpeggios on the violin"}, index=["body"]
    )
    store.put(
        ns,
        "two_fields",
        {"title": "violin strings", "body": "buy new violin strings"},
        index=["title", "body"],
    )
    store.put(
        ns, "array", {"title": "Orchestra", "parts": ["violin section", "viola section"]}, index=["parts[*]"]
    )
    store.put(ns, "off", {"text": "The violin is not indexed at all"}, index=False)
    store.put(ns, "missing_path", {"title": "Violin repair shop"}, index=["body"])
    store.put(ns, "null_path", {"title": "Violin case", "body": None}, index=["body"])
    names = ["whole", "field", "two_fields", "array", "off", "missing_path", "null_path"]
    return [
        ("get", [item(store.get(ns, key)) for key in names]),
        ("search without a query", items(store.search(ns, limit=100))),
        ("query, limit 10", query_pages(store, ns, "violin", limit=10)),
        ("query, limit 3", query_pages(store, ns, "violin", limit=3)),
        ("query, limit 1", query_pages(store, ns, "violin", limit=1)),
        (
            "query with a filter",
            query_pages(store, ns, "violin", limit=10, filter={"title": "Violin repair shop"}),
        ),
        ("namespaces", store.list_namespaces(prefix=ns)),
    ]


@scenario
def identical_values_distinct_keys(store: BaseStore) -> Answers:
    value = {"text": "Remember to water the ferns every Sunday morning"}
    store.put(("twins", "a"), "k1", value)
    store.put(("twins", "a"), "k2", value)
    store.put(("twins", "b"), "k1", value)
    store.batch([PutOp(("twins", "b"), "k2", value), PutOp(("twins", "b"), "k3", value)])
    store.put(("twins", "a"), "other", {"text": "Buy fern fertiliser on Saturday"})
    return [
        ("get", [item(store.get(ns, key)) for ns, key in [(("twins", "a"), "k2"), (("twins", "b"), "k3")]]),
        ("search without a query", key_set(store.search(("twins",), limit=100))),
        ("query, limit 10", query_pages(store, ("twins",), "water the ferns", limit=10)),
        ("query, limit 2", query_pages(store, ("twins",), "water the ferns", limit=2)),
        ("query in twins/b", query_pages(store, ("twins", "b"), "water the ferns on Sunday", limit=10)),
        ("query with a filter on the text", query_pages(store, ("twins",), "ferns", limit=10, filter=value)),
    ]


@scenario
def namespace_labels_with_separators(store: BaseStore) -> Answers:
    # Namespaces are dot-joined in PostgresStore; labels may hold any other character. Prefixes match whole
    # labels (pg base.py:1294-1308, LIKE metacharacters escaped, 1283-1291) and list_namespaces matches whole
    # segments (regex, 1311-1328). Listings are compared as sets: with punctuation in labels, PostgresStore's
    # order (the dot-joined text under the database's collation, pg base.py:643) is not the tuple order.
    rows = [
        (("a", "b"), "k", {"text": "two labels a and b"}),
        (("a/b",), "k", {"text": "one label with a slash"}),
        (("a:b",), "k", {"text": "one label with a colon"}),
        (("a",), "b:k", {"text": "a key with a colon"}),
        (("a",), "file.txt", {"text": "a key with a dot"}),
        (("a",), "b/k", {"text": "a key with a slash"}),
        (("user_1",), "k", {"text": "underscore label"}),
        (("user_1", "child"), "k", {"text": "child of the underscore label"}),
        (("userX1",), "k", {"text": "what user_1 would match as a LIKE pattern"}),
        (("a%b",), "k", {"text": "percent label"}),
        (("axxb",), "k", {"text": "what a%b would match as a LIKE pattern"}),
        (("foo",), "k", {"text": "foo"}),
        (("foo", "child"), "k", {"text": "foo child"}),
        (("foobar",), "k", {"text": "foobar shares leading characters"}),
        (("foo2",), "k", {"text": "foo2 shares leading characters"}),
        (("grüße", "東京"), "k", {"text": "unicode labels"}),
        (("with space", 'quote"d', "back\\slash"), "k key", {"text": "spaces, quotes and backslashes"}),
    ]
    put_each(store, rows)
    out: Answers = [("get each", [item(store.get(ns, key)) for ns, key, _ in rows])]
    out.append(("get a/b as namespace a, key b", item(store.get(("a",), "b"))))
    out.append(("get a/b/k as namespace a, key b/k", item(store.get(("a",), "b/k"))))
    for prefix in [("a",), ("a/b",), ("a", "b"), ("user_1",), ("a%b",), ("foo",), ("fo",), ("grüße",)]:
        out.append((f"search prefix {prefix}", key_set(store.search(prefix, limit=100))))
    out.append(("query, prefix foo", query_pages(store, ("foo",), "foo child shares", limit=10)))
    out.append(("query, prefix user_1", query_pages(store, ("user_1",), "underscore label child", limit=10)))
    out.append(("all namespaces", sorted(store.list_namespaces())))
    listings: dict[str, dict[str, Any]] = {
        "prefix foo": {"prefix": ("foo",)},
        "prefix user_1": {"prefix": ("user_1",)},
        "prefix a%b": {"prefix": ("a%b",)},
        "suffix child": {"suffix": ("child",)},
        "suffix b": {"suffix": ("b",)},
        "prefix a, max_depth 1": {"prefix": ("a",), "max_depth": 1},
    }
    for label, kwargs in listings.items():
        out.append((f"namespaces {label}", sorted(store.list_namespaces(**kwargs))))
    out += [
        ("put with a '.' in a label", raises(lambda: store.put(("bad.label",), "k", {"v": 1}))),
        ("put under the root label langgraph", raises(lambda: store.put(("langgraph", "x"), "k", {"v": 1}))),
        ("put with an empty namespace", raises(lambda: store.put((), "k", {"v": 1}))),
        ("search with a '.' in a label", raises(lambda: store.search(("bad.label",)))),
    ]
    return out


@scenario
def search_with_query_scope(store: BaseStore) -> Answers:
    put_each(
        store,
        [
            (
                ("memories", "alice"),
                "m1",
                {"text": "Alice adopted a golden retriever puppy", "topic": "pets"},
            ),
            (("memories", "alice"), "m2", {"text": "Alice is learning to play the cello", "topic": "music"}),
            (
                ("memories", "alice", "work"),
                "m3",
                {"text": "Alice brings her dog to the office", "topic": "pets"},
            ),
            (("memories", "bob"), "m1", {"text": "Bob has a dog called Rex", "topic": "pets"}),
            (("memories", "bob"), "m2", {"text": "Bob plays chess on Sundays", "topic": "games"}),
            (
                ("memoriesx",),
                "m1",
                {"text": "A dog in a namespace sharing leading characters", "topic": "pets"},
            ),
        ],
    )
    return [
        ("prefix memories/alice", query_pages(store, ("memories", "alice"), "dog puppy", limit=10)),
        ("prefix memories/alice/work", query_pages(store, ("memories", "alice", "work"), "dog", limit=10)),
        ("prefix memories", query_pages(store, ("memories",), "dog", limit=10)),
        ("prefix memories, limit 2", query_pages(store, ("memories",), "dog", limit=2)),
        (
            "prefix memories, filter pets",
            query_pages(store, ("memories",), "dog", limit=10, filter={"topic": "pets"}),
        ),
        ("empty prefix", query_pages(store, (), "dog", limit=10)),
        ("prefix memo (not a segment)", query_pages(store, ("memo",), "dog", limit=10)),
        ("prefix of a missing namespace", query_pages(store, ("memories", "carol"), "dog", limit=10)),
    ]


def run_scenario(name: str, store: BaseStore) -> Answers:
    return SCENARIOS[name](store)
