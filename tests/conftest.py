"""Test fixtures: one real PostgreSQL per run, a migrated template, a rolled-back transaction per test.

The server is FREYA_TEST_DATABASE_URL's when set (its user must be allowed to create databases),
otherwise an embedded one started for this run in a temporary directory and deleted after.
The template is migrated once; ``conn`` opens a transaction on a clone of it that is rolled back
after the test, and the app under test uses that same connection (its transactions become
savepoints). Tests that must commit ask for ``fresh_database``: their own clone, dropped after.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, cast

import asyncpg
import httpx
import psycopg
import pytest
from litestar import Litestar
from psycopg import sql

from service import devdb, migrations
from service.app import create_app
from service.db import Connection, SharedConnectionDatabase, configure_connection
from service.devdb import with_database
from service.settings import Settings

RUN_ID = uuid.uuid4().hex[:8]


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """A URL to the test server's maintenance database (where CREATE DATABASE runs)."""
    external = os.environ.get("FREYA_TEST_DATABASE_URL")
    if external:
        yield external
        return
    server = devdb.EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="freya-test-")))
    server.start()
    try:
        yield server.url()
    finally:
        server.destroy()


def create_database(server_url: str, name: str, template: str | None = None) -> str:
    with psycopg.connect(server_url, autocommit=True) as admin:
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template is not None:
            statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        admin.execute(statement)
    return with_database(server_url, name)


def drop_database(server_url: str, name: str) -> None:
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def template_name(server_url: str) -> Iterator[str]:
    """A database migrated to the latest schema, cloned by every database the tests use."""
    name = f"freya_template_{RUN_ID}"
    url = create_database(server_url, name)
    migrations.apply(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    try:
        yield name
    finally:
        drop_database(server_url, name)


@pytest.fixture(scope="session")
def database_url(server_url: str, template_name: str) -> Iterator[str]:
    """The clone that the transactional tests share (nothing they do is ever committed)."""
    name = f"freya_test_{RUN_ID}"
    url = create_database(server_url, name, template=template_name)
    try:
        yield url
    finally:
        drop_database(server_url, name)


@contextmanager
def seeded_database(server_url: str, template_name: str, name: str, statements: list[str]) -> Iterator[str]:
    """A clone of the template filled by ``statements`` (committed), for a module of read-only tests."""
    url = create_database(server_url, name, template=template_name)
    try:
        with psycopg.connect(url, autocommit=True) as seed:
            for statement in statements:
                seed.execute(statement)
        yield url
    finally:
        drop_database(server_url, name)


@asynccontextmanager
async def connection_in_transaction(url: str) -> AsyncIterator[Connection]:
    """An asyncpg connection with the service's codecs, inside a transaction (so SET LOCAL works)."""
    connection: Connection = await asyncpg.connect(url)
    await configure_connection(connection)
    try:
        async with connection.transaction():
            yield connection
    finally:
        await connection.close()


@pytest.fixture
def fresh_database(server_url: str, template_name: str) -> Iterator[Callable[[], str]]:
    """Make databases cloned from the template, for tests that commit; all dropped afterwards."""
    made: list[str] = []

    def make() -> str:
        name = f"freya_fresh_{RUN_ID}_{len(made)}_{uuid.uuid4().hex[:6]}"
        made.append(name)
        return create_database(server_url, name, template=template_name)

    yield make
    for name in made:
        drop_database(server_url, name)


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[Connection]:
    connection: Connection = await asyncpg.connect(database_url)
    await configure_connection(connection)
    transaction = connection.transaction()
    await transaction.start()
    try:
        yield connection
    finally:
        await transaction.rollback()
        await connection.close()


@pytest.fixture
def app(conn: Connection) -> Litestar:
    return create_app(Settings(cursor_secret="test-cursor-secret-0123456789"), SharedConnectionDatabase(conn))


def client_for(app: Litestar) -> httpx.AsyncClient:
    """An HTTP client calling the app in-process, on the test's own event loop."""
    # httpx types the ASGI app loosely; Litestar's __call__ is stricter, hence the cast.
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=cast(Any, app)), base_url="http://freya.test")


@pytest.fixture
async def client(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(app) as http:
        yield http
