"""Full-text search over message content and topic names (web-search syntax, ranked or recent)."""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import QueryParameter

from service.cursors import RankKey, TimeKey
from service.db import Connection, Database
from service.errors import Invalid, problem_responses
from service.fields import NO_NUL, RoleQuery, TimeQuery
from service.pages import Page, Paging
from service.queries import Query, QueryFile
from service.timestamps import as_utc, from_micros, to_micros
from service.topics import TopicRef, prefix_range, topics_of


class SearchQueries(QueryFile, file="search"):
    plan_for_these_values: Query
    search_messages_by_rank: Query
    search_messages_by_recent: Query
    count_matching_messages: Query
    search_topics: Query


sql = SearchQueries()

MAX_QUERY = 1000

SearchText = Annotated[
    str,
    QueryParameter(
        min_length=1,
        max_length=MAX_QUERY,
        pattern=NO_NUL,
        description='Web-search syntax: words, "quoted phrases", or, -excluded',
    ),
]
Sort = Annotated[
    Literal["rank", "recent"], QueryParameter(description="rank: best first (default); recent: newest first")
]
IdFilter = Annotated[int | None, QueryParameter(ge=1, le=2**63 - 1)]
TopicFilter = Annotated[str | None, QueryParameter(min_length=1, max_length=100, pattern=NO_NUL)]
TopicLimit = Annotated[int, QueryParameter(ge=1, le=50, description="Most topics to return, 1-50 (default 10)")]


class MessageHit(msgspec.Struct):
    """A message (its fields in the message's order) with its rank and highlight."""

    id: int
    conversation_id: int
    user_id: int
    role: str
    content: str
    timestamp: datetime
    edited_at: datetime | None
    topics: list[TopicRef]
    # ts_rank_cd of the message for this query (also given when sorted by recency).
    rank: float
    # The best fragments of the content with matches in <b>…</b> (plain text, not HTML-escaped).
    highlight: str


class TopicHit(msgspec.Struct):
    id: int
    name: str
    created_at: datetime
    message_count: int
    rank: float
    prefix_match: bool


def _scope(*parts: Any) -> str:
    # The query and filters can be long; the cursor carries a digest of them, which is enough to
    # refuse a cursor of another search.
    return "search:" + hashlib.sha256(msgspec.json.encode(parts)).hexdigest()[:24]


# A run of '-' (NOT) with only non-words between them: websearch_to_tsquery stacks one NOT per
# dash, and 32 of them overflow its operator stack ("tsquery stack too small", a 500).
_NOT_RUN = re.compile(r'-(?:[^\w"]*-)+')


def _search_text(q: str) -> str:
    """q as given to websearch_to_tsquery: never empty, and safe at any length up to MAX_QUERY.

    A run of NOTs is folded to what it means (an even count cancels out, an odd one is one NOT).
    """
    if not q.strip():
        raise Invalid("the search query is empty", field="q")
    return _NOT_RUN.sub(lambda run: " -" if run.group().count("-") % 2 else " ", q)


async def search_messages_txn(
    conn: Connection,
    names: dict[int, str],
    sort: Literal["rank", "recent"],
    filters: dict[str, Any],
    after: RankKey | TimeKey | None,
    paging: Paging,
) -> tuple[list[MessageHit], int | msgspec.UnsetType]:
    """One page of a search (and its total when asked), planned for its own values, in a read-only
    transaction of its own."""
    position: dict[str, Any]
    if sort == "rank":
        query = sql.search_messages_by_rank
        position = {"before_rank": after.rank if isinstance(after, RankKey) else None}
    else:
        query = sql.search_messages_by_recent
        position = {"before_ts": from_micros(after.micros) if isinstance(after, TimeKey) else None}
    async with conn.transaction(readonly=True):
        await sql.plan_for_these_values.val(conn)
        rows = await query.records(
            conn, **filters, **position, before_id=after and after.id, limit=paging.limit, offset=paging.offset
        )
        found = await topics_of(conn, names, [row[0] for row in rows])
        total = await paging.total(conn, sql.count_matching_messages, **filters)
    # A row is the message's seven columns, its rank and its highlight.
    hits = [MessageHit(*row[:7], found.get(row[0], []), *row[7:]) for row in rows]  # type: ignore[call-arg]
    return hits, total


class SearchController(Controller):
    path = "/v1/search"
    tags = ("search",)

    @get("/messages", summary="Full-text search over messages", responses=problem_responses(400))
    async def search_messages(
        self,
        q: SearchText,
        db: NamedDependency[Database],
        paging: NamedDependency[Paging],
        sort: Sort = "rank",
        conversation_id: IdFilter = None,
        user_id: IdFilter = None,
        topic: TopicFilter = None,
        role: RoleQuery = None,
        since: TimeQuery = None,
        until: TimeQuery = None,
    ) -> Page[MessageHit]:
        since, until = as_utc(since), as_utc(until)
        filters: dict[str, Any] = {
            "q": _search_text(q),
            "conversation_id": conversation_id,
            "user_id": user_id,
            "topic": topic,
            "role": role,
            "since": since,
            "until": until,
        }
        scope = _scope(
            sort, q, conversation_id, user_id, topic, role, since and to_micros(since), until and to_micros(until)
        )
        after: RankKey | TimeKey | None = (
            paging.after(scope, RankKey) if sort == "rank" else paging.after(scope, TimeKey)
        )
        async with db.connection() as conn:
            hits, total = await search_messages_txn(conn, db.topic_names, sort, filters, after, paging)

        def key(index: int) -> msgspec.Struct:
            hit = hits[index]
            return RankKey(hit.rank, hit.id) if sort == "rank" else TimeKey(to_micros(hit.timestamp), hit.id)

        return paging.page(hits, scope, key, total=total)

    @get("/topics", summary="Topic names by full text and prefix", responses=problem_responses(400))
    async def search_topics(
        self, q: SearchText, db: NamedDependency[Database], limit: TopicLimit = 10
    ) -> Page[TopicHit]:
        text = _search_text(q)
        prefix_from, prefix_to = prefix_range(q.strip())
        async with db.connection() as conn:
            rows = await sql.search_topics.many(
                conn, TopicHit, q=text, prefix_from=prefix_from, prefix_to=prefix_to, limit=limit
            )
        return Page(items=rows)
