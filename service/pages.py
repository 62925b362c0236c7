"""Lists: the ``{items, next_cursor, total}`` envelope and the paging parameters every list takes.

Keyset pages (``cursor=``) cost the same at any depth; offset pages (``offset=``) are for admin
tools and small jumps, capped at MAX_OFFSET because PostgreSQL reads and discards every skipped row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

import msgspec
from litestar import MediaType, Response
from litestar.params import QueryParameter

from service import db
from service.errors import Invalid

T = TypeVar("T")

MAX_OFFSET = 10_000
DEFAULT_LIMIT = 50

Limit = Annotated[int, QueryParameter(ge=1, le=200, description="Items per page, 1-200 (default 50)")]
Offset = Annotated[
    int | None,
    QueryParameter(ge=0, le=MAX_OFFSET, description=f"Rows to skip (offset paging, at most {MAX_OFFSET})"),
]
Cursor = Annotated[
    str | None,
    QueryParameter(min_length=1, max_length=1024, description="next_cursor of the previous page (keyset paging)"),
]
CountMode = Annotated[
    Literal["exact", "estimated", "none"],
    QueryParameter(description="Add total: exact (counts), estimated (planner statistics) or none"),
]


class Page(msgspec.Struct, Generic[T]):
    items: list[T]
    next_cursor: str | None = None
    # Present only when the request asked for count=exact or count=estimated.
    total: int | msgspec.UnsetType = msgspec.UNSET


def one_paging_mode(cursor: str | None, offset: int | None) -> int:
    """The offset to run with; cursor and offset together are a 400."""
    if cursor is not None and offset is not None:
        raise Invalid("use either cursor or offset, not both", field="offset")
    return offset or 0


def page_of(
    rows: Sequence[T], limit: int, cursor_after: Callable[[T], str] | None, total: int | msgspec.UnsetType
) -> Page[T]:
    """The envelope for rows fetched with LIMIT limit + 1: the extra row only says another page exists."""
    items = list(rows[:limit])
    more = len(rows) > limit
    next_cursor = cursor_after(items[-1]) if more and items and cursor_after is not None else None
    return Page(items=items, next_cursor=next_cursor, total=total)


class JsonRows(msgspec.Struct):
    """A page whose items PostgreSQL encoded: the JSON array, whether more follow, the last sort key."""

    items: bytes
    more: bool
    last_id: int | None
    last_timestamp: datetime | None = None


def json_page(items: bytes, next_cursor: str | None, total: int | msgspec.UnsetType) -> Response[bytes]:
    """The list envelope around items that are JSON already: no decoding, no re-encoding."""
    body = b'{"items":' + items + b',"next_cursor":' + msgspec.json.encode(next_cursor)
    if not isinstance(total, msgspec.UnsetType):
        body += b',"total":' + str(total).encode()
    return Response(body + b"}", media_type=MediaType.JSON)


async def count_rows(
    conn: db.Connection, mode: Literal["exact", "estimated", "none"], query: db.Query, **params: Any
) -> int | msgspec.UnsetType:
    """``total`` for count=exact (the count query) or estimated (the planner's estimate of it)."""
    if mode == "exact":
        return int(await query.val(conn, **params))
    if mode == "estimated":
        return await db.estimate_rows(conn, query, **params)
    return msgspec.UNSET
