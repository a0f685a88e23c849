"""The torch Embedder on an accelerator: throughput and agreement with the CPU, in process.

``python -m bench.embed_device --json`` loads the embedding model the way the Embedder deployment
does (``embedding.device: auto``, so ``cuda`` when torch sees a GPU, where the weights run in fp16) and
reports, on LoCoMo turns and SciFact abstracts:

- ``turns_per_s`` / ``abstracts_per_s``: texts per second per micro-batch size (``encode_batch_size``),
  and the best of them;
- ``cosine_vs_cpu_mean`` / ``cosine_vs_cpu_min``: each text's vector against the same model in fp32 on
  the CPU of the same machine (the accelerator's fp16 vectors share the torch model version, so they
  must agree with the CPU's to well within the 0.99 the ONNX backend is held to);
- ``cpu_turns_per_s``: the CPU's fp32 torch throughput on the same machine (every core it may use,
  batch size 32, the same turns and rounds), for ``speedup_vs_cpu``.

It needs no Redis, Postgres or Ray; ``HYBRIDMEM_BENCH_DATA`` points at the bench data and
``--model`` at a model directory when the packaged one is not installed. Exits 2 when torch sees no
accelerator or the model does not land on it (the figures would be CPU figures under a GPU name).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from bench.embed_backends import BENCH_DATA, load_abstracts, load_texts
from bench.provenance import RunProvenance
from core.embedding.onnx_model import default_threads

BATCH_SIZES = (32, 128, 512)


def _embedder(model: str, device: str, batch_size: int, threads: int | None = None) -> Any:
    from core.embedding.sentence_model import SentenceTransformerEmbedder
    from core.settings import EmbeddingSettings

    extra = {"cpu_threads": threads} if threads else {}
    return SentenceTransformerEmbedder(
        EmbeddingSettings(model=model, backend="torch", device=device, encode_batch_size=batch_size, **extra)
    )


def _rate(embedder: Any, texts: Sequence[str], rounds: int) -> float:
    embedder.encode(texts[: min(len(texts), 256)])  # warm-up: kernels, allocator, tokenizer caches
    best = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        embedder.encode(texts)  # returns numpy, so the device work is finished when it returns
        best = max(best, len(texts) / (time.perf_counter() - start))
    return best


def agreement(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Mean and minimum cosine between the rows of ``a`` and ``b`` (same shape; any lengths)."""
    cosines = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(cosines.mean()), float(cosines.min())


def _on_gpu(embedder: Any) -> bool:
    return bool(embedder.device.startswith("cuda"))


def run(model: str, turns: int, abstracts: int, rounds: int, cpu_sample: int) -> dict[str, Any]:
    """The benchmark; the caller has checked that torch sees a GPU (:func:`main` does)."""
    import asyncio

    import torch

    provenance = RunProvenance()
    turn_texts = load_texts(turns)
    abstract_texts = load_abstracts(abstracts)
    sample = turn_texts[:cpu_sample] + abstract_texts[: cpu_sample // 2]
    result: dict[str, Any] = {
        "bench": "embed_device",
        "device_name": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "data": "bench" if (BENCH_DATA / "locomo" / "locomo_dev.json").is_file() else "synthetic turns",
        "turns": len(turn_texts),
        "abstracts": len(abstract_texts),
        "rounds": rounds,
        "turns_per_s": {},
        "abstracts_per_s": {},
    }
    gpu_sample: np.ndarray | None = None
    for bs in BATCH_SIZES:
        embedder = _embedder(model, "auto", bs)
        if not _on_gpu(embedder):
            embedder.close()
            print(f"error: embedding.device auto chose {embedder.device!r}, not a GPU", file=sys.stderr)
            raise SystemExit(2)
        result["device"] = embedder.device
        result["model_version"] = embedder.version.key
        result["dtype"] = str(next(embedder._model.parameters()).dtype)
        result["turns_per_s"][str(bs)] = round(_rate(embedder, turn_texts, rounds), 1)
        if abstract_texts:
            result["abstracts_per_s"][str(bs)] = round(_rate(embedder, abstract_texts, rounds), 1)
        if bs == BATCH_SIZES[-1]:
            gpu_sample = embedder.encode(sample)
            # The async path the deployment serves through (worker thread) gives the same vectors.
            served = asyncio.run(embedder.embed(sample[:64]))
            result["embed_matches_encode"] = bool(
                np.allclose(np.asarray(served.vectors), gpu_sample[:64], atol=2e-3)
            )
        embedder.close()
    assert gpu_sample is not None
    result["turns_per_s_best"] = max(result["turns_per_s"].values())
    if result["abstracts_per_s"]:
        result["abstracts_per_s_best"] = max(result["abstracts_per_s"].values())
    # The CPU in fp32, every core, at its own best batch size (32), over the same turns and rounds.
    threads = default_threads()
    cpu = _embedder(model, "cpu", 32, threads=threads)
    cpu_vectors = cpu.encode(sample)
    result["cpu_threads"] = threads
    result["cpu_turns_per_s"] = round(_rate(cpu, turn_texts, rounds), 1)
    result["cpu_version_matches"] = cpu.version.key == result["model_version"]
    cpu.close()
    result["cpu_sample_turns"] = min(cpu_sample, len(turn_texts))
    result["cpu_sample_abstracts"] = min(cpu_sample // 2, len(abstract_texts))
    result["gpu_norm_max_error"] = round(float(np.abs(np.linalg.norm(gpu_sample, axis=1) - 1).max()), 8)
    mean, low = agreement(cpu_vectors, gpu_sample)
    result["cosine_vs_cpu_mean"] = round(mean, 6)
    result["cosine_vs_cpu_min"] = round(low, 6)
    result["speedup_vs_cpu"] = round(result["turns_per_s_best"] / result["cpu_turns_per_s"], 2)
    result["provenance"] = provenance.record()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.embed_device", description=__doc__)
    parser.add_argument("--model", default="all-MiniLM-L6-v2", help="model name or local directory")
    parser.add_argument("--turns", type=int, default=8192)
    parser.add_argument("--abstracts", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cpu-sample", type=int, default=1024, help="texts embedded on the CPU too")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON line")
    parser.add_argument("--out", help="also write the JSON result to this file")
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("error: torch sees no accelerator (torch.cuda.is_available() is false)", file=sys.stderr)
        return 2
    result = run(args.model, args.turns, args.abstracts, args.rounds, args.cpu_sample)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(result, fh, indent=2)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
