"""Edit revisions: what each PATCH of a message replaced (role and content), newest first.

Migration 0130's trigger keeps them, for the single and the bulk edit alike: revision n is what
the n-th edit replaced, edited_at when that edit happened.
"""

from __future__ import annotations

from datetime import datetime

import msgspec
from litestar import Controller, get
from litestar.di import NamedDependency

from service.cursors import CursorCodec
from service.db import Database, Query, QueryFile
from service.errors import NotFound, problem_responses
from service.fields import PathId, Role
from service.pages import DEFAULT_LIMIT, CountMode, Cursor, Limit, Offset, Page, count_rows, one_paging_mode, page_of


class RevisionQueries(QueryFile, file="revisions"):
    list_revisions: Query
    count_revisions: Query


sql = RevisionQueries()


class Revision(msgspec.Struct):
    revision: int
    role: Role
    content: str
    edited_at: datetime


class _RevisionRow(msgspec.Struct):
    revision: int | None
    role: Role | None
    content: str | None
    edited_at: datetime | None


class RevisionsController(Controller):
    path = "/v1/messages/{message_id:str}/revisions"
    tags = ("messages",)

    @get(summary="A message's earlier versions, newest first", responses=problem_responses(400, 404))
    async def list_revisions(
        self,
        message_id: PathId,
        db: NamedDependency[Database],
        cursors: NamedDependency[CursorCodec],
        limit: Limit = DEFAULT_LIMIT,
        cursor: Cursor = None,
        offset: Offset = None,
        count: CountMode = "none",
    ) -> Page[Revision]:
        skip = one_paging_mode(cursor, offset)
        scope = f"revisions:{message_id}"
        [before] = cursors.decode(cursor, scope, 1) if cursor else [None]
        async with db.connection() as conn:
            rows = await sql.list_revisions.many(
                conn, _RevisionRow, message_id=message_id, before_revision=before, limit=limit + 1, offset=skip
            )
            if not rows:
                raise NotFound(f"message {message_id} does not exist")
            total = await count_rows(conn, count, sql.count_revisions, message_id=message_id)
        # A live message without revisions comes back as one row of NULLs.
        revisions = [Revision(**msgspec.structs.asdict(row)) for row in rows if row.revision is not None]

        def after(last: Revision) -> str:
            return cursors.encode(scope, last.revision)

        return page_of(revisions, limit, after if offset is None else None, total)
