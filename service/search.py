"""Full-text search over message content and topic names (web-search syntax, ranked or recent)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
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
from service.pages import Page, Paging, estimate_each, estimate_rows
from service.queries import Query, QueryFile
from service.timestamps import as_utc, from_micros, to_micros
from service.topic_lists import TopicCache, TopicRef
from service.topics import lists_of, prefix_range


class SearchQueries(QueryFile, file="search"):
    plan_for_these_values: Query
    search_messages_by_rank: Query
    search_messages_by_rank_common: Query
    search_messages_by_recent: Query
    scope_and_matches: Query
    count_matching_messages: Query
    search_facets: Query
    search_topics: Query


sql = SearchQueries()

MAX_QUERY = 1000
# Ranking and highlighting work grows with the query's words (a phrase's above all): a bound that
# keeps one search's cost bounded, as web search engines bound theirs.
MAX_QUERY_WORDS = 32
# Ranking scores every message it ranks, so sort=rank ranks a bounded set: the newest RANK_WINDOW
# matches. A search with fewer matches ranks them all.
RANK_WINDOW = 1000
# A whole-corpus search PostgreSQL expects to have at least COMMON matches walks the newest messages
# for its set (search_messages_by_rank_common), reading at most RECENT_IDS of them before it looks in
# the index.
# At 20 times the set, walking costs about what fetching every match from the index would cost.
COMMON = 20 * RANK_WINDOW
RECENT_IDS = 100_000

SearchText = Annotated[
    str,
    QueryParameter(
        min_length=1,
        max_length=MAX_QUERY,
        pattern=NO_NUL,
        description=f'Web-search syntax: words, "quoted phrases", or, -excluded; at most {MAX_QUERY_WORDS} words',
    ),
]
Sort = Annotated[
    Literal["rank", "recent"],
    QueryParameter(
        description=f"rank: best first among the newest {RANK_WINDOW:,} matches (default); recent: newest first"
    ),
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


class MessageSearchPage(msgspec.Struct):
    """A page of message hits; sort=rank pages also say how many messages match and how many of
    them the ranking covered."""

    items: list[MessageHit]
    next_cursor: str | None = None
    # Present only when the request asked for count=exact or count=estimated.
    total: int | msgspec.UnsetType = msgspec.UNSET
    matches: (
        Annotated[
            int,
            msgspec.Meta(
                description="sort=rank: how many messages match q and the filters; exact unless matches_estimated"
            ),
        ]
        | msgspec.UnsetType
    ) = msgspec.UNSET
    matches_estimated: (
        Annotated[
            bool,
            msgspec.Meta(
                description=f"sort=rank: true when {RANK_WINDOW:,} or more messages match and matches is the "
                "planner's estimate (count=exact counts them)"
            ),
        ]
        | msgspec.UnsetType
    ) = msgspec.UNSET
    ranked: (
        Annotated[
            int,
            msgspec.Meta(
                description=f"sort=rank: how many matches were ranked: all of them, or the newest {RANK_WINDOW:,}; "
                "every page of one search ranks the same set"
            ),
        ]
        | msgspec.UnsetType
    ) = msgspec.UNSET
    # Present only with facets=: counts over every match, the same on every page of one search.
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
        raise Invalid(
            f"unknown facet(s) {', '.join(map(repr, unknown))}; choose from topic, role", field="facets", source="query"
        )
    return frozenset(names)


# Web-search syntax as websearch_to_tsquery reads it: a "quoted phrase" (an unclosed quote runs to
# the end), possibly negated by a leading -, or any other run of text (a word, `or`, -word).
_SYNTAX = re.compile(r'(?P<negated>-?)"(?P<phrase>[^"]*)"?|(?P<other>[^\s"]+)')
_WORD = re.compile(r"\w+")


def _phrases(q: str) -> tuple[list[tuple[re.Match[str], bool, list[str]]], bool]:
    """The quoted phrases of q that a check can decide: (match, negated, words) for each phrase with
    words that is not next to `or`; and whether q asks for anything positive besides the negated ones."""
    tokens = list(_SYNTAX.finditer(q))
    words = [token.group("other").lower() if token.group("other") else "" for token in tokens]
    found, positive = [], False
    for index, token in enumerate(tokens):
        if token.group("phrase") is None:
            positive = positive or (words[index] not in ("or", "") and not words[index].startswith("-"))
            continue
        negated, phrase_words = bool(token.group("negated")), _WORD.findall(token.group("phrase"))
        positive = positive or (not negated and bool(phrase_words))
        beside = {words[i] for i in (index - 1, index + 1) if 0 <= i < len(tokens)}
        if phrase_words and "or" not in beside:
            found.append((token, negated, phrase_words))
    return found, positive


def phrase_patterns(q: str) -> list[str]:
    """Case-insensitive PostgreSQL regular expressions that every match must pass, one per quoted phrase.

    websearch_to_tsquery drops stop words, so "over the harbor" alone would find any message with
    "harbor". The GIN index still narrows the candidates with that query; these patterns (passed
    as parameter values, never spliced into SQL) then demand the phrase's words in order, whole,
    with only non-word characters between them: \\mover\\M\\W+\\mthe\\M\\W+\\mharbor\\M. A negated
    phrase, -"over the harbor", becomes a lookahead that holds where the phrase does not occur
    (and index_query leaves it out of the tsquery, which would otherwise drop every message with
    "harbor"). A phrase next to `or` keeps websearch_to_tsquery's meaning: a pattern that every
    match must pass cannot express an alternative.
    """
    found, _ = _phrases(q)
    patterns = []
    for _token, negated, words in found:
        phrase = "\\W+".join(f"\\m{word}\\M" for word in words)
        patterns.append(f"^(?!.*{phrase})" if negated else phrase)
    return patterns


def index_query(q: str) -> str:
    """q as websearch_to_tsquery should read it: without the negated phrases phrase_patterns checks,
    unless nothing positive would remain (a query of exclusions only is left as it is)."""
    found, positive = _phrases(q)
    negated = [token for token, is_negated, _ in found if is_negated]
    if not negated or not positive:
        return q
    kept, at = [], 0
    for token in negated:
        kept.append(q[at : token.start()])
        at = token.end()
    return " ".join("".join([*kept, q[at:]]).split())


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
        raise Invalid("the search query is empty", field="q", source="query")
    if len(_WORD.findall(q)) > MAX_QUERY_WORDS:
        raise Invalid(f"the search query has more than {MAX_QUERY_WORDS} words", field="q", source="query")
    return _NOT_RUN.sub(lambda run: " -" if run.group().count("-") % 2 else " ", q)


async def _ranked_rows(
    conn: Connection, filters: dict[str, Any], after: RankKey | None, paging: Paging, counts: MessageSearchPage
) -> tuple[list[Any], int | None]:
    """sort=rank: the page's rows, ranked within the newest RANK_WINDOW matches (``counts`` gets
    ``ranked`` and ``matches``), and the ranked set's newest id, which the next cursor carries."""
    # A search within one user's or conversation's messages takes its matches from the index (they
    # are at most the scope's messages, wherever in time those are); a whole-corpus one asks
    # PostgreSQL first how many to expect, to choose between walking and the index.
    scoped = filters["user_id"] is not None or filters["conversation_id"] is not None
    estimated = None if scoped else await estimate_rows(conn, sql.count_matching_messages, **filters)
    common = estimated is not None and estimated >= COMMON
    rows = await (sql.search_messages_by_rank_common if common else sql.search_messages_by_rank).records(
        conn,
        **filters,
        before_rank=after and after.rank,
        before_id=after and after.id,
        newest=after and after.newest,
        window=RANK_WINDOW,
        **({"recent_ids": RECENT_IDS} if common else {}),
        limit=paging.limit,
        offset=paging.offset,
    )
    # The first row is the ranked set's (size, newest id), then the page's message or NULLs.
    counts.ranked, newest = rows[0][0], rows[0][1]
    counts.matches_estimated = counts.ranked == RANK_WINDOW
    if counts.matches_estimated and estimated is None:
        estimated = await estimate_rows(conn, sql.count_matching_messages, **filters)
    counts.matches = max(estimated or 0, RANK_WINDOW) if counts.matches_estimated else counts.ranked
    return [row[2:] for row in rows if row[2] is not None], newest


async def filter_by_scope(conn: Connection, filters: dict[str, Any]) -> bool:
    """Whether a search scoped to a user or a conversation finds q's matches by q alone and filters
    them by the scope (the scope holds at least as many messages as q matches, by PostgreSQL's
    estimates), rather than ANDing the scope's entries with q's in idx_message_search.

    The index ANDs two posting lists by skipping through the longer one, and each skip decodes a
    page of it: for a user with 663,224 messages, 0.84 ms for a word's 71 matches, against 0.05 ms
    fetching the 71 and keeping the user's. For a small scope and a common word it is the other way
    round: the scope's few entries spare reading thousands of matches outside it.
    """
    if filters["user_id"] is None and filters["conversation_id"] is None:
        return False
    scope, matches = await estimate_each(
        conn,
        sql.scope_and_matches,
        q=filters["q"],
        user_id=filters["user_id"],
        conversation_id=filters["conversation_id"],
    )
    return scope >= matches


async def search_messages_txn(
    conn: Connection,
    cache: TopicCache,
    sort: Literal["rank", "recent"],
    filters: dict[str, Any],
    after: RankKey | TimeKey | None,
    paging: Paging,
    facets: frozenset[str],
) -> tuple[MessageSearchPage, int | None]:
    """One page of a search (limit + 1 hits, no cursor yet) with its counts and the facets asked for
    (a statement of their own), planned for its own values, in a read-only transaction of its own;
    and for sort=rank the newest id of the ranked set."""
    counts = MessageSearchPage(items=[])
    rows: Sequence[Any]
    newest = None
    async with conn.transaction(readonly=True):
        await sql.plan_for_these_values.val(conn)
        filters = {**filters, "filter_scope": await filter_by_scope(conn, filters)}
        if sort == "rank":
            rows, newest = await _ranked_rows(
                conn, filters, after if isinstance(after, RankKey) else None, paging, counts
            )
        else:
            time_after = after if isinstance(after, TimeKey) else None
            rows = await sql.search_messages_by_recent.records(
                conn,
                **filters,
                before_ts=time_after and from_micros(time_after.micros),
                before_id=time_after and time_after.id,
                limit=paging.limit,
                offset=paging.offset,
            )
        lists = await lists_of(conn, cache, rows, -1)
        counts.total = await paging.total(conn, sql.count_matching_messages, **filters)
        if facets:
            counts.facets = await _facets(conn, filters, facets)
    # A row is the message's columns, its rank, its highlight and its topic ids (migration 0030).
    # The row past the page (limit + 1, dropped by Paging.page) has no highlight: none is made for it.
    width = len(messages.COLUMNS)
    counts.items = [
        MessageHit(*row[:width], refs, row[width], row[width + 1])  # type: ignore[call-arg]
        for row, refs in zip(rows, lists, strict=True)
    ]
    return counts, newest


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
        data_container=MessageSearchPage,
        description="A page of hits; facets only with facets=",
        examples=[Example(summary='q="over the harbor"&facets=topic,role', value=_FACETED)],
    ),
    **problem_responses(400),
}


_RANKING = (
    f"sort=rank ranks the newest {RANK_WINDOW:,} messages that match q and the filters (all of them when "
    f"fewer match), best first by ts_rank_cd, ties by id: ranking scores every message it ranks, and this "
    f"keeps a page of a common word as fast as a rare one's. Every page of one search (its cursors) ranks "
    f"the same set, fixed by the first page, so keyset pages return each of its items exactly once. The "
    f"page says how many messages match in total (matches: exact below {RANK_WINDOW:,}, from there on the "
    f"planner's estimate, matches_estimated true) and how many were ranked (ranked). To reach older "
    f"matches, narrow the search (user_id, conversation_id, since, until) or use sort=recent, which pages "
    f"through every match, newest first."
)


class SearchController(Controller):
    path = "/v1/search"
    tags = ("search",)

    @get(
        "/messages",
        summary="Full-text search over messages",
        description=_RANKING,
        responses=_SEARCH_ANSWERS,
    )
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
    ) -> MessageSearchPage:
        since, until = as_utc(since, "since"), as_utc(until, "until")
        filters: dict[str, Any] = {
            "q": index_query(_search_text(q)),
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
            result, newest = await search_messages_txn(conn, db.topics, sort, filters, after, paging, wanted)
        hits = result.items

        def key(index: int) -> msgspec.Struct:
            hit = hits[index]
            return RankKey(hit.rank, hit.id, newest) if sort == "rank" else TimeKey(to_micros(hit.timestamp), hit.id)

        page = paging.page(hits, scope, key)
        result.items, result.next_cursor = page.items, page.next_cursor
        return result

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
