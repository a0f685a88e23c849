"""Turn bench/results/*.json into docs/benchmarks.md (tables + matplotlib plots)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "benchmarks.md"
PLOTS = ROOT / "docs" / "img"

COMMANDS = {
    "embed": "hybridmem bench embed --json",
    "ingest": "hybridmem bench ingest --episodes 50000 --batch 500 --clients 4 --json",
    "retrieve_10k": "hybridmem bench retrieve --memories 10000 --clients 16 --json",
    "retrieve_100k": "hybridmem bench retrieve --memories 100000 --clients 16 --json",
    "consolidate": "hybridmem bench consolidate --json",
    "quality_locomo": "hybridmem bench locomo --data ../shared/bench/locomo/locomo_dev.json --json",
    "quality_scifact": "hybridmem bench scifact --data ../shared/bench/scifact "
    "--qrels ../shared/bench/scifact/qrels/train.tsv --json",
}

PUBLISHED = [
    ("LoCoMo recall@10 (retrieval)", "DRAGON (LoCoMo paper, 10 conversations)", "66.2"),
    ("LoCoMo recall@10 (retrieval)", "mem0 OSS, this machine (product card)", "61.5"),
    ("SciFact nDCG@10", "BM25 (BEIR paper, test split)", "0.665"),
    ("SciFact nDCG@10", "all-MiniLM-L6-v2 (SBERT/BEIR, test split)", "0.645"),
    ("search p95, 10k memories, 16 clients", "mem0 OSS, this machine (product card)", "1.8 s"),
    ("ingest", "mem0 OSS, this machine (product card)", "60-70 memories/s"),
]


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    return (
        f"{os.cpu_count()} cores ({cpu}){mem}, no GPU, Python {platform.python_version()}, "
        f"commit {commit.stdout.strip() or '?'}"
    )


def load() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(RESULTS.glob("*.json")):
        try:
            out[path.stem] = json.loads(path.read_text())
        except json.JSONDecodeError:
            continue
    return out


def table(rows: Sequence[tuple[str, ...]], head: tuple[str, ...]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def plots(results: dict[str, dict[str, Any]]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    PLOTS.mkdir(parents=True, exist_ok=True)
    made = []
    rets = [(k, v) for k, v in results.items() if k.startswith("retrieve")]
    if rets:
        fig, ax = plt.subplots(figsize=(6, 3.2))
        labels = [f"{v.get('memories', '?'):,}" for _, v in rets]
        for i, q in enumerate(("p50_ms", "p95_ms", "p99_ms")):
            ax.bar(
                [x + i * 0.25 for x in range(len(rets))], [v.get(q, 0) for _, v in rets], width=0.25, label=q
            )
        ax.set_xticks([x + 0.25 for x in range(len(rets))], labels)
        ax.set_xlabel("memories")
        ax.set_ylabel("ms")
        ax.axhline(50, color="red", linestyle="--", linewidth=1, label="target p95")
        ax.legend()
        ax.set_title("/v1/context latency, 16 clients")
        fig.tight_layout()
        fig.savefig(PLOTS / "retrieve_latency.png", dpi=110)
        plt.close(fig)
        made.append("img/retrieve_latency.png")
    loc = results.get("quality_locomo", {}).get("modes")
    if loc:
        fig, ax = plt.subplots(figsize=(6, 3.2))
        ks = [5, 10, 25, 50]
        for mode, r in loc.items():
            ax.plot(ks, [r.get(f"recall@{k}", 0) for k in ks], marker="o", label=mode)
        ax.axhline(75, color="red", linestyle="--", linewidth=1, label="target R@10")
        ax.set_xlabel("k")
        ax.set_ylabel("recall@k (%)")
        ax.legend()
        ax.set_title("LoCoMo evidence recall (dev conversations)")
        fig.tight_layout()
        fig.savefig(PLOTS / "recall_at_k.png", dpi=110)
        plt.close(fig)
        made.append("img/recall_at_k.png")
    return made


def render(results: dict[str, dict[str, Any]]) -> str:
    parts = [
        "# Benchmarks",
        "",
        f"Machine: {machine()}.",
        "",
        "Every figure below comes from `make bench` (JSON in `bench/results/`); the commands are listed "
        "per benchmark. Ratios are from one run.",
        "",
    ]
    for name, data in results.items():
        parts += [f"## {name}", "", f"`{COMMANDS.get(name, 'hybridmem bench ' + name + ' --json')}`", ""]
        flat = [
            (k, json.dumps(v) if isinstance(v, dict | list) else v) for k, v in data.items() if k != "modes"
        ]
        parts += [table([(k, str(v)) for k, v in flat], ("key", "value")), ""]
        if "modes" in data:
            modes = data["modes"]
            keys = [k for k in next(iter(modes.values())) if k.startswith(("recall@", "ndcg@"))]
            rows = [(m, *(str(r.get(k)) for k in keys)) for m, r in modes.items()]
            parts += [table(rows, ("mode", *keys)), ""]
    parts += [
        "## Published figures and how they differ",
        "",
        table(PUBLISHED, ("metric", "system / source", "figure")),
        "",
        "LoCoMo's DRAGON figure covers all 10 conversations; ours uses the 5 dev conversations in "
        "`../shared/bench`. BEIR figures are on SciFact's test split; ours on its train qrels. mem0 "
        "figures were measured on this machine class with the same model (product card).",
        "",
    ]
    notes = RESULTS / "notes.md"
    if notes.exists():
        parts += ["## Notes on this run", "", notes.read_text().strip(), ""]
    for img in plots(results):
        parts += [f"![{img}]({img})", ""]
    return "\n".join(parts)


def main() -> None:
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(render(load()))
    print(f"wrote {DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
