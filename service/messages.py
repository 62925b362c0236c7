"""Messages: post one or a batch (idempotent by client_msg_id), page through a conversation, edit, delete."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Annotated, Any, Literal

import asyncpg
import msgspec
from litestar import Controller, Response, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import JSONBody, QueryParameter

from service import conversations
from service.cursors import CursorCodec
from service.db import Connection, Database, Query, QueryFile
from service.errors import Invalid, NotFound, problem_responses
from service.fields import (
    MAX_BATCH,
    ClientMsgId,
    Content,
    Id,
    Metadata,
    PathId,
    Role,
    RoleQuery,
    TimeQuery,
    TokenCount,
    TopicNames,
    metadata_problem,
)
from service.pages import (
    DEFAULT_LIMIT,
    CountMode,
    Cursor,
    JsonRows,
    Limit,
    Offset,
    Page,
    count_rows,
    json_page,
    one_paging_mode,
)
from service.timestamps import as_utc, from_micros, to_micros


class MessageQueries(QueryFile, file="messages"):
    add_messages: Query
    get_messages_by_client_ids: Query
    get_message: Query
    list_messages_newest_first: Query
    list_messages_oldest_first: Query
    count_messages: Query
    update_message: Query
    update_messages: Query
    delete_message: Query


sql = MessageQueries()

# fields= chooses among the columns of the message queries' select list, by these names.
FIELDS = tuple(name for name, _ in sql.get_message.columns)
# Deadlocks are possible, if rare, when concurrent batches create the same new topics in
# different orders; PostgreSQL aborts one statement, which is then safe to run again.
_DEADLOCK_ATTEMPTS = 3


class TopicRef(msgspec.Struct):
    id: int
    name: str


class Message(msgspec.Struct):
    """A message; with fields= only the chosen fields are present."""

    id: int | msgspec.UnsetType = msgspec.UNSET
    conversation_id: int | msgspec.UnsetType = msgspec.UNSET
    user_id: int | msgspec.UnsetType = msgspec.UNSET
    role: Role | msgspec.UnsetType = msgspec.UNSET
    content: str | msgspec.UnsetType = msgspec.UNSET
    timestamp: datetime | msgspec.UnsetType = msgspec.UNSET
    edited_at: datetime | msgspec.UnsetType | None = msgspec.UNSET
    topics: list[TopicRef] | msgspec.UnsetType = msgspec.UNSET
    metadata: dict[str, Any] | msgspec.UnsetType = msgspec.UNSET
    token_count: int | msgspec.UnsetType = msgspec.UNSET
    # True when the writer sent no token_count and the service stored ceil(UTF-8 bytes / 4).
    token_count_estimated: bool | msgspec.UnsetType = msgspec.UNSET


class MessageCreate(msgspec.Struct, forbid_unknown_fields=True):
    role: Role
    content: Content
    # Defaults to the conversation's owner.
    user_id: Id | None = None
    # Topic names; missing topics are created.
    topics: TopicNames = msgspec.field(default_factory=list)
    client_msg_id: ClientMsgId | None = None
    metadata: Metadata = msgspec.field(default_factory=dict)
    # Absent: the service stores the estimate ceil(UTF-8 bytes / 4) and says so.
    token_count: TokenCount | None = None


class MessageBatch(msgspec.Struct, forbid_unknown_fields=True):
    messages: Annotated[list[MessageCreate], msgspec.Meta(min_length=1, max_length=MAX_BATCH)]


class BatchItem(msgspec.Struct):
    status: Literal["created", "duplicate"]
    message: Message


class BatchResult(msgspec.Struct):
    items: list[BatchItem]


class MessageUpdate(msgspec.Struct, forbid_unknown_fields=True):
    content: Content | None = None
    role: Role | None = None
    # Replaces the whole object ({} empties it).
    metadata: Metadata | None = None
    # New content without a token_count gets the estimate of the new content.
    token_count: TokenCount | None = None


class MessageUpdateItem(MessageUpdate, kw_only=True, forbid_unknown_fields=True):
    id: Id


class BulkUpdate(msgspec.Struct, forbid_unknown_fields=True):
    updates: Annotated[list[MessageUpdateItem], msgspec.Meta(min_length=1, max_length=MAX_BATCH)]


class BulkUpdated(msgspec.Struct):
    updated: int


class _Added(msgspec.Struct):
    ord: int
    status: Literal["created", "duplicate", "unknown_user"]
    id: int | None
    conversation_id: int | None
    user_id: int | None
    role: Role | None
    content: str | None
    timestamp: datetime | None
    edited_at: datetime | None
    topics: list[TopicRef] | None
    metadata: dict[str, Any] | None
    token_count: int | None
    token_count_estimated: bool | None


class _StoredByKey(Message):
    client_msg_id: str | msgspec.UnsetType = msgspec.UNSET


class _BulkOutcome(msgspec.Struct):
    updated: int
    missing: list[int]


def estimate_tokens(content: str) -> int:
    """The stored estimate when a writer sends no count: ceil(UTF-8 bytes / 4), as migration 0140's token_estimate()."""
    return -(-len(content.encode()) // 4)


def token_count_of(content: str | None, given: int | None) -> tuple[int | None, bool | None]:
    """The count to store and whether it is an estimate: the writer's, else the estimate of new
    content, else (None, None): keep what is stored."""
    if given is not None:
        return given, False
    if content is not None:
        return estimate_tokens(content), True
    return None, None


def check_metadata(values: Sequence[dict[str, Any] | None], field: Callable[[int], str]) -> None:
    """A 400 naming every metadata object that cannot be stored (too large, or holding a NUL)."""
    errors = [
        {"field": field(index), "message": problem}
        for index, value in enumerate(values)
        if value is not None and (problem := metadata_problem(value)) is not None
    ]
    if errors:
        raise Invalid("; ".join(f"{e['field']}: {e['message']}" for e in errors), errors=errors)


def _as_message(row: _Added | _StoredByKey) -> Message:
    fields: dict[str, Any] = {field: getattr(row, field) for field in FIELDS}
    return Message(**fields)


async def add_messages(
    conn: Connection, conversation_id: int, items: Sequence[MessageCreate], *, in_batch: bool
) -> list[BatchItem]:
    """Store items in one statement; every item comes back created or as the duplicate it repeats.

    Raises NotFound for an unknown conversation and Invalid (422) naming items whose user_id does
    not exist; in both cases nothing is written.
    """
    check_metadata([item.metadata for item in items], lambda i: f"messages[{i}].metadata" if in_batch else "metadata")
    tags = [(number, name) for number, item in enumerate(items, start=1) for name in dict.fromkeys(item.topics)]
    counts = [token_count_of(item.content, item.token_count) for item in items]
    arguments: dict[str, Any] = {
        "conversation_id": conversation_id,
        "roles": [item.role for item in items],
        "contents": [item.content for item in items],
        "user_ids": [item.user_id for item in items],
        "client_msg_ids": [item.client_msg_id for item in items],
        "metadata": [item.metadata for item in items],
        "token_counts": [tokens for tokens, _ in counts],
        "token_counts_estimated": [estimated for _, estimated in counts],
        "tag_items": [number for number, _ in tags],
        "tag_names": [name for _, name in tags],
    }
    for attempt in range(1, _DEADLOCK_ATTEMPTS + 1):
        try:
            rows = await sql.add_messages.many(conn, _Added, **arguments)
            break
        except asyncpg.DeadlockDetectedError:
            if attempt == _DEADLOCK_ATTEMPTS:
                raise
    if unknown := [row.ord - 1 for row in rows if row.status == "unknown_user"]:
        raise Invalid(
            "user_id names a user that does not exist; nothing was written",
            status=422,
            errors=[
                {
                    "field": f"messages[{index}].user_id" if in_batch else "user_id",
                    "message": f"user {items[index].user_id} does not exist",
                }
                for index in unknown
            ],
        )
    found = {row.ord: BatchItem(row.status, _as_message(row)) for row in rows}  # type: ignore[arg-type]
    if lost := [number for number in range(1, len(items) + 1) if number not in found]:
        await _fill_lost_races(conn, conversation_id, items, lost, found)
    return [found[number] for number in range(1, len(items) + 1)]


async def _fill_lost_races(
    conn: Connection, conversation_id: int, items: Sequence[MessageCreate], lost: list[int], found: dict[int, BatchItem]
) -> None:
    """Items absent from add_messages' answer: the conversation is gone, or a concurrent request
    stored the same client_msg_id first (its row was invisible to our statement's snapshot)."""
    keys = [items[number - 1].client_msg_id for number in lost]
    winners = {
        stored.client_msg_id: stored
        for stored in await sql.get_messages_by_client_ids.many(
            conn, _StoredByKey, conversation_id=conversation_id, client_msg_ids=[k for k in keys if k is not None]
        )
    }
    for number, key in zip(lost, keys, strict=True):
        if key not in winners:
            raise NotFound(f"conversation {conversation_id} does not exist")
        found[number] = BatchItem("duplicate", _as_message(winners[key]))


def parse_fields(fields: str | None) -> frozenset[str] | None:
    """fields=a,b,c as a set of known names; None for every field. Unknown names are a 400."""
    if fields is None:
        return None
    names = [name.strip() for name in fields.split(",")]
    if unknown := [name for name in names if name not in FIELDS]:
        raise Invalid(
            f"unknown field(s) {', '.join(repr(n) for n in unknown)}; choose from {', '.join(FIELDS)}", field="fields"
        )
    return frozenset(names)


def _projected(query: Query, fields: frozenset[str] | None) -> Query:
    return query if fields is None else query.project(fields)


def _conversation_page_query(
    order: Literal["desc", "asc"], fields: frozenset[str] | None, after: list[Any] | None
) -> tuple[Query, dict[str, Any]]:
    """The page query for this order and projection, with the cursor's position as its parameters."""
    moment, message_id = (from_micros(after[0]), after[1]) if after else (None, None)
    if order == "desc":
        return _projected(sql.list_messages_newest_first, fields), {"before_ts": moment, "before_id": message_id}
    return _projected(sql.list_messages_oldest_first, fields), {"after_ts": moment, "after_id": message_id}


FieldsQuery = Annotated[
    str | None,
    QueryParameter(
        min_length=1,
        max_length=200,
        description=f"Comma-separated fields to return (the SQL selects only those): {', '.join(FIELDS)}",
    ),
]
Order = Annotated[Literal["desc", "asc"], QueryParameter(description="desc: newest first (default); asc: oldest first")]

_DUPLICATE = {200: ResponseSpec(data_container=Message, description="client_msg_id seen before: the stored message")}


class ConversationMessagesController(Controller):
    path = "/v1/conversations/{conversation_id:str}/messages"
    tags = ("messages",)

    @post(status_code=201, summary="Post a message", responses={**_DUPLICATE, **problem_responses(400, 404, 422)})
    async def create_message(
        self, conversation_id: PathId, data: JSONBody[MessageCreate], db: NamedDependency[Database]
    ) -> Response[Message]:
        async with db.connection() as conn:
            [item] = await add_messages(conn, conversation_id, [data], in_batch=False)
        return Response(item.message, status_code=201 if item.status == "created" else 200)

    @post(
        "/batch",
        status_code=201,
        summary="Post up to 1,000 messages at once",
        responses=problem_responses(400, 404, 422),
    )
    async def create_batch(
        self, conversation_id: PathId, data: JSONBody[MessageBatch], db: NamedDependency[Database]
    ) -> BatchResult:
        async with db.connection() as conn:
            return BatchResult(await add_messages(conn, conversation_id, data.messages, in_batch=True))

    @get(
        summary="Page through a conversation's messages",
        responses={200: ResponseSpec(data_container=Page[Message], description="A page")} | problem_responses(400, 404),
    )
    async def list_messages(
        self,
        conversation_id: PathId,
        db: NamedDependency[Database],
        cursors: NamedDependency[CursorCodec],
        order: Order = "desc",
        limit: Limit = DEFAULT_LIMIT,
        cursor: Cursor = None,
        offset: Offset = None,
        count: CountMode = "none",
        role: RoleQuery = None,
        since: TimeQuery = None,
        until: TimeQuery = None,
        fields: FieldsQuery = None,
    ) -> Response[bytes]:
        skip = one_paging_mode(cursor, offset)
        since, until = as_utc(since), as_utc(until)
        scope = f"messages:{conversation_id}:{order}:{role}:{since and to_micros(since)}:{until and to_micros(until)}"
        after = cursors.decode(cursor, scope, 2) if cursor else None
        query, position = _conversation_page_query(order, parse_fields(fields), after)
        filters: dict[str, Any] = {"conversation_id": conversation_id, "since": since, "until": until, "role": role}
        async with db.connection() as conn:
            page = await query.one(conn, JsonRows, **filters, **position, limit=limit, offset=skip)
            assert page is not None
            if page.items == b"[]" and not await conversations.sql.conversation_exists.val(
                conn, conversation_id=conversation_id
            ):
                raise NotFound(f"conversation {conversation_id} does not exist")
            total = await count_rows(conn, count, sql.count_messages, **filters)
        next_cursor = None
        if page.more and offset is None and page.last_timestamp is not None:
            next_cursor = cursors.encode(scope, to_micros(page.last_timestamp), page.last_id)
        return json_page(page.items, next_cursor, total)


class MessagesController(Controller):
    path = "/v1/messages"
    tags = ("messages",)

    @get("/{message_id:str}", summary="Get a message with its topics", responses=problem_responses(400, 404))
    async def get_message(
        self, message_id: PathId, db: NamedDependency[Database], fields: FieldsQuery = None
    ) -> Message:
        chosen = parse_fields(fields)
        async with db.connection() as conn:
            found = await _projected(sql.get_message, chosen).one(conn, Message, message_id=message_id)
        if found is None:
            raise NotFound(f"message {message_id} does not exist")
        return found

    @patch(
        "/{message_id:str}",
        summary="Edit a message's content, role, metadata or token count",
        responses=problem_responses(400, 404),
    )
    async def update_message(
        self, message_id: PathId, data: JSONBody[MessageUpdate], db: NamedDependency[Database]
    ) -> Message:
        if _nothing_to_change(data):
            raise Invalid(_GIVE_SOMETHING, field="content")
        check_metadata([data.metadata], lambda _: "metadata")
        tokens, estimated = token_count_of(data.content, data.token_count)
        async with db.connection() as conn:
            updated = await sql.update_message.one(
                conn,
                Message,
                message_id=message_id,
                content=data.content,
                role=data.role,
                metadata=data.metadata,
                token_count=tokens,
                token_count_estimated=estimated,
            )
        if updated is None:
            raise NotFound(f"message {message_id} does not exist")
        return updated

    @patch(summary="Edit many messages in one statement", responses=problem_responses(400, 404))
    async def update_messages(self, data: JSONBody[BulkUpdate], db: NamedDependency[Database]) -> BulkUpdated:
        _check_bulk_updates(data.updates)
        counts = [token_count_of(u.content, u.token_count) for u in data.updates]
        async with db.connection() as conn:
            outcome = await sql.update_messages.one(
                conn,
                _BulkOutcome,
                ids=[u.id for u in data.updates],
                contents=[u.content for u in data.updates],
                roles=[u.role for u in data.updates],
                metadata=[u.metadata for u in data.updates],
                token_counts=[tokens for tokens, _ in counts],
                token_counts_estimated=[estimated for _, estimated in counts],
            )
        assert outcome is not None
        if outcome.missing:
            raise NotFound(
                f"messages {', '.join(map(str, outcome.missing))} do not exist; nothing was written",
                errors=[{"field": "updates", "message": f"message {m} does not exist"} for m in outcome.missing],
            )
        return BulkUpdated(updated=outcome.updated)

    @delete("/{message_id:str}", summary="Delete a message", responses=problem_responses(400, 404))
    async def delete_message(self, message_id: PathId, db: NamedDependency[Database]) -> None:
        async with db.connection() as conn:
            deleted = await sql.delete_message.val(conn, message_id=message_id)
        if deleted is None:
            raise NotFound(f"message {message_id} does not exist")


_GIVE_SOMETHING = "give at least one of content, role, metadata, token_count"


def _nothing_to_change(update: MessageUpdate) -> bool:
    return update.content is None and update.role is None and update.metadata is None and update.token_count is None


def _check_bulk_updates(updates: Sequence[MessageUpdateItem]) -> None:
    check_metadata([u.metadata for u in updates], lambda i: f"updates[{i}].metadata")
    errors: list[dict[str, Any]] = []
    seen: set[int] = set()
    for index, update in enumerate(updates):
        if _nothing_to_change(update):
            errors.append({"field": f"updates[{index}]", "message": _GIVE_SOMETHING})
        if update.id in seen:
            errors.append({"field": f"updates[{index}].id", "message": f"message {update.id} appears twice"})
        seen.add(update.id)
    if errors:
        raise Invalid("; ".join(f"{e['field']}: {e['message']}" for e in errors), errors=errors)
