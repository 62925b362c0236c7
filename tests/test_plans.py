"""Query plans on a seeded, analysed database: the hot reads use their indexes at any depth.

Each query is checked twice: with its parameter values (a custom plan) and as the generic plan
PostgreSQL switches a prepared statement to after a few executions, since asyncpg prepares
every statement and the generic plan is the one a busy service mostly runs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import Any

import pytest

from service import conversations, messages, search, topics, users
from service.db import Connection
from service.pages import estimate_rows
from service.queries import Query
from tests.conftest import RUN_ID, connection_in_transaction, seeded_database

BIG_CONVERSATION_MESSAGES = 50_000
SMALL_CONVERSATIONS = 2_000
SMALL_CONVERSATION_MESSAGES = 30


def walk(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from walk(child)


def literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, datetime):
        return f"'{value.isoformat()}'"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, list):
        return "ARRAY[" + ", ".join(literal(item) for item in value) + "]"
    return str(value)


async def plans(
    conn: Connection, query: Query, *, generic: bool = True, analyze: bool = False, **params: Any
) -> list[list[dict[str, Any]]]:
    """The custom plan for these values and the generic plan, each as a flat list of nodes; with
    ``analyze``, run, with the pages each node read (see pages_read)."""
    args = query.args(params)
    explain = "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " if analyze else "EXPLAIN (FORMAT JSON) "
    custom = await conn.fetchval(explain + query.sql, *args)
    if not generic:
        return [list(walk(custom[0]["Plan"]))]
    await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
    # Test-only statements around our own SQL text; the values are the test's literals.
    prepare = "PREPARE plan_check AS " + query.sql
    await conn.execute(prepare)
    try:
        execute = "EXECUTE plan_check(" + ", ".join(literal(a) for a in args) + ")"
        generic_plan = await conn.fetchval(explain + execute)
    finally:
        await conn.execute("DEALLOCATE plan_check")
        await conn.execute("SET LOCAL plan_cache_mode = auto")
    return [list(walk(plan[0]["Plan"])) for plan in (custom, generic_plan)]


def index_scans(nodes: list[dict[str, Any]]) -> dict[str, str]:
    return {n["Index Name"]: n.get("Index Cond", "") for n in nodes if "Index Name" in n}


def pages_read(nodes: list[dict[str, Any]]) -> int:
    """Buffers a run plan touched (its root counts its children's): unlike time, the same on any
    machine, so a test can bound the work of a statement."""
    return int(nodes[0]["Shared Hit Blocks"] + nodes[0]["Shared Read Blocks"])


# A page of 50 messages reads a few index pages, the heap pages of its rows and the conversation's
# row: far fewer than the index pages between the newest message and a deep cursor (200 or so in
# the big conversation at 40,000 deep), which a scan started at the wrong bound would walk.
PAGE_READS = 40


def no_seq_scan_of(nodes: list[dict[str, Any]], table: str) -> bool:
    return not any(n["Node Type"] == "Seq Scan" and n.get("Relation Name") == table for n in nodes)


def no_per_row_subplan(nodes: list[dict[str, Any]]) -> bool:
    """No correlated subquery run once per row (a SubPlan); an InitPlan runs once and is fine."""
    return not any(n.get("Parent Relationship") == "SubPlan" for n in nodes)


def sorted_again(nodes: list[dict[str, Any]], table: str) -> bool:
    """Whether the plan sorts rows it read from ``table``: a page comes out of its index in order,
    and its parent's one-row marker is merged in (a Merge Append), not the page sorted again."""
    return any(
        n["Node Type"] in ("Sort", "Incremental Sort") and any(d.get("Relation Name") == table for d in walk(n))
        for n in nodes
    )


def tagged_messages(select: str) -> str:
    """An INSERT of the messages ``select`` gives (conversation_id, user_id, role, content, ts), as
    add_messages writes them: each with its copy of its topic ids (migration 0030), topic-(id % 100)."""
    return (
        'INSERT INTO messages (id, conversation_id, user_id, role, content, "timestamp", topic_ids) '
        "OVERRIDING SYSTEM VALUE "
        "SELECT s.id, s.conversation_id, s.user_id, s.role, s.content, s.ts, "
        "ARRAY[(SELECT t.id FROM topics AS t WHERE t.name = 'topic-' || (s.id % 100))] "
        f"FROM (SELECT nextval(pg_get_serial_sequence('messages', 'id')) AS id, m.* FROM ({select}) AS m) AS s"
    )


SEED = [
    "INSERT INTO users (email, name) VALUES ('seed@example.com', 'Seed')",
    "INSERT INTO users (email, name) SELECT 'u' || g || '@example.com', 'U' || g FROM generate_series(1, 200) AS g",
    "INSERT INTO conversations (user_id, title) SELECT min(id), 'big' FROM users",
    # 2,000 small conversations spread over the other users.
    f"INSERT INTO conversations (user_id, title, updated_at) "
    f"SELECT (SELECT min(id) FROM users) + 1 + g % 200, 'small', now() - g * interval '1 minute' "
    f"FROM generate_series(1, {SMALL_CONVERSATIONS}) AS g",
    "INSERT INTO topics (name) SELECT 'topic-' || g FROM generate_series(0, 99) AS g",
    tagged_messages(
        "SELECT c.id AS conversation_id, c.user_id, (ARRAY['user', 'assistant'])[1 + g % 2] AS role, "
        "'message ' || g AS content, '2026-01-01T00:00:00Z'::timestamptz + g * interval '1 second' AS ts "
        f"FROM conversations AS c, generate_series(1, {BIG_CONVERSATION_MESSAGES}) AS g WHERE c.title = 'big'"
    ),
    tagged_messages(
        "SELECT c.id AS conversation_id, c.user_id, 'user' AS role, 'small ' || g AS content, "
        "'2026-02-01T00:00:00Z'::timestamptz + g * interval '1 minute' AS ts "
        f"FROM conversations AS c, generate_series(1, {SMALL_CONVERSATION_MESSAGES}) AS g WHERE c.title = 'small'"
    ),
    # The tags of those new messages, which already carry them: the flag add_messages sets, so the
    # tags' triggers leave the rows alone.
    "WITH flag AS MATERIALIZED (SELECT set_config('freya.tags_of_new_messages', 'copied', true) AS said) "
    "INSERT INTO message_topics (topic_id, message_id) SELECT unnest(m.topic_ids), m.id FROM messages AS m, flag",
    # The seed user also has a long history of conversations (without messages).
    "INSERT INTO conversations (user_id, title, updated_at) "
    "SELECT min(id), 'old', now() - g * interval '1 hour' FROM users, generate_series(1, 3000) AS g GROUP BY g",
    "ANALYZE users, conversations, messages, topics, message_topics",
]


@pytest.fixture(scope="module")
def seeded_url(server_url: str, template_name: str) -> Iterator[str]:
    """A database of its own, seeded and analysed once for this module's tests (which only read)."""
    with seeded_database(server_url, template_name, f"freya_plans_{RUN_ID}", SEED) as url:
        yield url


@pytest.fixture
async def seeded_conn(seeded_url: str) -> AsyncIterator[Connection]:
    async with connection_in_transaction(seeded_url) as connection:
        yield connection


@pytest.fixture
async def seeded(seeded_conn: Connection) -> dict[str, Any]:
    total = await seeded_conn.fetchval("SELECT count(*) FROM messages")
    assert total >= 100_000
    user_id = await seeded_conn.fetchval("SELECT id FROM users WHERE email = 'seed@example.com'")
    big = await seeded_conn.fetchval("SELECT id FROM conversations WHERE title = 'big'")
    deep = await seeded_conn.fetchrow(
        'SELECT "timestamp", id FROM messages WHERE conversation_id = $1 ORDER BY "timestamp" DESC, id DESC '
        "OFFSET 40000 LIMIT 1",
        big,
    )
    topic_id = await seeded_conn.fetchval("SELECT id FROM topics WHERE name = 'topic-7'")
    return {"user_id": user_id, "big": big, "deep": deep, "topic_id": topic_id}


# The big conversation has a message a second from 2026-01-01: these cut 10,000 messages off its
# newest end and 5,000 off its oldest (the deep cursor is 40,000 from the newest).
BIG_UNTIL = datetime.fromisoformat("2026-01-01T11:06:40Z")
BIG_SINCE = datetime.fromisoformat("2026-01-01T01:23:20Z")


def page_filters(conversation_id: int) -> dict[str, Any]:
    return {"conversation_id": conversation_id, "since": None, "until": None, "role": None, "limit": 50, "offset": 0}


async def test_conversation_pages_use_the_live_timestamp_index_at_any_depth(
    seeded_conn: Connection, seeded: dict[str, Any]
) -> None:
    deep_ts, deep_id = seeded["deep"]["timestamp"], seeded["deep"]["id"]
    until, since = BIG_UNTIL, BIG_SINCE
    cases = [
        (messages.sql.list_messages_newest_first, {"before_ts": None, "before_id": None}),
        (messages.sql.list_messages_newest_first, {"before_ts": deep_ts, "before_id": deep_id}),
        (messages.sql.list_messages_newest_first, {"before_ts": deep_ts, "before_id": deep_id, "since": since}),
        (messages.sql.list_messages_newest_first, {"before_ts": None, "before_id": None, "until": until}),
        (messages.sql.list_messages_oldest_first, {"after_ts": None, "after_id": None}),
        (messages.sql.list_messages_oldest_first, {"after_ts": deep_ts, "after_id": deep_id}),
        (messages.sql.list_messages_oldest_first, {"after_ts": deep_ts, "after_id": deep_id, "until": until}),
        (messages.sql.list_messages_oldest_first, {"after_ts": None, "after_id": None, "since": since}),
    ]
    for query, position in cases:
        params = {**page_filters(seeded["big"]), **position}
        for nodes in await plans(seeded_conn, query, analyze=True, **params):
            scans = index_scans(nodes)
            assert "idx_message_live_timestamp" in scans, (query.name, position, nodes)
            # The position bounds the index scan itself: it starts at the cursor, not at the top.
            assert "timestamp" in scans["idx_message_live_timestamp"], scans
            assert pages_read(nodes) <= PAGE_READS, (
                query.name,
                position,
                pages_read(nodes),
                [
                    (n["Node Type"], n.get("Index Name"), n.get("Index Cond"), n["Shared Hit Blocks"], n["Actual Rows"])
                    for n in nodes
                ],
            )
            assert no_seq_scan_of(nodes, "messages"), nodes
            assert no_per_row_subplan(nodes), nodes
            assert not sorted_again(nodes, "messages"), nodes


async def test_fields_projection_keeps_the_plan(seeded_conn: Connection, seeded: dict[str, Any]) -> None:
    query = messages.sql.list_messages_newest_first.project(["content", "id", "timestamp"])
    for nodes in await plans(seeded_conn, query, **page_filters(seeded["big"]), before_ts=None, before_id=None):
        assert "idx_message_live_timestamp" in index_scans(nodes)
        assert no_seq_scan_of(nodes, "messages")
        assert "idx_message_topic" not in index_scans(nodes)  # no topics subquery without topics


async def test_a_topics_messages_use_the_message_topics_primary_key(
    seeded_conn: Connection, seeded: dict[str, Any]
) -> None:
    for before_id in (None, 60_000):
        for nodes in await plans(
            seeded_conn,
            messages.sql.list_topic_messages,
            topic_id=seeded["topic_id"],
            before_id=before_id,
            limit=50,
            offset=0,
        ):
            assert "message_topics_pkey" in index_scans(nodes), nodes
            assert "messages_pkey" in index_scans(nodes), nodes
            assert no_seq_scan_of(nodes, "messages")
            assert no_per_row_subplan(nodes), nodes
            assert no_seq_scan_of(nodes, "message_topics")
            assert not sorted_again(nodes, "message_topics"), nodes


async def test_a_users_conversations_use_an_index(seeded_conn: Connection, seeded: dict[str, Any]) -> None:
    for user_id in (seeded["user_id"], seeded["user_id"] + 5):
        for nodes in await plans(
            seeded_conn,
            conversations.sql.list_user_conversations,
            user_id=user_id,
            before_updated_at=None,
            before_id=None,
            limit=50,
            offset=0,
        ):
            used = index_scans(nodes)
            assert no_per_row_subplan(nodes), nodes
            assert used.keys() & {"idx_conversation_live_user_updated", "idx_conversation_user_id"}, nodes
            assert no_seq_scan_of(nodes, "conversations")
            if user_id == seeded["user_id"]:
                # 3,000 conversations: read in order along the index, a page at a time.
                assert "idx_conversation_live_user_updated" in used
                assert not sorted_again(nodes, "conversations"), nodes


async def test_an_erasure_locks_only_what_it_deletes(seeded_conn: Connection, seeded: dict[str, Any]) -> None:
    """A user of 10 conversations (300 messages) among 110,000: the erasure's two lock statements
    find the rows by user and by conversation, not by filtering a walk of every message."""
    user_id = seeded["user_id"] + 5
    for query in (users.sql.lock_conversations_of_user, users.sql.lock_messages_of_user):
        for nodes in await plans(seeded_conn, query, user_id=user_id):
            assert no_seq_scan_of(nodes, "messages"), nodes
            # Every read of either table looks rows up by a condition (an Index Cond, or a bitmap of
            # them); an index walked whole, for its order, with the conditions as a filter, has none.
            reads = [n for n in nodes if n.get("Relation Name") in ("messages", "conversations")]
            assert reads, nodes
            assert all(n["Node Type"] == "Bitmap Heap Scan" or "Index Cond" in n for n in reads), (query.label, reads)


async def test_one_message_uses_its_primary_key(seeded_conn: Connection, seeded: dict[str, Any]) -> None:
    for nodes in await plans(seeded_conn, messages.sql.get_message, message_id=seeded["deep"]["id"]):
        assert "messages_pkey" in index_scans(nodes)
        assert no_seq_scan_of(nodes, "messages")
        assert no_per_row_subplan(nodes), nodes


async def test_a_pages_topics_are_one_index_lookup(seeded_conn: Connection, seeded: dict[str, Any]) -> None:
    page = [row["id"] for row in await seeded_conn.fetch("SELECT id FROM messages ORDER BY id DESC LIMIT 50")]
    for nodes in await plans(seeded_conn, topics.sql.tags_of_messages, message_ids=page):
        assert "idx_message_topic" in index_scans(nodes), nodes
        assert no_seq_scan_of(nodes, "message_topics")
        assert no_per_row_subplan(nodes), nodes


def search_params(q: str, **scope: Any) -> dict[str, Any]:
    return {
        "q": q,
        "conversation_id": None,
        "user_id": None,
        "topic": None,
        "role": None,
        "since": None,
        "until": None,
        "limit": 20,
        "offset": 0,
        "phrases": search.phrase_patterns(q),
        "filter_scope": False,
        **scope,
    }


RANK_POSITION: dict[str, Any] = {
    "before_rank": None,
    "before_id": None,
    "newest": None,
    "window": search.RANK_WINDOW,
}
RECENT_POSITION = {"before_ts": None, "before_id": None}


async def search_plans(conn: Connection, q: str, **scope: Any) -> list[tuple[str, list[dict[str, Any]]]]:
    """Both sorts' plans for this search, planned as the service plans them: for their own values
    (custom plans), after search.plan_for_these_values in the same transaction."""
    await search.sql.plan_for_these_values.val(conn)
    params = search_params(q, **scope)
    params["filter_scope"] = await search.filter_by_scope(conn, params)
    found = []
    for query, position in (
        (search.sql.search_messages_by_rank, RANK_POSITION),
        (search.sql.search_messages_by_recent, RECENT_POSITION),
    ):
        [nodes] = await plans(conn, query, generic=False, **params, **position)
        found.append((query.name, nodes))
    return found


async def test_a_whole_corpus_search_for_a_rare_word_uses_the_gin_index(
    seeded_conn: Connection, seeded: dict[str, Any]
) -> None:
    for name, nodes in await search_plans(seeded_conn, "12345"):
        assert "idx_message_search" in index_scans(nodes), (name, nodes)
        assert no_seq_scan_of(nodes, "messages")
        assert no_per_row_subplan(nodes), nodes


async def test_ranking_a_common_word_walks_the_newest_messages_and_stops(
    seeded_conn: Connection, seeded: dict[str, Any]
) -> None:
    # "messag" is in 50,000 of the 110,000 messages: PostgreSQL expects that many, so the service
    # chooses the statement for common words, which reads the newest messages down messages_pkey
    # until it has the ranked set, and looks at older matches only when it did not fill it.
    await search.sql.plan_for_these_values.val(seeded_conn)
    params = search_params("message")
    filters = {k: v for k, v in params.items() if k not in ("limit", "offset")}
    assert await estimate_rows(seeded_conn, search.sql.count_matching_messages, **filters) >= search.COMMON
    query = search.sql.search_messages_by_rank_common
    [nodes] = await plans(seeded_conn, query, generic=False, **params, **RANK_POSITION, recent_ids=search.RECENT_IDS)
    backward = [n for n in nodes if n.get("Index Name") == "messages_pkey" and n.get("Scan Direction") == "Backward"]
    assert backward, nodes
    assert [n for n in nodes if "One-Time Filter" in n], "older matches are read only when needed"
    assert no_seq_scan_of(nodes, "messages")


async def test_a_rare_word_in_a_large_scope_is_found_by_the_word_and_filtered_by_scope(
    seeded_conn: Connection, seeded: dict[str, Any]
) -> None:
    # The seed user owns the 50,000-message conversation; "12345" is in one of its messages. Ranked
    # search finds the word's few matches in idx_message_search and keeps those in the scope: not
    # by skipping through the scope's 50,000 entries in that index, nor by reading its messages.
    for scope, column in (
        ({"user_id": seeded["user_id"]}, "user_id"),
        ({"conversation_id": seeded["big"]}, "conversation_id"),
    ):
        assert await search.filter_by_scope(seeded_conn, search_params("12345", **scope))
        for name, nodes in await search_plans(seeded_conn, "12345", **scope):
            scans = index_scans(nodes)
            assert "search" in scans.get("idx_message_search", ""), (scope, name, scans)
            assert column not in scans.get("idx_message_search", ""), (scope, name, scans)
            assert not scans.keys() & {
                "idx_message_user_id",
                "idx_message_conversation_id",
                "idx_message_timestamp",
                "idx_message_live_timestamp",
            }
            assert no_seq_scan_of(nodes, "messages"), (scope, name, nodes)


async def test_a_common_word_in_a_small_scope_reads_only_the_scope(
    seeded_conn: Connection, seeded: dict[str, Any]
) -> None:
    small = await seeded_conn.fetchrow("SELECT id, user_id FROM conversations WHERE title = 'small' LIMIT 1")
    assert small is not None
    for scope, column in (
        ({"conversation_id": small["id"]}, "conversation_id"),
        ({"user_id": small["user_id"]}, "user_id"),
    ):
        # "small" is in 60,000 messages: the scope, not the word, must narrow the scan.
        assert not await search.filter_by_scope(seeded_conn, search_params("small", **scope))
        for name, nodes in await search_plans(seeded_conn, "small", **scope):
            scans = index_scans(nodes)
            by_scope = [index for index, condition in scans.items() if column in condition]
            assert by_scope, (scope, name, scans)
            assert no_seq_scan_of(nodes, "messages"), (scope, name, nodes)


async def test_a_phrase_search_and_its_facets_narrow_with_the_gin_index(
    seeded_conn: Connection, seeded: dict[str, Any]
) -> None:
    params = search_params('"message 12345"')
    assert params["phrases"]
    await search.sql.plan_for_these_values.val(seeded_conn)
    for nodes in await plans(seeded_conn, search.sql.search_messages_by_rank, generic=False, **params, **RANK_POSITION):
        assert "idx_message_search" in index_scans(nodes), nodes
        assert no_seq_scan_of(nodes, "messages")
    facet_params = {k: v for k, v in params.items() if k not in ("limit", "offset")}
    for nodes in await plans(
        seeded_conn, search.sql.search_facets, generic=False, **facet_params, with_roles=True, with_topics=True
    ):
        assert "idx_message_search" in index_scans(nodes), nodes
        assert no_seq_scan_of(nodes, "messages")


async def test_an_anchored_page_reads_both_ways_from_the_anchor(
    seeded_conn: Connection, seeded: dict[str, Any]
) -> None:
    # A 50-message page desc: 24 newer, the anchor, 25 older, each side with one more.
    filters = {k: v for k, v in page_filters(seeded["big"]).items() if k not in ("offset", "limit")}
    filters |= {"newer_rows": 25, "older_rows": 26}
    around = seeded["deep"]["id"]
    analysed = await seeded_conn.fetchval(
        "EXPLAIN (ANALYZE, FORMAT JSON) " + messages.sql.list_messages_around.sql,
        *messages.sql.list_messages_around.args({**filters, "around": around}),
    )
    nodes = list(walk(analysed[0]["Plan"]))
    # Each side starts at the anchor and stops after its half page: the rows of one page of 50,000.
    read = sum(n["Actual Rows"] for n in nodes if n.get("Index Name") == "idx_message_live_timestamp")
    assert read == 25 + 26, nodes
    for bounds in ({}, {"since": BIG_SINCE, "until": BIG_UNTIL}):
        for nodes in await plans(
            seeded_conn, messages.sql.list_messages_around, analyze=True, **{**filters, **bounds}, around=around
        ):
            scans = index_scans(nodes)
            assert "timestamp" in scans["idx_message_live_timestamp"], scans
            assert "messages_pkey" in scans
            # A page's worth: each side starts at the anchor, not at since or until.
            assert pages_read(nodes) <= PAGE_READS, (bounds, pages_read(nodes))
            assert no_seq_scan_of(nodes, "messages"), nodes
