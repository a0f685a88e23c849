"""Benchmark metrics: LoCoMo evidence recall and BEIR nDCG@10 / recall@100, and the loaders."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench.quality import (
    RecallAccumulator,
    beir_summary,
    evidence_recall,
    load_beir_corpus,
    load_locomo,
    load_qrels,
    ndcg_at_k,
    normalise_evidence,
    parse_locomo_datetime,
    recall_at_k,
)


def test_evidence_recall_follows_the_locomo_protocol() -> None:
    assert evidence_recall(["D1:1", "D1:2", "D1:3"], ["D1:3", "D2:1"], 3) == 0.5
    assert evidence_recall(["D1:1", "D1:2", "D1:3"], ["D1:3"], 2) == 0.0
    assert evidence_recall([], [], 10) == 1.0  # a question with no evidence counts 1


def test_malformed_evidence_is_split() -> None:
    assert normalise_evidence(["D8:6; D9:17", "D1:2", "D1:2"]) == ["D8:6", "D9:17", "D1:2"]
    assert normalise_evidence([]) == []


def test_locomo_datetime() -> None:
    parsed = parse_locomo_datetime("1:56 pm on 8 May, 2023")
    assert parsed is not None and (parsed.year, parsed.month, parsed.day, parsed.hour) == (2023, 5, 8, 13)
    assert parse_locomo_datetime("not a date") is None


def test_recall_accumulator_per_category() -> None:
    acc = RecallAccumulator(ks=(1, 2))
    acc.add(["a", "b"], ["b"], category=4)
    acc.add(["a", "b"], ["a"], category=2)
    out = acc.summary()
    assert out["recall@1"] == 50.0 and out["recall@2"] == 100.0
    assert out["per_category"]["single-hop"]["recall@1"] == 0.0
    assert out["per_category"]["temporal"]["recall@1"] == 100.0
    assert out["n_questions"] == 2


def test_ndcg_matches_the_trec_definition() -> None:
    qrels = {"d1": 1, "d2": 1}
    assert ndcg_at_k(["d1", "d2", "x"], qrels) == pytest.approx(1.0)
    expected = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    assert ndcg_at_k(["x", "d1"], qrels) == pytest.approx(expected)
    graded = {"a": 2, "b": 1}
    assert ndcg_at_k(["b", "a"], graded) == pytest.approx((1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3)))
    assert ndcg_at_k(["x"], {"a": 0}) == 0.0
    assert recall_at_k(["a", "x"], {"a": 1, "b": 1}, 100) == 0.5


def test_beir_summary_scores_missing_runs_zero() -> None:
    qrels = {"q1": {"d1": 1}, "q2": {"d2": 1}}
    out = beir_summary({"q1": ["d1"]}, qrels)
    assert out["ndcg@10"] == 0.5 and out["recall@100"] == 0.5 and out["n_queries"] == 2


def test_loaders_read_the_published_formats(tmp_path: Path) -> None:
    sample = {
        "sample_id": "conv-x",
        "conversation": {
            "speaker_a": "Ann",
            "speaker_b": "Bob",
            "session_1_date_time": "1:56 pm on 8 May, 2023",
            "session_1": [
                {"speaker": "Ann", "dia_id": "D1:1", "text": "Hi Bob"},
                {"speaker": "Bob", "dia_id": "D1:2", "text": "Look", "blip_caption": "a photo of a dog"},
            ],
            "session_2_date_time": "2:00 pm on 9 May, 2023",  # a date key without a session is ignored
        },
        "qa": [{"question": "Who has a dog?", "answer": "Bob", "evidence": ["D1:2"], "category": 4}],
    }
    path = tmp_path / "locomo.json"
    path.write_text(json.dumps([sample]))
    (conv,) = load_locomo(path)
    assert [t.dia_id for t in conv.turns] == ["D1:1", "D1:2"]
    assert conv.turns[1].rendered == 'Bob said, "Look" and shared a photo of a dog'
    assert conv.questions[0].evidence == ["D1:2"]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(json.dumps({"_id": "7", "title": "T", "text": "body"}) + "\n")
    assert load_beir_corpus(corpus)[0].content == "T body"
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\n1\t7\t1\n")
    assert load_qrels(qrels) == {"1": {"7": 1}}
