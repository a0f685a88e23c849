"""Consolidation: working and episodic memory become searchable long-term memory, exactly once.

- :mod:`core.consolidation.partition`: one partition's pass (drain, select, dedupe, summarise, embed,
  upsert, commit) under an advisory lock; crash points injectable through a ``fault`` hook.
- :mod:`core.consolidation.runner`: in-process runs over many partitions (:func:`run_consolidation`).
- :mod:`core.consolidation.runs`: run records (start/end, per-partition counts, errors).
- :mod:`core.consolidation.summarise`: extractive and Ollama-compatible LLM summarisers.
- :mod:`core.consolidation.maintenance`: retention (archive) and re-embedding passes.
"""

from core.consolidation.partition import (
    FAULT_POINTS,
    PartitionResult,
    PartitionStores,
    consolidate_partition,
)
from core.consolidation.runner import PartitionOutcome, run_consolidation, run_partition
from core.consolidation.runs import RunRecord, RunStore
from core.consolidation.summarise import ExtractiveSummariser, OllamaSummariser, SummaryTurn

__all__ = [
    "FAULT_POINTS",
    "ExtractiveSummariser",
    "OllamaSummariser",
    "PartitionOutcome",
    "PartitionResult",
    "PartitionStores",
    "RunRecord",
    "RunStore",
    "SummaryTurn",
    "consolidate_partition",
    "run_consolidation",
    "run_partition",
]
