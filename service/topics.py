"""Topics: named tags on messages, created on first use; tag, untag, and list a topic's messages."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, delete, get, post, put
from litestar.di import NamedDependency
from litestar.params import JSONBody, QueryParameter

from service.cursors import NameKey
from service.db import Connection, Database, retrying_rollbacks
from service.errors import Invalid, NotFound, problem_responses
from service.fields import MAX_BATCH, NO_NUL, Id, PathId, TopicName, TopicNames
from service.pages import Page, Paging
from service.queries import Query, QueryFile
from service.topic_lists import NONE, TopicCache, TopicRef


class TopicQueries(QueryFile, file="topics"):
    create_topic: Query
    get_topic: Query
    list_topics: Query
    count_topics: Query
    tags_of_messages: Query
    topic_names: Query
    lock_message_for_tagging: Query
    replace_message_topics: Query
    add_message_topics: Query
    remove_message_topic: Query
    assign_topics: Query


sql = TopicQueries()


async def lists_of(conn: Connection, cache: TopicCache, rows: Sequence[Any], column: str | int) -> list[list[TopicRef]]:
    """The topics list (by name) of each row, whose ``column`` holds its message's topic ids
    (NULL or empty: none).

    A page's lookup is a dict access per message (the cache builds a list it has not seen);
    names the cache lacks are read with one statement.
    """
    lists, names = cache.lists, cache.names
    try:  # the common case: every topic's name known
        return [NONE if not (ids := row[column]) else lists[tuple(ids)] for row in rows]
    except KeyError:
        pass
    unseen = {topic_id for row in rows for topic_id in row[column] or () if topic_id not in names}
    names.update(await sql.topic_names.records(conn, topic_ids=list(unseen)))  # type: ignore[arg-type]
    return [NONE if not (ids := row[column]) else lists[tuple(ids)] for row in rows]


async def topics_of(conn: Connection, cache: TopicCache, message_ids: Sequence[int]) -> dict[int, list[TopicRef]]:
    """The topics of these messages that have some, by message id: one lookup for them all."""
    rows = await sql.tags_of_messages.records(conn, message_ids=message_ids)
    return dict(zip([row[0] for row in rows], await lists_of(conn, cache, rows, 1), strict=True))


class Topic(msgspec.Struct):
    id: int
    name: str
    created_at: datetime


class TopicWithCount(Topic):
    message_count: int


class TopicCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: TopicName


class TopicList(msgspec.Struct, forbid_unknown_fields=True):
    topics: TopicNames


class TopicAssignment(msgspec.Struct, forbid_unknown_fields=True):
    message_ids: Annotated[list[Id], msgspec.Meta(min_length=1, max_length=MAX_BATCH)]
    topics: Annotated[TopicNames, msgspec.Meta(min_length=1)]


class Assigned(msgspec.Struct):
    assigned: int


class _AssignOutcome(msgspec.Struct):
    assigned: int
    missing: list[int]


Prefix = Annotated[
    str | None,
    QueryParameter(min_length=1, max_length=100, pattern=NO_NUL, description="Only names starting with this"),
]


def prefix_range(prefix: str | None) -> tuple[str, str | None]:
    """The byte range [from, to) holding every name that starts with ``prefix``.

    UTF-8 orders like code points, so the first string past the prefix's range is the prefix with
    its last character incremented (dropping trailing U+10FFFF, which has no successor).
    """
    if not prefix:
        return "", None
    stem = prefix.rstrip(chr(0x10FFFF))
    if not stem:
        return prefix, None
    successor = ord(stem[-1]) + 1
    if 0xD800 <= successor <= 0xDFFF:  # surrogates are not characters; skip past them
        successor = 0xE000
    return prefix, stem[:-1] + chr(successor)


class TopicsController(Controller):
    path = "/v1/topics"
    tags = ("topics",)

    @post(status_code=201, summary="Create a topic", responses=problem_responses(400, 409))
    async def create_topic(self, data: JSONBody[TopicCreate], db: NamedDependency[Database]) -> Topic:
        async with db.connection() as conn:
            created = await sql.create_topic.one(conn, Topic, name=data.name)
        assert created is not None
        return created

    @get(summary="Topics by name; prefix= for autocomplete", responses=problem_responses(400))
    async def list_topics(
        self, db: NamedDependency[Database], paging: NamedDependency[Paging], prefix: Prefix = None
    ) -> Page[Topic]:
        scope = f"topics:{prefix}"
        after = paging.after(scope, NameKey)
        prefix_from, prefix_to = prefix_range(prefix)
        async with db.connection() as conn:
            rows = await sql.list_topics.many(
                conn,
                Topic,
                after_name=after and after.name,
                prefix_from=prefix_from,
                prefix_to=prefix_to,
                limit=paging.limit,
                offset=paging.offset,
            )
            total = await paging.total(conn, sql.count_topics, prefix_from=prefix_from, prefix_to=prefix_to)
        return paging.page(rows, scope, lambda i: NameKey(rows[i].name), total=total)

    @get("/{topic_id:str}", summary="Get a topic with its message count", responses=problem_responses(400, 404))
    async def get_topic(self, topic_id: PathId, db: NamedDependency[Database]) -> TopicWithCount:
        async with db.connection() as conn:
            found = await sql.get_topic.one(conn, TopicWithCount, topic_id=topic_id)
        if found is None:
            raise NotFound(f"topic {topic_id} does not exist")
        return found

    @post(
        "/assign",
        status_code=200,
        summary="Tag many messages with topics in one statement",
        responses=problem_responses(400, 422),
    )
    async def assign(self, data: JSONBody[TopicAssignment], db: NamedDependency[Database]) -> Assigned:
        async with db.connection() as conn:
            outcome = await retrying_rollbacks(
                conn,
                lambda: sql.assign_topics.one(conn, _AssignOutcome, message_ids=data.message_ids, topics=data.topics),
            )
        assert outcome is not None
        if outcome.missing:
            raise Invalid(
                f"messages {', '.join(map(str, outcome.missing))} do not exist; nothing was written",
                status=422,
                source="body",
                errors=[{"field": "message_ids", "message": f"message {m} does not exist"} for m in outcome.missing],
            )
        return Assigned(assigned=outcome.assigned)


class MessageTopicsController(Controller):
    path = "/v1/messages/{message_id:str}/topics"
    tags = ("topics",)

    @put(summary="Replace a message's topics", responses=problem_responses(400, 404))
    async def replace_topics(
        self, message_id: PathId, data: JSONBody[TopicList], db: NamedDependency[Database]
    ) -> list[TopicRef]:
        async with db.connection() as conn, conn.transaction():
            # Locked first, by a statement of its own: the replacement then sees every tag written
            # before it (sql/topics.sql), and the answer is its own set even under concurrent writes.
            locked = await sql.lock_message_for_tagging.val(conn, message_id=message_id)
            found = bool(locked) and await sql.replace_message_topics.val(
                conn, message_id=message_id, topics=data.topics
            )
            return await _topics_after_tagging(conn, db.topics, found, message_id)

    @post(status_code=200, summary="Add topics to a message", responses=problem_responses(400, 404))
    async def add_topics(
        self, message_id: PathId, data: JSONBody[TopicList], db: NamedDependency[Database]
    ) -> list[TopicRef]:
        async with db.connection() as conn:
            found = await sql.add_message_topics.val(conn, message_id=message_id, topics=data.topics)
            return await _topics_after_tagging(conn, db.topics, found, message_id)

    @delete("/{topic_id:str}", summary="Remove a topic from a message", responses=problem_responses(400, 404))
    async def remove_topic(self, message_id: PathId, topic_id: PathId, db: NamedDependency[Database]) -> None:
        async with db.connection() as conn:
            removed = await sql.remove_message_topic.val(conn, message_id=message_id, topic_id=topic_id)
        if removed is None:
            raise NotFound(f"message {message_id} has no topic {topic_id}")


async def _topics_after_tagging(conn: Connection, cache: TopicCache, found: bool, message_id: int) -> list[TopicRef]:
    if not found:
        raise NotFound(f"message {message_id} does not exist")
    return (await topics_of(conn, cache, [message_id])).get(message_id, [])
