"""Retrieval-quality benchmarks: LoCoMo and SciFact loading, and their metrics.

LoCoMo follows the RAG protocol of ../shared/bench/README.md: the corpus is one conversation's turns,
each rendered ``SPEAKER said, "text"`` (plus ``and shared <caption>``); recall@k is the fraction of a
question's evidence turns among the top-k retrieved; a question without evidence counts 1.
SciFact uses BEIR's nDCG@10 (linear gains from qrels, log2 discount, ideal DCG from the qrels) and
recall@100, over the queries that have qrels. Pure functions: the CLI drives them through the API.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

LOCOMO_CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop", 5: "adversarial"}
LOCOMO_KS = (5, 10, 25, 50)
_DIA_ID = re.compile(r"D\d+:\d+")
_SESSION_KEY = re.compile(r"^session_(\d+)$")


@dataclass(frozen=True, slots=True)
class LocomoTurn:
    dia_id: str
    speaker: str
    text: str
    session: int
    index: int  # position in its session, from 0
    created_at: datetime | None
    blip_caption: str | None = None

    @property
    def rendered(self) -> str:
        """The protocol's rendering: ``SPEAKER said, "text"`` (+ ``and shared <caption>``)."""
        out = f'{self.speaker} said, "{self.text}"'
        if self.blip_caption:
            out += f" and shared {self.blip_caption}"
        return out


@dataclass(frozen=True, slots=True)
class LocomoQuestion:
    question: str
    evidence: list[str]
    category: int
    answer: Any = None


@dataclass(frozen=True, slots=True)
class LocomoConversation:
    sample_id: str
    speakers: tuple[str, str]
    turns: list[LocomoTurn]
    questions: list[LocomoQuestion]
    session_dates: dict[int, datetime | None] = field(default_factory=dict)


def parse_locomo_datetime(value: str) -> datetime | None:
    """``"1:56 pm on 8 May, 2023"`` → an aware UTC datetime (None when it does not parse)."""
    cleaned = " ".join(value.replace(",", " ").split())
    for fmt in ("%I:%M %p on %d %B %Y", "%I:%M %p on %d %b %Y"):
        try:
            return datetime.strptime(cleaned, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    return None


def normalise_evidence(evidence: Iterable[Any]) -> list[str]:
    """Dialog ids from an evidence list, splitting malformed entries such as ``"D8:6; D9:17"``."""
    out: list[str] = []
    for item in evidence:
        for found in _DIA_ID.findall(str(item)):
            if found not in out:
                out.append(found)
    return out


def load_locomo(path: str | Path) -> list[LocomoConversation]:
    """Conversations of a LoCoMo JSON file (the ``session_N`` lists, not the date keys, drive sessions)."""
    raw = json.loads(Path(path).read_text())
    conversations: list[LocomoConversation] = []
    for sample in raw:
        conv = sample["conversation"]
        sessions = sorted(int(m.group(1)) for key in conv if (m := _SESSION_KEY.match(key)))
        turns: list[LocomoTurn] = []
        dates: dict[int, datetime | None] = {}
        for n in sessions:
            when = parse_locomo_datetime(str(conv.get(f"session_{n}_date_time", "")))
            dates[n] = when
            for i, turn in enumerate(conv[f"session_{n}"] or []):
                turns.append(
                    LocomoTurn(
                        dia_id=str(turn["dia_id"]),
                        speaker=str(turn["speaker"]),
                        text=str(turn.get("text", "")),
                        session=n,
                        index=i,
                        created_at=when,
                        blip_caption=turn.get("blip_caption") or None,
                    )
                )
        questions = [
            LocomoQuestion(
                question=str(qa["question"]),
                evidence=normalise_evidence(qa.get("evidence") or []),
                category=int(qa.get("category", 0)),
                answer=qa.get("answer", qa.get("adversarial_answer")),
            )
            for qa in sample.get("qa", [])
        ]
        speakers = (str(conv.get("speaker_a", "")), str(conv.get("speaker_b", "")))
        conversations.append(LocomoConversation(str(sample["sample_id"]), speakers, turns, questions, dates))
    return conversations


def evidence_recall(retrieved: Sequence[str], evidence: Sequence[str], k: int) -> float:
    """Fraction of ``evidence`` ids among the first ``k`` retrieved ids; 1.0 when there is no evidence."""
    if not evidence:
        return 1.0
    top = set(retrieved[:k])
    return sum(1 for e in evidence if e in top) / len(evidence)


@dataclass
class RecallAccumulator:
    """Collects per-question recall@k, overall and per LoCoMo category (values in percent)."""

    ks: tuple[int, ...] = LOCOMO_KS
    _overall: dict[int, list[float]] = field(default_factory=dict)
    _by_cat: dict[str, dict[int, list[float]]] = field(default_factory=dict)

    def add(self, retrieved: Sequence[str], evidence: Sequence[str], category: int) -> None:
        name = LOCOMO_CATEGORIES.get(category, str(category))
        for k in self.ks:
            r = evidence_recall(retrieved, evidence, k)
            self._overall.setdefault(k, []).append(r)
            self._by_cat.setdefault(name, {}).setdefault(k, []).append(r)

    def summary(self) -> dict[str, Any]:
        def pct(values: list[float]) -> float:
            return round(100.0 * sum(values) / len(values), 2) if values else 0.0

        out: dict[str, Any] = {f"recall@{k}": pct(self._overall.get(k, [])) for k in self.ks}
        out["per_category"] = {
            cat: {f"recall@{k}": pct(vals.get(k, [])) for k in self.ks} | {"n": len(vals.get(self.ks[0], []))}
            for cat, vals in sorted(self._by_cat.items())
        }
        out["n_questions"] = len(self._overall.get(self.ks[0], []))
        return out


# -- SciFact / BEIR -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BeirDoc:
    doc_id: str
    title: str
    text: str

    @property
    def content(self) -> str:
        return f"{self.title} {self.text}".strip() if self.title else self.text


def load_beir_corpus(path: str | Path) -> list[BeirDoc]:
    docs: list[BeirDoc] = []
    with Path(path).open() as fh:
        for line in fh:
            if line.strip():
                row = json.loads(line)
                docs.append(BeirDoc(str(row["_id"]), str(row.get("title", "")), str(row.get("text", ""))))
    return docs


def load_beir_queries(path: str | Path) -> dict[str, str]:
    out: dict[str, str] = {}
    with Path(path).open() as fh:
        for line in fh:
            if line.strip():
                row = json.loads(line)
                out[str(row["_id"])] = str(row["text"])
    return out


def load_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """``query-id corpus-id score`` TSV (with header) → {query: {doc: relevance}}."""
    qrels: dict[str, dict[str, int]] = {}
    with Path(path).open() as fh:
        reader = csv.reader(fh, delimiter="\t")
        for row in reader:
            if len(row) < 3 or row[0] == "query-id":
                continue
            qrels.setdefault(row[0], {})[row[1]] = int(row[2])
    return qrels


def ndcg_at_k(ranked: Sequence[str], relevant: Mapping[str, int], k: int = 10) -> float:
    """BEIR/trec_eval nDCG@k: gain = relevance, discount log2(rank + 1), ideal from the qrels."""
    dcg = 0.0
    seen: set[str] = set()
    for i, doc in enumerate(ranked[:k]):
        if doc in seen:
            continue
        seen.add(doc)
        rel = relevant.get(doc, 0)
        if rel > 0:
            dcg += rel / math.log2(i + 2)
    ideal = sorted((r for r in relevant.values() if r > 0), reverse=True)[:k]
    idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at_k(ranked: Sequence[str], relevant: Mapping[str, int], k: int = 100) -> float:
    wanted = {d for d, r in relevant.items() if r > 0}
    if not wanted:
        return 0.0
    return len(wanted & set(ranked[:k])) / len(wanted)


def beir_summary(
    runs: Mapping[str, Sequence[str]], qrels: Mapping[str, Mapping[str, int]]
) -> dict[str, float]:
    """Mean nDCG@10 and recall@100 over the queries that have qrels (a query with no run scores 0)."""
    queries = [q for q in qrels if any(r > 0 for r in qrels[q].values())]
    if not queries:
        return {"ndcg@10": 0.0, "recall@100": 0.0, "n_queries": 0}
    ndcg = sum(ndcg_at_k(runs.get(q, []), qrels[q], 10) for q in queries) / len(queries)
    rec = sum(recall_at_k(runs.get(q, []), qrels[q], 100) for q in queries) / len(queries)
    return {"ndcg@10": round(ndcg, 4), "recall@100": round(rec, 4), "n_queries": len(queries)}
