"""The database at run time: connections for handlers (a pool, or one shared connection in
tests), per-connection set-up, and the time each request spends in its queries.

The SQL files themselves are loaded by service/queries.py.
"""

from __future__ import annotations

import abc
import asyncio
import time
import typing
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import asyncpg
import msgspec

if typing.TYPE_CHECKING:
    # A plain connection (tests) or the pool's proxy for one (the service): the same calls.
    Connection: typing.TypeAlias = asyncpg.Connection[asyncpg.Record] | asyncpg.pool.PoolConnectionProxy[asyncpg.Record]
    Pool: typing.TypeAlias = asyncpg.Pool[asyncpg.Record]
else:  # asyncpg's classes are generic only in its stubs
    Connection, Pool = asyncpg.Connection, asyncpg.Pool


@dataclass(slots=True)
class DatabaseTime:
    """Seconds one request spent waiting on its queries (reported in Server-Timing)."""

    seconds: float = 0.0


_request_time: ContextVar[DatabaseTime | None] = ContextVar("database_time", default=None)


def start_timing() -> DatabaseTime:
    """Begin summing query time for the current request (its context)."""
    timing = DatabaseTime()
    _request_time.set(timing)
    return timing


def count_time(started: float) -> None:
    timing = _request_time.get()
    if timing is not None:
        timing.seconds += time.perf_counter() - started


class Database(abc.ABC):
    """Where handlers get a connection: the pool in production, one shared connection in tests."""

    def __init__(self) -> None:
        # Topic names by id, as this process has read them from this database: a topic is never
        # renamed or deleted, so the page lookups need only message_topics (topics.topics_of).
        self.topic_names: dict[int, str] = {}

    @abc.abstractmethod
    def connection(self) -> typing.AsyncContextManager[Connection]: ...


class PoolDatabase(Database):
    def __init__(self, pool: Pool, acquire_timeout: float) -> None:
        super().__init__()
        self.pool = pool
        self.acquire_timeout = acquire_timeout
        # Requests waiting for a connection right now (a metrics gauge).
        self.waiting = 0

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        self.waiting += 1
        try:
            # Without a timeout asyncpg waits for a free connection forever. asyncio.timeout rather
            # than acquire(timeout=): that one wraps every acquire in a task of its own.
            async with asyncio.timeout(self.acquire_timeout):
                conn = await self.pool.acquire()
        finally:
            self.waiting -= 1
        try:
            yield conn
        finally:
            await self.pool.release(conn)


class SharedConnectionDatabase(Database):
    """Hands out one connection, so a test's rolled-back transaction spans the app's work.

    Each use runs in a savepoint: a failed statement then undoes only its own request, as it
    would on a pooled connection, instead of aborting the test's whole transaction.
    """

    def __init__(self, conn: Connection) -> None:
        super().__init__()
        self.conn = conn

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        async with self.conn.transaction():
            yield self.conn


async def configure_connection(conn: Connection) -> None:
    """Per-connection set-up: json and jsonb arrive decoded by msgspec (topics lists built in SQL)."""
    for json_type in ("json", "jsonb"):
        await conn.set_type_codec(json_type, schema="pg_catalog", encoder=_encode_json, decoder=msgspec.json.decode)


def _encode_json(value: Any) -> str:
    return msgspec.json.encode(value).decode()


async def _keep_session(conn: Connection) -> None:
    """Skip asyncpg's reset query on release (RESET ALL, UNLISTEN, advisory unlocks).

    It costs a round trip per request, and the service keeps no session state (no SET without
    LOCAL, no LISTEN, no session advisory locks). asyncpg still rolls back an open transaction.
    """


async def create_pool(
    url: str, *, min_size: int, max_size: int, statement_timeout_ms: int, connect_timeout: float
) -> Pool:
    pool = await asyncpg.create_pool(
        url,
        min_size=min_size,
        max_size=max_size,
        timeout=connect_timeout,
        server_settings={
            "statement_timeout": str(statement_timeout_ms),
            "application_name": "freya-backend",
        },
        reset=_keep_session,
        init=configure_connection,
    )
    assert pool is not None
    return pool
