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
from litestar.params import QueryParameter

from service.cursors import RankKey, TimeKey
from service.db import Connection, Database
from service.errors import Invalid, problem_responses
from service.fields import NO_NUL, RoleQuery, TimeQuery
from service.pages import Page, Paging, estimate_rows
from service.queries import Query, QueryFile
from service.timestamps import as_utc, from_micros, to_micros
from service.topics import TopicRef, prefix_range, topics_of


class SearchQueries(QueryFile, file="search"):
    plan_for_these_values: Query
    search_messages_by_rank: Query
    search_messages_by_rank_common: Query
    search_messages_by_recent: Query
    count_matching_messages: Query
    search_topics: Query


sql = SearchQueries()

MAX_QUERY = 1000
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
        description='Web-search syntax: words, "quoted phrases", or, -excluded',
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
    topics: list[TopicRef]
    # ts_rank_cd of the message for this query (also given when sorted by recency).
    rank: float
    # The best fragments of the content with matches in <b>…</b> (plain text, not HTML-escaped).
    highlight: str


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


async def search_messages_txn(
    conn: Connection,
    names: dict[int, str],
    sort: Literal["rank", "recent"],
    filters: dict[str, Any],
    after: RankKey | TimeKey | None,
    paging: Paging,
) -> tuple[MessageSearchPage, int | None]:
    """One page of a search (limit + 1 hits, no cursor yet) with its counts, planned for its own
    values, in a read-only transaction of its own; and for sort=rank the newest id of the ranked set."""
    counts = MessageSearchPage(items=[])
    rows: Sequence[Any]
    newest = None
    async with conn.transaction(readonly=True):
        await sql.plan_for_these_values.val(conn)
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
        found = await topics_of(conn, names, [row[0] for row in rows])
        counts.total = await paging.total(conn, sql.count_matching_messages, **filters)
    # A row is the message's seven columns, its rank and its highlight.
    counts.items = [MessageHit(*row[:7], found.get(row[0], []), *row[7:]) for row in rows]  # type: ignore[call-arg]
    return counts, newest


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
        responses=problem_responses(400),
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
    ) -> MessageSearchPage:
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
            result, newest = await search_messages_txn(conn, db.topic_names, sort, filters, after, paging)
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
