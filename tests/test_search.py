"""Search: the migrations that make it, ranked and recent pages, filters, syntax, and never a 500."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service import migrations
from service.db import Connection
from service.search import MAX_QUERY, MAX_QUERY_WORDS, RANK_WINDOW
from service.search import sql as search_sql
from service.topics import prefix_range
from tests.api import all_pages, assert_problem, create_conversation, create_user, post_batch

SEARCH = "/v1/search/messages"


def test_the_backfill_leaves_every_row_searchable(fresh_database: Callable[[], str]) -> None:
    url = fresh_database()
    migrations.rollback(url, count=len(migrations.migration_ids()))
    migrations.apply(url, up_to="0006_conversation_user_updated_index")
    with psycopg.connect(url) as conn:
        conn.execute("INSERT INTO users (email, name) VALUES ('old@example.com', 'Old')")
        conn.execute("INSERT INTO conversations (user_id) SELECT id FROM users")
        conn.execute(
            "INSERT INTO messages (conversation_id, user_id, role, content) "
            "SELECT c.id, c.user_id, 'user', 'archived flights number ' || g "
            "FROM conversations AS c, generate_series(1, 12000) AS g"
        )
    migrations.apply(url)
    with psycopg.connect(url) as conn:
        unsearchable = conn.execute("SELECT count(*) FROM messages WHERE search IS NULL").fetchone()
        assert unsearchable == (0,)
        found = conn.execute("SELECT count(*) FROM messages WHERE search @@ search_query('flight')").fetchone()
        assert found == (12000,)
        # New and edited rows stay current through the trigger.
        conn.execute(
            "INSERT INTO messages (conversation_id, user_id, role, content) "
            "SELECT id, user_id, 'user', 'brand new zeppelin' FROM conversations"
        )
        conn.execute("UPDATE messages SET content = 'edited to airship' WHERE content = 'archived flights number 7'")
        assert conn.execute("SELECT count(*) FROM messages WHERE search @@ search_query('zeppelin')").fetchone() == (1,)
        assert conn.execute("SELECT count(*) FROM messages WHERE search @@ search_query('airship')").fetchone() == (1,)
        indexes = {
            r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE tablename IN ('messages', 'topics')")
        }
        assert {"idx_message_search", "idx_topic_search", "idx_topic_name_prefix"} <= indexes
        invalid = conn.execute("SELECT count(*) FROM pg_index WHERE NOT indisvalid").fetchone()
        assert invalid == (0,)


@pytest.fixture
async def corpus(client: httpx.AsyncClient) -> dict[str, Any]:
    """Two users, three conversations, messages in every role, some tagged."""
    ada = await create_user(client, "ada@example.com")
    bob = await create_user(client, "bob@example.com")
    trip = await create_conversation(client, ada["id"], "trip")
    work = await create_conversation(client, ada["id"], "work")
    bobs = await create_conversation(client, bob["id"], "bob")
    trip_items = await post_batch(
        client,
        trip["id"],
        [
            {"role": "user", "content": "Find cheap flights to Lisbon in May", "topics": ["travel"]},
            {"role": "assistant", "content": "Flights to Lisbon start at 80 euros", "topics": ["travel", "prices"]},
            {"role": "user", "content": "What about trains to Porto?"},
            {"role": "tool", "content": "lookup: lisbon porto train schedule"},
        ],
    )
    work_items = await post_batch(
        client,
        work["id"],
        [{"role": "user", "content": f"Flight report number {n}: the flight was on time"} for n in range(25)],
    )
    bob_items = await post_batch(client, bobs["id"], [{"role": "user", "content": "Bob flights to Berlin"}])
    return {
        "ada": ada,
        "bob": bob,
        "trip": trip,
        "work": work,
        "bobs": bobs,
        "trip_ids": [i["message"]["id"] for i in trip_items],
        "work_ids": [i["message"]["id"] for i in work_items],
        "bob_ids": [i["message"]["id"] for i in bob_items],
    }


async def search(client: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    return await all_pages(client, SEARCH, **params)


async def test_ranked_pages_continue_exactly_where_the_last_stopped(
    client: httpx.AsyncClient, corpus: dict[str, Any]
) -> None:
    every = await search(client, q="flight", limit=200)
    assert len(every) == 2 + 25 + 1  # stemming: "flights" and "Flight" both match
    ranks = [(hit["rank"], hit["id"]) for hit in every]
    assert ranks == sorted(ranks, reverse=True)
    for limit in (1, 4, 7):
        paged = await search(client, q="flight", limit=limit)
        assert [h["id"] for h in paged] == [h["id"] for h in every]
    assert all("<b>" in hit["highlight"] for hit in every)
    assert every[0]["topics"] is not None


async def test_a_search_says_how_many_match_and_how_many_it_ranked(
    client: httpx.AsyncClient, corpus: dict[str, Any]
) -> None:
    page = (await client.get(SEARCH, params={"q": "flight", "limit": 3})).json()
    assert (page["matches"], page["ranked"], page["matches_estimated"]) == (28, 28, False)
    none = (await client.get(SEARCH, params={"q": "zeppelin"})).json()
    assert (none["items"], none["matches"], none["ranked"], none["matches_estimated"]) == ([], 0, 0, False)
    recent = (await client.get(SEARCH, params={"q": "flight", "sort": "recent"})).json()
    assert "matches" not in recent
    assert "ranked" not in recent


async def test_ranking_covers_the_newest_matches_and_every_page_ranks_the_same_set(client: httpx.AsyncClient) -> None:
    user = await create_user(client, "many@example.com")
    chat = await create_conversation(client, user["id"], "many")
    # 1,200 matches in three rank levels (one, two or three occurrences), older ones included.
    stored = []
    for first in (0, 600):
        items = await post_batch(
            client,
            chat["id"],
            [
                {"role": "user", "content": " ".join(["zeppelin"] * (1 + n % 3)) + f" ride {n}"}
                for n in range(first, first + 600)
            ],
        )
        stored += [item["message"]["id"] for item in items]
    newest = sorted(stored)[-RANK_WINDOW:]

    first_page = (await client.get(SEARCH, params={"q": "zeppelin", "limit": 200})).json()
    assert first_page["ranked"] == RANK_WINDOW
    assert first_page["matches_estimated"] is True
    assert first_page["matches"] >= RANK_WINDOW
    exact = (await client.get(SEARCH, params={"q": "zeppelin", "count": "exact", "limit": 1})).json()
    assert exact["total"] == 1200
    scoped = (await client.get(SEARCH, params={"q": "zeppelin", "conversation_id": chat["id"], "limit": 1})).json()
    assert (scoped["ranked"], scoped["matches_estimated"]) == (RANK_WINDOW, True)
    assert scoped["matches"] >= RANK_WINDOW
    # Newer, better matches arrive while the client pages: the pages it asked for still rank the
    # set of its first page, each item exactly once.
    later = await post_batch(client, chat["id"], [{"role": "user", "content": "zeppelin " * 8}] * 3)
    hits = list(first_page["items"])
    cursor = first_page["next_cursor"]
    while cursor:
        page = (await client.get(SEARCH, params={"q": "zeppelin", "limit": 200, "cursor": cursor})).json()
        assert page["ranked"] == RANK_WINDOW
        hits += page["items"]
        cursor = page["next_cursor"]
    ids = [hit["id"] for hit in hits]
    assert sorted(ids) == newest
    keys = [(hit["rank"], hit["id"]) for hit in hits]
    assert keys == sorted(keys, reverse=True)
    assert len({rank for rank, _ in keys}) == 3
    # A new search ranks the newest set, which now holds the later messages, first.
    fresh = (await client.get(SEARCH, params={"q": "zeppelin", "limit": 3})).json()
    assert [hit["id"] for hit in fresh["items"]] == sorted((item["message"]["id"] for item in later), reverse=True)


async def test_search_pages_take_the_paging_parameters_of_every_list(
    client: httpx.AsyncClient, corpus: dict[str, Any]
) -> None:
    everything = await all_pages(client, "/v1/search/messages", q="lisbon", limit=2)
    counted = (await client.get("/v1/search/messages", params={"q": "lisbon", "count": "exact", "limit": 1})).json()
    assert counted["total"] == len(everything)
    skipped = (await client.get("/v1/search/messages", params={"q": "lisbon", "offset": 1, "limit": 200})).json()
    assert [hit["id"] for hit in skipped["items"]] == [hit["id"] for hit in everything[1:]]
    assert skipped["next_cursor"] is None


async def test_recent_pages_newest_first(client: httpx.AsyncClient, corpus: dict[str, Any]) -> None:
    paged = await search(client, q="flight", sort="recent", limit=5)
    ids = [h["id"] for h in paged]
    assert ids == sorted(ids, reverse=True)  # one transaction, one timestamp: ties by id
    assert len(ids) == 28


async def test_filters(client: httpx.AsyncClient, conn: Connection, corpus: dict[str, Any]) -> None:
    by_conversation = await search(client, q="lisbon", conversation_id=corpus["trip"]["id"])
    assert {h["id"] for h in by_conversation} == {corpus["trip_ids"][0], corpus["trip_ids"][1], corpus["trip_ids"][3]}
    by_user = await search(client, q="flight", user_id=corpus["bob"]["id"])
    assert [h["id"] for h in by_user] == corpus["bob_ids"]
    by_topic = await search(client, q="lisbon", topic="prices")
    assert [h["id"] for h in by_topic] == [corpus["trip_ids"][1]]
    by_role = await search(client, q="lisbon", role="tool")
    assert [h["id"] for h in by_role] == [corpus["trip_ids"][3]]
    await conn.execute(
        "UPDATE messages SET \"timestamp\" = '2026-05-01T00:00:00Z'::timestamptz + id * interval '1 day'"
    )
    stamps = {r["id"]: r["timestamp"] for r in await conn.fetch('SELECT id, "timestamp" FROM messages')}
    since = stamps[corpus["trip_ids"][1]].isoformat()
    until = stamps[corpus["trip_ids"][3]].isoformat()
    window = await search(client, q="lisbon", since=since, until=until)
    assert [h["id"] for h in window] == [corpus["trip_ids"][1]]


async def test_web_search_syntax(client: httpx.AsyncClient, corpus: dict[str, Any]) -> None:
    phrase = await search(client, q='"cheap flights"')
    assert [h["id"] for h in phrase] == [corpus["trip_ids"][0]]
    either = await search(client, q="porto or berlin")
    assert {h["id"] for h in either} == {corpus["trip_ids"][2], corpus["trip_ids"][3], corpus["bob_ids"][0]}
    excluded = await search(client, q="lisbon -porto")
    assert {h["id"] for h in excluded} == {corpus["trip_ids"][0], corpus["trip_ids"][1]}
    assert await search(client, q="the and of") == []  # stop words only: nothing to match, not an error


async def test_a_cursor_of_another_search_is_400(client: httpx.AsyncClient, corpus: dict[str, Any]) -> None:
    page = (await client.get(SEARCH, params={"q": "flight", "limit": 2})).json()
    assert page["next_cursor"]
    for other in ({"q": "lisbon"}, {"q": "flight", "sort": "recent"}, {"q": "flight", "role": "user"}):
        assert_problem(await client.get(SEARCH, params={**other, "cursor": page["next_cursor"]}), 400, "cursor")


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({}, "q"),
        ({"q": ""}, "q"),
        ({"q": "   "}, "q"),
        ({"q": "x" * (MAX_QUERY + 1)}, "q"),
        ({"q": "word " * (MAX_QUERY_WORDS + 1)}, "q"),
        ({"q": '"' + "a b " * MAX_QUERY_WORDS + '"'}, "q"),
        ({"q": "a\u0000b"}, "q"),
        ({"q": "x", "sort": "best"}, "sort"),
        ({"q": "x", "limit": 0}, "limit"),
        ({"q": "x", "user_id": 0}, "user_id"),
        ({"q": "x", "conversation_id": "c"}, "conversation_id"),
        ({"q": "x", "role": "robot"}, "role"),
        ({"q": "x", "until": "soon"}, "until"),
        # Valid RFC 3339 times whose UTC is outside the years 1 to 9999.
        ({"q": "x", "since": "0001-01-01T00:00:00+01:00"}, "since"),
        ({"q": "x", "until": "9999-12-31T23:00:00-01:00"}, "until"),
    ],
)
async def test_bad_searches_are_400(client: httpx.AsyncClient, params: dict[str, Any], field: str) -> None:
    assert_problem(await client.get(SEARCH, params=params), 400, field)


# Web-search syntax is operators between words: strings made mostly of them, up to the limit.
OPERATOR_HEAVY = st.lists(
    st.sampled_from(["-", "-", "-", " ", '"', "or", "OR", "!", "&", "|", "(", ")", "<->", ":", "*", "\\", "'", ","])
    | st.text(max_size=3),
    max_size=MAX_QUERY,
).map(lambda parts: "".join(parts)[:MAX_QUERY])


@given(q=OPERATOR_HEAVY | st.text(max_size=300))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
async def test_any_query_is_200_or_400_never_500(client: httpx.AsyncClient, q: str) -> None:
    for path in (SEARCH, "/v1/search/topics"):
        response = await client.get(path, params={"q": q})
        assert response.status_code in (200, 400), (q, response.text)


@pytest.mark.parametrize("q", ["-" * 33, "-" * 40 + "a", "- " * 500, '"' + "-" * 999])
async def test_runs_of_dashes_are_answered(client: httpx.AsyncClient, q: str) -> None:
    for path in (SEARCH, "/v1/search/topics"):
        assert (await client.get(path, params={"q": q})).status_code == 200, q


async def test_a_run_of_nots_means_what_it_says(client: httpx.AsyncClient, corpus: dict[str, Any]) -> None:
    async def found(q: str) -> set[int]:
        return {hit["id"] for hit in (await client.get(SEARCH, params={"q": q})).json()["items"]}

    assert await found("-" * 40 + "lisbon") == await found("lisbon") != set()  # even: they cancel out
    assert await found("lisbon " + "-" * 41 + "train") == await found("lisbon -train")


async def test_a_query_of_the_most_words_is_answered(client: httpx.AsyncClient) -> None:
    assert (await client.get(SEARCH, params={"q": "word " * MAX_QUERY_WORDS})).status_code == 200


async def test_a_long_message_is_highlighted_where_a_query_word_first_occurs(client: httpx.AsyncClient) -> None:
    """A highlight reads 5,000 characters of a long message (migration 0032): from 1,000 before the
    first occurrence of a query word's stem, else from the message's start."""
    user = await create_user(client)
    conversation = await create_conversation(client, user["id"])
    filler = "lorem ipsum dolor sit amet " * 700  # 18,900 characters without a query word
    await post_batch(
        client,
        conversation["id"],
        [
            {"role": "assistant", "content": filler + "then the quokkas waved at the travellers " + filler},
            {"role": "assistant", "content": filler + "and everyone was happy " + filler},
            {"role": "user", "content": "a short note on quokkas"},
        ],
    )
    scope = {"conversation_id": conversation["id"]}
    highlights = {len(hit["content"]) > 5000: hit["highlight"] for hit in await search(client, q="quokka", **scope)}
    assert "<b>quokkas</b> waved" in highlights[True]
    assert highlights[False].endswith("short note on <b>quokkas</b>")
    # "happi", the stem of happy, is not in the text: the window is the start, with no match in it.
    [happy] = await search(client, q="happy", **scope)
    assert "<b>" not in happy["highlight"]
    assert happy["highlight"].startswith("lorem ipsum")


async def test_ten_kilobytes_of_text_is_a_clean_400(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get(SEARCH, params={"q": "lorem ipsum " * 900}), 400, "q")


async def test_topic_search_by_words_and_prefix(client: httpx.AsyncClient, corpus: dict[str, Any]) -> None:
    for name in ("travelling", "time travel", "trains", "Travel"):
        await client.post("/v1/topics", json={"name": name})
    response = await client.get("/v1/search/topics", params={"q": "trav"})
    assert response.status_code == 200
    hits = {h["name"]: h for h in response.json()["items"]}
    assert set(hits) == {"travel", "travelling"}  # prefix matches (case-sensitive), no stem of "trav"
    assert hits["travel"]["message_count"] == 2
    worded = {h["name"] for h in (await client.get("/v1/search/topics", params={"q": "travel"})).json()["items"]}
    assert worded == {"travel", "travelling", "time travel", "Travel"}  # full text stems and folds case


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        (None, ("", None)),
        ("trav", ("trav", "traw")),
        ("a\U0010ffff", ("a\U0010ffff", "b")),
        ("\U0010ffff", ("\U0010ffff", None)),
        ("\ud7ff", ("\ud7ff", "\ue000")),
    ],
)
def test_prefix_ranges(prefix: str | None, expected: tuple[str, str | None]) -> None:
    assert prefix_range(prefix) == expected


async def test_each_search_is_planned_for_its_own_values(
    client: httpx.AsyncClient, conn: Connection, corpus: dict[str, Any]
) -> None:
    sent: list[str] = []
    conn.add_query_logger(lambda q: sent.append(q.query))
    await client.get(SEARCH, params={"q": "lisbon", "conversation_id": corpus["trip"]["id"]})
    labels = [q.split("\n", 1)[0] for q in sent if q.startswith("-- search.")]
    assert labels == ["-- search.plan_for_these_values", "-- search.search_messages_by_rank"]


async def test_both_ranking_statements_rank_the_same_newest_matches(conn: Connection) -> None:
    # The statement for common words (which walks the newest messages first) and the one for the
    # rest must find the same set: the newest :window matches with id <= :newest, however the
    # matches are spread (here: dense among the oldest messages, sparse among the newest).
    await conn.execute("INSERT INTO users (email, name) VALUES ('r@example.com', 'R')")
    await conn.execute("INSERT INTO conversations (user_id) SELECT id FROM users")
    await conn.execute(
        "INSERT INTO messages (conversation_id, user_id, role, content) "
        "SELECT c.id, c.user_id, 'user', CASE WHEN g <= 600 OR g % 40 = 0 THEN repeat('zeppelin ', 1 + g % 3) "
        "ELSE 'nothing here' END || ' ' || g FROM conversations AS c, generate_series(1, 2000) AS g"
    )
    ids = [r["id"] for r in await conn.fetch("SELECT id FROM messages WHERE search @@ search_query('zeppelin')")]
    base: dict[str, Any] = {
        "q": "zeppelin",
        **dict.fromkeys(("conversation_id", "user_id", "topic", "role", "since", "until", "before_rank", "before_id")),
        "limit": 200,
        "offset": 0,
        "phrases": [],
        "filter_scope": False,
    }
    for window, newest, recent_ids in ((100, None, 50), (100, None, 1500), (300, None, 200), (60, max(ids) - 500, 30)):
        params = {**base, "window": window, "newest": newest}
        expected = sorted(i for i in ids if newest is None or i <= newest)[-window:]
        plain = await search_sql.search_messages_by_rank.records(conn, **params)
        common = await search_sql.search_messages_by_rank_common.records(conn, **params, recent_ids=recent_ids)
        for rows in (plain, common):
            assert rows[0]["ranked"] == window
            assert rows[0]["newest"] == expected[-1]
        # A row is (ranked, newest, the message's columns…, rank, highlight).
        assert [tuple(r) for r in common] == [tuple(r) for r in plain]
        everything = await search_sql.search_messages_by_rank.records(conn, **params | {"limit": window})
        assert sorted(r["id"] for r in everything) == expected
