"""The database at run time: connections for handlers (a pool, or one shared connection in
tests), per-connection set-up, and the time each request spends in its queries.

The SQL files themselves are loaded by service/queries.py.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import random
import time
import typing
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

import asyncpg
import msgspec

from service.settings import Pooler
from service.topic_lists import TopicCache

if typing.TYPE_CHECKING:
    # A plain connection (tests) or the pool's proxy for one (the service): the same calls.
    Connection: typing.TypeAlias = asyncpg.Connection[asyncpg.Record] | asyncpg.pool.PoolConnectionProxy[asyncpg.Record]
    Pool: typing.TypeAlias = asyncpg.Pool[asyncpg.Record]
else:  # asyncpg's classes are generic only in its stubs
    Connection, Pool = asyncpg.Connection, asyncpg.Pool


@dataclass(slots=True)
class DatabaseTime:
    """Seconds one request spent waiting on its queries (reported in Server-Timing), how many
    statements it completed, and whether its failure may be retried on a fresh connection."""

    seconds: float = 0.0
    statements: int = 0
    # Set by PoolDatabase when a broken connection refused a statement before sending it, and
    # nothing the request did before can have been committed: the request may run once more.
    retryable: bool = False


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
        timing.statements += 1


T = TypeVar("T")

# How often a write runs when PostgreSQL keeps rolling it back to break a deadlock (each time
# after its deadlock_timeout, 1 s by default) before the request answers 503 "retry it".
WRITE_ATTEMPTS = 3
# Seconds before the second run (twice that before the third), give or take half.
RETRY_PAUSE = 0.02


def _no_race(error: asyncpg.PostgresError) -> bool:
    return False


async def retrying_rollbacks(
    conn: Connection,
    work: Callable[[], Awaitable[T]],
    *,
    lost_race: Callable[[asyncpg.PostgresError], bool] = _no_race,
) -> T:
    """``work()`` in a transaction of its own (a savepoint inside the request's), run again when
    PostgreSQL rolled it back to break a deadlock (or a serialization failure): it was undone
    whole, and the transaction it collided with has gone on since. Writes that lock many rows
    need it: the service's own take conversations before messages and messages in id order, but a
    transaction of anyone else's (an operator's, a migration's) may not, and an erasure can be
    overtaken by a write that adds a row of its user's (README). ``lost_race``: another
    error that means the same (a concurrent insert of the same unique key), and is retried too.
    """
    for attempt in range(1, WRITE_ATTEMPTS + 1):
        try:
            async with _Transaction(conn):
                return await work()
        except asyncpg.PostgresError as error:
            if attempt == WRITE_ATTEMPTS or not (
                isinstance(error, asyncpg.TransactionRollbackError) or lost_race(error)
            ):
                raise
        # Not at once: the transaction that won is only now being woken, and a retry that takes
        # the same locks before it does deadlocks with it again. Random, so that two writers
        # rolled back together do not come back together.
        await asyncio.sleep(RETRY_PAUSE * attempt * (0.5 + random.random()))  # noqa: S311 - not a secret
    raise AssertionError("unreachable: the last attempt returns or raises")


class Database(abc.ABC):
    """Where handlers get a connection: the pool in production, one shared connection in tests."""

    def __init__(self) -> None:
        self.topics = TopicCache()

    @abc.abstractmethod
    def connection(self) -> typing.AsyncContextManager[Connection]: ...

    def primary(self, *, autocommit: bool = False) -> typing.AsyncContextManager[Connection]:
        """A connection to the primary even in a GET: for checks of the primary itself (readiness).

        ``autocommit``: outside the transaction a pooler may need around each use (VACUUM cannot
        run in one); statements then run without the statement timeout in that mode.
        """
        return self.connection()

    @abc.abstractmethod
    def request_transaction(self) -> typing.AsyncContextManager[Connection]:
        """One transaction on the primary for everything the request does: connection() inside
        it hands out savepoints on it. Commits when the block ends without an exception."""


# The connection a request's whole work runs on, when it runs in one transaction (a POST under
# an Idempotency-Key: the key's claim, the handler's write and the stored answer commit together).
_request_connection: ContextVar[Connection | None] = ContextVar("request_connection", default=None)


def _never_sent(error: BaseException) -> bool:
    """asyncpg refused the statement before writing it to the socket: the connection is broken
    (typically an idle one that received PostgreSQL's FATAL and has not noticed the close yet)."""
    return type(error) in (asyncpg.InterfaceError, asyncpg.InternalClientError)


# Errors after which a connection cannot be trusted for another request (besides _never_sent).
_BROKEN = (
    asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.CannotConnectNowError,
    asyncpg.ProtocolError,
    ConnectionError,
)


class PoolDatabase(Database):
    """One server's pool.

    ``timeout_per_transaction_ms``: behind PgBouncer in transaction mode a server connection serves
    many clients, one transaction at a time, so a session setting would leak to the others and be
    lost for us: every use then runs in a transaction that sets its own statement timeout.
    ``after_use``: awaited on the connection after a use that ended without error (its transaction,
    if any, committed), before the connection goes back to the pool.
    """

    def __init__(
        self,
        pool: Pool,
        acquire_timeout: float,
        *,
        timeout_per_transaction_ms: int | None = None,
        after_use: Callable[[Connection], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__()
        self.pool = pool
        self.acquire_timeout = acquire_timeout
        self.timeout_per_transaction = None if timeout_per_transaction_ms is None else str(timeout_per_transaction_ms)
        self.after_use = after_use
        # Requests waiting for a connection right now (a metrics gauge).
        self.waiting = 0
        # Connections this database has handed out and not yet taken back (every use of the pool
        # while serving goes through _acquire and _release).
        self.in_use = 0

    def connection(self) -> typing.AsyncContextManager[Connection]:
        return _Use(self, autocommit=False)

    def primary(self, *, autocommit: bool = False) -> typing.AsyncContextManager[Connection]:
        return _Use(self, autocommit=autocommit)

    @asynccontextmanager
    async def request_transaction(self) -> AsyncIterator[Connection]:
        conn = await self._acquire()
        bound = _request_connection.set(conn)
        try:
            async with _Transaction(conn):
                if self.timeout_per_transaction is not None:
                    await conn.execute(_SET_STATEMENT_TIMEOUT, self.timeout_per_transaction, True)
                yield conn
            if self.after_use is not None:
                await self.after_use(conn)
        except BaseException as error:
            # Nothing of the request is committed when it fails here (the COMMIT is the last
            # statement): a statement refused before sending leaves it safe to run again.
            _discard_if_broken(conn, error, retryable=True)
            raise
        finally:
            _request_connection.reset(bound)
            await self._release(conn)

    async def _acquire(self) -> asyncpg.pool.PoolConnectionProxy[asyncpg.Record]:
        if self.in_use < self.pool.get_max_size():
            # A connection is idle or may be opened: acquire waits for none to be released, so
            # there is nothing to bound (asyncio.timeout's timer costs every request a few µs).
            conn = await self.pool.acquire()
        else:
            self.waiting += 1
            try:
                # Without a timeout asyncpg waits for a free connection forever. asyncio.timeout
                # rather than acquire(timeout=): that one wraps every acquire in a task of its own.
                async with asyncio.timeout(self.acquire_timeout):
                    conn = await self.pool.acquire()
            finally:
                self.waiting -= 1
        self.in_use += 1
        return conn

    async def _release(self, conn: asyncpg.pool.PoolConnectionProxy[asyncpg.Record]) -> None:
        try:
            await self.pool.release(conn)
        finally:
            self.in_use -= 1


class _Use:
    """One use of a PoolDatabase's connection (``connection()``, ``primary()``): a savepoint of
    the request's transaction when there is one, else a pooled connection, in a transaction that
    sets the statement timeout when a pooler needs that. A class rather than an
    @asynccontextmanager: every request makes at least one use, and the generator machinery
    cost it about 1 % of its CPU (BENCHMARKS.md)."""

    __slots__ = ("_autocommit", "_conn", "_database", "_savepoint", "_statements_before", "_transaction")

    def __init__(self, database: PoolDatabase, *, autocommit: bool) -> None:
        self._database = database
        self._autocommit = autocommit
        self._savepoint: _Transaction | None = None
        self._transaction: _Transaction | None = None

    async def __aenter__(self) -> Connection:
        bound = _request_connection.get()
        if bound is not None and not self._autocommit:
            # Inside the request's transaction: a savepoint, so a failed statement undoes only
            # its own part, as it would on a connection of its own.
            savepoint = _Transaction(bound)
            await savepoint.__aenter__()
            self._savepoint = savepoint
            return bound
        database = self._database
        conn = self._conn = await database._acquire()
        self._statements_before = _statements_so_far()
        if database.timeout_per_transaction is not None and not self._autocommit:
            try:
                transaction = _Transaction(conn)
                await transaction.__aenter__()
                self._transaction = transaction
                await conn.execute(_SET_STATEMENT_TIMEOUT, database.timeout_per_transaction, True)
            except BaseException as error:
                await self.__aexit__(type(error), error, error.__traceback__)
                raise
        return conn

    async def __aexit__(
        self, error_type: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._savepoint is not None:
            await self._savepoint.__aexit__(error_type, error, traceback)
            return
        conn, database = self._conn, self._database
        failure = error  # the block's, or the commit's or after_use's when they raise
        try:
            if self._transaction is not None:
                await self._transaction.__aexit__(error_type, error, traceback)
            if error is None and database.after_use is not None:
                await database.after_use(conn)
        except BaseException as raised:
            failure = raised
            raise
        finally:
            if failure is not None:
                _discard_if_broken(conn, failure, retryable=self._statements_before == _statements_so_far())
            await database._release(conn)


class _Transaction:
    """conn.transaction(), except that a connection that died inside it keeps its own error:
    asyncpg's would replace it with "cannot call Transaction.__aexit__(): connection is closed"."""

    __slots__ = ("_transaction",)

    def __init__(self, conn: Connection) -> None:
        self._transaction = conn.transaction()

    async def __aenter__(self) -> None:
        await self._transaction.start()

    async def __aexit__(
        self, error_type: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if error is None:
            await self._transaction.commit()
            return
        with contextlib.suppress(asyncpg.InterfaceError):  # the connection is gone: so is the transaction
            await self._transaction.rollback()


def _statements_so_far() -> int:
    timing = _request_time.get()
    return -1 if timing is None else timing.statements


def _discard_if_broken(conn: Connection, error: BaseException, *, retryable: bool) -> None:
    """Terminate a connection that failed in a way that leaves it unusable, so the pool opens a
    new one instead of handing the broken one to the next request; mark the request retryable
    when its statement never left and nothing before it can have been committed."""
    if not (_never_sent(error) or isinstance(error, _BROKEN)):
        return
    with contextlib.suppress(asyncpg.InterfaceError):  # lost already: asyncpg gave it back to the pool
        conn.terminate()
    timing = _request_time.get()
    if timing is not None and retryable and _never_sent(error):
        timing.retryable = True


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

    def request_transaction(self) -> typing.AsyncContextManager[Connection]:
        return self.connection()


async def configure_connection(conn: Connection) -> None:
    """Per-connection set-up: json and jsonb arrive decoded by msgspec (topics lists built in SQL)."""
    for json_type in ("json", "jsonb"):
        await conn.set_type_codec(json_type, schema="pg_catalog", encoder=_encode_json, decoder=msgspec.json.decode)


def _encode_json(value: Any) -> str:
    return msgspec.json.encode(value).decode()


async def _keep_session(conn: Connection) -> None:
    """Skip asyncpg's reset query on release (RESET ALL, UNLISTEN, advisory unlocks).

    It costs a round trip per request, and the service keeps no session state (no SET without
    LOCAL, no LISTEN, no session advisory locks) but the statement timeout that pgbouncer-session
    sets per connection, which a RESET ALL would undo. asyncpg still rolls back an open transaction.
    """


# The statement timeout when PgBouncer stands in between: it refuses the start-up parameter.
_SET_STATEMENT_TIMEOUT = "SELECT set_config('statement_timeout', $1, $2)"


async def create_pool(
    url: str,
    *,
    min_size: int,
    max_size: int,
    statement_timeout_ms: int,
    connect_timeout: float,
    pooler: Pooler = "none",
) -> Pool:
    """A pool on ``url`` with the statement timeout enforced the way ``pooler`` allows.

    none: a start-up parameter (no round trip of its own). pgbouncer-session: PgBouncer rejects
    that parameter, but the server connection stays ours for the session, so it is SET once per
    connection. pgbouncer-transaction: set in each transaction (``PoolDatabase``), and asyncpg's
    named prepared statements are off, since the next transaction may run on another server
    connection (PgBouncer 1.18, Debian 12's, does not track them); asyncpg then sends each
    statement's Parse, Bind and Execute in one message sequence, which PgBouncer keeps together.
    """
    server_settings = {"application_name": "freya-backend"}
    if pooler == "none":
        server_settings["statement_timeout"] = str(statement_timeout_ms)

    async def init(conn: Connection) -> None:
        await configure_connection(conn)
        if pooler == "pgbouncer-session":
            await conn.execute(_SET_STATEMENT_TIMEOUT, str(statement_timeout_ms), False)

    pool = await asyncpg.create_pool(
        url,
        min_size=min_size,
        max_size=max_size,
        timeout=connect_timeout,
        server_settings=server_settings,
        reset=_keep_session,
        init=init,
        statement_cache_size=0 if pooler == "pgbouncer-transaction" else 100,
    )
    assert pool is not None
    return pool
