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

from service.cursors import CursorCodec
from service.db import Connection, Database, Query, QueryFile
from service.errors import Invalid, problem_responses
from service.fields import NO_NUL, RoleQuery, TimeQuery
from service.messages import TopicRef
from service.pages import DEFAULT_LIMIT, Cursor, Limit, Page, page_of
from service.timestamps import as_utc, from_micros, to_micros
from service.topics import prefix_range


class SearchQueries(QueryFile, file="search"):
    plan_for_these_values: Query
    search_messages_by_rank: Query
    search_messages_by_recent: Query
    search_facets: Query
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


class FacetCount(msgspec.Struct):
    value: str
    count: int


class Facets(msgspec.Struct):
    """Counts over every match of the search (not only the page); only the facets asked for."""

    # The 20 most frequent topics among the matches, then by name.
    topic: list[FacetCount] | msgspec.UnsetType = msgspec.UNSET
    role: list[FacetCount] | msgspec.UnsetType = msgspec.UNSET


class SearchPage(msgspec.Struct):
    items: list[MessageHit]
    next_cursor: str | None = None
    # Present only with facets=.
    facets: Facets | msgspec.UnsetType = msgspec.UNSET


class _FacetRow(msgspec.Struct):
    facet: Literal["topic", "role"]
    value: str
    count: int


FACETS = ("topic", "role")
FacetsQuery = Annotated[
    str | None,
    QueryParameter(
        min_length=1,
        max_length=20,
        description="Comma-separated facets to count over all matches: topic, role",
    ),
]


def parse_facets(facets: str | None) -> frozenset[str]:
    if facets is None:
        return frozenset()
    names = [name.strip() for name in facets.split(",")]
    if unknown := [name for name in names if name not in FACETS]:
        raise Invalid(f"unknown facet(s) {', '.join(map(repr, unknown))}; choose from topic, role", field="facets")
    return frozenset(names)


# Web-search syntax as websearch_to_tsquery reads it: a "quoted phrase" (an unclosed quote runs to
# the end), possibly negated by a leading -, the word `or`, or any other run of text.
_SYNTAX = re.compile(r'(?P<negated>-?)"(?P<phrase>[^"]*)"?|(?P<other>[^\s"]+)')
_WORD = re.compile(r"\w+")


def phrase_patterns(q: str) -> list[str]:
    r"""Case-insensitive PostgreSQL regular expressions, one per quoted phrase that every match must contain.

    websearch_to_tsquery drops stop words, so "over the harbor" alone would find any message with
    "harbor". The GIN index still narrows the candidates with that query; these patterns (passed
    as parameter values, never spliced into SQL) then demand the phrase's words in order, whole,
    with only non-word characters between them: \mover\M\W+\mthe\M\W+\mharbor\M. Phrases
    next to `or` or negated keep websearch_to_tsquery's meaning (a pattern cannot express them
    from outside the tsquery).
    """
    tokens = [
        (match.group("phrase"), bool(match.group("negated")), (match.group("other") or "").lower())
        for match in _SYNTAX.finditer(q)
    ]
    patterns = []
    for index, (phrase, negated, _) in enumerate(tokens):
        if phrase is None or negated:
            continue
        beside = {tokens[i][2] for i in (index - 1, index + 1) if 0 <= i < len(tokens)}
        words = _WORD.findall(phrase)
        if words and "or" not in beside:
            patterns.append("\\W+".join(f"\\m{word}\\M" for word in words))
    return patterns


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


def _require_words(q: str) -> str:
    if not q.strip():
        raise Invalid("the search query is empty", field="q")
    return q


async def search_messages_txn(
    conn: Connection,
    sort: Literal["rank", "recent"],
    filters: dict[str, Any],
    after: list[Any] | None,
    limit: int,
    facets: frozenset[str],
) -> tuple[list[MessageHit], Facets | msgspec.UnsetType]:
    """One search, planned for its own values, in a read-only transaction of its own; its facets
    are a second statement, run only when asked for."""
    after_key, after_id = after if after else (None, None)
    if sort == "rank":
        query, position = sql.search_messages_by_rank, {"before_rank": after_key}
    else:
        query, position = sql.search_messages_by_recent, {"before_ts": from_micros(after_key)}
    async with conn.transaction(readonly=True):
        await sql.plan_for_these_values.val(conn)
        hits = await query.many(conn, MessageHit, **filters, **position, before_id=after_id, limit=limit)
        if not facets:
            return hits, msgspec.UNSET
        counts: dict[str, list[FacetCount]] = {name: [] for name in facets}
        for row in await sql.search_facets.many(
            conn, _FacetRow, **filters, with_roles="role" in facets, with_topics="topic" in facets
        ):
            counts[row.facet].append(FacetCount(row.value, row.count))
        return hits, Facets(**counts)


class SearchController(Controller):
    path = "/v1/search"
    tags = ("search",)

    @get("/messages", summary="Full-text search over messages", responses=problem_responses(400))
    async def search_messages(
        self,
        q: SearchText,
        db: NamedDependency[Database],
        cursors: NamedDependency[CursorCodec],
        sort: Sort = "rank",
        limit: Limit = DEFAULT_LIMIT,
        cursor: Cursor = None,
        conversation_id: IdFilter = None,
        user_id: IdFilter = None,
        topic: TopicFilter = None,
        role: RoleQuery = None,
        since: TimeQuery = None,
        until: TimeQuery = None,
        facets: FacetsQuery = None,
    ) -> SearchPage:
        since, until = as_utc(since), as_utc(until)
        filters: dict[str, Any] = {
            "q": _require_words(q),
            "conversation_id": conversation_id,
            "user_id": user_id,
            "topic": topic,
            "role": role,
            "since": since,
            "until": until,
            "phrases": phrase_patterns(q),
        }
        wanted = parse_facets(facets)
        scope = _scope(
            sort, q, conversation_id, user_id, topic, role, since and to_micros(since), until and to_micros(until)
        )
        position = cursors.decode(cursor, scope, 2) if cursor else None
        async with db.connection() as conn:
            rows, counted = await search_messages_txn(conn, sort, filters, position, limit + 1, wanted)

        def after(last: MessageHit) -> str:
            key = last.rank if sort == "rank" else to_micros(last.timestamp)
            return cursors.encode(scope, key, last.id)

        page = page_of(rows, limit, after, msgspec.UNSET)
        return SearchPage(items=page.items, next_cursor=page.next_cursor, facets=counted)

    @get("/topics", summary="Topic names by full text and prefix", responses=problem_responses(400))
    async def search_topics(
        self, q: SearchText, db: NamedDependency[Database], limit: TopicLimit = 10
    ) -> Page[TopicHit]:
        prefix_from, prefix_to = prefix_range(_require_words(q).strip())
        async with db.connection() as conn:
            rows = await sql.search_topics.many(
                conn, TopicHit, q=q, prefix_from=prefix_from, prefix_to=prefix_to, limit=limit
            )
        return Page(items=rows)
