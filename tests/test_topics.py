"""Topics: create, list and autocomplete, tag and untag messages, bulk assignment, and races."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import pytest

from service import topic_lists, topics
from service.db import Connection
from service.topic_lists import TopicCache
from tests.api import all_pages, assert_problem, create_conversation, create_user, post_batch, serving


@pytest.fixture
async def message_ids(client: httpx.AsyncClient) -> list[int]:
    user = await create_user(client)
    conversation = await create_conversation(client, user["id"])
    items = await post_batch(client, conversation["id"], [{"role": "user", "content": f"m{n}"} for n in range(5)])
    return [i["message"]["id"] for i in items]


async def test_create_get_and_conflict(client: httpx.AsyncClient) -> None:
    created = await client.post("/v1/topics", json={"name": "travel"})
    assert created.status_code == 201
    topic = created.json()
    assert topic["name"] == "travel"
    fetched = (await client.get(f"/v1/topics/{topic['id']}")).json()
    assert fetched == {**topic, "message_count": 0}
    body = assert_problem(await client.post("/v1/topics", json={"name": "travel"}), 409)
    assert "topic" in body["detail"]
    assert_problem(await client.get("/v1/topics/99999"), 404)


@pytest.mark.parametrize(
    "body", [{}, {"name": ""}, {"name": "x" * 101}, {"name": "a\u0000"}, {"name": 3}, {"name": "a", "b": 1}]
)
async def test_bad_topic_bodies(client: httpx.AsyncClient, body: dict[str, Any]) -> None:
    assert_problem(await client.post("/v1/topics", json=body), 400)


async def test_list_by_name_with_prefix_and_pages(client: httpx.AsyncClient) -> None:
    names = [f"travel-{n:02d}" for n in range(12)] + ["work", "weather", "tram"]
    for name in names:
        assert (await client.post("/v1/topics", json={"name": name})).status_code == 201
    everything = await all_pages(client, "/v1/topics", limit=4)
    assert [t["name"] for t in everything] == sorted(names)
    travel = await all_pages(client, "/v1/topics", prefix="trav", limit=5)
    assert [t["name"] for t in travel] == sorted(n for n in names if n.startswith("trav"))
    counted = (await client.get("/v1/topics", params={"prefix": "w", "count": "exact"})).json()
    assert counted["total"] == 2
    by_offset = (await client.get("/v1/topics", params={"offset": 13})).json()
    assert [t["name"] for t in by_offset["items"]] == sorted(names)[13:]
    # A cursor of the unfiltered list does not fit the prefixed one.
    cursor = (await client.get("/v1/topics", params={"limit": 1})).json()["next_cursor"]
    assert_problem(await client.get("/v1/topics", params={"prefix": "w", "cursor": cursor}), 400, "cursor")
    # LIKE wildcards are plain characters in a prefix.
    assert (await client.get("/v1/topics", params={"prefix": "%"})).json()["items"] == []


async def test_tag_replace_and_untag(client: httpx.AsyncClient, message_ids: list[int]) -> None:
    path = f"/v1/messages/{message_ids[0]}/topics"
    added = await client.post(path, json={"topics": ["b", "a"]})
    assert added.status_code == 200
    assert [t["name"] for t in added.json()] == ["a", "b"]
    more = (await client.post(path, json={"topics": ["c", "a"]})).json()
    assert [t["name"] for t in more] == ["a", "b", "c"]
    replaced = (await client.put(path, json={"topics": ["c", "d"]})).json()
    assert [t["name"] for t in replaced] == ["c", "d"]
    message = (await client.get(f"/v1/messages/{message_ids[0]}")).json()
    assert message["topics"] == replaced
    removed = await client.delete(f"{path}/{replaced[0]['id']}")
    assert removed.status_code == 204
    assert [t["name"] for t in (await client.get(f"/v1/messages/{message_ids[0]}")).json()["topics"]] == ["d"]
    assert_problem(await client.delete(f"{path}/{replaced[0]['id']}"), 404)
    cleared = (await client.put(path, json={"topics": []})).json()
    assert cleared == []


async def test_tagging_an_unknown_message_is_404_and_creates_no_topic(
    client: httpx.AsyncClient, conn: Connection
) -> None:
    for method in ("put", "post"):
        response = await client.request(method, "/v1/messages/424242/topics", json={"topics": ["ghost"]})
        assert_problem(response, 404)
    assert await conn.fetchval("SELECT count(*) FROM topics") == 0


async def test_topic_messages_newest_first(client: httpx.AsyncClient, message_ids: list[int]) -> None:
    tagged = message_ids[:4]
    assign = await client.post("/v1/topics/assign", json={"message_ids": tagged, "topics": ["news"]})
    assert assign.json() == {"assigned": 4}
    topic = (await client.get("/v1/topics", params={"prefix": "news"})).json()["items"][0]
    path = f"/v1/topics/{topic['id']}/messages"
    paged = await all_pages(client, path, limit=3)
    assert [m["id"] for m in paged] == sorted(tagged, reverse=True)
    assert paged[0]["topics"] == [{"id": topic["id"], "name": "news"}]
    slim = (await client.get(path, params={"fields": "content", "limit": 2})).json()
    assert slim["items"] == [{"content": "m3"}, {"content": "m2"}]
    rest = (await client.get(path, params={"fields": "content", "cursor": slim["next_cursor"]})).json()
    assert rest["items"] == [{"content": "m1"}, {"content": "m0"}]
    counted = (await client.get(path, params={"count": "exact", "offset": 3})).json()
    assert counted["total"] == 4
    assert [m["id"] for m in counted["items"]] == [tagged[0]]
    assert (await client.get(f"/v1/topics/{topic['id']}")).json()["message_count"] == 4
    assert_problem(await client.get("/v1/topics/999999/messages"), 404)


async def test_assign_is_idempotent_and_all_or_nothing(
    client: httpx.AsyncClient, conn: Connection, message_ids: list[int]
) -> None:
    first = await client.post("/v1/topics/assign", json={"message_ids": message_ids[:2], "topics": ["x", "y"]})
    assert first.json() == {"assigned": 4}
    again = await client.post("/v1/topics/assign", json={"message_ids": message_ids[:3], "topics": ["x", "y"]})
    assert again.json() == {"assigned": 2}
    before = await conn.fetchval("SELECT count(*) FROM message_topics")
    missing = await client.post(
        "/v1/topics/assign", json={"message_ids": [message_ids[4], 777001, 777002], "topics": ["brand-new"]}
    )
    body = assert_problem(missing, 422, "message_ids")
    assert "777001" in body["detail"]
    assert await conn.fetchval("SELECT count(*) FROM message_topics") == before
    assert await conn.fetchval("SELECT count(*) FROM topics WHERE name = 'brand-new'") == 0


@pytest.mark.parametrize(
    "body",
    [
        {"message_ids": [], "topics": ["a"]},
        {"message_ids": [1], "topics": []},
        {"message_ids": [1] * 1001, "topics": ["a"]},
        {"message_ids": [0], "topics": ["a"]},
        {"message_ids": [1], "topics": ["a\u0000"]},
    ],
)
async def test_bad_assignments_are_400(client: httpx.AsyncClient, body: dict[str, Any]) -> None:
    assert_problem(await client.post("/v1/topics/assign", json=body), 400)


# Messages whose copy of their topic ids (messages.topic_ids, migration 0030) is not what
# message_topics holds for them: NULL for none (a deleted message's tags are set aside).
COPIES_APART = """
SELECT m.id, m.topic_ids, t.tags
FROM messages AS m
LEFT JOIN LATERAL (
    SELECT array_agg(mt.topic_id ORDER BY mt.topic_id) AS tags FROM message_topics AS mt WHERE mt.message_id = m.id
) AS t ON true
WHERE m.topic_ids IS DISTINCT FROM t.tags
"""


async def test_every_write_of_tags_keeps_each_rows_copy_of_its_topic_ids(
    client: httpx.AsyncClient, conn: Connection, message_ids: list[int]
) -> None:
    first, second, third = message_ids[:3]
    conversation_id = (await client.get(f"/v1/messages/{first}")).json()["conversation_id"]
    path = f"/v1/conversations/{conversation_id}/messages"

    async def written(response: httpx.Response) -> None:
        assert response.status_code < 300, response.text
        assert [dict(row) for row in await conn.fetch(COPIES_APART)] == []

    await written(await client.post(path, json={"role": "user", "content": "one", "topics": ["b", "a"]}))
    await written(await post_tagged_batch(client, f"{path}/batch", ["c", "a"]))
    await written(await client.put(f"/v1/messages/{first}/topics", json={"topics": ["x", "y"]}))
    await written(await client.post(f"/v1/messages/{first}/topics", json={"topics": ["z", "x"]}))
    x = next(t["id"] for t in (await client.get(f"/v1/messages/{first}")).json()["topics"] if t["name"] == "x")
    await written(await client.delete(f"/v1/messages/{first}/topics/{x}"))
    await written(await client.post("/v1/topics/assign", json={"message_ids": [first, second], "topics": ["y", "w"]}))
    await written(await client.put(f"/v1/messages/{third}/topics", json={"topics": []}))
    await written(await client.delete(f"/v1/messages/{first}"))
    assert await conn.fetchval("SELECT topic_ids FROM messages WHERE id = $1", first) is None
    await written(await client.post(f"/v1/messages/{first}/restore"))
    # What reads show comes from the copy: the message, and a page of the conversation.
    shown = (await client.get(f"/v1/messages/{first}")).json()["topics"]
    assert sorted(t["name"] for t in shown) == ["w", "y", "z"]
    page = (await client.get(path, params={"limit": 50})).json()["items"]
    assert next(m["topics"] for m in page if m["id"] == first) == shown
    assert next(m["topics"] for m in page if m["id"] == third) == []


async def post_tagged_batch(client: httpx.AsyncClient, path: str, topics: list[str]) -> httpx.Response:
    """A batch of two messages, each tagged with ``topics``."""
    messages = [{"role": "user", "content": f"batch {n}", "topics": topics} for n in range(2)]
    return await client.post(path, json={"messages": messages})


async def test_an_older_add_messages_tags_get_their_copy_from_the_trigger(
    conn: Connection, message_ids: list[int]
) -> None:
    """An add_messages of before migration 0030 (still serving during a rolling deploy) flags its
    tags 'on' and writes rows without their copy: the trigger computes it, and consumes the flag."""
    topic = await conn.fetchval("SELECT id FROM topic_ids(ARRAY['older'])")
    await conn.execute("SELECT set_config('freya.tags_of_new_messages', 'on', true)")
    await conn.execute("INSERT INTO message_topics (topic_id, message_id) VALUES ($1, $2)", topic, message_ids[0])
    assert await conn.fetchval("SELECT topic_ids FROM messages WHERE id = $1", message_ids[0]) == [topic]
    assert await conn.fetch(COPIES_APART) == []
    assert await conn.fetchval("SELECT current_setting('freya.tags_of_new_messages', true)") == ""


async def test_concurrent_tag_writes_to_a_message_leave_its_copy_as_its_tags(fresh_database: Callable[[], str]) -> None:
    url = fresh_database()
    async with serving(url) as live_client:
        user = await create_user(live_client)
        conversation = await create_conversation(live_client, user["id"])
        [item] = await post_batch(live_client, conversation["id"], [{"role": "user", "content": "contested"}])
        message_id = item["message"]["id"]
        message = f"/v1/messages/{message_id}/topics"
        [shared] = (await live_client.post(message, json={"topics": ["shared"]})).json()

        def write(n: int) -> Awaitable[httpx.Response]:
            if n % 4 == 0:
                return live_client.put(message, json={"topics": [f"only-{n}"]})
            if n % 4 == 1:
                return live_client.post(message, json={"topics": [f"more-{n}", "shared"]})
            if n % 4 == 2:
                return live_client.delete(f"{message}/{shared['id']}")
            return live_client.post("/v1/topics/assign", json={"message_ids": [message_id], "topics": ["shared"]})

        statuses = {r.status_code for r in await asyncio.gather(*(write(n) for n in range(32)))}
        assert statuses <= {200, 204, 404}, statuses  # 404: the shared tag was gone already
    connection = await asyncpg.connect(url)
    try:
        assert await connection.fetch(COPIES_APART) == []
        assert await connection.fetchval("SELECT count(*) FROM message_topics") > 0
    finally:
        await connection.close()


async def test_concurrent_replacements_leave_one_of_the_sets(fresh_database: Callable[[], str]) -> None:
    """PUT sets exactly its topics: of replacements racing on one message, the last one's set
    stays (they left the union of their sets, each DELETE blind to the tags committed while it
    waited for the message's lock), and each answers its own set."""
    async with serving(fresh_database()) as live_client:
        user = await create_user(live_client)
        conversation = await create_conversation(live_client, user["id"])
        [item] = await post_batch(live_client, conversation["id"], [{"role": "user", "content": "contested"}])
        path = f"/v1/messages/{item['message']['id']}/topics"
        sets = [{f"first-{n}", f"second-{n}"} for n in range(12)]
        for _ in range(3):
            answers = await asyncio.gather(*(live_client.put(path, json={"topics": sorted(s)}) for s in sets))
            assert [{topic["name"] for topic in answer.json()} for answer in answers] == sets
            final = {
                topic["name"]
                for topic in (await live_client.get(f"/v1/messages/{item['message']['id']}")).json()["topics"]
            }
            assert final in sets


async def test_concurrent_requests_create_one_topic(fresh_database: Callable[[], str]) -> None:
    async with serving(fresh_database()) as live_client:
        await _race_topic_creation(live_client)


async def _race_topic_creation(live_client: httpx.AsyncClient) -> None:
    user = await create_user(live_client)
    conversation = await create_conversation(live_client, user["id"])
    path = f"/v1/conversations/{conversation['id']}/messages"

    async def post(n: int) -> httpx.Response:
        return await live_client.post(path, json={"role": "user", "content": f"c{n}", "topics": ["race", f"own-{n}"]})

    responses = await asyncio.gather(*(post(n) for n in range(20)))
    assert [r.status_code for r in responses] == [201] * 20
    race_ids = {next(t["id"] for t in r.json()["topics"] if t["name"] == "race") for r in responses}
    assert len(race_ids) == 1
    topics = await all_pages(live_client, "/v1/topics", prefix="race")
    assert len(topics) == 1
    assigned = await asyncio.gather(
        *(
            live_client.post("/v1/topics/assign", json={"message_ids": [r.json()["id"]], "topics": ["bulk-race"]})
            for r in responses
        )
    )
    assert {a.status_code for a in assigned} == {200}
    assert len(await all_pages(live_client, "/v1/topics", prefix="bulk-race")) == 1


async def test_concurrent_duplicates_store_one_message(fresh_database: Callable[[], str]) -> None:
    async with serving(fresh_database()) as live_client:
        await _race_duplicates(live_client)


async def _race_duplicates(live_client: httpx.AsyncClient) -> None:
    user = await create_user(live_client)
    conversation = await create_conversation(live_client, user["id"])
    path = f"/v1/conversations/{conversation['id']}/messages"
    body = {"role": "user", "content": "only once", "client_msg_id": "retry-me", "topics": ["dup"]}
    responses = await asyncio.gather(*(live_client.post(path, json=body) for _ in range(20)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 19 + [201]
    assert len({r.json()["id"] for r in responses}) == 1
    assert all(r.json()["topics"] == responses[0].json()["topics"] for r in responses)
    batch = {"messages": [body, {**body, "client_msg_id": "batch-key"}]}
    batches = await asyncio.gather(*(live_client.post(f"{path}/batch", json=batch) for _ in range(10)))
    assert {b.status_code for b in batches} == {201}
    created = [i for b in batches for i in b.json()["items"] if i["status"] == "created"]
    assert len(created) == 1
    stored = (await live_client.get(path, params={"count": "exact"})).json()
    assert stored["total"] == 2
    conversation_now = (await live_client.get(f"/v1/conversations/{conversation['id']}")).json()
    assert conversation_now["message_count"] == 2


async def test_topic_names_are_cached_per_database(fresh_database: Callable[[], str]) -> None:
    # Two databases cloned from one template hand out the same topic ids for different names: each
    # app's topic-name cache belongs to its own database, so neither answers with the other's name.
    seen: list[list[dict[str, Any]]] = []
    for name in ("first-name", "second-name"):
        async with serving(fresh_database()) as client:
            user = await create_user(client)
            conversation = await create_conversation(client, user["id"])
            await post_batch(client, conversation["id"], [{"role": "user", "content": "x", "topics": [name]}])
            page = (await client.get(f"/v1/conversations/{conversation['id']}/messages")).json()
            seen.append(page["items"][0]["topics"])
    assert seen[0][0]["id"] == seen[1][0]["id"]
    assert [t["name"] for t in seen[0]] == ["first-name"]
    assert [t["name"] for t in seen[1]] == ["second-name"]


async def test_topic_lists_are_built_once_shared_and_bounded(conn: Connection, monkeypatch: pytest.MonkeyPatch) -> None:
    [b, a] = [row["id"] for row in await conn.fetch("INSERT INTO topics (name) VALUES ('b'), ('a') RETURNING id")]
    cache = TopicCache()
    lists = await topics.lists_of(conn, cache, [([b, a],), (None,), ([b, a],), ([a],), ([],)], 0)
    assert [[ref.name for ref in refs] for refs in lists] == [["a", "b"], [], ["a", "b"], ["a"], []]
    # One list per distinct set of ids, shared.
    assert lists[0] is lists[2]
    assert lists[1] is lists[4] is topic_lists.NONE
    assert cache.names == {a: "a", b: "b"}
    # Full: the cache starts over, and answers as before.
    monkeypatch.setattr(topic_lists, "MAX_CACHED_LISTS", len(cache.lists))
    [again] = await topics.lists_of(conn, cache, [{"topic_ids": [a, b]}], "topic_ids")
    assert [(ref.id, ref.name) for ref in again] == [(a, "a"), (b, "b")]
    assert list(cache.lists) == [(a, b)]
