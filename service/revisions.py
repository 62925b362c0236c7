"""Edit revisions: what each PATCH of a message replaced (role and content), newest first.

Migration 0023's trigger keeps them, for the single and the bulk edit alike: revision n is what
the n-th edit replaced, edited_at when that edit happened.
"""

from __future__ import annotations

from datetime import datetime

import msgspec
from litestar import Controller, get
from litestar.di import NamedDependency

from service.cursors import IdKey
from service.db import Database
from service.errors import NotFound, problem_responses
from service.fields import PathId, Role
from service.pages import Page, Paging, rows_under_parent
from service.queries import Query, QueryFile


class RevisionQueries(QueryFile, file="revisions"):
    list_revisions: Query
    count_revisions: Query


sql = RevisionQueries()


class Revision(msgspec.Struct):
    revision: int
    role: Role
    content: str
    edited_at: datetime


class RevisionsController(Controller):
    path = "/v1/messages/{message_id:str}/revisions"
    tags = ("messages",)

    @get(summary="A message's earlier versions, newest first", responses=problem_responses(400, 404))
    async def list_revisions(
        self, message_id: PathId, db: NamedDependency[Database], paging: NamedDependency[Paging]
    ) -> Page[Revision]:
        scope = f"revisions:{message_id}"
        after = paging.after(scope, IdKey)
        async with db.connection() as conn:
            rows = rows_under_parent(
                await sql.list_revisions.records(
                    conn,
                    message_id=message_id,
                    before_revision=after and after.id,
                    limit=paging.limit,
                    offset=paging.offset,
                ),
                "revision",
            )
            if rows is None:
                raise NotFound(f"message {message_id} does not exist")
            total = await paging.total(conn, sql.count_revisions, message_id=message_id)
        revisions = [Revision(*row) for row in rows]
        return paging.page(revisions, scope, lambda index: IdKey(revisions[index].revision), total=total)
