"""The ``hybridmem`` command line: run the app, migrate the schema, operate the cluster."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from core import __version__


def _cmd_run(args: argparse.Namespace) -> int:
    from deployments.runner import run

    return run(Path(args.config), args.host, args.port)


def _cmd_migrate(args: argparse.Namespace) -> int:
    from core import migrate
    from core.settings import load_settings

    dsn = args.dsn or load_settings().postgres.dsn
    if not dsn:
        print("error: no database: pass --dsn or set HYBRIDMEM_POSTGRES__DSN", file=sys.stderr)
        return 2
    if args.action == "upgrade":
        asyncio.run(migrate.upgrade(dsn, args.revision or "head"))
        print(f"upgraded to {asyncio.run(migrate.current(dsn))}")
    elif args.action == "downgrade":
        if not args.revision:
            print("error: downgrade needs a revision (e.g. 'base' or '-1')", file=sys.stderr)
            return 2
        asyncio.run(migrate.downgrade(dsn, args.revision))
        print(f"downgraded to {asyncio.run(migrate.current(dsn))}")
    else:
        print(asyncio.run(migrate.current(dsn)) or "(empty database: no revision)")
    return 0


def _cmd_consolidate(args: argparse.Namespace) -> int:
    from deployments.ops_cli import submit_consolidation

    return submit_consolidation(
        address=args.address, partitions=args.partitions, parallelism=args.parallelism, wait=args.wait,
        timeout_s=args.timeout,
    )  # fmt: skip


def _cmd_runs(args: argparse.Namespace) -> int:
    from deployments.ops_cli import show_runs

    return show_runs(args.run_id, args.limit)


def _cmd_status(args: argparse.Namespace) -> int:
    from deployments.ops_cli import status

    return status(args.url)


def _cmd_backup(args: argparse.Namespace) -> int:
    import json

    from core.backup import backup
    from core.settings import load_settings

    manifest = asyncio.run(
        backup(
            load_settings(),
            args.dir,
            include_working=not args.no_working,
            include_semantic=not args.no_semantic,
        )
    )
    print(json.dumps(manifest, indent=2, default=str))
    return 0


def _cmd_restore(args: argparse.Namespace) -> int:
    import json

    from core.backup import restore
    from core.settings import load_settings

    print(json.dumps(asyncio.run(restore(load_settings(), args.dir)), indent=2, default=str))
    return 0


def _cmd_ingest(args: argparse.Namespace) -> int:
    """Episodes from a JSONL file (one EpisodeIn object per line) in batches, with a progress bar."""
    import json

    import httpx
    from tqdm import tqdm

    lines = [ln for ln in Path(args.file).read_text(encoding="utf-8").splitlines() if ln.strip()]
    try:
        items = [json.loads(ln) for ln in lines]
    except json.JSONDecodeError as exc:
        print(f"error: {args.file}:{exc.lineno}: not JSON ({exc.msg})", file=sys.stderr)
        return 2
    headers = {"Authorization": f"Bearer {args.key}"}
    inserted = duplicates = 0
    with (
        httpx.Client(base_url=args.url, headers=headers, timeout=120) as client,
        tqdm(total=len(items), unit="episode", desc="ingesting") as bar,
    ):
        for start in range(0, len(items), args.batch):
            chunk = items[start : start + args.batch]
            r = client.post("/v1/episodes/batch", json={"episodes": chunk})
            if r.status_code != 201:
                bar.close()
                print(
                    f"error: lines {start + 1}-{start + len(chunk)}: HTTP {r.status_code} {r.text}",
                    file=sys.stderr,
                )
                print(
                    f"stored before the error: {inserted} new, {duplicates} already stored", file=sys.stderr
                )
                return 1
            body = r.json()
            inserted += body["inserted"]
            duplicates += body["duplicates"]
            bar.update(len(chunk))
    print(f"stored {inserted} new episodes, {duplicates} already stored (replays)")
    return 0


BENCHES = {
    "embed": "bench.embed",
    "ingest": "bench.ingest",
    "retrieve": "bench.retrieve",
    "consolidate": "bench.consolidate",
    "locomo": "bench.quality_locomo",
    "scifact": "bench.quality_scifact",
    "soak": "bench.soak",
    "updates": "bench.updates",
}


def _cmd_mcp(args: argparse.Namespace) -> int:
    from hybridmem_client.mcp_server import serve

    return serve(args)


def _cmd_bench(args: argparse.Namespace) -> int:
    import importlib
    import json

    from bench.provenance import RunProvenance

    module = importlib.import_module(BENCHES[args.name])
    options = {k: v for k, v in vars(args).items() if k in _BENCH_OPTIONS and v is not None}
    provenance = RunProvenance()
    result = module.run(**options)
    result["provenance"] = provenance.record()
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    if not args.json:
        for key, value in result.items():
            print(f"{key:>28}: {value}")
    else:
        print(json.dumps(result))
    return 0


_BENCH_OPTIONS = {
    "consolidate_every",
    "mix",
    "memories",
    "clients",
    "seconds",
    "rounds",
    "episodes",
    "batch",
    "url",
    "key",
    "data",
    "qrels",
    "modes",
    "queries",
    "conversations",
    "duration",
    "rate",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hybridmem",
        description="hybridmem: memory and retrieval cluster for AI agents on Ray Serve. "
        "Configuration comes from HYBRIDMEM_* environment variables (see docs/onboarding.md).",
    )
    parser.add_argument("--version", action="version", version=f"hybridmem {__version__}")
    parser.add_argument("--log-level", default="WARNING", help="log level of this command (default WARNING)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="serve the whole app (starts embedded Redis/Postgres when no URL is configured)",
        description="Start missing local services, apply migrations and serve serve_config.yaml "
        "with Ray Serve. Ctrl-C stops the app and the embedded servers it started.",
    )
    run.add_argument("--config", default="serve_config.yaml", help="Serve config file (default: %(default)s)")
    run.add_argument("--host", default="127.0.0.1", help="HTTP host (default: %(default)s)")
    run.add_argument("--port", type=int, default=8000, help="HTTP port (default: %(default)s)")
    run.set_defaults(func=_cmd_run)

    mig = sub.add_parser(
        "migrate",
        help="apply, revert or show the database schema version (Alembic)",
        description="Manage the episodic-tier schema. upgrade [REV] (default head), downgrade REV, current.",
    )
    mig.add_argument("action", choices=["upgrade", "downgrade", "current"])
    mig.add_argument(
        "revision", nargs="?", help="target revision (upgrade: default head; downgrade: required)"
    )
    mig.add_argument("--dsn", help="Postgres DSN (default: HYBRIDMEM_POSTGRES__DSN)")
    mig.set_defaults(func=_cmd_migrate)

    con = sub.add_parser(
        "consolidate",
        help="submit a consolidation Ray job (Job Submission API), optionally following its progress",
        description="Submit `python -m jobs.consolidate` to the Ray cluster. HYBRIDMEM_* variables of this "
        "shell are passed to the job. With --wait, shows a progress bar over partitions and the run record.",
    )
    con.add_argument("--address", default=os.environ.get("RAY_DASHBOARD_ADDRESS", "http://127.0.0.1:8265"),
                     help="Ray dashboard / job server address (default: %(default)s)")  # fmt: skip
    con.add_argument("--partitions", help="e.g. 0,1,5-7 (default: all)")
    con.add_argument("--parallelism", type=int, help="partitions processed at once")
    con.add_argument("--wait", action="store_true", help="follow the run until it ends")
    con.add_argument("--timeout", type=float, default=3600.0, help="--wait gives up after this many seconds")
    con.set_defaults(func=_cmd_consolidate)

    runs = sub.add_parser("runs", help="list consolidation runs, or show one", description="Run records.")
    runs.add_argument("run_id", nargs="?", help="show this run in full")
    runs.add_argument("--limit", type=int, default=20)
    runs.set_defaults(func=_cmd_runs)

    st = sub.add_parser(
        "status",
        help="summarise the running app: deployments, replicas, store health, consolidation backlog",
        description="Reads Serve's status from the local Ray cluster, /readyz over HTTP and the backlog.",
    )
    st.add_argument("--url", default="http://127.0.0.1:8000", help="app base URL (default: %(default)s)")
    st.set_defaults(func=_cmd_status)

    ing = sub.add_parser(
        "ingest",
        help="store episodes from a JSONL file through the API (batched, with progress)",
        description="Each line is one episode object as POST /v1/episodes takes it (agent_id, session_id, "
        "content, optional id/role/kind/metadata/created_at). Give ids to make re-runs idempotent.",
    )
    ing.add_argument("file", help="JSONL file")
    ing.add_argument("--url", default="http://127.0.0.1:8000", help="app base URL (default: %(default)s)")
    ing.add_argument("--key", required=True, help="API key with memory:write")
    ing.add_argument("--batch", type=int, default=500, help="episodes per request (default: %(default)s)")
    ing.set_defaults(func=_cmd_ingest)

    bk = sub.add_parser(
        "backup",
        help="back up the episodic, semantic and (optionally) working tiers into a directory",
        description="Consistent Postgres COPY, the vector store (Qdrant snapshots, or the embedded store's "
        "files when no process holds it), Redis keys with TTLs, and a manifest. See docs/backup.md.",
    )
    bk.add_argument("dir", help="empty or new directory")
    bk.add_argument("--no-working", action="store_true", help="skip the Redis working tier")
    bk.add_argument("--no-semantic", action="store_true", help="skip vectors (rebuild them by re-embedding)")
    bk.set_defaults(func=_cmd_backup)

    rs = sub.add_parser(
        "restore", help="restore a backup into empty stores", description="See docs/backup.md."
    )
    rs.add_argument("dir", help="a directory written by `hybridmem backup`")
    rs.set_defaults(func=_cmd_restore)

    from hybridmem_client.mcp_server import DESCRIPTION, add_arguments

    mcp = sub.add_parser(
        "mcp", help="serve the memory tools over MCP (stdio, or --http)", description=DESCRIPTION
    )
    add_arguments(mcp)
    mcp.set_defaults(func=_cmd_mcp)

    bench = sub.add_parser(
        "bench",
        help="run a benchmark (embed, ingest, retrieve, consolidate, locomo, scifact, soak, updates)",
        description="Run one benchmark against a fresh local app (or --url/--key of a running one). "
        "With --json the last line printed is one JSON object.",
    )
    bench.add_argument("name", choices=sorted(BENCHES))
    bench.add_argument("--json", action="store_true", help="print the result as one JSON line (last line)")
    bench.add_argument("--out", help="also write the JSON result to this file")
    bench.add_argument("--url", help="base URL of a running app (default: start a fresh local one)")
    bench.add_argument("--key", help="API key for --url")
    bench.add_argument("--memories", type=int, help="retrieve/soak: memories loaded first")
    bench.add_argument("--clients", type=int, help="concurrent clients")
    bench.add_argument("--seconds", type=float, help="retrieve: duration of each measured run")
    bench.add_argument("--rounds", type=int, help="retrieve: rounds of served/limit runs (best counts)")
    bench.add_argument("--episodes", type=int, help="ingest/consolidate: episodes")
    bench.add_argument("--batch", type=int, help="ingest: episodes per request")
    bench.add_argument(
        "--data",
        help="consolidate, locomo: LoCoMo conversations JSON; scifact: BEIR directory "
        "(default: under HYBRIDMEM_BENCH_DATA, else ../shared/bench)",
    )
    bench.add_argument("--qrels", help="scifact: qrels TSV")
    bench.add_argument("--conversations", type=int, help="updates: generated conversations (default 30)")
    bench.add_argument("--modes", help="locomo/scifact: comma-separated modes (hybrid,vector,lexical)")
    bench.add_argument("--duration", type=float, help="soak: seconds of load after warm-up")
    bench.add_argument("--rate", type=float, help="soak: operations started per second")
    bench.add_argument(
        "--consolidate-every",
        dest="consolidate_every",
        type=float,
        help="soak: seconds between scheduled consolidation runs, as the app does by default (0: off)",
    )
    bench.add_argument(
        "--mix",
        choices=["default", "reads"],
        help="soak: operations sent (default: writes, batches, searches, contexts; reads: searches and "
        "contexts over the preloaded memories only)",
    )
    bench.set_defaults(func=_cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
