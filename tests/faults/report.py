"""The fault suite's summary: one row per injected fault, printed at the end and optionally saved as JSON.

Columns: ``requests`` logical operations of the phase (warm-up, fault, recovery; writes and reads);
``acknowledged`` records (episodes and memories) whose write got a 2xx; ``lost`` acknowledged records
missing from Postgres or, after consolidation, from the vector store; ``duplicated`` records stored more
than once; ``5xx`` HTTP 5xx answers the clients saw, retried ones included; ``retried`` operations that
needed more than one attempt; ``failed`` operations that never got a 2xx (not acknowledged, so nothing is
owed); ``degraded`` reads that named a tier; ``write_max_s``/``read_max_s`` the slowest operation,
retries and waits included; ``recovery_s`` from lifting the fault (or the kill) until
the service is whole again (readyz ok, or a new replica healthy).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.provenance import RunProvenance

if TYPE_CHECKING:
    from tests.faults.load import Phase

JSON_ENV = "HYBRIDMEM_FAULTS_JSON"  # path of the JSON summary (unset: print only)
OPS_ENV = "HYBRIDMEM_FAULTS_OPS"  # path of a JSON-lines dump of every operation, per fault (debugging)
PROVENANCE = RunProvenance()  # taken when the suite imports this module, i.e. as the session starts

COLUMNS = (
    ("fault", "fault", 24),
    ("requests", "requests", 8),
    ("acknowledged", "acked", 6),
    ("lost", "lost", 4),
    ("duplicated", "dup", 4),
    ("http_5xx", "5xx", 4),
    ("retried", "retried", 7),
    ("failed", "failed", 6),
    ("degraded_reads", "degraded", 8),
    ("max_write_s", "write_max_s", 11),
    ("max_read_s", "read_max_s", 10),
    ("recovery_s", "recovery_s", 10),
)


@dataclass
class FaultRow:
    fault: str
    requests: int = 0
    writes: int = 0
    acknowledged: int = 0
    lost: int | None = None  # None until the ledger has been checked
    duplicated: int | None = None
    http_5xx: int = 0
    retried: int = 0
    failed: int = 0
    degraded_reads: int = 0
    max_write_s: float = 0.0
    max_read_s: float = 0.0
    recovery_s: float | None = None
    note: str = ""


ROWS: dict[str, FaultRow] = {}
SETUP: dict[str, Any] = {}  # how the load and the faults were run (filled by the suite)
CRASHES = {"passed": 0, "failed": 0}  # the consolidation crash tests (tests/integration), counted at the end


def record(fault: str, counters: dict[str, Any], *, recovery_s: float | None = None, note: str = "") -> None:
    ROWS[fault] = FaultRow(fault=fault, recovery_s=recovery_s, note=note, **counters)


def settle(fault: str, *, lost: int, duplicated: int) -> None:
    if fault in ROWS:
        ROWS[fault].lost, ROWS[fault].duplicated = lost, duplicated


def table() -> list[str]:
    def cell(value: Any) -> str:
        if value is None:
            return "-"
        return f"{value:.1f}" if isinstance(value, float) else str(value)

    head = " ".join(title.rjust(w) if i else title.ljust(w) for i, (_, title, w) in enumerate(COLUMNS))
    lines = [head, "-" * len(head)]
    for row in ROWS.values():
        values = asdict(row)
        lines.append(
            " ".join(
                cell(values[key]).rjust(w) if i else cell(values[key]).ljust(w)
                for i, (key, _, w) in enumerate(COLUMNS)
            )
        )
    return lines


def write_json(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "name": "faults",
        "provenance": PROVENANCE.record(),
        "setup": SETUP,
        "rows": [asdict(row) for row in ROWS.values()],
        "consolidation_crash_tests": dict(CRASHES),
        "lost_total": sum(row.lost or 0 for row in ROWS.values()),
        "duplicated_total": sum(row.duplicated or 0 for row in ROWS.values()),
    }
    path.write_text(json.dumps(doc, indent=2) + "\n")


def dump_ops(phase: Phase) -> None:
    """Append the phase's operations (times relative to its first one) when ``OPS_ENV`` names a file."""
    path = os.environ.get(OPS_ENV)
    if not path:
        return
    t0 = min((op.started for op in phase.ops), default=0.0)
    ops = [
        {**asdict(op), "started": round(op.started - t0, 3), "ended": round(op.ended - t0, 3)}
        for op in phase.ops
    ]
    marks = {label: round(t - t0, 3) for label, t in phase.marks.items()}
    with Path(path).open("a", encoding="utf-8") as fh:
        fh.write(json.dumps({"fault": phase.name, "marks": marks, "ops": ops}) + "\n")
