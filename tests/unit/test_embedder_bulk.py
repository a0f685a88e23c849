"""How the Embedder sizes bulk chunks (the pure part; the ordering itself is tested on Serve)."""

from __future__ import annotations

import pytest

from deployments.embedder import bulk_chunk_size


def test_quiet_replica_runs_bulk_work_in_full_model_batches() -> None:
    recent = [(1, 32, 0.25)] * 4  # 128 texts/s
    assert bulk_chunk_size(recent, cap=32, slice_s=0.05, busy=False) == 32


def test_no_history_means_full_model_batches() -> None:
    assert bulk_chunk_size([], cap=32, slice_s=0.05, busy=True) == 32
    assert bulk_chunk_size([(1, 0, 0.0)], cap=32, slice_s=0.05, busy=True) == 32


@pytest.mark.parametrize(
    ("recent", "expected"),
    [
        ([(1, 32, 0.25), (1, 32, 0.25)], 6),  # 128 texts/s x 50 ms
        ([(3, 3, 0.01), (1, 32, 0.3)], 5),  # short batches count too: 35 texts in 0.31 s
        ([(1, 32, 0.02)], 32),  # 1,600 texts/s would fill 80: capped at one model batch
        ([(1, 4, 2.0)], 1),  # 2 texts/s: never less than one text
    ],
)
def test_busy_replica_sizes_chunks_to_the_slice(recent: list[tuple[int, int, float]], expected: int) -> None:
    assert bulk_chunk_size(recent, cap=32, slice_s=0.05, busy=True) == expected
