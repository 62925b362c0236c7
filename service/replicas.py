"""Read replicas: GETs on streaming standbys, writes on the primary, and never a stale read of one's own write.

``FREYA_READ_REPLICA_URLS`` lists standbys. Each worker keeps a pool per server (``FREYA_POOL_*``
sizes) and a monitor task that, every ``POLL_SECONDS``, samples the primary's WAL position and
each standby's replayed position.

Routing. A GET under the API runs on a replica that takes reads, in turn; anything else (and
everything in a write's transaction) runs on the primary. Readiness and admin statistics ask for
the primary explicitly (``Database.primary``).

Read-your-writes. After a write request's database work has committed, the primary's WAL insert
position is read on the same connection and answered as ``Freya-Read-After``. A GET that sends
it back runs on a replica whose replayed position, as last polled, is at or past it, and
otherwise on the primary: never stale, never an error because a replica is behind.

Lag. A replica's lag is how long ago the primary was last seen at a position the replica has
replayed, when it has written more since (zero when the replica has replayed all the primary had
at the latest sample): an upper bound on its staleness, to within one poll. Unlike
``now() - pg_last_xact_replay_timestamp()`` it does not grow on an idle primary.

Failure. A replica that cannot be reached, is not in recovery, or lags more than
``FREYA_REPLICA_MAX_LAG_MS`` takes no reads until a later poll finds it healthy. When a replica
fails under a running GET, that answer is dropped and the GET runs again on the primary (GETs
are safe to repeat): a replica going away fails no read.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qs, urlsplit

import asyncpg
import msgspec
from litestar.types import ASGIApp, Message, Receive, ReceiveMessage, Scope, Send

from service.db import Connection, Database, PoolDatabase
from service.errors import Invalid
from service.observability import READS, REPLICA_LAG, REPLICA_UP
from service.queries import Query, QueryFile

log = logging.getLogger("freya.replicas")

HEADER = b"freya-read-after"
POLL_SECONDS = 0.5
# The request paths whose GETs may run on a replica: the API, except the operators' database view.
_REPLICA_PATHS, _PRIMARY_PATHS = "/v1/", "/v1/admin/"
_POSITION = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")
# What a replica that went away raises: it is skipped, and the read goes to the primary. A
# serialization failure in a read-only request on a standby is a recovery conflict (replay needed
# rows the query still read), which the primary does not have. asyncpg raises InternalClientError
# when the server ends the connection while a statement is being prepared on it.
UNREACHABLE = (
    asyncpg.InternalClientError,
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
    asyncpg.SerializationError,
)


class ReplicaQueries(QueryFile, file="replicas"):
    primary_position: Query
    replay_position: Query


sql = ReplicaQueries()


def parse_position(text: str) -> int:
    """A WAL position as PostgreSQL prints it (``16/B374D848``), as a number."""
    match = _POSITION.match(text)
    if match is None:
        raise ValueError(f"not a WAL position: {text!r}")
    return int(match.group(1), 16) << 32 | int(match.group(2), 16)


def format_position(position: int) -> str:
    return f"{position >> 32:X}/{position & 0xFFFFFFFF:X}"


@dataclass(slots=True)
class Freshness:
    """What one request needs of the servers; the request pipeline sets it for each request."""

    # A GET of the API: it may run on a replica.
    read: bool
    # The client's Freya-Read-After: the replica must have replayed this far.
    read_after: int | None = None
    # After a write: the primary's position once this request's last change committed.
    written_at: int | None = None
    # A replica failed under this read: its answer is dropped and it runs again on the primary.
    replica_failed: bool = False
    primary_only: bool = False

    def response_headers(self, status: int) -> list[tuple[bytes, bytes]]:
        """Freya-Read-After for a successful write."""
        if self.written_at is None or status >= 400:
            return []
        return [(HEADER, format_position(self.written_at).encode())]


_request: ContextVar[Freshness | None] = ContextVar("freshness", default=None)


def begin_request(method: str, path: str, headers: Mapping[bytes, bytes]) -> Freshness:
    """The request's Freshness, from its method, path and Freya-Read-After; a bad token is a 400."""
    read = method in ("GET", "HEAD") and path.startswith(_REPLICA_PATHS) and not path.startswith(_PRIMARY_PATHS)
    freshness = Freshness(read=read)
    _request.set(freshness)
    token = headers.get(HEADER)
    if token is not None:
        try:
            freshness.read_after = parse_position(token.decode("latin-1").strip())
        except ValueError:
            raise Invalid(
                "Freya-Read-After must be a token from a write response's Freya-Read-After header",
                field="Freya-Read-After",
                source="header",
            ) from None
    return freshness


async def answer(freshness: Freshness, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
    """Run the request; a read whose replica failed under it runs once more, on the primary."""
    if not freshness.read:
        await next_app(scope, receive, send)
        return
    held = False

    async def unless_failed(message: Message) -> None:
        nonlocal held
        if message["type"] == "http.response.start" and freshness.replica_failed:
            held = True  # the error answer of a failed replica is not the client's
        if not held:
            await send(message)

    try:
        await next_app(scope, receive, unless_failed)
    except Exception:
        if not freshness.replica_failed:
            raise
        held = True
    if held:
        freshness.primary_only = True
        await next_app(scope, _no_body(receive), send)


def _no_body(receive: Receive) -> Receive:
    """A GET's receive for its second run: the (empty) body again, then the client's own events."""
    replayed = False

    async def again() -> ReceiveMessage:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": b"", "more_body": False}
        return await receive()

    return again


State = Literal["up", "lagging", "down"]


class ReplicaHealth(msgspec.Struct):
    """One replica as the monitor last saw it (in /health/ready)."""

    name: str
    # up: takes reads; lagging: further behind than FREYA_REPLICA_MAX_LAG_MS; down: unreachable
    # or not a standby (detail says which).
    state: State
    lag_ms: int | None
    detail: str | None = None


class Replica:
    def __init__(self, url: str, name: str) -> None:
        self.url = url
        self.name = name
        self.database: PoolDatabase | None = None
        self.state: State = "down"
        self.detail: str | None = "not polled yet"
        self.replayed: int | None = None
        self.lag: float | None = None

    def failed(self, error: BaseException) -> None:
        if self.state != "down":
            log.warning("replica %s is down: %s: %s", self.name, type(error).__name__, error)
        self.state, self.detail, self.lag = "down", f"{type(error).__name__}: {error}", None
        self._publish()

    def _publish(self) -> None:
        REPLICA_UP.labels(self.name).set(1 if self.state == "up" else 0)
        if self.lag is not None:
            REPLICA_LAG.labels(self.name).set(self.lag)

    def health(self) -> ReplicaHealth:
        lag_ms = None if self.lag is None else round(self.lag * 1000)
        return ReplicaHealth(self.name, self.state, lag_ms, self.detail)


class _Replay(msgspec.Struct):
    in_recovery: bool
    replayed: str | None


def server_name(url: str) -> str:
    """host:port/database of a URL, never its credentials: a metrics label and a health entry."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    host = parts.hostname or query.get("host", ["localhost"])[0]
    port = parts.port or int(query.get("port", ["5432"])[0])
    return f"{host}:{port}{parts.path or '/'}"


class ReplicatedDatabase(Database):
    """The primary for writes, the replicas for reads (see the module docstring)."""

    def __init__(
        self,
        primary: PoolDatabase,
        replica_urls: list[str],
        max_lag_ms: int,
        open_pool: Callable[[str], Awaitable[PoolDatabase]],
        poll_timeout: float,
    ) -> None:
        super().__init__()
        self.on_primary = primary
        names = [server_name(url) for url in replica_urls]
        self.replicas = [
            # Two URLs to one server (say, two users) still get a label each.
            Replica(url, name if names.count(name) == 1 else f"{name}#{number}")
            for number, (url, name) in enumerate(zip(replica_urls, names, strict=True), start=1)
        ]
        self.max_lag = max_lag_ms / 1000
        self.open_pool = open_pool
        self.poll_timeout = poll_timeout
        # (when, position) of the primary at each poll, oldest first: enough to measure the limit twice over.
        self._history: deque[tuple[float, int]] = deque(maxlen=max(16, int(2 * self.max_lag / POLL_SECONDS) + 2))
        self._turn = itertools.count()
        primary.after_use = remember_position

    def primary(self, *, autocommit: bool = False) -> AbstractAsyncContextManager[Connection]:
        return self.on_primary.primary(autocommit=autocommit)

    def request_transaction(self) -> AbstractAsyncContextManager[Connection]:
        return self.on_primary.request_transaction()

    def connection(self) -> AbstractAsyncContextManager[Connection]:
        request = _request.get()
        if request is None or not request.read or not self.replicas:
            return self.on_primary.connection()
        return self._read(request)

    @asynccontextmanager
    async def _read(self, request: Freshness) -> AsyncIterator[Connection]:
        replica = None if request.primary_only else self._choose(request.read_after)
        async with AsyncExitStack() as stack:
            conn: Connection | None = None
            if replica is not None and replica.database is not None:
                try:
                    conn = await stack.enter_async_context(replica.database.connection())
                except TimeoutError:
                    replica = None  # its pool is busy (or slow to connect): the primary answers this one
                except UNREACHABLE as error:
                    replica.failed(error)
                    replica = None
            if conn is None:
                replica = None
                conn = await stack.enter_async_context(self.on_primary.connection())
            try:
                yield conn
            except UNREACHABLE as error:
                if replica is not None:
                    replica.failed(error)
                    request.replica_failed = True
                raise
        READS.labels("primary" if replica is None else replica.name).inc()

    def _choose(self, read_after: int | None) -> Replica | None:
        ready = [
            r
            for r in self.replicas
            if r.state == "up" and (read_after is None or (r.replayed is not None and r.replayed >= read_after))
        ]
        return ready[next(self._turn) % len(ready)] if ready else None

    def health(self) -> list[ReplicaHealth]:
        return [replica.health() for replica in self.replicas]

    async def watch(self) -> None:
        """Poll for the service's lifetime (a task of the app's lifespan)."""
        while True:
            await asyncio.sleep(POLL_SECONDS)
            await self.poll()

    async def poll(self) -> None:
        """Sample the primary, then every replica at once; a replica's failure is its own state."""
        now = time.monotonic()
        try:
            async with self.on_primary.connection() as conn:
                position = parse_position(await sql.primary_position.val(conn))
            self._history.append((now, position))
        except UNREACHABLE as error:
            # Lags then grow from the last known positions; the replicas keep answering reads.
            log.warning("replica monitor cannot reach the primary: %s", error)
        await asyncio.gather(*(self._poll(replica, now) for replica in self.replicas))

    async def _poll(self, replica: Replica, now: float) -> None:
        try:
            async with asyncio.timeout(self.poll_timeout):
                if replica.database is None:
                    replica.database = await self.open_pool(replica.url)
                async with replica.database.connection() as replica_conn:
                    status = await sql.replay_position.one(replica_conn, _Replay)
        except (*UNREACHABLE, TimeoutError) as error:
            replica.failed(error)
            return
        assert status is not None
        if not status.in_recovery or status.replayed is None:
            replica.state, replica.detail, replica.lag = "down", "not a standby (not in recovery)", None
            replica._publish()
            return
        replica.replayed = parse_position(status.replayed)
        replica.lag = self._lag(replica.replayed, now)
        was = replica.state
        replica.state = "up" if replica.lag <= self.max_lag else "lagging"
        replica.detail = None
        if replica.state != was:
            log.info("replica %s is %s (lag %.1f s)", replica.name, replica.state, replica.lag)
        replica._publish()

    def _lag(self, replayed: int, now: float) -> float:
        """Since when the replica may miss data: the last sample of the primary it has replayed
        past (the primary wrote beyond it after that, before the next sample). Zero when it has
        replayed everything the latest sample saw."""
        caught_up_at = None
        for seen, position in self._history:
            if position > replayed:
                return now - (caught_up_at if caught_up_at is not None else seen)
            caught_up_at = seen
        return 0.0

    async def close(self) -> None:
        await asyncio.gather(*(r.database.pool.close() for r in self.replicas if r.database is not None))


async def remember_position(conn: Connection) -> None:
    """After a write request's use of the primary: its WAL position, for Freya-Read-After."""
    request = _request.get()
    if request is not None and not request.read and not conn.is_in_transaction():
        request.written_at = parse_position(await sql.primary_position.val(conn))
