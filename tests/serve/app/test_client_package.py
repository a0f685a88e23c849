"""The client distribution (./client, ``hybridmem-client``) against the real Serve app: installed alone into a
clean virtualenv (no torch, no Ray), and its MCP server driven by the MCP SDK's own client over stdio and
over streamable HTTP."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client, StdioServerParameters

from tests.conftest import stop_process
from tests.serve.conftest import AppServer, free_port

pytestmark = [pytest.mark.serve, pytest.mark.integration, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[3]
TOOLS = {
    "store_episode", "search", "get_context", "remember", "get_memory", "list_memories", "update_memory",
    "delete_memory", "memory_history",
}  # fmt: skip


def _stdio(app: AppServer, key: str) -> StdioServerParameters:
    """``hybridmem-mcp`` as an MCP client launches it (the console script of this interpreter's env)."""
    script = Path(sys.executable).with_name("hybridmem-mcp")
    return StdioServerParameters(
        command=str(script), args=["--url", app.base_url, "--key", app.keys[key], "--agent-id", "mcp-test"]
    )


@contextlib.asynccontextmanager
async def _session(server: Any) -> AsyncIterator[Client]:
    async with Client(server, mode="legacy", read_timeout_seconds=120) as client:  # initialize handshake
        yield client


def _payload(result: Any) -> Any:
    assert not result.is_error, result.content
    if result.structured_content is not None:
        return result.structured_content
    return json.loads(result.content[0].text)


async def test_mcp_over_stdio_stores_searches_and_edits_memories(app_server: AppServer) -> None:
    marker = uuid.uuid4().hex[:10]
    async with _session(_stdio(app_server, "a_rw")) as mcp:
        assert mcp.server_info is not None and mcp.server_info.name == "hybridmem"
        assert {t.name for t in (await mcp.list_tools()).tools} == TOOLS

        episode = _payload(
            await mcp.call_tool(
                "store_episode",
                {
                    "content": f"The gate code for the {marker} warehouse is 4471.",
                    "session_id": f"s-{marker}",
                },
            )
        )
        assert uuid.UUID(episode["id"]) and episode["session_id"] == f"s-{marker}"
        memory = _payload(
            await mcp.call_tool("remember", {"content": f"Ada prefers {marker} tea without sugar."})
        )
        assert memory["agent_id"] == "mcp-test" and memory["kind"] == "fact"

        found = _payload(await mcp.call_tool("search", {"query": f"{marker} tea", "k": 5}))
        assert any(memory["id"] in h["source_ids"] for h in found["hits"]), found
        context = _payload(
            await mcp.call_tool(
                "get_context",
                {"query": f"{marker} gate code", "token_budget": 256, "session_id": f"s-{marker}"},
            )
        )
        assert "4471" in context["context"] and context["tokens_used"] <= 256

        edited = _payload(
            await mcp.call_tool(
                "update_memory", {"memory_id": memory["id"], "content": f"Ada drinks {marker} coffee."}
            )
        )
        assert edited["content"] == f"Ada drinks {marker} coffee."
        assert (
            _payload(await mcp.call_tool("get_memory", {"memory_id": memory["id"]}))["content"]
            == edited["content"]
        )
        # A changed fact: the new memory supersedes the old one, which then only shows when asked for.
        newer = _payload(
            await mcp.call_tool(
                "remember", {"content": f"Ada now drinks {marker} juice.", "supersedes": [memory["id"]]}
            )
        )
        hits = _payload(await mcp.call_tool("search", {"query": f"Ada drinks {marker}", "k": 10}))["hits"]
        ids = {h["source_ids"][0] for h in hits}
        assert newer["id"] in ids and memory["id"] not in ids, hits
        args = {"query": f"Ada drinks {marker}", "k": 10, "include_superseded": True}
        hits = _payload(await mcp.call_tool("search", args))["hits"]
        assert {h["source_ids"][0]: h["superseded_by"] for h in hits}[memory["id"]] == newer["id"]
        bad = await mcp.call_tool("search", {"query": "x", "as_of": "yesterday"})
        assert bad.is_error and "as_of" in bad.content[0].text
        page = _payload(await mcp.call_tool("list_memories", {"agent_id": "mcp-test", "limit": 100}))
        assert memory["id"] in {m["id"] for m in page["memories"]}

        await mcp.call_tool("delete_memory", {"memory_id": memory["id"]})
        gone = await mcp.call_tool("get_memory", {"memory_id": memory["id"]})
        assert gone.is_error and "404" in gone.content[0].text
        history = _payload(await mcp.call_tool("memory_history", {"memory_id": memory["id"]}))
        assert [(v["op"], v["content"]) for v in history["versions"]] == [
            ("create", f"Ada prefers {marker} tea without sugar."),
            ("update", f"Ada drinks {marker} coffee."),
            ("delete", f"Ada drinks {marker} coffee."),
        ]

    # Scoped by the key: a read-only key cannot write, another tenant's key does not see tenant a's text.
    async with _session(_stdio(app_server, "a_ro")) as ro:
        refused = await ro.call_tool("remember", {"content": "should not be stored"})
        assert refused.is_error and "403" in refused.content[0].text
    async with _session(_stdio(app_server, "b_rw")) as other:
        hits = _payload(await other.call_tool("search", {"query": f"{marker} gate code warehouse"}))["hits"]
        assert not any(marker in h["content"] for h in hits)


@pytest.fixture
def mcp_http(app_server: AppServer) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "deployments.cli", "mcp", "--http", "--port", str(port),
         "--url", app_server.base_url, "--key", app_server.keys["a_rw"]],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(url, timeout=2)
                break
            except httpx.TransportError as exc:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        f"hybridmem mcp --http did not start: {proc.stderr.read() if proc.stderr else ''}"
                    ) from exc
                time.sleep(0.25)
        yield url
    finally:
        stop_process(proc)


async def test_mcp_over_streamable_http(app_server: AppServer, mcp_http: str) -> None:
    marker = uuid.uuid4().hex[:10]
    async with _session(mcp_http) as mcp:
        assert {t.name for t in (await mcp.list_tools()).tools} == TOOLS
        _payload(await mcp.call_tool("remember", {"content": f"The {marker} launch moved to Thursday."}))
        context = _payload(
            await mcp.call_tool("get_context", {"query": f"when is the {marker} launch", "agent_id": "mcp"})
        )
        assert f"The {marker} launch moved to Thursday." in context["context"]


@pytest.mark.slow
def test_client_package_alone_in_a_clean_virtualenv(app_server: AppServer, tmp_path: Path) -> None:
    """``pip install ./client`` into a fresh venv: httpx and pydantic come with it, torch and Ray do not,
    and the client stores and finds a memory in the real app."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(ROOT / "client")],
        capture_output=True, text=True, timeout=400, env={**os.environ, "PIP_NO_INPUT": "1"},
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-3000:]
    script = textwrap.dedent(
        """
        import importlib.util, json, sys, uuid
        import hybridmem_client
        from hybridmem_client import HybridMemClient
        absent = [m for m in ("torch", "ray", "core", "deployments", "qdrant_client")
                  if importlib.util.find_spec(m) is not None]
        url, key = sys.argv[1], sys.argv[2]
        marker = uuid.uuid4().hex[:10]
        with HybridMemClient(url, key) as hm:
            rec = hm.create_memory(agent_id="venv", content=f"The {marker} invoice is due on the 3rd.")
            hits = hm.search(f"{marker} invoice", k=5).hits
        print(json.dumps({"present": absent, "version": hybridmem_client.__version__,
                          "found": any(str(rec.id) in h.source_ids for h in hits),
                          "modules": sorted({m.split(".")[0] for m in sys.modules})}))
        """
    )
    run = subprocess.run(
        [str(python), "-c", script, app_server.base_url, app_server.keys["a_rw"]],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["present"] == [], f"the client venv has {out['present']}"
    assert out["found"] and out["version"] == "0.1.0"
    assert not {"torch", "ray", "numpy"} & set(out["modules"])
