"""Lists: the paging parameters every list takes, validated once, and the one page envelope.

A list handler reads as: its parameters (``paging: NamedDependency[Paging]`` among them), one
named query run with ``limit`` and ``offset`` from the paging, and ``paging.page(...)`` back. In
every SQL file ``:limit`` is the page size and the statement reads ``:limit + 1`` rows: the extra
row only says that another page follows.

Keyset pages (``cursor=``) cost the same at any depth; offset pages (``offset=``) are for admin
tools and small jumps, capped at MAX_OFFSET because PostgreSQL reads and discards every skipped row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any, Generic, Literal, TypeVar

import asyncpg
import msgspec
from litestar.di import NamedDependency
from litestar.params import QueryParameter

from service.cursors import CursorCodec
from service.db import Connection, Database
from service.errors import Invalid
from service.queries import Query

T = TypeVar("T")
P = TypeVar("P", bound=msgspec.Struct)

MAX_OFFSET = 10_000
DEFAULT_LIMIT = 50
MAX_LIMIT = 200

Limit = Annotated[
    int, QueryParameter(ge=1, le=MAX_LIMIT, description=f"Items per page, 1-{MAX_LIMIT} (default {DEFAULT_LIMIT})")
]
Offset = Annotated[
    int | None,
    QueryParameter(ge=0, le=MAX_OFFSET, description=f"Rows to skip (offset paging, at most {MAX_OFFSET})"),
]
Cursor = Annotated[
    str | None,
    QueryParameter(min_length=1, max_length=1024, description="next_cursor of the previous page (keyset paging)"),
]
CountMode = Literal["exact", "estimated", "none"]
Count = Annotated[
    CountMode,
    QueryParameter(description="Add total: exact (counts), estimated (planner statistics) or none"),
]


class Page(msgspec.Struct, Generic[T]):
    items: list[T]
    next_cursor: str | None = None
    # Present only when the request asked for count=exact or count=estimated.
    total: int | msgspec.UnsetType = msgspec.UNSET


def rows_under_parent(rows: list[asyncpg.Record], key: str) -> list[asyncpg.Record] | None:
    """The page rows of a statement that returns its page with its parent's marker (a user's, a
    conversation's, a topic's, a message's): one row whose ``key`` is NULL, there when the parent
    exists, first in a descending page and last in an ascending one (where the statement's ORDER BY
    puts NULLs). No row at all means no parent (None). One statement then answers both "which
    rows" and "does it exist", and PostgreSQL merges the marker in rather than sorting the page."""
    if not rows:
        return None
    if rows[0][key] is None:
        return rows[1:]
    if rows[-1][key] is None:
        return rows[:-1]
    # Page rows without their parent's marker: the parent is gone in this statement's snapshot,
    # which its page statement's invariants rule out; answer as for no parent, not a page short.
    return None


class Paging:
    """One list request's paging: ``limit``, a keyset ``cursor`` or an ``offset``, and ``count``."""

    __slots__ = ("_codec", "count", "cursor", "keyset", "limit", "offset")

    def __init__(
        self, codec: CursorCodec, limit: int, cursor: str | None, offset: int | None, count: CountMode
    ) -> None:
        if cursor is not None and offset is not None:
            raise Invalid("use either cursor or offset, not both", field="offset", source="query")
        self._codec = codec
        self.limit = limit
        self.cursor = cursor
        # Offset pages carry no next_cursor: their position is the offset.
        self.keyset = offset is None
        # What the SQL skips: 0 for keyset pages.
        self.offset = offset or 0
        self.count = count

    def after(self, scope: str, position: type[P]) -> P | None:
        """Where the cursor says this page starts (None on the first page); a foreign cursor is a 400."""
        return None if self.cursor is None else self._codec.decode(self.cursor, scope, position)

    def page(self, rows: Sequence[T], scope: str, key: Callable[[int], msgspec.Struct], **extra: Any) -> Page[T]:
        """The envelope for rows read with ``limit + 1``; ``key(i)`` is the sort key of row i."""
        items = list(rows[: self.limit])
        more = len(rows) > self.limit
        next_cursor = self._codec.encode(scope, key(len(items) - 1)) if more and self.keyset else None
        return Page(items=items, next_cursor=next_cursor, **extra)

    def cursor_to(self, scope: str, position: msgspec.Struct) -> str | None:
        """A cursor to ``position`` in this list; None on offset pages (their position is the offset)."""
        return self._codec.encode(scope, position) if self.keyset else None

    async def total(self, conn: Connection, query: Query, /, **params: Any) -> int | msgspec.UnsetType:
        """``total`` for count=exact (the count query) or estimated (the planner's estimate of it)."""
        if self.count == "exact":
            return int(await query.val(conn, **params))
        if self.count == "estimated":
            return await estimate_rows(conn, query, **params)
        return msgspec.UNSET


async def estimate_rows(conn: Connection, query: Query, /, **params: Any) -> int:
    """The planner's row estimate for ``query`` (count=estimated): no scan, just statistics."""
    return _scan_rows((await _plan(conn, query, params))["Plan"])


async def estimate_each(conn: Connection, query: Query, /, **params: Any) -> list[int]:
    """The planner's row estimates for each scalar subquery of ``query``, a SELECT of several
    counts (each is an InitPlan of its plan): several estimates for one round trip."""
    return [_scan_rows(node) for node in (await _plan(conn, query, params))["Plan"]["Plans"]]


async def _plan(conn: Connection, query: Query, params: dict[str, Any]) -> Any:
    plan = await conn.fetchval("EXPLAIN (FORMAT JSON) " + query.sql, *query.args(params))
    if isinstance(plan, str):
        plan = msgspec.json.decode(plan)
    return plan[0]


def _scan_rows(node: dict[str, Any]) -> int:
    # Below an Aggregate (count(*)) is the scan whose row estimate is the answer.
    while node.get("Node Type") == "Aggregate" and node.get("Plans"):
        node = node["Plans"][0]
    return int(node["Plan Rows"])


def paging_provider(codec: CursorCodec) -> Callable[..., Paging]:
    """The ``paging`` dependency of an app whose cursors ``codec`` signs."""

    def provide_paging(
        db: NamedDependency[Database],
        limit: Limit = DEFAULT_LIMIT,
        cursor: Cursor = None,
        offset: Offset = None,
        count: Count = "none",
    ) -> Paging:
        """Every list's paging parameters, validated in one place.

        ``db`` is asked for only to order the two: Litestar resolves dependencies that do not
        depend on each other (every list handler takes ``db`` and ``paging``) in an anyio task
        group, two tasks per request, which py-spy put at about a tenth of a page's CPU; one after
        the other they cost nothing extra.
        """
        return Paging(codec, limit, cursor, offset, count)

    return provide_paging
