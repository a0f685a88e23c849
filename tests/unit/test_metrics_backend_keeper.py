"""GaugeKeeper: the last value of every gauge series is sent again, so Ray keeps exporting it."""

from __future__ import annotations

import time
from typing import Any

from deployments.metrics_backend import GaugeKeeper


class Recording:
    """Stands in for a Ray gauge: records what is set (the keeper only calls ``set``)."""

    def __init__(self) -> None:
        self.sets: list[tuple[float, dict[str, str]]] = []

    def set(self, value: float, tags: dict[str, str] | None = None) -> None:
        self.sets.append((value, dict(tags or {})))


def test_last_value_per_series_is_resent() -> None:
    keeper = GaugeKeeper(interval_s=3600)
    backlog, drift = Recording(), Recording()
    keeper.remember(backlog, {"partition": "1"}, 5)  # type: ignore[arg-type]
    keeper.remember(backlog, {"partition": "1"}, 0)  # type: ignore[arg-type]
    keeper.remember(backlog, {"partition": "2"}, 3)  # type: ignore[arg-type]
    keeper.remember(drift, {"kind": "orphan_points"}, 0)  # type: ignore[arg-type]
    assert keeper.refresh() == 3
    assert sorted(backlog.sets, key=str) == [(0, {"partition": "1"}), (3, {"partition": "2"})]
    assert drift.sets == [(0, {"kind": "orphan_points"})]


def test_the_keeper_thread_refreshes_on_its_interval() -> None:
    keeper = GaugeKeeper(interval_s=0.05)
    gauge: Any = Recording()
    keeper.remember(gauge, {}, 1.0)
    deadline = time.monotonic() + 5
    while len(gauge.sets) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(gauge.sets) >= 3 and {v for v, _ in gauge.sets} == {1.0}
