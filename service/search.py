"""Full-text search over message content and topic names (web-search syntax, ranked or recent)."""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import Example
from litestar.params import QueryParameter

from service import messages
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
    """A message (its fields in the message's order) with its rank and highlight."""

    id: int
    conversation_id: int
    user_id: int
    role: str
    content: str
    timestamp: datetime
    edited_at: datetime | None
    metadata: dict[str, Any]
    token_count: int
    token_count_estimated: bool
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


class SearchPage(Page[MessageHit]):
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
        description="Comma-separated facets to count over all matches of q and the filters: topic, role",
        examples=[Example(summary="Both facets", value="topic,role")],
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
# the end), possibly negated by a leading -, or any other run of text (a word, `or`, -word).
_SYNTAX = re.compile(r'(?P<negated>-?)"(?P<phrase>[^"]*)"?|(?P<other>[^\s"]+)')
_WORD = re.compile(r"\w+")


def phrase_patterns(q: str) -> list[str]:
    """Case-insensitive PostgreSQL regular expressions, one per quoted phrase that every match must contain.

    websearch_to_tsquery drops stop words, so "over the harbor" alone would find any message with
    "harbor". The GIN index still narrows the candidates with that query; these patterns (passed
    as parameter values, never spliced into SQL) then demand the phrase's words in order, whole,
    with only non-word characters between them: \\mover\\M\\W+\\mthe\\M\\W+\\mharbor\\M. A phrase
    next to `or`, or negated, keeps websearch_to_tsquery's meaning: a pattern that every match
    must pass cannot express an alternative or an exclusion.
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
    names: dict[int, str],
    sort: Literal["rank", "recent"],
    filters: dict[str, Any],
    after: RankKey | TimeKey | None,
    paging: Paging,
    facets: frozenset[str],
) -> tuple[list[MessageHit], int | msgspec.UnsetType, Facets | msgspec.UnsetType]:
    """One page of a search (with its total and facets when asked: a statement each), planned for
    its own values, in a read-only transaction of its own."""
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
        counted = await _facets(conn, filters, facets) if facets else msgspec.UNSET
    # A row is the message's columns, its rank and its highlight.
    width = len(messages.COLUMNS)
    hits = [MessageHit(*row[:width], found.get(row[0], []), *row[width:]) for row in rows]  # type: ignore[call-arg]
    return hits, total, counted


async def _facets(conn: Connection, filters: dict[str, Any], facets: frozenset[str]) -> Facets:
    counts: dict[str, list[FacetCount]] = {name: [] for name in facets}
    for row in await sql.search_facets.many(
        conn, _FacetRow, **filters, with_roles="role" in facets, with_topics="topic" in facets
    ):
        counts[row.facet].append(FacetCount(row.value, row.count))
    return Facets(**counts)


_FACETED: dict[str, Any] = {
    "items": [
        {
            "id": 812,
            "conversation_id": 7,
            "user_id": 3,
            "role": "user",
            "content": "We flew over the harbor at dawn",
            "timestamp": "2026-03-04T18:21:07.118Z",
            "edited_at": None,
            "metadata": {},
            "token_count": 8,
            "token_count_estimated": True,
            "topics": [{"id": 4, "name": "travel"}],
            "rank": 0.1,
            "highlight": "We flew <b>over</b> <b>the</b> <b>harbor</b> at dawn",
        },
    ],
    "next_cursor": None,
    "facets": {
        "topic": [{"value": "travel", "count": 41}, {"value": "flights", "count": 17}],
        "role": [{"value": "user", "count": 38}, {"value": "assistant", "count": 20}],
    },
}
_SEARCH_ANSWERS = {
    200: ResponseSpec(
        data_container=SearchPage,
        description="A page of hits; facets only with facets=",
        examples=[Example(summary='q="over the harbor"&facets=topic,role', value=_FACETED)],
    ),
    **problem_responses(400),
}


class SearchController(Controller):
    path = "/v1/search"
    tags = ("search",)

    @get("/messages", summary="Full-text search over messages", responses=_SEARCH_ANSWERS)
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
        after: RankKey | TimeKey | None = (
            paging.after(scope, RankKey) if sort == "rank" else paging.after(scope, TimeKey)
        )
        async with db.connection() as conn:
            hits, total, counted = await search_messages_txn(conn, db.topic_names, sort, filters, after, paging, wanted)

        def key(index: int) -> msgspec.Struct:
            hit = hits[index]
            return RankKey(hit.rank, hit.id) if sort == "rank" else TimeKey(to_micros(hit.timestamp), hit.id)

        page = paging.page(hits, scope, key, total=total)
        return SearchPage(items=page.items, next_cursor=page.next_cursor, total=page.total, facets=counted)

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
