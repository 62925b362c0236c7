"""The change feed: every committed change to users, conversations, messages and topics, in order.

Triggers (migration 0130) write one row per change in the writer's transaction, stamped with its
transaction id; ``read_changes`` serves only transactions below its snapshot's xmin, so a cursor
(xid, seq) never has anything appear behind it: each committed change is served exactly once, and
rolled-back ones never. The price: a transaction that stays open holds the feed back until it ends.

``wait`` holds an empty answer until a change commits. Each worker LISTENs on one dedicated
connection (pooled connections keep no session state, and PgBouncer's transaction mode cannot
LISTEN); the triggers NOTIFY freya_changes, which PostgreSQL delivers at commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime
from typing import Annotated, Any, Literal, cast

import asyncpg
import msgspec
from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import QueryParameter

from service.cursors import CursorCodec
from service.db import Connection, Database
from service.errors import Gone, problem_responses
from service.pages import DEFAULT_LIMIT, Cursor, Limit
from service.queries import Query, QueryFile

log = logging.getLogger("freya.changes")

CHANNEL = "freya_changes"
MAX_WAIT = 30.0
# While committed changes wait for an older transaction to end (no NOTIFY comes when it does),
# a waiting request looks again after these many seconds, doubling up to the last.
_HELD_BACK_RECHECK = (0.05, 0.1, 0.2, 0.5, 1.0)
_SCOPE = "changes"


class ChangeQueries(QueryFile, file="changes"):
    read_changes: Query
    prune_changes: Query


sql = ChangeQueries()

Entity = Literal["user", "conversation", "message", "topic"]
Op = Literal["created", "updated", "deleted", "restored", "purged", "erased"]


class Change(msgspec.Struct):
    seq: int
    entity: Entity
    id: int
    op: Op
    at: datetime
    conversation_id: int | None
    user_id: int | None


class FeedKey(msgspec.Struct, array_like=True, frozen=True):
    """A position in the feed: after the change (xid, seq)."""

    xid: int
    seq: int


class ChangePage(msgspec.Struct):
    items: list[Change]
    # Always present: where to resume, also after an empty page.
    next_cursor: str


class _FeedRow(msgspec.Struct):
    visible_below: int
    pruned_xid: int
    pruned_seq: int
    held_back: bool
    xid: int | None
    seq: int | None
    entity: Entity | None
    entity_id: int | None
    op: Op | None
    at: datetime | None
    conversation_id: int | None
    user_id: int | None


Wait = Annotated[
    float,
    QueryParameter(
        ge=0,
        le=MAX_WAIT,
        description="Seconds (0-30) to hold an empty answer until a change commits; 0 answers at once",
    ),
]


class ChangeSignal:
    """Wakes this worker's waiting feed requests when a change commits.

    One LISTEN connection per worker, opened on the first request that waits and reopened after
    it is lost. Waiters take the current event before they read the feed, so a commit between
    their read and their wait still wakes them.
    """

    def __init__(self, url: str | None, connect_timeout: float) -> None:
        self._url = url
        self._connect_timeout = connect_timeout
        self._conn: asyncpg.Connection[asyncpg.Record] | None = None
        self._opening = asyncio.Lock()
        self._event = asyncio.Event()

    @property
    def event(self) -> asyncio.Event:
        return self._event

    async def listen(self) -> bool:
        """Make sure the LISTEN connection is open; False when this app has no URL to open it on."""
        if self._url is None:
            return False
        async with self._opening:
            if self._conn is None or self._conn.is_closed():
                conn = await asyncpg.connect(self._url, timeout=self._connect_timeout)
                conn.add_termination_listener(self._lost)
                await conn.add_listener(CHANNEL, self._notified)
                self._conn = conn
        return True

    def _notified(self, *_: Any) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    def _lost(self, *_: Any) -> None:
        log.warning("the change feed's LISTEN connection was lost; the next waiting request reopens it")
        self._conn = None
        self._notified()  # waiters read again (and reconnect) rather than miss a change

    async def close(self) -> None:
        if self._conn is not None and not self._conn.is_closed():
            self._conn.remove_termination_listener(self._lost)
            await self._conn.close()
        self._conn = None


async def _read(conn: Connection, after: tuple[int, int], limit: int) -> list[_FeedRow]:
    return await sql.read_changes.many(conn, _FeedRow, after_xid=after[0], after_seq=after[1], limit=limit)


class ChangesController(Controller):
    path = "/v1/changes"
    tags = ("changes",)

    @get(summary="Follow every committed change, in order", responses=problem_responses(400, 410))
    async def list_changes(
        self,
        db: NamedDependency[Database],
        cursors: NamedDependency[CursorCodec],
        changes_signal: NamedDependency[ChangeSignal],
        limit: Limit = DEFAULT_LIMIT,
        cursor: Cursor = None,
        wait: Wait = 0,
    ) -> ChangePage:
        """Changes after ``cursor`` (from the oldest kept without one). An empty page still carries
        ``next_cursor``; with ``wait`` it is held until a change commits or the time is up."""
        start = cursors.decode(cursor, _SCOPE, FeedKey) if cursor else FeedKey(0, 0)
        after = (start.xid, start.seq)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        listening = wait > 0 and await changes_signal.listen()
        rechecks = iter(_HELD_BACK_RECHECK)
        while True:
            woken = changes_signal.event
            async with db.connection() as conn:
                rows = await _read(conn, after, limit)
            feed = rows[0]
            if after < (feed.pruned_xid, feed.pruned_seq):
                if cursor is not None:
                    raise Gone(
                        "the cursor points before the oldest change kept (FREYA_CHANGES_RETENTION_DAYS); "
                        "start again without a cursor and resynchronise"
                    )
                # No cursor: start at the oldest change kept.
                after = (feed.pruned_xid, feed.pruned_seq)
            items = [row for row in rows if row.seq is not None]
            remaining = deadline - loop.time()
            if items or remaining <= 0:
                break
            pause = remaining
            if feed.held_back or not listening:
                pause = min(remaining, next(rechecks, _HELD_BACK_RECHECK[-1]))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(woken.wait(), pause)
        if items:
            last = items[-1]
            after = (cast(int, last.xid), cast(int, last.seq))
        return ChangePage(items=[_as_change(row) for row in items], next_cursor=cursors.encode(_SCOPE, FeedKey(*after)))


def _as_change(row: _FeedRow) -> Change:
    """A page row as its item (only the state row of an empty page has NULLs, and it is no item)."""
    return Change(
        seq=cast(int, row.seq),
        entity=cast(Entity, row.entity),
        id=cast(int, row.entity_id),
        op=cast(Op, row.op),
        at=cast(datetime, row.at),
        conversation_id=row.conversation_id,
        user_id=row.user_id,
    )
