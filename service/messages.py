"""Messages: post one or a batch (idempotent by client_msg_id), page through a conversation or a
topic, edit, delete.

Reads select plain columns (PostgreSQL finds rows; Python formats them): a row becomes a msgspec
Struct positionally, and its topics from the row's own copy of its topic ids (``topic_ids``,
migration 0030: the statement's ``topics`` part), named by the process's topic cache; rows without
it (a post's replayed duplicates) have theirs looked up, topics.topics_of. ``fields=`` projects
both the SQL's select list (dropping the topics part when topics are not asked for) and the Struct.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

import asyncpg
import msgspec
from litestar import Controller, Response, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import Example
from litestar.params import JSONBody, QueryParameter

from service import topics
from service.cursors import IdKey, TimeKey
from service.db import Connection, Database, retrying_rollbacks
from service.errors import Conflict, Invalid, NotFound, problem_responses
from service.fields import (
    MAX_BATCH,
    MAX_ID,
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
from service.pages import Page, Paging, rows_under_parent
from service.queries import Query, QueryFile
from service.timestamps import as_utc, from_micros, to_micros
from service.topic_lists import NONE, TopicCache, TopicRef


class MessageQueries(QueryFile, file="messages"):
    begin_adding_messages: Query
    insert_new_messages: Query
    get_messages_by_client_ids: Query
    get_message: Query
    list_messages_newest_first: Query
    list_messages_oldest_first: Query
    list_messages_around: Query
    count_messages: Query
    list_topic_messages: Query
    count_topic_messages: Query
    update_message: Query
    update_messages: Query
    delete_message: Query
    lock_conversation_of_message: Query
    restore_message: Query


sql = MessageQueries()


class Message(msgspec.Struct):
    """A message as the API shows it (its columns in the select list's order, then its topics)."""

    id: int
    conversation_id: int
    user_id: int
    role: Role
    content: str
    timestamp: datetime
    edited_at: datetime | None
    metadata: dict[str, Any]
    token_count: int
    # True when the writer sent no token_count and the service stored ceil(UTF-8 bytes / 4).
    token_count_estimated: bool
    topics: list[TopicRef] = msgspec.field(default_factory=list)


COLUMNS = tuple(name for name, _ in sql.get_message.columns)
# fields= chooses among these names: the message's columns and its topics.
FIELDS = (*COLUMNS, "topics")


@dataclass(frozen=True, slots=True)
class Shape:
    """What a read returns: every field, or those fields= names (the SQL then selects only those)."""

    struct: type[msgspec.Struct]
    columns: frozenset[str] | None  # None: every column
    topics: bool
    # Each query as this shape reads it, by label: projected once.
    _queries: dict[str, Query] = dataclasses.field(default_factory=dict, compare=False, repr=False)

    @property
    def width(self) -> int:
        """How many leading values of a row are the message's columns."""
        return len(COLUMNS) if self.columns is None else len(self.columns)

    def query(self, query: Query, *, window: bool = False) -> Query:
        """``query`` selecting this shape's columns, and of its parts: topics (the rows' topic_ids)
        only when asked for; sort_ts only when "timestamp" is not selected (the time sort key is
        then that column: see time_of); window (each row's token count and role) with ``window``."""
        key = f"{query.label} window" if window else query.label
        projected = self._queries.get(key)
        if projected is None:
            columns = frozenset(COLUMNS) if self.columns is None else self.columns
            parts = ({"topics"} if self.topics else set()) | ({"sort_ts"} if "timestamp" not in columns else set())
            if window:
                parts.add("window")
            projected = self._queries[key] = query.project(columns | (parts & query.parts))
        return projected

    async def build(self, conn: Connection, cache: TopicCache, rows: Sequence[Any], id_column: str | int) -> list[Any]:
        """Structs from rows, with topics when asked for: from the rows' own ``topic_ids`` when the
        statement selected them (its topics part), else from one lookup for the message ids in
        ``id_column`` (``cache``: the database's TopicCache)."""
        struct, width = self.struct, self.width
        if not (self.topics and rows):
            return [struct(*row[:width]) for row in rows]
        # Rows sliced to plain tuples have no column names: "in" would look among their values.
        if isinstance(rows[0], asyncpg.Record) and "topic_ids" in rows[0]:
            column = list(rows[0].keys()).index("topic_ids")
            cached, none = cache.lists, NONE
            try:  # in one pass, while every topic's name is known (else lists_of reads the names)
                return [struct(*row[:width], cached[tuple(ids)] if (ids := row[column]) else none) for row in rows]
            except KeyError:
                lists = await topics.lists_of(conn, cache, rows, column)
        else:
            ids = [row[id_column] for row in rows]
            found = await topics.topics_of(conn, cache, ids)
            lists = [found.get(message_id, NONE) for message_id in ids]
        return [struct(*row[:width], refs) for row, refs in zip(rows, lists, strict=True)]


FULL = Shape(Message, None, topics=True)


@functools.lru_cache(maxsize=256)
def _shape(names: frozenset[str]) -> Shape:
    chosen = [field for field in msgspec.structs.fields(Message) if field.name in names]
    struct = msgspec.defstruct(
        "Message",
        [
            (field.name, field.type, msgspec.field(default_factory=list))
            if field.name == "topics"
            else (field.name, field.type)
            for field in chosen
        ],
    )
    return Shape(struct, frozenset(names) - {"topics"}, topics="topics" in names)


def parse_fields(fields: str | None) -> Shape:
    """fields=a,b,c as the shape to read; every field without it. Unknown names are a 400."""
    if fields is None:
        return FULL
    names = [name.strip() for name in fields.split(",")]
    if unknown := [name for name in names if name not in FIELDS]:
        raise Invalid(
            f"unknown field(s) {', '.join(repr(n) for n in unknown)}; choose from {', '.join(FIELDS)}",
            field="fields",
            source="query",
        )
    return _shape(frozenset(names))


async def with_topics(conn: Connection, cache: TopicCache, rows: Sequence[Any]) -> list[Message]:
    """Full messages from rows that hold the message's columns first (and its id first of all)."""
    return await FULL.build(conn, cache, rows, 0)


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


class _Restored(msgspec.Struct):
    conversation_deleted: bool
    restored: bool


class _BulkOutcome(msgspec.Struct):
    updated: int
    missing: list[int]


def estimate_tokens(content: str) -> int:
    """The stored estimate when a writer sends no count: ceil(UTF-8 bytes / 4), the formula of the
    database's token_estimate() (migration message_metadata_columns), which old rows got."""
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
        if value and (problem := metadata_problem(value)) is not None
    ]
    if errors:
        raise Invalid("; ".join(f"{e['field']}: {e['message']}" for e in errors), source="body", errors=errors)


async def add_messages(
    conn: Connection, cache: TopicCache, conversation_id: int, items: Sequence[MessageCreate], *, in_batch: bool
) -> list[BatchItem]:
    """Store items all-or-nothing; every item comes back created or as the duplicate it repeats.

    Raises Invalid (422) naming items whose user_id does not exist, Conflict naming items whose
    client_msg_id belongs to a deleted message, NotFound for an unknown conversation; in each case
    nothing is written.
    """
    check_metadata([item.metadata for item in items], lambda i: f"messages[{i}].metadata" if in_batch else "metadata")
    # Run again when a concurrent request stored one of our client_msg_ids first (begin_adding_messages'
    # snapshot predates its commit), or created new topics in another order (a deadlock): the
    # transaction is rolled back whole, and run again it sees the other request's rows.
    return await retrying_rollbacks(
        conn,
        lambda: _add(conn, cache, conversation_id, items, in_batch=in_batch),
        lost_race=lambda error: getattr(error, "constraint_name", None) == _CLIENT_MSG_ID_INDEX,
    )


class _Begun(msgspec.Struct):
    """begin_adding_messages' row."""

    owner: int | None
    now: datetime
    unknown_users: list[int]
    stored_keys: list[str]
    stored_deleted: list[bool]
    ids: list[int]
    topic_ids: list[int]
    topic_names: list[str]
    metadata: list[dict[str, Any]]
    tagging: bool


_CLIENT_MSG_ID_INDEX = "idx_message_client_msg_id"


async def _add(
    conn: Connection, cache: TopicCache, conversation_id: int, items: Sequence[MessageCreate], *, in_batch: bool
) -> list[BatchItem]:
    """add_messages' transaction: one statement to lock and look, one to write the new messages and
    their tags; the answer is built from the items and that first statement's answer, not read
    back (duplicates of stored messages are read, with one more statement)."""
    first_of_key: dict[str, int] = {}
    for index, item in enumerate(items):
        if item.client_msg_id is not None:
            first_of_key.setdefault(item.client_msg_id, index)
    # Items that are not repeats of an earlier item's client_msg_id, and those of them with metadata.
    leading = [i for i, item in enumerate(items) if item.client_msg_id is None or first_of_key[item.client_msg_id] == i]
    with_metadata = [i for i in leading if items[i].metadata]
    tags = [(name, items[i].client_msg_id) for i in leading for name in dict.fromkeys(items[i].topics)]
    begun = await sql.begin_adding_messages.one(
        conn,
        _Begun,
        conversation_id=conversation_id,
        user_ids=list({item.user_id for item in items if item.user_id is not None}),
        client_msg_ids=list(first_of_key),
        fresh=len(leading),
        topic_names=[name for name, _ in tags],
        topic_keys=[key for _, key in tags],
        metadata=[items[i].metadata for i in with_metadata],
    )
    assert begun is not None
    if begun.unknown_users:
        unknown = set(begun.unknown_users)
        raise Invalid(
            "user_id names a user that does not exist; nothing was written",
            status=422,
            source="body",
            errors=[
                {
                    "field": f"messages[{index}].user_id" if in_batch else "user_id",
                    "message": f"user {item.user_id} does not exist",
                }
                for index, item in enumerate(items)
                if item.user_id in unknown
            ],
        )
    stored = dict(zip(begun.stored_keys, begun.stored_deleted, strict=True))
    if deleted := [i for i, item in enumerate(items) if stored.get(item.client_msg_id or "", False)]:
        raise _deleted_duplicate(items, deleted, in_batch=in_batch)
    if begun.owner is None:
        raise NotFound(f"conversation {conversation_id} does not exist")
    fresh = [i for i in leading if items[i].client_msg_id not in stored]
    created = _new_messages(conversation_id, begun, items, fresh, dict(zip(with_metadata, begun.metadata, strict=True)))
    if created:
        await _insert(conn, cache, conversation_id, begun, [(created[i], items[i]) for i in fresh])
    replayed = await _stored_messages(conn, cache, conversation_id, list(stored))
    answer = []
    for index, item in enumerate(items):
        if index in created:
            answer.append(BatchItem("created", created[index]))
            continue
        # A duplicate: of a stored message, or of the item that first carried this client_msg_id.
        key = item.client_msg_id
        assert key is not None
        answer.append(BatchItem("duplicate", replayed[key] if key in replayed else created[first_of_key[key]]))
    return answer


def _new_messages(
    conversation_id: int,
    begun: _Begun,
    items: Sequence[MessageCreate],
    fresh: list[int],
    metadata: dict[int, dict[str, Any]],
) -> dict[int, Message]:
    """The messages to store for the fresh items (by item index), as a read of them will show them."""
    assert begun.owner is not None
    assert len(fresh) == len(begun.ids)
    created = {}
    for index, message_id in zip(fresh, begun.ids, strict=True):
        item = items[index]
        tokens, estimated = token_count_of(item.content, item.token_count)
        assert tokens is not None
        assert estimated is not None
        created[index] = Message(
            message_id,
            conversation_id,
            begun.owner if item.user_id is None else item.user_id,
            item.role,
            item.content,
            begun.now,
            None,
            metadata.get(index, item.metadata),
            tokens,
            estimated,
        )
    return created


async def _insert(
    conn: Connection,
    cache: TopicCache,
    conversation_id: int,
    begun: _Begun,
    new: list[tuple[Message, MessageCreate]],
) -> None:
    """Writes the new messages with their tags in one statement (insert_new_messages), and lists
    each one's topics, by name, from the topics begin_adding_messages found or created."""
    cache.names.update(zip(begun.topic_ids, begun.topic_names, strict=True))
    ids = dict(zip(begun.topic_names, begun.topic_ids, strict=True))
    # Messages of a batch often carry the same topics: one lookup for each set of names.
    by_names: dict[tuple[str, ...], list[TopicRef]] = {}
    tags: list[tuple[int, int]] = []
    for message, item in new:
        names = tuple(item.topics)
        refs = by_names.get(names)
        if refs is None:
            refs = by_names[names] = cache.lists[tuple(sorted({ids[name] for name in names}))]
        message.topics = refs
        tags.extend((topic.id, message.id) for topic in refs)
    # begin_adding_messages told the trigger on these tags to expect them exactly when there are some.
    assert begun.tagging == bool(tags)
    await sql.insert_new_messages.exec(
        conn,
        conversation_id=conversation_id,
        ids=[m.id for m, _ in new],
        user_ids=[m.user_id for m, _ in new],
        roles=[m.role for m, _ in new],
        contents=[m.content for m, _ in new],
        client_msg_ids=[item.client_msg_id for _, item in new],
        metadata=[m.metadata for m, _ in new],
        token_counts=[m.token_count for m, _ in new],
        token_counts_estimated=[m.token_count_estimated for m, _ in new],
        topic_ids=[topic_id for topic_id, _ in tags],
        message_ids=[message_id for _, message_id in tags],
    )


async def _stored_messages(
    conn: Connection, cache: TopicCache, conversation_id: int, keys: list[str]
) -> dict[str, Message]:
    """The stored messages (live: deleted ones were refused) these client_msg_ids name, with their topics."""
    if not keys:
        return {}
    rows = await sql.get_messages_by_client_ids.records(conn, conversation_id=conversation_id, client_msg_ids=keys)
    # A row is (client_msg_id, deleted, the message's columns…).
    return dict(zip([row[0] for row in rows], await with_topics(conn, cache, [row[2:] for row in rows]), strict=True))


def _deleted_duplicate(items: Sequence[MessageCreate], indexes: list[int], *, in_batch: bool) -> Conflict:
    """A client_msg_id whose message was deleted: replaying it would show a deleted message, and
    storing it again would write twice; the caller restores that message or uses a new id."""
    return Conflict(
        "client_msg_id names a deleted message (restore it, or post with a new client_msg_id); nothing was written",
        errors=[
            {
                "field": f"messages[{index}].client_msg_id" if in_batch else "client_msg_id",
                "message": f"{items[index].client_msg_id!r} belongs to a deleted message",
                "source": "body",
            }
            for index in indexes
        ],
    )


def page_position(order: Literal["desc", "asc"], after: TimeKey | None) -> dict[str, Any]:
    """A time-ordered page statement's keyset parameters walking ``order`` from just past
    ``after`` (None: from the start)."""
    moment, message_id = (from_micros(after.micros), after.id) if after else (None, None)
    if order == "desc":
        return {"before_ts": moment, "before_id": message_id}
    return {"after_ts": moment, "after_id": message_id}


def _conversation_page_query(order: Literal["desc", "asc"], after: TimeKey | None) -> tuple[Query, dict[str, Any]]:
    """The page query for this order, with the cursor's position as its parameters."""
    query = sql.list_messages_newest_first if order == "desc" else sql.list_messages_oldest_first
    return query, page_position(order, after)


async def read_page(
    db: Database, conn: Connection, paging: Paging, scope: str, shape: Shape, query: Query, /, **params: Any
) -> Page[Any] | None:
    """A page of a parent's messages in id order (a topic's); None when there is no parent.

    The query's rows end in the sort key, ``sort_id``. (A conversation's pages, in time order and
    both ways, are ConversationList's.)
    """
    rows = rows_under_parent(
        await shape.query(query).records(conn, **params, limit=paging.limit, offset=paging.offset), "sort_id"
    )
    if rows is None:
        return None
    items = await shape.build(conn, db.topics, rows, "sort_id")
    return paging.page(items, scope, lambda index: IdKey(rows[index]["sort_id"]))


class MessagePage(Page[Message]):
    # The page just before this one in the list's order, to pass as cursor= (a conversation's
    # pages reached by a cursor, and around= pages); null at the start of the list.
    prev_cursor: str | None = None


def time_key(row: asyncpg.Record, *, before: bool = False) -> TimeKey:
    return TimeKey(to_micros(time_of(row)), row["sort_id"], before)


def around_halves(limit: int) -> tuple[int, int]:
    """How many of an anchored page's ``limit`` messages come before its anchor in the list's
    order and how many after (the extra one of an even limit after)."""
    before = (limit - 1) // 2
    return before, limit - 1 - before


def around_rows(limit: int, order: Literal["desc", "asc"]) -> dict[str, int]:
    """list_messages_around's row counts for each side: its half, and one more that says whether
    more follow (newest first, the newer side comes before the anchor)."""
    before, after = around_halves(limit)
    if order == "desc":
        return {"newer_rows": before + 1, "older_rows": after + 1}
    return {"older_rows": before + 1, "newer_rows": after + 1}


def time_of(row: asyncpg.Record) -> datetime:
    """A page row's time sort key: its sort_ts when the statement selects one (fields= without
    timestamp), else its timestamp."""
    moment: datetime = row["sort_ts"] if "sort_ts" in row else row["timestamp"]
    return moment


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs each page a call per field
class ConversationList:
    """One request's view of a conversation's messages: its order, filters, fields and paging.

    Its pages page both ways: each carries next_cursor and prev_cursor, and a prev_cursor (a
    TimeKey with ``before``) is read walking the other way and turned round.
    """

    db: Database
    paging: Paging
    scope: str
    shape: Shape
    order: Literal["desc", "asc"]
    filters: dict[str, Any]

    async def page(self, conn: Connection) -> MessagePage | None:
        """The first page, or the one the cursor points to; None: no such conversation."""
        paging = self.paging
        after = paging.after(self.scope, TimeKey)
        backward = after is not None and after.before
        walk = ("asc" if self.order == "desc" else "desc") if backward else self.order
        query, position = _conversation_page_query(walk, after)
        found = rows_under_parent(
            await self.shape.query(query).records(
                conn, **self.filters, **position, limit=paging.limit, offset=paging.offset
            ),
            "sort_id",
        )
        if found is None:
            return None
        more = len(found) > paging.limit
        rows = found[: paging.limit][:: -1 if backward else 1]
        # Going forward from a cursor, the rows before this page exist (at least the previous page).
        return await self._envelope(
            conn, rows, more_before=more if backward else after is not None, more_after=backward or more
        )

    async def around(self, conn: Connection, message_id: int) -> MessagePage | None:
        """Up to ``limit`` messages centred on ``message_id`` in the list's order: half before it,
        half after, the other side filling in where one runs short. None: no such conversation."""
        wanted_before, wanted_after = around_halves(self.paging.limit)
        rows = await self.shape.query(sql.list_messages_around).records(
            conn, **self.filters, around=message_id, **around_rows(self.paging.limit, self.order)
        )
        if not rows:
            # Which 404: the conversation's first page (of one row) tells whether it exists.
            query, position = _conversation_page_query(self.order, None)
            first = await self.shape.query(query).records(conn, **self.filters, **position, limit=0, offset=0)
            if rows_under_parent(first, "sort_id") is None:
                return None
            raise NotFound(f"message {message_id} is not in conversation {self.filters['conversation_id']}")
        [anchor] = [row for row in rows if row["side"] == 0]
        if not anchor["listed"]:
            raise Invalid(
                f"message {message_id} is in the conversation but outside this list's role, since or until",
                field="around",
                source="query",
                status=422,
            )
        # Each side ordered by its distance from the anchor, nearest first (rows come oldest first).
        newer = [row for row in rows if row["side"] == 1]
        older = [row for row in rows if row["side"] == -1][::-1]
        leading, trailing = (newer, older) if self.order == "desc" else (older, newer)
        # Near an end of the list one side runs short and the other fills in: read on from that
        # side's farthest row, as the page beyond it (rarely needed, so not paid on every page).
        if len(leading) < wanted_before and len(trailing) > wanted_after:
            trailing += await self._beyond(conn, trailing[-1], self.order, wanted_before - len(leading))
        elif len(trailing) < wanted_after and len(leading) > wanted_before:
            backward: Literal["desc", "asc"] = "asc" if self.order == "desc" else "desc"
            leading += await self._beyond(conn, leading[-1], backward, wanted_after - len(trailing))
        take_before = min(len(leading), wanted_before + max(0, wanted_after - len(trailing)))
        take_after = min(len(trailing), wanted_after + max(0, wanted_before - len(leading)))
        page_rows = [*leading[:take_before][::-1], anchor, *trailing[:take_after]]
        return await self._envelope(
            conn, page_rows, more_before=len(leading) > take_before, more_after=len(trailing) > take_after
        )

    async def _beyond(
        self, conn: Connection, row: asyncpg.Record, walk: Literal["desc", "asc"], count: int
    ) -> list[asyncpg.Record]:
        """Up to ``count`` + 1 rows after ``row`` walking ``walk``, nearest first."""
        query, position = _conversation_page_query(walk, time_key(row))
        found = await self.shape.query(query).records(conn, **self.filters, **position, limit=count, offset=0)
        return rows_under_parent(found, "sort_id") or []

    async def _envelope(
        self, conn: Connection, rows: Sequence[asyncpg.Record], *, more_before: bool, more_after: bool
    ) -> MessagePage:
        items = await self.shape.build(conn, self.db.topics, rows, "sort_id")
        if not rows:
            return MessagePage(items=items)
        first, last = time_key(rows[0], before=True), time_key(rows[-1])
        return MessagePage(
            items=items,
            next_cursor=self.paging.cursor_to(self.scope, last) if more_after else None,
            prev_cursor=self.paging.cursor_to(self.scope, first) if more_before else None,
        )


_FIELD_NAME = f"(?:{'|'.join(FIELDS)})"
FieldsQuery = Annotated[
    str | None,
    QueryParameter(
        min_length=1,
        max_length=200,
        pattern=f"^{_FIELD_NAME}(?:,{_FIELD_NAME})*$",
        description=f"Comma-separated fields to return (the SQL selects only those): {', '.join(FIELDS)}",
    ),
]
Order = Annotated[Literal["desc", "asc"], QueryParameter(description="desc: newest first (default); asc: oldest first")]
Around = Annotated[
    int | None,
    QueryParameter(
        ge=1,
        le=MAX_ID,
        description="A message id: the page is centred on it (half before, half after), with prev_cursor and "
        "next_cursor to page outward; not with cursor or offset",
        examples=[Example(summary="The page around message 958", value=958)],
    ),
]

_DUPLICATE = {200: ResponseSpec(data_container=Message, description="client_msg_id seen before: the stored message")}


class ConversationMessagesController(Controller):
    path = "/v1/conversations/{conversation_id:str}/messages"
    tags = ("messages",)

    @post(status_code=201, summary="Post a message", responses={**_DUPLICATE, **problem_responses(400, 404, 422)})
    async def create_message(
        self, conversation_id: PathId, data: JSONBody[MessageCreate], db: NamedDependency[Database]
    ) -> Response[Message]:
        async with db.connection() as conn:
            [item] = await add_messages(conn, db.topics, conversation_id, [data], in_batch=False)
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
            return BatchResult(await add_messages(conn, db.topics, conversation_id, data.messages, in_batch=True))

    @get(summary="Page through a conversation's messages", responses=problem_responses(400, 404))
    async def list_messages(
        self,
        conversation_id: PathId,
        db: NamedDependency[Database],
        paging: NamedDependency[Paging],
        order: Order = "desc",
        role: RoleQuery = None,
        since: TimeQuery = None,
        until: TimeQuery = None,
        fields: FieldsQuery = None,
        around: Around = None,
    ) -> MessagePage:
        since, until = as_utc(since, "since"), as_utc(until, "until")
        filters: dict[str, Any] = {"conversation_id": conversation_id, "since": since, "until": until, "role": role}
        scope = f"messages:{conversation_id}:{order}:{role}:{since and to_micros(since)}:{until and to_micros(until)}"
        if around is not None and (paging.cursor is not None or not paging.keyset):
            raise Invalid("around starts a page of its own: not with cursor or offset", field="around", source="query")
        async with db.connection() as conn:
            listing = ConversationList(db, paging, scope, parse_fields(fields), order, filters)
            page = await (listing.page(conn) if around is None else listing.around(conn, around))
            if page is None:
                raise NotFound(f"conversation {conversation_id} does not exist")
            page.total = await paging.total(conn, sql.count_messages, **filters)
        return page


class TopicMessagesController(Controller):
    path = "/v1/topics/{topic_id:str}/messages"
    tags = ("topics",)

    @get(summary="A topic's messages, newest first", responses=problem_responses(400, 404))
    async def list_topic_messages(
        self,
        topic_id: PathId,
        db: NamedDependency[Database],
        paging: NamedDependency[Paging],
        fields: FieldsQuery = None,
    ) -> Page[Message]:
        scope = f"topic-messages:{topic_id}"
        after = paging.after(scope, IdKey)
        async with db.connection() as conn:
            page = await read_page(
                db,
                conn,
                paging,
                scope,
                parse_fields(fields),
                sql.list_topic_messages,
                topic_id=topic_id,
                before_id=after and after.id,
            )
            if page is None:
                raise NotFound(f"topic {topic_id} does not exist")
            page.total = await paging.total(conn, sql.count_topic_messages, topic_id=topic_id)
        return page


class MessagesController(Controller):
    path = "/v1/messages"
    tags = ("messages",)

    @get("/{message_id:str}", summary="Get a message with its topics", responses=problem_responses(400, 404))
    async def get_message(
        self, message_id: PathId, db: NamedDependency[Database], fields: FieldsQuery = None
    ) -> Message:
        shape = parse_fields(fields)
        async with db.connection() as conn:
            rows = await shape.query(sql.get_message).records(conn, message_id=message_id)
            if not rows:
                raise NotFound(f"message {message_id} does not exist")
            [message] = await shape.build(conn, db.topics, rows, "id")
        return message  # type: ignore[no-any-return]

    @patch(
        "/{message_id:str}",
        summary="Edit a message's content, role, metadata or token count",
        responses=problem_responses(400, 404),
    )
    async def update_message(
        self, message_id: PathId, data: JSONBody[MessageUpdate], db: NamedDependency[Database]
    ) -> Message:
        if _nothing_to_change(data):
            raise Invalid(_GIVE_SOMETHING, field="content", source="body")
        check_metadata([data.metadata], lambda _: "metadata")
        tokens, estimated = token_count_of(data.content, data.token_count)
        async with db.connection() as conn:
            row = await sql.update_message.records(
                conn,
                message_id=message_id,
                content=data.content,
                role=data.role,
                metadata=data.metadata,
                token_count=tokens,
                token_count_estimated=estimated,
            )
            if not row:
                raise NotFound(f"message {message_id} does not exist")
            [message] = await with_topics(conn, db.topics, row)
        return message

    @patch(summary="Edit many messages in one statement", responses=problem_responses(400, 404))
    async def update_messages(self, data: JSONBody[BulkUpdate], db: NamedDependency[Database]) -> BulkUpdated:
        _check_bulk_updates(data.updates)
        counts = [token_count_of(u.content, u.token_count) for u in data.updates]
        async with db.connection() as conn:
            outcome = await retrying_rollbacks(
                conn,
                lambda: sql.update_messages.one(
                    conn,
                    _BulkOutcome,
                    ids=[u.id for u in data.updates],
                    contents=[u.content for u in data.updates],
                    roles=[u.role for u in data.updates],
                    metadata=[u.metadata for u in data.updates],
                    token_counts=[tokens for tokens, _ in counts],
                    token_counts_estimated=[estimated for _, estimated in counts],
                ),
            )
        assert outcome is not None
        if outcome.missing:
            raise NotFound(
                f"messages {', '.join(map(str, outcome.missing))} do not exist; nothing was written",
                errors=[
                    {"field": "updates", "message": f"message {m} does not exist", "source": "body"}
                    for m in outcome.missing
                ],
            )
        return BulkUpdated(updated=outcome.updated)

    @delete(
        "/{message_id:str}",
        summary="Delete a message (restorable for FREYA_RETENTION_DAYS)",
        responses=problem_responses(400, 404),
    )
    async def delete_message(self, message_id: PathId, db: NamedDependency[Database]) -> None:
        async with db.connection() as conn:
            deleted = await sql.delete_message.val(conn, message_id=message_id)
        if deleted is None:
            raise NotFound(f"message {message_id} does not exist")

    @post(
        "/{message_id:str}/restore",
        status_code=200,
        summary="Restore a deleted message with its topics (a live one is answered as it is)",
        responses=problem_responses(400, 404, 409),
    )
    async def restore_message(self, message_id: PathId, db: NamedDependency[Database]) -> Message:
        async with db.connection() as conn, conn.transaction():
            # Its conversation locked by a statement of its own first (as restoring a conversation
            # does: sql/conversations.sql), so the restore and the read see every delete before.
            if await sql.lock_conversation_of_message.val(conn, message_id=message_id) is None:
                raise NotFound(f"message {message_id} does not exist (or was purged)")
            outcome = await sql.restore_message.one(conn, _Restored, message_id=message_id)
            assert outcome is not None
            if outcome.conversation_deleted:
                raise Conflict(f"message {message_id} belongs to a deleted conversation: restore the conversation")
            rows = await sql.get_message.records(conn, message_id=message_id)
            [message] = await with_topics(conn, db.topics, rows)  # locked, and live now
        return message


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
        raise Invalid("; ".join(f"{e['field']}: {e['message']}" for e in errors), source="body", errors=errors)
