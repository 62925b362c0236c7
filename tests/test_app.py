"""The app as operators meet it: health, OpenAPI, start-up with a real pool, settings and the CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import asyncpg
import httpx
import psycopg
import pytest
from litestar import Litestar
from litestar.routes import HTTPRoute

from service import migrations
from service.__main__ import main
from service.app import SERVED_QUERIES, YOUNG_GENERATION_THRESHOLD, create_app
from service.db import Connection, SharedConnectionDatabase
from service.devdb import EmbeddedPostgres
from service.queries import QueryFile, QueryPrepareError
from service.settings import PROJECT_ROOT, Settings, SettingsError, load_settings
from tests.api import assert_problem, start_service
from tests.conftest import client_for


async def test_live(client: httpx.AsyncClient) -> None:
    response = await client.get("/health/live")
    assert response.status_code == 200
    assert response.json() == {"status": "live"}


async def test_ready_reports_the_schema_version(client: httpx.AsyncClient) -> None:
    response = await client.get("/health/ready")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "schema_version": migrations.migration_ids()[-1]}


async def test_ready_is_503_with_the_reason_when_a_migration_is_missing(fresh_database: Callable[[], str]) -> None:
    url = fresh_database()
    last = migrations.rollback(url)[0]
    conn = await asyncpg.connect(url)
    try:
        app = create_app(Settings(), SharedConnectionDatabase(conn))
        async with client_for(app) as http:
            response = await http.get("/health/ready")
    finally:
        await conn.close()
    body = assert_problem(response, 503)
    assert last in body["detail"]
    assert response.headers["retry-after"] == "1"


async def test_ready_is_503_when_an_index_is_invalid(fresh_database: Callable[[], str]) -> None:
    url = fresh_database()
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'idx_message_user_id'::regclass")
    conn = await asyncpg.connect(url)
    try:
        app = create_app(Settings(), SharedConnectionDatabase(conn))
        async with client_for(app) as http:
            body = assert_problem(await http.get("/health/ready"), 503)
    finally:
        await conn.close()
    assert "idx_message_user_id" in body["detail"]


async def test_openapi_documents_routes_and_problem_responses(client: httpx.AsyncClient) -> None:
    response = await client.get("/schema/openapi.json")
    assert response.status_code == 200
    schema = response.json()
    create = schema["paths"]["/v1/users"]["post"]
    assert {"201", "400", "409", "503"} <= set(create["responses"])
    assert "application/problem+json" in create["responses"]["409"]["content"]
    assert {"200", "404"} <= set(schema["paths"]["/v1/users/{user_id}"]["get"]["responses"])
    ui = await client.get("/schema")
    assert ui.status_code == 200
    assert "swagger" in ui.text.lower()


async def test_unknown_route_and_method_are_problems(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/v1/nothing-here"), 404)
    assert_problem(await client.put("/v1/users"), 405)


async def test_lifespan_opens_a_pool_and_serves(database_url: str) -> None:
    app = create_app(Settings(database_url=database_url, pool_min_size=1, pool_max_size=2))
    async with app.lifespan():
        async with client_for(app) as http:
            assert (await http.get("/health/ready")).status_code == 200
            missing = await http.get("/v1/users/1234567")
            assert missing.status_code == 404
        pool = app.state.database.on_primary.pool
        assert pool.get_max_size() == 2
    assert pool.is_closing()


async def test_a_broken_query_stops_start_up_naming_it(fresh_database: Callable[[], str]) -> None:
    url = fresh_database()
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("ALTER TABLE users RENAME COLUMN name TO full_name")
    app = create_app(Settings(database_url=url, pool_min_size=1, pool_max_size=1))
    # Litestar's lifespan raises the start-up error inside an exception group.
    failure = pytest.RaisesExc(QueryPrepareError, match=r"query users\.\w+ does not prepare")
    with pytest.RaisesGroup(failure, flatten_subgroups=True):
        async with app.lifespan():
            pass


def test_every_route_s_queries_are_prepared_at_start(app: Litestar) -> None:
    """The SQL file of each module that serves a route is among SERVED_QUERIES, so a broken
    statement of it stops start-up (and is not first prepared by a request)."""
    served = {type(queries) for queries in SERVED_QUERIES}
    handlers = [handler for route in app.routes if isinstance(route, HTTPRoute) for handler in route.route_handlers]
    modules = {sys.modules[handler.fn.__module__] for handler in handlers}
    route_queries = {type(m.sql) for m in modules if isinstance(getattr(m, "sql", None), QueryFile)}
    assert route_queries, modules
    assert route_queries <= served, route_queries - served


def test_settings_defaults_and_parsing() -> None:
    settings = load_settings({"FREYA_PORT": "9001", "FREYA_POOL_MAX_SIZE": "4", "FREYA_MIGRATE_ON_SERVE": "false"})
    assert settings.port == 9001
    assert settings.pool_max_size == 4
    assert settings.database_url is None
    assert Path(settings.data_dir) == PROJECT_ROOT / ".freya"
    # One worker per core unless FREYA_WORKERS says otherwise, as production runs it.
    assert settings.workers == (os.cpu_count() or 1)
    assert load_settings({"FREYA_WORKERS": "1"}).workers == 1


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"FREYA_PORT": "eighty"}, "FREYA_PORT"),
        ({"FREYA_PORT": "70000"}, "FREYA_PORT"),
        ({"FREYA_POOL_MIN_SIZE": "9", "FREYA_POOL_MAX_SIZE": "3"}, "FREYA_POOL_MIN_SIZE"),
        ({"FREYA_DATABASE_URL": "mysql://x"}, "FREYA_DATABASE_URL"),
        ({"FREYA_LOG_LEVEL": "LOUD"}, "FREYA_LOG_LEVEL"),
        ({"FREYA_POOL_ACQUIRE_TIMEOUT": "0"}, "FREYA_POOL_ACQUIRE_TIMEOUT"),
    ],
)
def test_bad_settings_name_the_variable(environ: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        load_settings(environ)


def test_cli_refuses_a_bad_setting(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FREYA_PORT", "not-a-port")
    assert main(["migrate-status"]) == 2
    assert "FREYA_PORT" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("environ", "command", "named"),
    [
        # Only serving resolves the host, and only the embedded server needs the data directory.
        ({"FREYA_HOST": "no-such-host.invalid"}, "serve", "FREYA_HOST=no-such-host.invalid"),
        ({"FREYA_HOST": "192.0.2.1"}, "serve", "FREYA_HOST=192.0.2.1 is not an address of this machine"),
        ({"FREYA_DATA_DIR": "/proc/freya"}, "db-url", "FREYA_DATA_DIR=/proc/freya"),
    ],
)
def test_cli_refuses_a_setting_its_command_cannot_use(
    environ: dict[str, str],
    command: str,
    named: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("FREYA_DATABASE_URL", raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert main([command]) == 2
    assert named in capsys.readouterr().err


def test_cli_migrate_and_status(
    fresh_database: Callable[[], str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = fresh_database()
    monkeypatch.setenv("FREYA_DATABASE_URL", url)
    assert main(["rollback"]) == 0
    assert f"rolled back {migrations.migration_ids()[-1]}" in capsys.readouterr().out
    assert main(["migrate-status"]) == 0
    out = capsys.readouterr().out
    assert f"[pending] {migrations.migration_ids()[-1]}" in out
    assert main(["migrate"]) == 0
    assert main(["migrate-status"]) == 0
    out = capsys.readouterr().out
    assert f"current revision: {migrations.migration_ids()[-1]}" in out
    assert f"{len(migrations.migration_ids())} applied, 0 pending" in out
    assert main(["db-url"]) == 0
    assert capsys.readouterr().out.strip() == url
    assert main(["db-stop"]) == 1


def test_cli_reports_an_unreachable_database(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FREYA_DATABASE_URL", "postgresql://nobody@/nothing?host=/nonexistent-socket-dir")
    assert main(["migrate"]) == 1
    assert "database unavailable" in capsys.readouterr().err


def test_embedded_server_starts_on_demand_is_reused_and_stops(tmp_path: Path) -> None:
    server = EmbeddedPostgres(tmp_path / "pg")
    try:
        url = server.start()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (x int)")
        assert server.start() == url  # already running: reused, not restarted
        assert server.stop() is True
        assert not server.is_running()
        assert server.stop() is False
        server.start()  # the data survives a restart
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT count(*) FROM kept").fetchone() == (0,)
    finally:
        server.destroy()
    assert not (tmp_path / "pg").exists()


def test_serve_migrates_then_answers_over_http(fresh_database: Callable[[], str]) -> None:
    url = fresh_database()
    migrations.rollback(url, count=len(migrations.migration_ids()))
    process, base = start_service(url)
    try:
        created = httpx.post(f"{base}/v1/users", json={"email": "Served@Example.com", "name": "Served"}, timeout=5)
        assert created.status_code == 201
        assert created.json()["email"] == "served@example.com"
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    assert "applied 0001_initial_schema" in output


def test_a_served_worker_tunes_its_garbage_collector_once_started(database_url: str) -> None:
    """The worker factory's app freezes its start-up objects and raises the young generation's
    threshold after its lifespan has started (the pool is open): in a process of its own, as the
    collector's settings are the process's."""
    program = (
        "import asyncio, gc\n"
        "from litestar.testing import AsyncTestClient\n"
        "from service.app import create_app_from_env\n"
        "async def main():\n"
        "    before = gc.get_threshold()[0]\n"
        "    async with AsyncTestClient(create_app_from_env()) as client:\n"
        "        assert (await client.get('/health/ready')).status_code == 200\n"
        "        print(before, gc.get_threshold()[0], gc.get_freeze_count())\n"
        "asyncio.run(main())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program],
        env={**os.environ, "FREYA_DATABASE_URL": database_url, "FREYA_LOG_LEVEL": "WARNING"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    before, after, frozen = map(int, done.stdout.split())
    assert (before, after) == (700, YOUNG_GENERATION_THRESHOLD)
    assert frozen > 10_000  # the app's routes, schema models and statements


async def test_every_api_operation_documents_its_problems(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/schema/openapi.json")).json()
    operations = [
        (path, method, operation)
        for path, item in schema["paths"].items()
        if path.startswith("/v1/")
        for method, operation in item.items()
    ]
    assert len(operations) >= 20
    for path, method, operation in operations:
        codes = set(operation["responses"])
        assert {"401", "403", "503", "504"} <= codes, (method, path, codes)
        if operation.get("parameters") or operation.get("requestBody"):
            assert "400" in codes, (method, path, codes)
        assert codes & {"200", "201", "204"}, (method, path, codes)
        if "{" in path:
            assert "404" in codes, (method, path, codes)


async def test_ready_keeps_the_migrations_it_started_with(client: httpx.AsyncClient) -> None:
    # A checkout gains a migration while the service runs (a git pull before the restart): the
    # running code did not ship it, so readiness does not change.
    probe = migrations.MIGRATIONS_DIR / f"9999_probe_{uuid.uuid4().hex[:8]}.sql"
    probe.write_text("-- a migration of code that is not running\n")
    try:
        assert probe.stem in migrations.migration_ids()
        response = await client.get("/health/ready")
    finally:
        probe.unlink()
    assert response.status_code == 200, response.text
    assert response.json()["schema_version"] != probe.stem


async def test_ready_reports_a_database_ahead_of_the_code(client: httpx.AsyncClient, conn: Connection) -> None:
    # Newer code migrated the database (a rolling deploy): this code still serves, and says so.
    await conn.execute(
        "INSERT INTO _yoyo_migration (migration_hash, migration_id, applied_at_utc) "
        "VALUES ('from-newer-code', '9999_from_newer_code', now())"
    )
    response = await client.get("/health/ready")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "status": "ready",
        "schema_version": migrations.migration_ids()[-1],
        "unknown_migrations": ["9999_from_newer_code"],
    }
