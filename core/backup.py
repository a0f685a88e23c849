"""Backup and restore of all three tiers into a directory with a manifest (``hybridmem backup/restore``).

- Episodic (Postgres): every hybridmem table is COPied (binary) inside ONE read-only REPEATABLE READ
  transaction, so the files are one consistent snapshot; generated columns are left out and recomputed on
  restore. No pg_dump needed.
- Semantic: Qdrant server → the snapshots API (one snapshot per hybridmem collection, plus aliases).
  Embedded stores (edge/local) are owned by ONE process: their directory is copied only while no process
  holds the store's lock (stop the app first). For a running app, back up Postgres and rebuild the vectors
  from it (jobs/reembed.py), see docs/backup.md.
- Working (Redis, optional): SCAN over the key prefix, DUMP + PTTL per key; RESTORE with the remaining TTL,
  re-rooted under the target's prefix.
Restore only ever loads into EMPTY stores and refuses otherwise (:class:`Conflict`).
"""

from __future__ import annotations

import asyncio
import base64
import fcntl
import json
import logging
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from core import __version__, migrate
from core.errors import Conflict, HybridMemError, StoreUnavailable
from core.resources import redis_client
from core.settings import Settings
from core.stores.edge_index import LOCK_FILE, META_FILE, EdgeVectorIndex

logger = logging.getLogger(__name__)

FORMAT = 1
MANIFEST = "manifest.json"
# Restore order: parents before children does not matter (no foreign keys), but keep it stable.
TABLES = (
    "episodes",
    "transcripts",
    "memory_records",
    "memory_versions",
    "consolidation_runs",
    "consolidation_checkpoints",
    "episodes_archive",
)
_EMBEDDED_LOCKS = {"edge": LOCK_FILE, "local": ".lock"}
_REDIS_BATCH = 500


class BackupError(Conflict):
    """The backup or restore cannot proceed as asked (non-empty target, owned store, bad manifest)."""

    code = "backup_refused"


# ---- episodic ----------------------------------------------------------------------------------------


@asynccontextmanager
async def _pg(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    if not settings.postgres.dsn:
        raise StoreUnavailable("postgres", "no Postgres DSN configured (HYBRIDMEM_POSTGRES__DSN)")
    try:
        conn = await asyncpg.connect(
            migrate.normalize_dsn(settings.postgres.dsn), timeout=settings.postgres.connect_timeout_s
        )
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise StoreUnavailable("postgres", str(exc)) from exc
    try:
        yield conn
    finally:
        await conn.close(timeout=settings.postgres.connect_timeout_s)


async def _columns(conn: asyncpg.Connection, table: str) -> list[str]:
    rows = await conn.fetch(
        """SELECT column_name FROM information_schema.columns
           WHERE table_schema = current_schema() AND table_name = $1 AND is_generated = 'NEVER'
           ORDER BY ordinal_position""",
        table,
    )
    return [r["column_name"] for r in rows]


def _dsn(settings: Settings) -> str:
    if not settings.postgres.dsn:
        raise StoreUnavailable("postgres", "no Postgres DSN configured (HYBRIDMEM_POSTGRES__DSN)")
    return settings.postgres.dsn


async def _backup_episodic(settings: Settings, out: Path) -> dict[str, Any]:
    revision = await migrate.current(_dsn(settings))
    if revision is None:
        raise BackupError("the Postgres database has no hybridmem schema (never migrated)")
    tables: dict[str, Any] = {}
    async with _pg(settings) as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        for table in TABLES:
            cols = await _columns(conn, table)
            path = out / f"{table}.copy"
            await conn.copy_from_table(table, columns=cols, output=str(path), format="binary")
            rows = await conn.fetchval(f"SELECT count(*) FROM {table}")  # table names are our constants
            tables[table] = {"file": path.name, "columns": cols, "rows": int(rows)}
        versions = await conn.fetch(
            "SELECT model_version, count(*) AS n FROM memory_records WHERE model_version IS NOT NULL "
            "GROUP BY model_version ORDER BY n DESC"
        )
    memory_versions = {r["model_version"]: int(r["n"]) for r in versions}
    return {"schema_revision": revision, "tables": tables, "memory_model_versions": memory_versions}


async def _restore_episodic(settings: Settings, src: Path, section: dict[str, Any]) -> dict[str, int]:
    revision = section["schema_revision"]
    current = await migrate.current(_dsn(settings))
    if current is None:
        await migrate.upgrade(_dsn(settings), revision)
    elif current != revision:
        raise BackupError(f"target database is at schema {current}, the backup at {revision}")
    restored: dict[str, int] = {}
    async with _pg(settings) as conn:
        for table in TABLES:
            if await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {table})"):
                raise BackupError(f"refusing to restore: table {table} is not empty")
        async with conn.transaction():
            for table, meta in section["tables"].items():
                if table not in TABLES:
                    raise BackupError(f"unknown table {table!r} in the manifest")
                await conn.copy_to_table(
                    table, source=str(src / meta["file"]), columns=meta["columns"], format="binary"
                )
                restored[table] = int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
                if restored[table] != meta["rows"]:
                    raise BackupError(f"{table}: restored {restored[table]} rows, expected {meta['rows']}")
    return restored


# ---- semantic ----------------------------------------------------------------------------------------


def _embedded_root(settings: Settings) -> Path:
    return settings.qdrant_path / settings.qdrant_backend


def _copy_owned_dir(src: Path, dst: Path, lock_name: str) -> None:
    """Copy an embedded store while holding its lock, so no process can write to it meanwhile."""
    src.mkdir(parents=True, exist_ok=True)
    with (src / lock_name).open("a+") as lock:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            raise BackupError(
                f"the embedded vector store {src} is owned by a running process: stop the app and retry, "
                "or back up without the semantic tier and rebuild it from Postgres (jobs/reembed.py)"
            ) from exc
        try:
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns(lock_name), dirs_exist_ok=False)
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


async def _edge_stats(root: Path, settings: Settings) -> dict[str, Any]:
    """Open a copied edge store (proves it loads) and count its points per collection."""
    index = await EdgeVectorIndex.open(root, settings=settings.qdrant)
    try:
        meta_path = root / META_FILE
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        counts = {name: await index.count(collection=name) for name in meta.get("collections", {})}
        live = await index.live_version()
    finally:
        await index.close()
        await asyncio.to_thread((root / LOCK_FILE).unlink, missing_ok=True)
    return {"points": counts, "live_version": live}


def _qdrant_http(settings: Settings) -> httpx.AsyncClient:
    headers = {"api-key": settings.qdrant.api_key} if settings.qdrant.api_key else {}
    return httpx.AsyncClient(base_url=str(settings.qdrant.url), headers=headers, timeout=300.0)


async def _backup_server(settings: Settings, out: Path) -> dict[str, Any]:
    prefix = settings.qdrant.collection_prefix
    snaps: dict[str, Any] = {}
    try:
        async with _qdrant_http(settings) as http:
            listed = (await http.get("/collections")).raise_for_status().json()["result"]["collections"]
            aliases = (await http.get("/aliases")).raise_for_status().json()["result"]["aliases"]
            for name in sorted(c["name"] for c in listed if c["name"].startswith(prefix)):
                info = (await http.get(f"/collections/{name}")).raise_for_status().json()["result"]
                snap = await http.post(f"/collections/{name}/snapshots", params={"wait": "true"})
                snap_name = snap.raise_for_status().json()["result"]["name"]
                path = out / f"{name}.snapshot"
                async with http.stream("GET", f"/collections/{name}/snapshots/{snap_name}") as resp:
                    resp.raise_for_status()
                    with path.open("wb") as fh:
                        async for chunk in resp.aiter_bytes():
                            fh.write(chunk)
                await http.delete(f"/collections/{name}/snapshots/{snap_name}")
                snaps[name] = {"file": path.name, "points": info.get("points_count")}
    except httpx.HTTPError as exc:
        raise StoreUnavailable("qdrant", f"snapshot failed: {exc}") from exc
    ours = [a for a in aliases if a["collection_name"] in snaps]
    return {"backend": "server", "collections": snaps, "aliases": ours}


async def _restore_server(settings: Settings, src: Path, section: dict[str, Any]) -> dict[str, Any]:
    try:
        async with _qdrant_http(settings) as http:
            listed = (await http.get("/collections")).raise_for_status().json()["result"]["collections"]
            clash = sorted({c["name"] for c in listed} & set(section["collections"]))
            if clash:
                raise BackupError(f"refusing to restore: Qdrant collections {clash} already exist")
            for name, meta in section["collections"].items():
                with (src / meta["file"]).open("rb") as fh:
                    r = await http.post(
                        f"/collections/{name}/snapshots/upload",
                        params={"priority": "snapshot", "wait": "true"},
                        files={"snapshot": (meta["file"], fh)},
                    )
                r.raise_for_status()
            actions = [
                {"create_alias": {"collection_name": a["collection_name"], "alias_name": a["alias_name"]}}
                for a in section["aliases"]
            ]
            if actions:
                (await http.post("/collections/aliases", json={"actions": actions})).raise_for_status()
    except httpx.HTTPError as exc:
        raise StoreUnavailable("qdrant", f"snapshot restore failed: {exc}") from exc
    return {name: meta["points"] for name, meta in section["collections"].items()}


async def _backup_semantic(settings: Settings, out: Path) -> dict[str, Any]:
    backend = settings.qdrant_backend
    if backend == "server":
        await asyncio.to_thread(out.mkdir)
        return await _backup_server(settings, out)
    src = _embedded_root(settings)
    await asyncio.to_thread(_copy_owned_dir, src, out, _EMBEDDED_LOCKS[backend])
    section: dict[str, Any] = {"backend": backend, "dir": out.name}
    if backend == "edge":
        section |= await _edge_stats(out, settings)
    return section


async def _restore_semantic(settings: Settings, src: Path, section: dict[str, Any]) -> Any:
    backend = settings.qdrant_backend
    if backend != section["backend"]:
        raise BackupError(f"the backup holds a {section['backend']} vector store; the target is {backend}")
    if backend == "server":
        return await _restore_server(settings, src / "semantic", section)
    dst = _embedded_root(settings)
    if dst.exists() and any(p.name != _EMBEDDED_LOCKS[backend] for p in dst.iterdir()):
        raise BackupError(f"refusing to restore: the vector store directory {dst} is not empty")
    await asyncio.to_thread(shutil.copytree, src / section["dir"], dst, dirs_exist_ok=True)
    return section.get("points")


# ---- working ------------------------------------------------------------------------------------------


async def _keys(client: aioredis.Redis, prefix: str) -> list[bytes]:
    return [k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)]


async def _backup_working(settings: Settings, out: Path) -> dict[str, Any]:
    prefix = settings.redis.key_prefix
    client = redis_client(settings)
    written = 0
    try:
        keys = await _keys(client, prefix)
        with out.open("w", encoding="utf-8") as fh:
            for i in range(0, len(keys), _REDIS_BATCH):
                chunk = keys[i : i + _REDIS_BATCH]
                pipe = client.pipeline(transaction=False)
                for k in chunk:
                    pipe.dump(k)
                    pipe.pttl(k)
                res = await pipe.execute()
                for k, dumped, pttl in zip(chunk, res[0::2], res[1::2], strict=True):
                    if dumped is None or pttl == -2:  # expired between SCAN and DUMP
                        continue
                    suffix = k[len(prefix) :]
                    row = {"key": base64.b64encode(suffix).decode(), "pttl": max(0, int(pttl)),
                           "dump": base64.b64encode(dumped).decode()}  # fmt: skip
                    fh.write(json.dumps(row) + "\n")
                    written += 1
    except RedisError as exc:
        raise StoreUnavailable("redis", f"working-tier backup failed: {exc}") from exc
    finally:
        await client.aclose()
    return {"file": out.name, "keys": written, "prefix": prefix}


async def _restore_working(settings: Settings, src: Path, section: dict[str, Any]) -> int:
    prefix = settings.redis.key_prefix.encode()
    client = redis_client(settings)
    restored = 0
    try:
        if await _keys(client, settings.redis.key_prefix):
            raise BackupError(f"refusing to restore: Redis has keys under {settings.redis.key_prefix!r}:*")
        with (src / section["file"]).open(encoding="utf-8") as fh:
            pipe = client.pipeline(transaction=False)
            for line in fh:
                row = json.loads(line)
                pipe.restore(
                    prefix + base64.b64decode(row["key"]), row["pttl"], base64.b64decode(row["dump"])
                )
                restored += 1
                if len(pipe) >= _REDIS_BATCH:
                    await pipe.execute()
            await pipe.execute()
    except RedisError as exc:
        raise StoreUnavailable("redis", f"working-tier restore failed: {exc}") from exc
    finally:
        await client.aclose()
    return restored


# ---- entry points -------------------------------------------------------------------------------------


def _prepare_out(out: Path) -> None:
    if out.exists() and any(out.iterdir()):
        raise BackupError(f"backup directory {out} is not empty")
    out.mkdir(parents=True, exist_ok=True)
    (out / "episodic").mkdir()


async def backup(
    settings: Settings, out_dir: Path | str, *, include_working: bool, include_semantic: bool = True
) -> dict[str, Any]:
    """Back up into ``out_dir`` (must be empty or absent); returns the manifest it wrote."""
    out = Path(out_dir)
    await asyncio.to_thread(_prepare_out, out)
    started = datetime.now(UTC)
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "hybridmem_version": __version__,
        "started_at": started.isoformat(),
        "episodic": await _backup_episodic(settings, out / "episodic"),
        "semantic": await _backup_semantic(settings, out / "semantic") if include_semantic else None,
        "working": await _backup_working(settings, out / "working.jsonl") if include_working else None,
    }
    semantic = manifest["semantic"] or {}
    by_records = list(manifest["episodic"]["memory_model_versions"])
    manifest["model_version"] = semantic.get("live_version") or (by_records[0] if by_records else None)
    manifest["finished_at"] = datetime.now(UTC).isoformat()
    text = json.dumps(manifest, indent=2, default=str)
    await asyncio.to_thread((out / MANIFEST).write_text, text, encoding="utf-8")
    logger.info("backup written", extra={"dir": str(out), "tables": len(manifest["episodic"]["tables"])})
    return manifest


async def restore(settings: Settings, in_dir: Path | str) -> dict[str, Any]:
    """Load a backup into EMPTY stores (refuses otherwise); returns what was restored per tier."""
    src = Path(in_dir)
    try:
        manifest = json.loads(await asyncio.to_thread((src / MANIFEST).read_text, encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BackupError(f"no readable {MANIFEST} in {src}") from exc
    if manifest.get("format") != FORMAT:
        raise BackupError(f"unsupported backup format {manifest.get('format')!r}")
    report: dict[str, Any] = {"episodic": None, "semantic": None, "working": None}
    try:
        report["episodic"] = await _restore_episodic(settings, src / "episodic", manifest["episodic"])
        if manifest.get("semantic"):
            report["semantic"] = await _restore_semantic(settings, src, manifest["semantic"])
        if manifest.get("working"):
            report["working"] = await _restore_working(settings, src, manifest["working"])
    except (asyncpg.PostgresError, OSError) as exc:
        if isinstance(exc, HybridMemError):
            raise
        store = "postgres" if isinstance(exc, asyncpg.PostgresError) else "disk"
        raise StoreUnavailable(store, str(exc)) from exc
    return report
