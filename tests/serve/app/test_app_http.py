"""The real app on a local Ray + Serve, over HTTP: write an episode and read it back, with auth."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.serve.conftest import AppServer

pytestmark = [pytest.mark.serve, pytest.mark.slow]


def test_readyz_reports_every_store(app_server: AppServer) -> None:
    with app_server.client() as c:
        body = c.get("/readyz").json()
    assert body == {"status": "ok", "stores": {"redis": "ok", "postgres": "ok", "qdrant": "ok"}}


def test_episode_round_trip_with_auth(app_server: AppServer) -> None:
    session = f"s-{uuid.uuid4().hex[:8]}"
    ep = {"agent_id": "planner", "session_id": session, "content": "The user prefers window seats."}
    with app_server.client() as anon:
        assert anon.post("/v1/episodes", json=ep).status_code == 401
    with app_server.client("a_ro") as ro:
        assert ro.post("/v1/episodes", json=ep).status_code == 403
    with app_server.client("a_rw") as rw:
        r = rw.post("/v1/episodes", json=ep)
        assert r.status_code == 201, r.text
        assert r.headers["X-Request-ID"]
        created = r.json()
        assert created["tenant_id"] == app_server.tenants["a"]
        ctx = rw.get(f"/v1/sessions/{session}/context").json()
        assert [e["content"] for e in ctx["episodes"]] == [ep["content"]]
        # The first short read of a buffer asks Postgres whether it holds the whole session; then Redis.
        again = rw.get(f"/v1/sessions/{session}/context").json()
        assert again["episodes"] == ctx["episodes"] and again["source"] == "redis"
        pg = rw.get(f"/v1/sessions/{session}/context", params={"read_preference": "postgres_only"}).json()
        assert [e["id"] for e in pg["episodes"]] == [created["id"]]
    with app_server.client("b_rw") as other:
        assert other.get(f"/v1/sessions/{session}/context").json()["episodes"] == []
        assert other.get(f"/v1/episodes/{created['id']}").status_code == 404


def test_bad_input_is_4xx_naming_the_field(app_server: AppServer) -> None:
    with app_server.client("a_rw") as rw:
        r = rw.post("/v1/episodes", json={"agent_id": "a", "session_id": "s", "content": ""})
        assert r.status_code == 422
        assert r.json()["error"]["field"] == "content"
        r = rw.post("/v1/episodes", content=b"{", headers={"content-type": "application/json"})
        assert r.status_code == 422


def test_batch_and_scratchpad(app_server: AppServer) -> None:
    session = f"s-{uuid.uuid4().hex[:8]}"
    batch = {
        "episodes": [
            {"id": f"b{i}", "agent_id": "a", "session_id": session, "content": f"turn {i}"} for i in range(3)
        ]
    }
    with app_server.client("a_rw") as rw:
        first = rw.post("/v1/episodes/batch", json=batch).json()
        again = rw.post("/v1/episodes/batch", json=batch).json()
        assert (first["inserted"], again["inserted"], again["duplicates"]) == (3, 0, 3)
        assert (
            rw.put("/v1/agents/a/scratchpad/goal", json={"value": "book flight", "ttl_s": 60}).status_code
            == 200
        )
        assert rw.get("/v1/agents/a/scratchpad/goal").json()["value"] == "book flight"


def test_openapi_docs_served(app_server: AppServer) -> None:
    with app_server.client() as c:
        assert c.get("/docs").status_code == 200
        paths = c.get("/openapi.json").json()["paths"]
    assert {"/v1/episodes", "/v1/search", "/v1/context", "/readyz"} <= set(paths)


def test_openai_compatible_embeddings(app_server: AppServer) -> None:
    with app_server.client("a_ro") as ro:
        r = ro.post("/v1/embeddings", json={"input": ["hello", "world"], "model": "all-MiniLM-L6-v2"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["object"] == "list"
        assert [d["index"] for d in body["data"]] == [0, 1]
        assert len(body["data"][0]["embedding"]) == 384
        info = ro.get("/v1/embeddings/model").json()
        assert info["dimension"] == 384
        bad = ro.post("/v1/embeddings", json={"input": []})  # OpenAI's status and error shape
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "input", bad.text
        models = ro.get("/v1/models").json()
        assert [m["id"] for m in models["data"]] == ["all-MiniLM-L6-v2"]
    with app_server.client() as anon:
        assert anon.post("/v1/embeddings", json={"input": "x"}).status_code == 401


def _consolidate(rw: httpx.Client, admin: httpx.Client) -> None:
    started = admin.post("/v1/admin/consolidations", json={})
    assert started.status_code == 202, started.text
    run_id = started.json()["id"]
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        run = admin.get(f"/v1/admin/consolidations/{run_id}").json()
        if run["status"] not in ("running", "starting"):
            assert run["status"] == "succeeded", run
            return
        time.sleep(0.5)
    raise AssertionError("consolidation did not finish")


def test_hybrid_search_context_budget_filters_and_isolation(app_server: AppServer) -> None:
    session = f"s-{uuid.uuid4().hex[:8]}"
    eps = [
        ("lex", "Serial number XJ-4471-QZ was printed on the broken router."),
        ("vec", "The customer adores Italian cuisine, especially fresh pasta."),
        ("other", "We talked about the weather in Lisbon during spring."),
    ]
    with app_server.client("a_rw") as rw, app_server.client("a_admin") as admin:
        r = rw.post(
            "/v1/episodes/batch",
            json={
                "episodes": [
                    {
                        "id": f"{session}-{n}",
                        "agent_id": "support",
                        "session_id": session,
                        "content": c,
                        "created_at": f"2024-03-0{i + 1}T10:00:00Z",
                    }
                    for i, (n, c) in enumerate(eps)
                ]
            },
        )
        assert r.status_code == 201, r.text
        ids = dict(zip([n for n, _ in eps], r.json()["ids"], strict=True))
        _consolidate(rw, admin)

        def top(query: str, mode: str) -> list[str]:
            body = {"query": query, "k": 3, "mode": mode, "filters": {"session_id": session}}
            res = rw.post("/v1/search", json=body)
            assert res.status_code == 200, res.text
            assert res.json()["degraded"] == []
            return [
                h["source_ids"][0]
                for h in res.json()["hits"]
                if h["metadata"].get("record_type") != "summary"
            ]

        # only the lexical side can match an opaque serial number
        assert top("XJ-4471-QZ", "hybrid")[0] == ids["lex"]
        # no shared word: only the vector side can find it
        assert ids["vec"] not in top("which food does the client love", "lexical")
        assert top("which food does the client love", "hybrid")[0] == ids["vec"]

        for budget in (8, 20, 64, 400):
            ctx = rw.post(
                "/v1/context",
                json={
                    "query": "router serial pasta",
                    "token_budget": budget,
                    "filters": {"session_id": session},
                },
            ).json()
            assert ctx["tokens_used"] <= budget
            assert sum(s["token_count"] for s in ctx["snippets"]) <= budget

        # Unset k / token_budget: the server's retrieval settings (defaults 10 and 1024) apply.
        defaults = rw.post("/v1/context", json={"query": "router serial pasta"}).json()
        assert defaults["token_budget"] == 1024 and defaults["model_version"]
        found = rw.post("/v1/search", json={"query": "router serial pasta weather Lisbon"}).json()
        assert found["model_version"] == defaults["model_version"] and 0 < len(found["hits"]) <= 10

        dated = rw.post(
            "/v1/search",
            json={
                "query": "pasta cuisine router weather",
                "k": 10,
                "filters": {"session_id": session, "created_before": "2024-03-02T00:00:00Z"},
            },
        ).json()["hits"]
        assert {h["source_ids"][0] for h in dated if h["metadata"].get("record_type") != "summary"} == {
            ids["lex"]
        }
    with app_server.client("b_rw") as other:
        hits = other.post("/v1/search", json={"query": "XJ-4471-QZ router pasta"}).json()["hits"]
        assert all(h["source_ids"][0] not in ids.values() for h in hits)
        ctx = other.post(
            "/v1/context", json={"query": "XJ-4471-QZ", "filters": {"session_id": session}}
        ).json()
        assert "XJ-4471" not in ctx["context"]


def test_the_readme_tour_context_holds_each_fact_once(app_server: AppServer) -> None:
    """The README's tour (three turns, a consolidation, a 256-token context): the session summary and the
    turns it was built from are not both packed in full (issue 25: it held the seat three times)."""
    agent, session = f"travel-{uuid.uuid4().hex[:6]}", "trip-42"
    turns = [
        ("t1", "user", "I always take a window seat."),
        ("t2", "user", "My budget is 150 EUR a night."),
        ("t3", "assistant", "Noted: window seat, hotels under 150 EUR."),
    ]
    body = {
        "episodes": [
            {"id": f"{agent}-{i}", "agent_id": agent, "session_id": session, "role": role, "content": text}
            for i, role, text in turns
        ]
    }
    with app_server.client("a_rw") as rw, app_server.client("a_admin") as admin:
        assert rw.post("/v1/episodes/batch", json=body).status_code == 201
        _consolidate(rw, admin)
        query = {"query": "Which seat should I book?", "token_budget": 256, "filters": {"agent_id": agent}}
        raw = rw.post("/v1/context", json={**query, "dedupe": False}).json()
        ctx = rw.post("/v1/context", json=query).json()
    kinds = {s["kind"] for s in raw["snippets"]}
    assert "summary" in kinds, raw  # the control: the summary is there to repeat the turns
    assert raw["context"].count("I always take a window seat") >= 2
    for sentence in ("I always take a window seat", "My budget is 150 EUR a night"):
        assert ctx["context"].count(sentence) == 1, ctx["context"]
    assert ctx["tokens_used"] <= 256


def test_replica_logs_hold_the_apps_records_as_json_objects(app_server: AppServer) -> None:
    """The app's structured records reach Serve's replica log files as objects whose fields are top-level
    keys (not the app's JSON line as the text of Serve's ``message``), with the caller's request id."""
    import ray

    rid = f"logs-{uuid.uuid4().hex[:12]}"
    ep = {"agent_id": "logs", "session_id": rid, "content": "A line to find in the replica logs."}
    with app_server.client("a_rw") as rw:
        assert rw.post("/v1/episodes", json=ep, headers={"X-Request-ID": rid}).status_code == 201
    logs = Path(ray._private.worker._global_node.get_logs_dir_path()) / "serve"  # type: ignore[attr-defined]
    deadline = time.monotonic() + 20
    mine: list[dict[str, object]] = []
    while not mine and time.monotonic() < deadline:
        for path in logs.glob("replica_hybridmem_Ingress_*.log"):
            for line in path.read_text(errors="replace").splitlines():
                if rid in line and line.startswith("{"):
                    record = json.loads(line)
                    if record.get("store") == "postgres":
                        mine.append(record)
        time.sleep(0.5)
    assert mine, f"no structured record with request id {rid} in {sorted(p.name for p in logs.iterdir())}"
    record = mine[0]
    assert record["request_id"] == rid and record["operation"] and record["logger"] == "hybridmem.store"
    assert record["tenant"] and "tenant_id" not in record
    assert not str(record["message"]).lstrip().startswith("{"), record  # plain text, not a JSON string


def test_cli_ingest_file_is_batched_and_idempotent(app_server: AppServer, tmp_path: Path) -> None:
    from deployments.cli import main

    session = f"s-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "episodes.jsonl"
    path.write_text(
        "\n".join(
            json.dumps({"id": f"f{i}", "agent_id": "cli", "session_id": session, "content": f"line {i}"})
            for i in range(7)
        )
        + "\n"
    )
    args = [
        "ingest",
        str(path),
        "--url",
        app_server.base_url,
        "--key",
        app_server.keys["a_rw"],
        "--batch",
        "3",
    ]
    assert main(args) == 0
    assert main(args) == 0  # replay stores nothing new
    with app_server.client("a_rw") as rw:
        items = rw.get("/v1/episodes", params={"session_id": session}).json()["items"]
    assert sorted(e["content"] for e in items) == sorted(f"line {i}" for i in range(7))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"agent_id": "cli", "session_id": "x", "content": ""}\n')
    assert main(["ingest", str(bad), "--url", app_server.base_url, "--key", app_server.keys["a_rw"]]) == 1


def test_every_replica_runs_with_the_process_tuning(app_server: AppServer) -> None:
    """The tuning set before Ray started (deployments/serve_env.py) is in each replica's environment:
    Serve's throughput mode and the malloc arena cap only work if the replica processes inherit them."""
    import os

    from bench.soak import app_processes
    from deployments.serve_env import SERVE_ENV_DEFAULTS

    if not Path("/proc/self/environ").exists():
        pytest.skip("reads the replicas' environment from /proc (Linux)")
    replicas = {pid: role for pid, role, _ in app_processes(os.getpid())}
    roles = {role for role in replicas.values() if role.startswith("ServeReplica:")}
    assert {"ServeReplica:hybridmem:Retriever", "ServeReplica:hybridmem:Embedder"} <= roles, replicas
    for pid, role in replicas.items():
        raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        env = dict(item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)
        for name, value in SERVE_ENV_DEFAULTS.items():
            assert env.get(name) == os.environ.get(name, value), (role, name)


def test_read_only_soak_sends_only_searches_and_contexts(app_server: AppServer) -> None:
    """`hybridmem bench soak --mix reads`: fixed data, so per-request memory growth shows on its own."""
    from bench import soak as bench_soak

    with pytest.raises(ValueError, match="mix"):
        bench_soak.run(mix="writes-only", url=app_server.base_url, key=app_server.keys["a_rw"])
    result = bench_soak.run(
        duration=3, rate=8, memories=16, warmup=1, sample_s=1, mix="reads", progress=False,
        url=app_server.base_url, key=app_server.keys["a_rw"],
    )  # fmt: skip
    assert result["mix_name"] == "reads" and set(result["mix"]) == {"search", "context"}
    assert set(result["latency"]) <= {"overall", "search", "context"} and result["requests"] > 0
    assert result["errors"] == 0, result["errors_by_op"]
    assert result["memory_mb"]["after"]["total"] > 0


def test_bench_cli_writes_its_result_with_provenance(
    app_server: AppServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`hybridmem bench ... --json --out F`: the file and the last printed line are the same object,
    and it says when, on which commit and on what machine it was measured."""
    from deployments import cli

    out = tmp_path / "results" / "ingest.json"
    argv = ["bench", "ingest", "--episodes", "120", "--batch", "40", "--clients", "2", "--json",
            "--url", app_server.base_url, "--key", app_server.keys["a_rw"], "--out", str(out)]  # fmt: skip
    assert cli.main(argv) == 0
    saved = json.loads(out.read_text())
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert saved == printed
    assert saved["acknowledged"] == 120 and saved["errors"] == 0
    prov = saved["provenance"]
    assert prov["commit"] and prov["cpus"] >= 1 and prov["duration_s"] >= 0
    assert prov["measured_at"].endswith("+00:00")


def test_memory_history_keeps_every_version_and_the_delete(app_server: AppServer) -> None:
    from hybridmem_client import HybridMemClient, NotFound

    agent = f"hist-{uuid.uuid4().hex[:8]}"
    with HybridMemClient(app_server.base_url, app_server.keys["a_rw"]) as hm:
        created = hm.create_memory(agent_id=agent, content="The user's budget is 150 EUR a night.", id=agent)
        hm.patch_memory(created.id, content="The user's budget is 200 EUR a night now.")
        hm.create_memory(agent_id=agent, content="Budget: 250 EUR.", id=agent, kind="preference")  # replace
        hm.delete_memory(created.id)
        history = hm.memory_history(created.id)
        with pytest.raises(NotFound):
            hm.get_memory(created.id)
    assert [(v.version, v.op, v.content, v.changed_by) for v in history] == [
        (1, "create", "The user's budget is 150 EUR a night.", "a_rw"),
        (2, "update", "The user's budget is 200 EUR a night now.", "a_rw"),
        (3, "update", "Budget: 250 EUR.", "a_rw"),
        (4, "delete", "Budget: 250 EUR.", "a_rw"),
    ]
    assert history[2].kind == "preference" and all(v.memory_id == created.id for v in history)
    with app_server.client("b_rw") as other:  # another tenant sees nothing of it
        assert other.get(f"/v1/memories/{created.id}/history").status_code == 404
    with app_server.client("a_ro") as ro:  # a read
        assert len(ro.get(f"/v1/memories/{created.id}/history").json()) == 4
        assert ro.get(f"/v1/memories/{uuid.uuid4()}/history").status_code == 404
