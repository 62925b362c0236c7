"""Conversations: a user's threads, listed most recently active first."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from litestar import Controller, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import JSONBody

from service.cursors import TimeKey
from service.db import Connection, Database, retrying_rollbacks
from service.errors import Invalid, NotFound, problem_responses
from service.fields import Id, Metadata, PathId, Title, metadata_problem
from service.pages import Page, Paging, rows_under_parent
from service.queries import Query, QueryFile
from service.timestamps import from_micros, to_micros


class ConversationQueries(QueryFile, file="conversations"):
    create_conversation: Query
    get_conversation: Query
    update_conversation: Query
    delete_conversation: Query
    lock_conversation: Query
    restore_conversation: Query
    list_user_conversations: Query
    count_user_conversations: Query


sql = ConversationQueries()


class Conversation(msgspec.Struct):
    id: int
    user_id: int
    title: str | None
    created_at: datetime
    # Moves when a message is added (kept by a trigger in the message's own transaction).
    updated_at: datetime
    message_count: int
    metadata: dict[str, Any]


class ConversationCreate(msgspec.Struct, forbid_unknown_fields=True):
    user_id: Id
    title: Title | None = None
    metadata: Metadata = msgspec.field(default_factory=dict)


class ConversationUpdate(msgspec.Struct, forbid_unknown_fields=True):
    # Absent keeps the title; null clears it.
    title: Title | msgspec.UnsetType | None = msgspec.UNSET
    # Absent keeps the metadata; an object replaces it whole ({} empties it).
    metadata: Metadata | msgspec.UnsetType = msgspec.UNSET


_PATCH_ANSWERS = problem_responses(400, 404)


def _check_metadata(metadata: dict[str, Any] | msgspec.UnsetType) -> None:
    if isinstance(metadata, dict) and (problem := metadata_problem(metadata)) is not None:
        raise Invalid(f"metadata: {problem}", field="metadata", source="body")


class ConversationsController(Controller):
    path = "/v1/conversations"
    tags = ("conversations",)

    @post(status_code=201, summary="Start a conversation", responses=problem_responses(400, 422))
    async def create_conversation(
        self, data: JSONBody[ConversationCreate], db: NamedDependency[Database]
    ) -> Conversation:
        _check_metadata(data.metadata)
        async with db.connection() as conn:
            created = await sql.create_conversation.one(
                conn, Conversation, user_id=data.user_id, title=data.title, metadata=data.metadata
            )
        assert created is not None
        return created

    @get("/{conversation_id:str}", summary="Get a conversation", responses=problem_responses(400, 404))
    async def get_conversation(self, conversation_id: PathId, db: NamedDependency[Database]) -> Conversation:
        async with db.connection() as conn:
            found = await sql.get_conversation.one(conn, Conversation, conversation_id=conversation_id)
        if found is None:
            raise NotFound(f"conversation {conversation_id} does not exist")
        return found

    @patch("/{conversation_id:str}", summary="Change a conversation's title or metadata", responses=_PATCH_ANSWERS)
    async def update_conversation(
        self, conversation_id: PathId, data: JSONBody[ConversationUpdate], db: NamedDependency[Database]
    ) -> Conversation:
        if data.title is msgspec.UNSET and data.metadata is msgspec.UNSET:
            raise Invalid("give title, metadata or both", field="title", source="body")
        _check_metadata(data.metadata)
        async with db.connection() as conn:
            updated = await sql.update_conversation.one(
                conn,
                Conversation,
                conversation_id=conversation_id,
                set_title=data.title is not msgspec.UNSET,
                title=None if data.title is msgspec.UNSET else data.title,
                metadata=None if data.metadata is msgspec.UNSET else data.metadata,
            )
        if updated is None:
            raise NotFound(f"conversation {conversation_id} does not exist")
        return updated

    @delete(
        "/{conversation_id:str}",
        summary="Delete a conversation and its messages (restorable for FREYA_RETENTION_DAYS)",
        responses=problem_responses(400, 404),
    )
    async def delete_conversation(self, conversation_id: PathId, db: NamedDependency[Database]) -> None:
        async with db.connection() as conn:
            deleted = await retrying_rollbacks(
                conn, lambda: sql.delete_conversation.val(conn, conversation_id=conversation_id)
            )
        if deleted is None:
            raise NotFound(f"conversation {conversation_id} does not exist")

    @post(
        "/{conversation_id:str}/restore",
        status_code=200,
        summary="Restore a deleted conversation with the messages deleted with it (a live one is answered as it is)",
        responses=problem_responses(400, 404),
    )
    async def restore_conversation(self, conversation_id: PathId, db: NamedDependency[Database]) -> Conversation:

        async def restore(conn: Connection) -> Conversation:
            # Locked by a statement of its own first, so the restore and the read see every
            # delete committed before (sql/conversations.sql).
            if await sql.lock_conversation.val(conn, conversation_id=conversation_id) is None:
                raise NotFound(f"conversation {conversation_id} does not exist (or was purged)")
            await sql.restore_conversation.val(conn, conversation_id=conversation_id)
            restored = await sql.get_conversation.one(conn, Conversation, conversation_id=conversation_id)
            assert restored is not None  # locked, and live now
            return restored

        async with db.connection() as conn:
            return await retrying_rollbacks(conn, lambda: restore(conn))


class UserConversationsController(Controller):
    path = "/v1/users/{user_id:str}/conversations"
    tags = ("conversations",)

    @get(summary="A user's conversations, most recently active first", responses=problem_responses(400, 404))
    async def list_conversations(
        self, user_id: PathId, db: NamedDependency[Database], paging: NamedDependency[Paging]
    ) -> Page[Conversation]:
        scope = f"conversations:{user_id}"
        after = paging.after(scope, TimeKey)
        async with db.connection() as conn:
            rows = await sql.list_user_conversations.records(
                conn,
                user_id=user_id,
                before_updated_at=after and from_micros(after.micros),
                before_id=after and after.id,
                limit=paging.limit,
                offset=paging.offset,
            )
            page_rows = rows_under_parent(rows, "id")
            if page_rows is None:
                raise NotFound(f"user {user_id} does not exist")
            found = [Conversation(*row) for row in page_rows]
            total = await paging.total(conn, sql.count_user_conversations, user_id=user_id)
        return paging.page(found, scope, lambda i: TimeKey(to_micros(found[i].updated_at), found[i].id), total=total)
