"""The change feed: every committed change to users, conversations, messages and topics, in order.

Triggers (migration 0023) write one row per change in the writer's transaction, stamped with its
transaction id; ``read_changes`` serves only transactions below its snapshot's xmin, so a cursor
(xid, seq) never has anything appear behind it: each committed change is served exactly once, and
rolled-back ones never. The price: a transaction that stays open holds the feed back until it ends.

``wait`` holds an empty answer until a change commits. Writers do not NOTIFY: PostgreSQL makes
every notifying transaction hold one cluster-wide lock through its commit, which serialised
concurrent posts (single-post throughput fell by 70% when measured). Instead, while any request
of a worker waits, the worker reads the feed's visible head (one row off an index) every
WATCH_INTERVAL seconds and wakes its waiters when it moves: one small query per worker, however
many followers wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Literal, cast

import msgspec
from litestar import Controller, get
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import QueryParameter

from service.cursors import CursorCodec
from service.db import Database
from service.errors import Gone, problem_responses
from service.pages import DEFAULT_LIMIT, Cursor, Limit
from service.queries import Query, QueryFile

log = logging.getLogger("freya.changes")

MAX_WAIT = 30.0
# How often a worker with waiting requests looks at the feed's head: the most a waiting follower
# lags behind a commit.
WATCH_INTERVAL = 0.1
_SCOPE = "changes"


class ChangeQueries(QueryFile, file="changes"):
    read_changes: Query
    feed_head: Query
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


class _Head(msgspec.Struct):
    xid: int
    seq: int


class FeedWatch:
    """Wakes this worker's waiting feed requests when the feed's visible head moves.

    The watching task runs only while some request waits. Waiters take the current event before
    they read the feed, so a change that becomes visible between their read and their wait still
    wakes them (the head then differs from the one seen before it, as on a task's first look).
    """

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._waiting = 0
        self._task: asyncio.Task[None] | None = None
        self._head: _Head | None = None

    @property
    def event(self) -> asyncio.Event:
        return self._event

    @contextlib.asynccontextmanager
    async def watching(self, db: Database) -> AsyncIterator[None]:
        self._waiting += 1
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._watch(db))
        try:
            yield
        finally:
            self._waiting -= 1

    def _wake(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def _watch(self, db: Database) -> None:
        first = True
        while self._waiting:
            try:
                async with db.connection() as conn:
                    head = await sql.feed_head.one(conn, _Head)
            except Exception:  # the waiters' own reads will report it
                log.warning("cannot read the change feed's head", exc_info=True)
                self._wake()
            else:
                if first or head != self._head:
                    self._head = head
                    self._wake()
            first = False
            await asyncio.sleep(WATCH_INTERVAL)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def read_feed(
    db: Database, watch: FeedWatch, after: tuple[int, int], limit: int, wait: float, *, resuming: bool
) -> tuple[list[_FeedRow], tuple[int, int]]:
    """The changes after ``after`` (waiting up to ``wait`` seconds for one) and the position after
    them. Gone when a resumed position is behind what was pruned; a fresh start begins after it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    async with watch.watching(db) if wait > 0 else contextlib.nullcontext():
        while True:
            woken = watch.event
            async with db.connection() as conn:
                rows = await sql.read_changes.many(conn, _FeedRow, after_xid=after[0], after_seq=after[1], limit=limit)
            feed = rows[0]
            if after < (feed.pruned_xid, feed.pruned_seq):
                if resuming:
                    raise Gone(
                        "the cursor points before the oldest change kept (FREYA_CHANGES_RETENTION_DAYS); "
                        "start again without a cursor and resynchronise"
                    )
                after = (feed.pruned_xid, feed.pruned_seq)
            items = [row for row in rows if row.seq is not None]
            remaining = deadline - loop.time()
            if items:
                return items, (cast(int, items[-1].xid), cast(int, items[-1].seq))
            if remaining <= 0:
                return [], after
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(woken.wait(), remaining)


class ChangesController(Controller):
    path = "/v1/changes"
    tags = ("changes",)

    @get(summary="Follow every committed change, in order", responses=problem_responses(400, 410))
    async def list_changes(
        self,
        db: NamedDependency[Database],
        state: State,
        limit: Limit = DEFAULT_LIMIT,
        cursor: Cursor = None,
        wait: Wait = 0,
    ) -> ChangePage:
        """Changes after ``cursor`` (from the oldest kept without one). An empty page still carries
        ``next_cursor``; with ``wait`` it is held until a change commits or the time is up."""
        # The codec and the watch come from the app's state, not as dependencies: Litestar resolves
        # independent dependencies in a task group per request.
        cursors: CursorCodec = state.cursors
        watch: FeedWatch = state.feed_watch
        start = cursors.decode(cursor, _SCOPE, FeedKey) if cursor else FeedKey(0, 0)
        rows, after = await read_feed(db, watch, (start.xid, start.seq), limit, wait, resuming=cursor is not None)
        return ChangePage(items=[_as_change(row) for row in rows], next_cursor=cursors.encode(_SCOPE, FeedKey(*after)))


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
