"""Embedding backends compared: torch vs the CPU-optimised one (ONNX Runtime), same texts, same process.

Interleaved chunk by chunk so machine noise hits both alike: ``backend_speedup`` (sentences/s on LoCoMo
turns, each backend at its better core count), ``backend_cosine_mean`` (against torch, over turns and
SciFact abstracts), single-text latency, and optionally vector-only quality per backend. Used by
``hybridmem bench embed`` (bench/embed.py) and ``python -m bench.embed backends [--quality]``.
"""

from __future__ import annotations

import json as jsonlib
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from bench import data as bench_data

log = logging.getLogger(__name__)

BENCH_DATA = bench_data.root()


def load_texts(n: int) -> list[str]:
    """Conversation turns from LoCoMo (agent-memory-like text); synthetic sentences when it is absent."""
    path = BENCH_DATA / "locomo" / "locomo_dev.json"
    texts: list[str] = []
    if path.is_file():
        for sample in jsonlib.loads(path.read_text()):
            conv = sample["conversation"]
            for key, turns in conv.items():
                if key.startswith("session_") and isinstance(turns, list):
                    texts.extend(f'{t["speaker"]} said, "{t["text"]}"' for t in turns)
    if not texts:
        texts = [f"Turn {i}: the user asked about order {i % 313} and item {i % 997}." for i in range(n)]
    unique = list(dict.fromkeys(texts))
    while len(unique) < n:
        unique += [f"{t} ({len(unique)})" for t in unique[: n - len(unique)]]
    return unique[:n]


BACKEND_CHUNK = 128
LATENCY_TEXT = "What did Caroline say about the adoption agency she contacted?"


def load_abstracts(n: int) -> list[str]:
    """SciFact abstracts (title + text), the long texts of the benchmarks; empty when absent."""
    path = BENCH_DATA / "scifact" / "corpus.jsonl"
    out: list[str] = []
    if path.is_file():
        with path.open() as fh:
            for line in fh:
                if len(out) >= n:
                    break
                row = jsonlib.loads(line)
                out.append(f"{row.get('title', '')} {row.get('text', '')}".strip())
    return out


def cpu_embedder(backend: str, threads: int, batch_size: int) -> Any:
    from core.embedding.sentence_model import SentenceTransformerEmbedder
    from core.settings import EmbeddingSettings

    return SentenceTransformerEmbedder(
        EmbeddingSettings(
            backend=backend,
            device="cpu",
            cpu_threads=threads,
            encode_batch_size=batch_size,
        )
    )


def interleaved_rates(
    models: dict[str, Any], texts: Sequence[str], *, rounds: int = 2, chunk: int = BACKEND_CHUNK
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Sentences/s of each model on the same chunks, models alternating per chunk; and their vectors."""
    chunks = [list(texts[i : i + chunk]) for i in range(0, len(texts), chunk)]
    names = list(models)
    for model in models.values():  # warm-up: first calls allocate and pick kernels
        model.encode(chunks[0])
    seconds = dict.fromkeys(names, 0.0)
    vectors = {name: np.zeros((len(texts), models[name].version.dimension), np.float32) for name in names}
    for r in range(rounds):
        for i, part in enumerate(chunks):
            shift = (i + r) % len(names)
            for name in names[shift:] + names[:shift]:
                start = time.perf_counter()
                out = models[name].encode(part)
                seconds[name] += time.perf_counter() - start
                vectors[name][i * chunk : i * chunk + len(part)] = out
    return {n: rounds * len(texts) / seconds[n] for n in names}, vectors


def single_text_latency_ms(models: dict[str, Any], *, calls: int = 60) -> dict[str, float]:
    """Median wall time of embedding one short text (tokenise, run, pool), models alternating."""
    samples: dict[str, list[float]] = {name: [] for name in models}
    for model in models.values():
        model.embed_sync([LATENCY_TEXT])
    for _ in range(calls):
        for name, model in models.items():
            start = time.perf_counter()
            model.embed_sync([LATENCY_TEXT])
            samples[name].append(time.perf_counter() - start)
    return {name: round(1000 * float(np.median(v)), 2) for name, v in samples.items()}


def vector_quality(model: Any) -> dict[str, float]:
    """Vector-only LoCoMo recall@10 and SciFact nDCG@10 in process (brute-force cosine, no stores)."""
    from bench.quality import (
        RecallAccumulator,
        beir_summary,
        load_beir_corpus,
        load_beir_queries,
        load_locomo,
    )
    from bench.quality import load_qrels as load_beir_qrels

    out: dict[str, float] = {}
    locomo = BENCH_DATA / "locomo" / "locomo_dev.json"
    if locomo.is_file():
        acc = RecallAccumulator()
        for conv in load_locomo(locomo):
            turns = model.encode([t.rendered for t in conv.turns])
            questions = model.encode([q.question for q in conv.questions])
            top = np.argsort(-(questions @ turns.T), axis=1)[:, :50]
            for q, ranked in zip(conv.questions, top, strict=True):
                acc.add([conv.turns[i].dia_id for i in ranked], q.evidence, q.category)
        out["locomo_vector_recall@10"] = acc.summary()["recall@10"]
    scifact = BENCH_DATA / "scifact"
    if (scifact / "corpus.jsonl").is_file():
        corpus = load_beir_corpus(scifact / "corpus.jsonl")
        queries = load_beir_queries(scifact / "queries.jsonl")
        qrels = load_beir_qrels(scifact / "qrels" / "train.tsv")
        qids = [q for q in qrels if q in queries]
        docs = model.encode([d.content for d in corpus])
        qv = model.encode([queries[q] for q in qids])
        top = np.argsort(-(qv @ docs.T), axis=1)[:, :100]
        runs = {q: [corpus[i].doc_id for i in ranked] for q, ranked in zip(qids, top, strict=True)}
        out["scifact_vector_ndcg@10"] = beir_summary(runs, qrels)["ndcg@10"]
    return out


class _TorchAt:
    """The torch embedder at a fixed intra-op thread count (torch's setting is process-wide)."""

    def __init__(self, model: Any, threads: int) -> None:
        self.model, self.threads, self.version = model, threads, model.version

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        torch.set_num_threads(self.threads)
        return self.model.encode(texts)  # type: ignore[no-any-return]

    def embed_sync(self, texts: Sequence[str]) -> Any:
        import torch

        torch.set_num_threads(self.threads)
        return self.model.embed_sync(texts)


def _best(rates: dict[str, float], family: str) -> tuple[str, float]:
    name = max((n for n in rates if n.split("@")[0] == family), key=lambda n: rates[n])
    return name, rates[name]


def compare_backends(
    *, threads: int, batch_size: int = 32, texts: int = 1024, rounds: int = 2, quality: bool = False
) -> dict[str, Any]:
    """torch vs the backend ``auto`` picks on this CPU, through the product's embedder, same process.

    Each backend runs at 1 and at ``threads`` cores and is judged by its better figure: on a shared
    machine torch's OpenMP barriers can make 2 threads several times slower than 1, and comparing
    against that would flatter the ONNX backend.
    """
    from core.embedding.backend import resolve_backend

    wanted = resolve_backend("auto", "cpu")
    turns = load_texts(texts)
    abstracts = load_abstracts(256)
    counts = sorted({1, threads})
    torch_model = cpu_embedder("torch", max(counts), batch_size)
    models: dict[str, Any] = {f"torch@{n}": _TorchAt(torch_model, n) for n in counts}
    closers = [torch_model]
    if wanted != "torch":
        for n in counts:
            model = cpu_embedder(wanted, n, batch_size)
            closers.append(model)
            models[f"{model.version.backend}@{n}"] = model  # what loaded: auto may have fallen back
    optimised = closers[-1].version.backend
    try:
        turn_rates, turn_vectors = interleaved_rates(models, turns, rounds=rounds)
        torch_name, torch_rate = _best(turn_rates, "torch")
        opt_name, opt_rate = _best(turn_rates, optimised)
        cos_turns = (turn_vectors[opt_name] * turn_vectors[torch_name]).sum(axis=1)
        abstract_rates: dict[str, float] = {}
        cos_abs = np.ones(0, dtype=np.float32)
        if abstracts:
            abstract_rates, abstract_vectors = interleaved_rates(models, abstracts[:128], rounds=1)
            full = {
                n: np.vstack([abstract_vectors[n], models[n].encode(abstracts[128:])])
                for n in (torch_name, opt_name)
            }
            cos_abs = (full[opt_name] * full[torch_name]).sum(axis=1)
        cosines = np.concatenate([cos_turns, cos_abs])
        latency = single_text_latency_ms(models)
        result: dict[str, Any] = {
            "backend": optimised,
            "backend_quantization": "int8-dynamic-per-channel" if optimised == "onnx-int8" else "none",
            "backend_speedup": round(opt_rate / torch_rate, 2),
            "backend_speedup_abstracts": (
                round(_best(abstract_rates, optimised)[1] / _best(abstract_rates, "torch")[1], 2)
                if abstracts
                else None
            ),
            "backend_cosine_mean": round(float(cosines.mean()), 4),
            "backend_cosine_min": round(float(cosines.min()), 4),
            "backend_cosine_turns": round(float(cos_turns.mean()), 4),
            "backend_cosine_abstracts": round(float(cos_abs.mean()), 4) if abstracts else None,
            # int8 only: the export's own check against its fp32 graph (embedding.int8_min_cosine).
            "backend_int8_agreement": closers[-1].int8_agreement,
            "backend_compared": {"torch": torch_name, "optimised": opt_name},
            "backend_sent_per_s": {n: round(r, 1) for n, r in turn_rates.items()},
            "backend_abstract_sent_per_s": {n: round(r, 1) for n, r in abstract_rates.items()},
            "single_text_latency_ms": latency,
            "single_text_latency_best_ms": {
                family: min(v for n, v in latency.items() if n.split("@")[0] == family)
                for family in {n.split("@")[0] for n in latency}
            },
            "backend_texts": {"turns": len(turns), "abstracts": len(abstracts)},
            "backend_encode_batch_size": batch_size,
            "load_average": [round(x, 2) for x in os.getloadavg()],
        }
        if quality:
            result["backend_quality"] = {
                name: vector_quality(models[name]) for name in (torch_name, opt_name)
            }
        return result
    finally:
        for model in closers:
            model.close()
