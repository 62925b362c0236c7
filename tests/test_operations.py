"""Operations: database stats and maintenance, metrics, request ids, logs, Server-Timing, limits."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Callable, Iterator
from typing import Any, Literal

import httpx
import pytest

from service.__main__ import main
from service.app import create_app
from service.db import Connection, SharedConnectionDatabase
from service.observability import configure_logging
from service.settings import Settings
from tests.api import assert_problem, create_conversation, create_user, post_batch, serving
from tests.conftest import client_for


async def test_stats_report_tables_and_flag_indexes(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/admin/db/stats")
    assert response.status_code == 200
    stats = response.json()
    tables = {t["table_name"]: t for t in stats["tables"]}
    assert {"users", "conversations", "messages", "topics", "message_topics"} <= set(tables)
    assert not any("yoyo" in name for name in tables)
    assert {"live_rows", "dead_rows", "total_bytes", "last_vacuum", "last_autoanalyze"} <= set(tables["messages"])
    indexes = {i["index_name"]: i for i in stats["indexes"]}
    # The guide's single-column index is a prefix of its (conversation_id, timestamp) index: reported, kept.
    assert indexes["idx_message_conversation_id"]["redundant_with"] == "idx_message_timestamp"
    # A partial index (live conversations only) cannot stand in for a full one: not redundant.
    assert indexes["idx_conversation_user_id"]["redundant_with"] is None
    assert indexes["idx_message_timestamp"]["redundant_with"] is None
    assert indexes["idx_user_email"]["unused"] is False  # unique indexes enforce, even unscanned
    assert indexes["idx_message_topic"]["redundant_with"] is None  # (message_id, …) vs pkey (topic_id, …)


async def test_maintenance_runs_and_reports(fresh_database: Callable[[], str]) -> None:
    async with serving(fresh_database()) as http:
        for operation in ("analyze", "vacuum", "vacuum_analyze"):
            response = await http.post(
                "/v1/admin/db/maintenance", json={"operation": operation, "tables": ["messages", "topics"]}
            )
            assert response.status_code == 200, response.text
            report = response.json()
            assert report["operation"] == operation
            assert [t["table"] for t in report["tables"]] == ["messages", "topics"]
            assert report["seconds"] >= 0
        everything = (await http.post("/v1/admin/db/maintenance", json={"operation": "analyze"})).json()
        assert len(everything["tables"]) == 5
        # The statistics views catch up within a moment: the vacuum shows there.
        for _ in range(50):
            tables = {t["table_name"]: t for t in (await http.get("/v1/admin/db/stats")).json()["tables"]}
            if tables["messages"]["last_vacuum"] and tables["messages"]["last_analyze"]:
                break
            await asyncio.sleep(0.1)
        assert tables["messages"]["last_vacuum"] is not None
        assert tables["messages"]["last_analyze"] is not None


@pytest.mark.parametrize(
    "body",
    [
        {"operation": "reindex"},
        {"operation": "analyze", "tables": ["pg_class"]},
        {"operation": "analyze", "tables": ["users; DROP TABLE users"]},
        {"operation": "analyze", "tables": []},
        {"operation": "vacuum", "full": True},
    ],
)
async def test_maintenance_refuses_what_is_not_whitelisted(client: httpx.AsyncClient, body: dict[str, Any]) -> None:
    assert_problem(await client.post("/v1/admin/db/maintenance", json=body), 400)


def test_cli_maintenance(
    fresh_database: Callable[[], str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FREYA_DATABASE_URL", fresh_database())
    assert main(["maintain", "vacuum_analyze", "--table", "messages"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"vacuum_analyze messages: \d+\.\d{3} s", out), out
    assert main(["maintain", "analyze"]) == 0
    assert capsys.readouterr().out.count("analyze ") == 5
    assert main(["purge-idempotency-keys"]) == 0
    assert "purged 0 expired idempotency keys" in capsys.readouterr().out


async def test_metrics_by_route_template_and_pool_gauges(fresh_database: Callable[[], str]) -> None:
    async with serving(fresh_database()) as http:
        user = await create_user(http)
        await http.get(f"/v1/users/{user['id']}")
        await http.get("/v1/users/987654")
        response = await http.get("/metrics")
    assert response.status_code == 200
    text = response.text
    assert re.search(r'freya_requests_total\{[^}]*path="/v1/users/\{user_id\}"[^}]*status_code="200"', text), text
    assert re.search(r'freya_requests_total\{[^}]*path="/v1/users/\{user_id\}"[^}]*status_code="404"', text)
    assert "freya_request_duration_seconds_bucket" in text
    assert str(user["id"]) not in re.findall(r'path="([^"]*)"', text)
    size = re.search(r"^freya_db_pool_size (\S+)$", text, flags=re.MULTILINE)
    assert size is not None
    assert float(size.group(1)) >= 1
    for gauge in ("idle", "max", "waiting"):
        assert re.search(rf"^freya_db_pool_{gauge} \S+$", text, flags=re.MULTILINE)


async def test_request_id_is_taken_or_made_and_always_echoed(client: httpx.AsyncClient) -> None:
    given = await client.get("/health/live", headers={"X-Request-ID": "trace-abc.123"})
    assert given.headers["x-request-id"] == "trace-abc.123"
    made = await client.get("/health/live")
    assert re.fullmatch(r"[0-9a-f]{32}", made.headers["x-request-id"])
    insane = await client.get("/health/live", headers={"X-Request-ID": "no spaces or <tags> allowed"})
    assert insane.headers["x-request-id"] != "no spaces or <tags> allowed"
    assert "x-request-id" in (await client.get("/no/such/route")).headers
    assert "x-request-id" in (await client.post("/v1/users", json={})).headers


async def test_every_log_line_of_a_request_carries_its_id(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        await client.get("/v1/users/424242", headers={"X-Request-ID": "find-me-42"})
    lines = [r for r in caplog.records if r.name.startswith("freya")]
    assert lines
    assert all(getattr(r, "request_id", None) == "find-me-42" for r in lines), [(r.name, r.getMessage()) for r in lines]


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("restore_logging")
async def test_json_logs(conn: Connection, capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "json")
    app = create_app(Settings(log_format="json", cursor_secret="x" * 20), SharedConnectionDatabase(conn))
    async with client_for(app) as http:
        await http.get("/v1/users/5", headers={"X-Request-ID": "json-7"})
    records = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    access = [r for r in records if r["logger"] == "freya.access"]
    assert access
    assert access[0]["request_id"] == "json-7"
    assert access[0]["message"].startswith("GET /v1/users/5 404")
    assert {"time", "level", "logger", "request_id", "message"} <= set(access[0])
    assert access[0]["time"].endswith("Z")
    # The access line's parts are fields of their own, typed, for a log collector to query.
    assert access[0]["method"] == "GET"
    assert access[0]["path"] == "/v1/users/5"
    assert access[0]["status"] == 404
    assert isinstance(access[0]["duration_ms"], float)
    assert access[0]["duration_ms"] >= access[0]["db_ms"] >= 0


@pytest.mark.usefixtures("restore_logging")
async def test_text_logs(conn: Connection, capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "text")
    app = create_app(Settings(cursor_secret="x" * 20), SharedConnectionDatabase(conn))
    async with client_for(app) as http:
        await http.get("/health/live", headers={"X-Request-ID": "text-8"})
    assert re.search(r"INFO freya\.access \[text-8\] GET /health/live 200", capsys.readouterr().err)


async def test_server_timing_reports_database_time(client: httpx.AsyncClient) -> None:
    user = await create_user(client)
    conversation = await create_conversation(client, user["id"])
    await post_batch(client, conversation["id"], [{"role": "user", "content": "x"}] * 20)
    response = await client.get(f"/v1/conversations/{conversation['id']}/messages")
    timing = dict(re.findall(r"(\w+);dur=([\d.]+)", response.headers["server-timing"]))
    assert float(timing["db"]) > 0
    assert float(timing["app"]) >= float(timing["db"])
    live = await client.get("/health/live")
    assert "db;dur=0.00" in live.headers["server-timing"]


async def test_a_body_over_the_limit_is_413(conn: Connection) -> None:
    app = create_app(Settings(max_body_bytes=2048, cursor_secret="x" * 20), SharedConnectionDatabase(conn))
    async with client_for(app) as http:
        response = await http.post("/v1/users", json={"email": "a@example.com", "name": "x" * 4000})
        assert_problem(response, 413)
        keyed = await http.post(
            "/v1/users", json={"email": "a@example.com", "name": "x" * 4000}, headers={"Idempotency-Key": "big"}
        )
        assert_problem(keyed, 413)


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_control_characters_never_split_a_log_line(
    conn: Connection, capsys: pytest.CaptureFixture[str], log_format: Literal["text", "json"]
) -> None:
    configure_logging("INFO", log_format)
    app = create_app(Settings(log_format=log_format, cursor_secret="x" * 20), SharedConnectionDatabase(conn))
    async with client_for(app) as http:
        for forged in ("%0Aforged-line", "%0D%0Aforged-line", "%E2%80%A8forged-line", "%C2%85forged-line"):
            await http.get(f"/v1/users/1{forged}", headers={"X-Request-ID": "forge-1"})
    lines = capsys.readouterr().err.splitlines()
    assert not [line for line in lines if line.startswith("forged-line") or "\u2028" in line or "\x85" in line]
    access = [line for line in lines if "forge-1" in line and "freya.access" in line]
    assert len(access) == 4
    if log_format == "json":
        assert [json.loads(line)["message"].split()[1] for line in access] == [
            "/v1/users/1\\nforged-line",
            "/v1/users/1\\r\\nforged-line",
            "/v1/users/1\\u2028forged-line",
            "/v1/users/1\\x85forged-line",
        ]
    else:
        assert "GET /v1/users/1\\nforged-line 400" in access[0]


async def test_without_replicas_reads_run_one_statement_and_writes_answer_their_position(
    fresh_database: Callable[[], str],
) -> None:
    # The real pool, as served: a write's answer carries Freya-Read-After (the primary's WAL
    # position, read after it committed); a read asks the database nothing more than its own
    # statement, so it answers no position.
    async with serving(fresh_database()) as client:
        written = await client.post("/v1/users", json={"email": "reader@example.com", "name": "Reader"})
        assert written.status_code == 201
        user = written.json()
        assert re.fullmatch(r"[0-9A-F]{1,8}/[0-9A-F]{1,8}", written.headers["freya-read-after"])
        read = await client.get(f"/v1/users/{user['id']}")
        assert read.status_code == 200
        assert "freya-read-after" not in read.headers
        assert re.fullmatch(r"db;dur=[0-9.]+, app;dur=[0-9.]+", read.headers["server-timing"])
