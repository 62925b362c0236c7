"""Messages: posting (single, batch, idempotent), paging in both orders, fields=, edits and deletes."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import pytest

from service import messages
from service.db import Connection, configure_connection
from service.fields import MAX_CONTENT
from service.topic_lists import TopicCache
from tests.api import all_pages, assert_problem, create_conversation, create_user, post_batch, serving


@pytest.fixture
async def chat(client: httpx.AsyncClient) -> dict[str, Any]:
    """A user and one conversation of theirs."""
    user = await create_user(client)
    conversation = await create_conversation(client, user["id"])
    return {"user": user, "conversation": conversation, "messages": f"/v1/conversations/{conversation['id']}/messages"}


async def counts(conn: Connection) -> tuple[int, int, int]:
    row = await conn.fetchrow(
        "SELECT (SELECT count(*) FROM messages), (SELECT count(*) FROM message_topics), (SELECT count(*) FROM topics)"
    )
    assert row is not None
    return row[0], row[1], row[2]


async def test_post_a_message_with_topics(client: httpx.AsyncClient, conn: Connection, chat: dict[str, Any]) -> None:
    response = await client.post(
        chat["messages"], json={"role": "user", "content": "Book a flight", "topics": ["travel", "flights", "travel"]}
    )
    assert response.status_code == 201, response.text
    message = response.json()
    assert message["user_id"] == chat["user"]["id"]  # defaults to the conversation's owner
    assert message["conversation_id"] == chat["conversation"]["id"]
    assert message["role"] == "user"
    assert message["edited_at"] is None
    assert [t["name"] for t in message["topics"]] == ["flights", "travel"]
    fetched = await client.get(f"/v1/messages/{message['id']}")
    assert fetched.json() == message
    # Pages are encoded by PostgreSQL, single messages by Python: they read the same.
    listed = await client.get(chat["messages"])
    assert listed.json()["items"] == [message]
    conversation = (await client.get(f"/v1/conversations/{chat['conversation']['id']}")).json()
    assert conversation["message_count"] == 1
    assert conversation["updated_at"] == message["timestamp"]
    assert await counts(conn) == (1, 2, 2)


async def test_post_as_another_user(client: httpx.AsyncClient, chat: dict[str, Any]) -> None:
    assistant = await create_user(client, "freya@example.com", "Freya")
    response = await client.post(
        chat["messages"], json={"role": "assistant", "content": "Sure.", "user_id": assistant["id"]}
    )
    assert response.json()["user_id"] == assistant["id"]


async def test_unknown_conversation_is_404_unknown_user_is_422(
    client: httpx.AsyncClient, conn: Connection, chat: dict[str, Any]
) -> None:
    assert_problem(await client.post("/v1/conversations/999999/messages", json={"role": "user", "content": "x"}), 404)
    response = await client.post(
        chat["messages"], json={"role": "user", "content": "x", "user_id": 999999, "topics": ["new"]}
    )
    assert_problem(response, 422, "user_id")
    assert await counts(conn) == (0, 0, 0)


async def test_repeated_client_msg_id_returns_the_stored_message_and_writes_nothing(
    client: httpx.AsyncClient, conn: Connection, chat: dict[str, Any]
) -> None:
    body = {"role": "user", "content": "once", "client_msg_id": "abc-1", "topics": ["t1"]}
    first = await client.post(chat["messages"], json=body)
    assert first.status_code == 201
    before = await counts(conn)
    again = await client.post(chat["messages"], json={**body, "content": "changed", "topics": ["t2"]})
    assert again.status_code == 200
    assert again.json() == first.json()
    assert await counts(conn) == before
    conversation = (await client.get(f"/v1/conversations/{chat['conversation']['id']}")).json()
    assert conversation["message_count"] == 1
    # The same key in another conversation is another message.
    other = await create_conversation(client, chat["user"]["id"])
    elsewhere = await client.post(f"/v1/conversations/{other['id']}/messages", json=body)
    assert elsewhere.status_code == 201
    assert elsewhere.json()["id"] != first.json()["id"]


@pytest.mark.parametrize("content", ["topic_ids", "sort_id"])
async def test_a_repeat_answers_whatever_the_stored_content_says(
    client: httpx.AsyncClient, chat: dict[str, Any], content: str
) -> None:
    # A stored message is read back as plain values: content equal to a column name the readers
    # look for is content, not a column.
    body = {"role": "user", "content": content, "client_msg_id": "same", "topics": ["t1"]}
    first = await client.post(chat["messages"], json=body)
    assert first.status_code == 201
    again = await client.post(chat["messages"], json=body)
    assert again.status_code == 200
    assert again.json() == first.json()


async def test_batch_reports_created_and_duplicate_per_item(
    client: httpx.AsyncClient, conn: Connection, chat: dict[str, Any]
) -> None:
    stored = await client.post(chat["messages"], json={"role": "user", "content": "old", "client_msg_id": "k0"})
    items = await post_batch(
        client,
        chat["conversation"]["id"],
        [
            {"role": "system", "content": "one", "topics": ["a"]},
            {"role": "user", "content": "two", "client_msg_id": "k0"},
            {"role": "assistant", "content": "three", "client_msg_id": "k1", "topics": ["a", "b"]},
            {"role": "tool", "content": "four", "client_msg_id": "k1"},
        ],
    )
    assert [i["status"] for i in items] == ["created", "duplicate", "created", "duplicate"]
    assert items[1]["message"] == stored.json()
    assert items[3]["message"] == items[2]["message"]
    assert [t["name"] for t in items[2]["message"]["topics"]] == ["a", "b"]
    assert items[0]["message"]["id"] < items[2]["message"]["id"]
    assert await counts(conn) == (3, 3, 2)
    conversation = (await client.get(f"/v1/conversations/{chat['conversation']['id']}")).json()
    assert conversation["message_count"] == 3


async def test_a_full_batch_of_1000_is_two_statements(
    client: httpx.AsyncClient, conn: Connection, chat: dict[str, Any]
) -> None:
    sent: list[str] = []
    conn.add_query_logger(lambda q: sent.append(q.query))
    batch = [
        {"role": "user", "content": f"message {n}", "topics": [f"topic-{n % 7}"], "client_msg_id": f"m{n}"}
        for n in range(1000)
    ]
    items = await post_batch(client, chat["conversation"]["id"], batch)
    assert len(items) == 1000
    assert all(i["status"] == "created" for i in items)
    assert [i["message"]["content"] for i in items] == [m["content"] for m in batch]
    ids = [i["message"]["id"] for i in items]
    assert ids == sorted(ids)
    # One statement to lock and look, one to write the messages and their tags.
    assert [q.splitlines()[0] for q in sent if q.startswith("-- ")] == [
        "-- messages.begin_adding_messages",
        "-- messages.insert_new_messages",
    ]
    assert await counts(conn) == (1000, 1000, 7)
    # The answer is built from the batch and the statements' answers: no read of what was written.
    assert [[t["name"] for t in i["message"]["topics"]] for i in items] == [[f"topic-{n % 7}"] for n in range(1000)]
    assert not [q for q in sent if q.startswith(("-- topics.tags_of_messages", "-- messages.get_message"))]
    # …and it reads exactly as the stored messages do.
    page = await all_pages(client, chat["messages"], order="asc", limit=200)
    assert page == [i["message"] for i in items]


def in_order(value: Any) -> str:
    """JSON text that keeps key order: two answers that compare equal here encode the same bytes."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


async def test_the_answer_to_a_post_is_what_a_read_of_the_message_shows(
    client: httpx.AsyncClient, chat: dict[str, Any]
) -> None:
    # PostgreSQL stores metadata as jsonb (keys reordered, numbers normalised): the answer, built
    # without reading the row back, shows it as stored, byte for byte.
    metadata = {"zeta": 1, "a": [1.5, 2.0, {"y": 1, "x": 2}], "bb": "é", "n": 1e2}
    single = await client.post(
        chat["messages"], json={"role": "user", "content": "hi", "metadata": metadata, "topics": ["b", "a"]}
    )
    assert single.status_code == 201
    assert single.content == (await client.get(f"/v1/messages/{single.json()['id']}")).content
    items = await post_batch(
        client,
        chat["conversation"]["id"],
        [
            {"role": "assistant", "content": "one", "metadata": metadata, "token_count": 3, "client_msg_id": "x"},
            {"role": "user", "content": "two", "topics": ["c", "a", "c"]},
            {"role": "user", "content": "three", "client_msg_id": "x"},
        ],
    )
    for item in items:
        read = (await client.get(f"/v1/messages/{item['message']['id']}")).json()
        assert in_order(item["message"]) == in_order(read)
    assert [t["name"] for t in items[1]["message"]["topics"]] == ["a", "c"]


async def test_a_post_that_loses_a_race_for_its_client_msg_id_answers_the_winner(
    fresh_database: Callable[[], str],
) -> None:
    url = fresh_database()
    winner, loser = await asyncpg.connect(url), await asyncpg.connect(url)
    try:
        for conn in (winner, loser):
            await configure_connection(conn)
        user_id = await winner.fetchval("INSERT INTO users (email, name) VALUES ('r@example.com', 'R') RETURNING id")
        conversation_id = await winner.fetchval("INSERT INTO conversations (user_id) VALUES ($1) RETURNING id", user_id)
        once = messages.MessageCreate(role="user", content="once", client_msg_id="k", topics=["race"])
        other = messages.MessageCreate(role="user", content="other", topics=["race"])
        async with winner.transaction():
            [won] = await messages.add_messages(winner, TopicCache(), conversation_id, [once], in_batch=False)
            # The loser's first statement waits for the conversation's row; its snapshot predates the
            # winner's commit, so its insert meets the winner's client_msg_id: it runs again, whole.
            losing = asyncio.create_task(
                messages.add_messages(loser, TopicCache(), conversation_id, [once, other], in_batch=True)
            )
            await asyncio.sleep(0.2)
            assert not losing.done()
        lost = await losing
        assert [item.status for item in lost] == ["duplicate", "created"]
        assert lost[0].message == won.message
        assert lost[1].message.id > won.message.id
        counted = await loser.fetchrow(
            "SELECT (SELECT count(*) FROM messages) AS messages, (SELECT count(*) FROM message_topics) AS tags, "
            "(SELECT message_count FROM conversations WHERE id = $1) AS message_count, "
            "(SELECT count(*) FROM changes WHERE entity = 'message') AS changes",
            conversation_id,
        )
        assert counted is not None
        assert dict(counted) == {"messages": 2, "tags": 2, "message_count": 2, "changes": 2}
    finally:
        await winner.close()
        await loser.close()


async def test_batch_over_1000_is_400(client: httpx.AsyncClient, chat: dict[str, Any]) -> None:
    batch = [{"role": "user", "content": "x"}] * 1001
    response = await client.post(f"{chat['messages']}/batch", json={"messages": batch})
    assert_problem(response, 400, "messages")


async def test_an_invalid_batch_item_names_its_index_and_nothing_is_written(
    client: httpx.AsyncClient, conn: Connection, chat: dict[str, Any]
) -> None:
    batch: list[dict[str, Any]] = [{"role": "user", "content": "fine"}, {"role": "user", "content": "fine"}]
    for index, broken in enumerate(
        [{"role": "robot", "content": "x"}, {"role": "user", "content": ""}, {"role": "user", "content": "a\u0000"}]
    ):
        response = await client.post(f"{chat['messages']}/batch", json={"messages": [*batch, broken]})
        body = assert_problem(response, 400)
        assert body["errors"][0]["field"].startswith("messages[2]"), (index, body)
    unknown_user = await client.post(
        f"{chat['messages']}/batch",
        json={"messages": [*batch, {"role": "user", "content": "x", "user_id": 987654, "topics": ["new"]}]},
    )
    assert_problem(unknown_user, 422, "messages[2].user_id")
    assert await counts(conn) == (0, 0, 0)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"role": "robot", "content": "x"}, "role"),
        ({"role": "user"}, "content"),
        ({"role": "user", "content": ""}, "content"),
        ({"role": "user", "content": "x" * (MAX_CONTENT + 1)}, "content"),
        ({"role": "user", "content": "nul\u0000"}, "content"),
        ({"role": "user", "content": "x", "topics": "travel"}, "topics"),
        ({"role": "user", "content": "x", "topics": [""]}, "topics[0]"),
        ({"role": "user", "content": "x", "topics": ["t"] * 51}, "topics"),
        ({"role": "user", "content": "x", "client_msg_id": ""}, "client_msg_id"),
        ({"role": "user", "content": "x", "user_id": -3}, "user_id"),
        ({"role": "user", "content": "x", "timestamp": "2026-01-01T00:00:00Z"}, "timestamp"),
    ],
)
async def test_bad_message_bodies_are_400(
    client: httpx.AsyncClient, conn: Connection, chat: dict[str, Any], body: dict[str, Any], field: str
) -> None:
    assert_problem(await client.post(chat["messages"], json=body), 400, field)
    assert await counts(conn) == (0, 0, 0)


async def test_content_of_the_maximum_length_is_accepted(client: httpx.AsyncClient, chat: dict[str, Any]) -> None:
    response = await client.post(chat["messages"], json={"role": "user", "content": "é" * MAX_CONTENT})
    assert response.status_code == 201


async def seed_equal_timestamps(client: httpx.AsyncClient, chat: dict[str, Any], count: int) -> list[int]:
    """Messages in batches: every batch shares one timestamp, so order within it rests on ids."""
    ids: list[int] = []
    for start in range(0, count, 10):
        batch = [{"role": "user", "content": f"m{n}"} for n in range(start, min(start + 10, count))]
        ids.extend(i["message"]["id"] for i in await post_batch(client, chat["conversation"]["id"], batch))
    return ids


async def test_keyset_pages_return_every_message_once_in_order(
    client: httpx.AsyncClient, conn: Connection, chat: dict[str, Any]
) -> None:
    await seed_equal_timestamps(client, chat, 37)
    # Spread the batches over time, keeping ties within each one.
    await conn.execute("UPDATE messages SET \"timestamp\" = now() - interval '1 minute' * (100 - id / 10)")
    expected = [r["id"] for r in await conn.fetch('SELECT id FROM messages ORDER BY "timestamp" DESC, id DESC')]
    newest_first = await all_pages(client, chat["messages"], limit=5)
    assert [m["id"] for m in newest_first] == expected
    oldest_first = await all_pages(client, chat["messages"], limit=6, order="asc")
    assert [m["id"] for m in oldest_first] == list(reversed(expected))


async def test_paging_survives_new_messages_between_pages(client: httpx.AsyncClient, chat: dict[str, Any]) -> None:
    original = await seed_equal_timestamps(client, chat, 20)
    seen: list[int] = []
    first = (await client.get(chat["messages"], params={"limit": 7})).json()
    seen.extend(m["id"] for m in first["items"])
    cursor = first["next_cursor"]
    while cursor:
        await post_batch(client, chat["conversation"]["id"], [{"role": "assistant", "content": "meanwhile"}])
        page = (await client.get(chat["messages"], params={"limit": 7, "cursor": cursor})).json()
        seen.extend(m["id"] for m in page["items"])
        cursor = page["next_cursor"]
    assert seen == sorted(original, reverse=True)

    ascending: list[int] = []
    page = (await client.get(chat["messages"], params={"limit": 6, "order": "asc"})).json()
    while True:
        ascending.extend(m["id"] for m in page["items"])
        if page["next_cursor"] is None:
            break
        await post_batch(client, chat["conversation"]["id"], [{"role": "assistant", "content": "later"}])
        page = (
            await client.get(chat["messages"], params={"limit": 6, "order": "asc", "cursor": page["next_cursor"]})
        ).json()
    # Oldest first, new messages join the end: every original once, in order, then the newcomers.
    assert ascending[: len(original)] == original
    assert len(ascending) == len(set(ascending))


async def test_offset_pages_and_counts(client: httpx.AsyncClient, chat: dict[str, Any]) -> None:
    ids = await seed_equal_timestamps(client, chat, 12)
    page = (
        await client.get(chat["messages"], params={"offset": 5, "limit": 4, "order": "asc", "count": "exact"})
    ).json()
    assert [m["id"] for m in page["items"]] == ids[5:9]
    assert page["total"] == 12
    assert page["next_cursor"] is None
    estimated = (await client.get(chat["messages"], params={"count": "estimated"})).json()
    assert isinstance(estimated["total"], int)


async def test_role_since_until_filters(client: httpx.AsyncClient, conn: Connection, chat: dict[str, Any]) -> None:
    await post_batch(
        client,
        chat["conversation"]["id"],
        [{"role": role, "content": f"{role} {n}"} for n in range(3) for role in ("user", "assistant")],
    )
    await conn.execute(
        "UPDATE messages SET \"timestamp\" = '2026-03-01T00:00:00Z'::timestamptz + id * interval '1 hour'"
    )
    rows = await conn.fetch('SELECT id, "timestamp" FROM messages ORDER BY id')
    only_assistant = (await client.get(chat["messages"], params={"role": "assistant", "count": "exact"})).json()
    assert {m["role"] for m in only_assistant["items"]} == {"assistant"}
    assert only_assistant["total"] == 3
    since, until = rows[1]["timestamp"].isoformat(), rows[4]["timestamp"].isoformat()
    window = (await client.get(chat["messages"], params={"since": since, "until": until, "order": "asc"})).json()
    assert [m["id"] for m in window["items"]] == [r["id"] for r in rows[1:4]]
    # Without an offset a time is UTC; paging keeps working with it.
    naive = rows[1]["timestamp"].replace(tzinfo=None).isoformat()
    first = (await client.get(chat["messages"], params={"since": naive, "order": "asc", "limit": 2})).json()
    assert [m["id"] for m in first["items"]] == [r["id"] for r in rows[1:3]]
    second = (
        await client.get(chat["messages"], params={"since": naive, "order": "asc", "cursor": first["next_cursor"]})
    ).json()
    assert [m["id"] for m in second["items"]] == [r["id"] for r in rows[3:]]


async def test_a_since_until_window_pages_both_ways_with_ties_at_its_bounds(
    client: httpx.AsyncClient, conn: Connection, chat: dict[str, Any]
) -> None:
    await seed_equal_timestamps(client, chat, 30)
    # Five messages an instant, so since and until fall on ties: since takes all five, until none.
    await conn.execute(
        "UPDATE messages SET \"timestamp\" = '2026-03-01T00:00:00Z'::timestamptz + (id / 5) * interval '1 s'"
    )
    rows = await conn.fetch('SELECT id, "timestamp" FROM messages ORDER BY "timestamp", id')
    since, until = rows[7]["timestamp"], rows[23]["timestamp"]
    expected = [r["id"] for r in rows if since <= r["timestamp"] < until]
    assert 0 < len(expected) < len(rows)
    window = {"since": since.isoformat(), "until": until.isoformat(), "limit": 3}
    for order, in_order in (("asc", expected), ("desc", expected[::-1])):
        assert [m["id"] for m in await all_pages(client, chat["messages"], order=order, **window)] == in_order
        # And back from the last page by prev_cursor.
        page = (await client.get(chat["messages"], params={**window, "order": order})).json()
        while page["next_cursor"]:
            page = (
                await client.get(chat["messages"], params={**window, "order": order, "cursor": page["next_cursor"]})
            ).json()
        walked_back = [m["id"] for m in page["items"]]
        while page["prev_cursor"]:
            page = (
                await client.get(chat["messages"], params={**window, "order": order, "cursor": page["prev_cursor"]})
            ).json()
            walked_back = [m["id"] for m in page["items"]] + walked_back
        assert walked_back == in_order, order


async def test_a_page_and_its_topics_are_one_statement(
    client: httpx.AsyncClient, conn: Connection, chat: dict[str, Any]
) -> None:
    batch = [{"role": "user", "content": f"m{n}", "topics": [f"t{n % 3}", "all"][: 1 + n % 2]} for n in range(7)]
    await post_batch(client, chat["conversation"]["id"], batch)
    await client.get(chat["messages"])  # the topic names are cached from here on
    sent: list[str] = []
    conn.add_query_logger(lambda q: sent.append(q.query))
    for order in ("desc", "asc"):
        page = (await client.get(chat["messages"], params={"order": order, "limit": 5})).json()
        rest = (await client.get(chat["messages"], params={"order": order, "cursor": page["next_cursor"]})).json()
        listed = page["items"] + rest["items"]
        expected = batch if order == "asc" else batch[::-1]
        assert [m["content"] for m in listed] == [m["content"] for m in expected]
        assert [[t["name"] for t in m["topics"]] for m in listed] == [sorted(m["topics"]) for m in expected]
    # One of our statements per page (the test's savepoints around each request aside).
    ours = [q.split("\n", 1)[0] for q in sent if q.startswith("-- ")]
    assert ours == ["-- messages.list_messages_newest_first"] * 2 + ["-- messages.list_messages_oldest_first"] * 2


async def test_a_page_with_timestamps_does_not_select_its_time_twice(
    client: httpx.AsyncClient, conn: Connection, chat: dict[str, Any]
) -> None:
    await post_batch(client, chat["conversation"]["id"], [{"role": "user", "content": f"m{i}"} for i in range(5)])
    sent: list[str] = []
    conn.add_query_logger(lambda q: sent.append(q.query))
    seen: list[str] = []
    for order in ("desc", "asc"):
        params: dict[str, Any] = {"limit": 2, "order": order}
        while True:
            page = (await client.get(chat["messages"], params=params)).json()
            seen.extend(item["content"] for item in page["items"])
            if page["next_cursor"] is None:
                break
            params["cursor"] = page["next_cursor"]
    # Cursors made from the timestamp column itself page through every message, both ways.
    assert seen == [f"m{i}" for i in reversed(range(5))] + [f"m{i}" for i in range(5)]
    statements = [q for q in sent if "list_messages_" in q]
    assert statements
    assert not any("sort_ts" in q for q in statements)


async def test_fields_selects_only_those_columns(
    client: httpx.AsyncClient, conn: Connection, chat: dict[str, Any]
) -> None:
    await post_batch(client, chat["conversation"]["id"], [{"role": "user", "content": "hello", "topics": ["x"]}] * 3)
    sent: list[str] = []
    conn.add_query_logger(lambda q: sent.append(q.query))
    page = (await client.get(chat["messages"], params={"fields": "content,role", "limit": 2})).json()
    assert page["items"] == [{"role": "user", "content": "hello"}] * 2
    statement = next(q for q in sent if "list_messages_newest_first" in q)
    selected = statement.split("FROM page AS m")[0]
    # The page's objects are built from exactly the chosen columns (plus the sort key that orders
    # the page and makes the cursor); no topic lookup runs, in the statement or after it.
    assert selected.endswith('SELECT m.role AS role, m.content AS content, m."timestamp" AS sort_ts, m.id AS sort_id\n')
    assert "message_topics" not in statement
    assert not any("tags_of_messages" in q for q in sent)
    rest = (await client.get(chat["messages"], params={"fields": "content,role", "cursor": page["next_cursor"]})).json()
    assert rest["items"] == [{"role": "user", "content": "hello"}]
    sent.clear()
    offset_page = (await client.get(chat["messages"], params={"fields": "content", "offset": 0})).json()
    assert offset_page["items"] == [{"content": "hello"}] * 3
    assert 'SELECT m.content AS content, m."timestamp" AS sort_ts' in next(q for q in sent if "list_messages" in q)


async def test_fields_on_a_single_message(client: httpx.AsyncClient, chat: dict[str, Any]) -> None:
    created = (await client.post(chat["messages"], json={"role": "tool", "content": "42", "topics": ["calc"]})).json()
    response = await client.get(f"/v1/messages/{created['id']}", params={"fields": "topics,id"})
    assert response.json() == {"id": created["id"], "topics": created["topics"]}


@pytest.mark.parametrize("field", messages.FIELDS)
async def test_each_field_alone_on_every_read_that_takes_fields(
    client: httpx.AsyncClient, chat: dict[str, Any], field: str
) -> None:
    """One field is a valid projection everywhere, topics too (whose select list of columns is
    then empty: it was a syntax error, a 500, on a single message)."""
    created = (await client.post(chat["messages"], json={"role": "user", "content": "hi", "topics": ["one"]})).json()
    expected = {field: created[field]}
    topic_id = created["topics"][0]["id"]
    single = await client.get(f"/v1/messages/{created['id']}", params={"fields": field})
    assert single.status_code == 200, single.text
    assert single.json() == expected
    assert_problem(await client.get("/v1/messages/999999999", params={"fields": field}), 404, None)
    conversation = chat["messages"]
    reads: list[tuple[str, dict[str, str | int]]] = [
        (conversation, {}),
        (conversation, {"order": "asc"}),
        (conversation, {"offset": 0}),
        (conversation, {"around": created["id"]}),
        (conversation.replace("/messages", "/context"), {"max_tokens": 1000}),
        (f"/v1/topics/{topic_id}/messages", {}),
    ]
    for path, params in reads:
        response = await client.get(path, params={"fields": field, **params})
        assert response.status_code == 200, (path, params, response.text)
        assert response.json()["items"] == [expected], (path, params)


@pytest.mark.parametrize(
    ("name", "value"), [("since", "0001-01-01T00:00:00+01:00"), ("until", "9999-12-31T23:00:00-01:00")]
)
async def test_a_time_beyond_the_years_1_to_9999_in_utc_is_400(
    client: httpx.AsyncClient, chat: dict[str, Any], name: str, value: str
) -> None:
    assert_problem(await client.get(chat["messages"], params={name: value}), 400, name)


@pytest.mark.parametrize("fields", ["content,secret", "", "content,,role", "CONTENT", "*"])
async def test_unknown_fields_are_400(client: httpx.AsyncClient, chat: dict[str, Any], fields: str) -> None:
    assert_problem(await client.get(chat["messages"], params={"fields": fields}), 400, "fields")


async def test_message_list_of_unknown_conversation_is_404(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/v1/conversations/31337/messages"), 404)


def tamper(cursor: str) -> list[str]:
    payload, signature = cursor.split(".")
    raw = bytearray(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    raw[-2] = ord("9") if raw[-2] != ord("9") else ord("8")  # move the position by one digit
    forged = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    return [f"{forged}.{signature}", cursor[:-3], cursor.replace(".", ""), f"{payload}.", "." + signature, "%%%.%%%"]


async def test_forged_truncated_and_foreign_cursors_are_400(client: httpx.AsyncClient, chat: dict[str, Any]) -> None:
    await seed_equal_timestamps(client, chat, 5)
    cursor = (await client.get(chat["messages"], params={"limit": 2})).json()["next_cursor"]
    for bad in tamper(cursor):
        assert_problem(await client.get(chat["messages"], params={"cursor": bad}), 400, "cursor")
    # A cursor of another order, filter or conversation is refused, not misread.
    assert_problem(await client.get(chat["messages"], params={"cursor": cursor, "order": "asc"}), 400, "cursor")
    assert_problem(await client.get(chat["messages"], params={"cursor": cursor, "role": "user"}), 400, "cursor")
    other = await create_conversation(client, chat["user"]["id"])
    foreign = await client.get(f"/v1/conversations/{other['id']}/messages", params={"cursor": cursor})
    assert_problem(foreign, 400, "cursor")


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 201}, "limit"),
        ({"offset": -1}, "offset"),
        ({"order": "sideways"}, "order"),
        ({"role": "robot"}, "role"),
        ({"since": "yesterday"}, "since"),
        ({"count": "lots"}, "count"),
    ],
)
async def test_bad_list_parameters_are_400(
    client: httpx.AsyncClient, chat: dict[str, Any], params: dict[str, Any], field: str
) -> None:
    assert_problem(await client.get(chat["messages"], params=params), 400, field)


async def test_edit_a_message(client: httpx.AsyncClient, chat: dict[str, Any]) -> None:
    created = (await client.post(chat["messages"], json={"role": "user", "content": "draft", "topics": ["t"]})).json()
    edited = await client.patch(f"/v1/messages/{created['id']}", json={"content": "final"})
    assert edited.status_code == 200
    body = edited.json()
    assert body["content"] == "final"
    assert body["role"] == "user"
    assert body["edited_at"] is not None
    assert body["topics"] == created["topics"]
    role_only = (await client.patch(f"/v1/messages/{created['id']}", json={"role": "system"})).json()
    assert (role_only["role"], role_only["content"]) == ("system", "final")


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({}, 400, "content"),
        ({"role": "robot"}, 400, "role"),
        ({"content": ""}, 400, "content"),
        ({"content": "x", "topics": []}, 400, "topics"),
    ],
)
async def test_bad_edits(
    client: httpx.AsyncClient, chat: dict[str, Any], body: dict[str, Any], status: int, field: str
) -> None:
    created = (await client.post(chat["messages"], json={"role": "user", "content": "x"})).json()
    assert_problem(await client.patch(f"/v1/messages/{created['id']}", json=body), status, field)


async def test_edit_unknown_message_is_404(client: httpx.AsyncClient) -> None:
    assert_problem(await client.patch("/v1/messages/123456", json={"content": "x"}), 404)
    assert_problem(await client.get("/v1/messages/123456"), 404)
    assert_problem(await client.get("/v1/messages/x"), 400, "message_id")


async def test_bulk_edit_in_one_statement(client: httpx.AsyncClient, conn: Connection, chat: dict[str, Any]) -> None:
    items = await post_batch(
        client, chat["conversation"]["id"], [{"role": "user", "content": f"v1 {n}"} for n in range(5)]
    )
    ids = [i["message"]["id"] for i in items]
    sent: list[str] = []
    conn.add_query_logger(lambda q: sent.append(q.query))
    response = await client.patch(
        "/v1/messages",
        json={
            "updates": [
                {"id": ids[0], "content": "v2"},
                {"id": ids[1], "role": "assistant"},
                {"id": ids[2], "content": "v2", "role": "tool"},
            ]
        },
    )
    assert response.status_code == 200
    assert response.json() == {"updated": 3}
    assert len([q for q in sent if "UPDATE" in q]) == 1
    rows = {
        r["id"]: (r["content"], r["role"], r["edited"])
        for r in await conn.fetch("SELECT id, content, role, edited_at IS NOT NULL AS edited FROM messages")
    }
    assert rows[ids[0]] == ("v2", "user", True)
    assert rows[ids[1]] == ("v1 1", "assistant", True)
    assert rows[ids[2]] == ("v2", "tool", True)
    assert rows[ids[3]] == ("v1 3", "user", False)


async def test_bulk_edit_with_unknown_ids_is_404_naming_them_and_writes_nothing(
    client: httpx.AsyncClient, conn: Connection, chat: dict[str, Any]
) -> None:
    [item] = await post_batch(client, chat["conversation"]["id"], [{"role": "user", "content": "keep"}])
    response = await client.patch(
        "/v1/messages",
        json={
            "updates": [
                {"id": item["message"]["id"], "content": "lost"},
                {"id": 888001, "content": "x"},
                {"id": 888002, "role": "tool"},
            ]
        },
    )
    body = assert_problem(response, 404)
    assert "888001" in body["detail"]
    assert "888002" in body["detail"]
    assert await conn.fetchval("SELECT content FROM messages") == "keep"


@pytest.mark.parametrize(
    ("updates", "field"),
    [
        ([], "updates"),
        ([{"id": 1}], "updates[0]"),
        ([{"id": 1, "content": "a"}, {"id": 1, "content": "b"}], "updates[1].id"),
        ([{"id": 1, "content": "a", "user_id": 3}], "updates[0].user_id"),
        ([{"id": 1, "role": "robot"}], "updates[0].role"),
    ],
)
async def test_bad_bulk_edits_are_400(client: httpx.AsyncClient, updates: list[dict[str, Any]], field: str) -> None:
    assert_problem(await client.patch("/v1/messages", json={"updates": updates}), 400, field)


async def test_delete_a_message(client: httpx.AsyncClient, conn: Connection, chat: dict[str, Any]) -> None:
    items = await post_batch(
        client, chat["conversation"]["id"], [{"role": "user", "content": "x", "topics": ["t"]}] * 2
    )
    response = await client.delete(f"/v1/messages/{items[0]['message']['id']}")
    assert response.status_code == 204
    # Soft: the row stays (restorable), its tag is set aside, and every read says 404.
    assert await counts(conn) == (2, 1, 1)
    assert await conn.fetchval("SELECT count(*) FROM deleted_message_topics") == 1
    assert_problem(await client.get(f"/v1/messages/{items[0]['message']['id']}"), 404)
    conversation = (await client.get(f"/v1/conversations/{chat['conversation']['id']}")).json()
    assert conversation["message_count"] == 1
    assert_problem(await client.delete(f"/v1/messages/{items[0]['message']['id']}"), 404)


def test_fields_whitelist_comes_from_the_query() -> None:
    assert messages.FIELDS == (
        "id",
        "conversation_id",
        "user_id",
        "role",
        "content",
        "timestamp",
        "edited_at",
        "metadata",
        "token_count",
        "token_count_estimated",
        "topics",
    )
    with pytest.raises(KeyError, match="secret"):
        messages.sql.get_message.project(["id", "secret"])


async def test_bulk_edits_of_the_same_messages_in_opposite_orders_both_succeed(
    fresh_database: Callable[[], str],
) -> None:
    """Each bulk edit locks its messages in id order whatever order it lists them in: two that
    list the same messages the other way round queue instead of deadlocking (a 503 each time)."""
    async with serving(fresh_database()) as live_client:
        user = await create_user(live_client)
        conversation = await create_conversation(live_client, user["id"])
        posted = await post_batch(live_client, conversation["id"], [{"role": "user", "content": "v0"}] * 300)
        ids = [item["message"]["id"] for item in posted]
        for round_number in range(1, 4):

            def edit(order: list[int], side: str, round_number: int = round_number) -> Awaitable[httpx.Response]:
                updates = [{"id": i, "content": f"{side} {round_number}"} for i in order]
                return live_client.patch("/v1/messages", json={"updates": updates})

            answers = await asyncio.gather(edit(ids, "up"), edit(ids[::-1], "down"))
            assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
        # One of the two edits of the last round is every message's content (the later one's).
        last = await all_pages(live_client, f"/v1/conversations/{conversation['id']}/messages", fields="content")
        assert len({m["content"] for m in last}) == 1
