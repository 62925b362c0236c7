"""Conversations: CRUD, the owner's list most recently active first, and its paging rules."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from service.db import Connection
from service.pages import MAX_OFFSET
from tests.api import all_pages, assert_problem, create_conversation, create_user, post_batch


async def test_create_and_get(client: httpx.AsyncClient) -> None:
    user = await create_user(client)
    created = await create_conversation(client, user["id"], "Plans")
    assert created["user_id"] == user["id"]
    assert created["title"] == "Plans"
    assert created["message_count"] == 0
    assert created["created_at"] == created["updated_at"]
    fetched = await client.get(f"/v1/conversations/{created['id']}")
    assert fetched.status_code == 200
    assert fetched.json() == created


async def test_title_is_optional(client: httpx.AsyncClient) -> None:
    user = await create_user(client)
    response = await client.post("/v1/conversations", json={"user_id": user["id"]})
    assert response.status_code == 201
    assert response.json()["title"] is None


async def test_unknown_user_is_422_and_nothing_written(client: httpx.AsyncClient, conn: Connection) -> None:
    assert_problem(await client.post("/v1/conversations", json={"user_id": 555555}), 422)
    assert await conn.fetchval("SELECT count(*) FROM conversations") == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "user_id"),
        ({"user_id": "one"}, "user_id"),
        ({"user_id": 0}, "user_id"),
        ({"user_id": 1, "title": "t" * 501}, "title"),
        ({"user_id": 1, "title": "a\u0000b"}, "title"),
        ({"user_id": 1, "topic": "x"}, "topic"),
    ],
)
async def test_bad_create_bodies(client: httpx.AsyncClient, body: dict[str, Any], field: str) -> None:
    assert_problem(await client.post("/v1/conversations", json=body), 400, field)


async def test_get_unknown_is_404_and_bad_id_is_400(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/v1/conversations/777777"), 404)
    assert_problem(await client.get("/v1/conversations/seven"), 400, "conversation_id")


async def test_patch_title_and_clear_it(client: httpx.AsyncClient) -> None:
    user = await create_user(client)
    conversation = await create_conversation(client, user["id"], "Old")
    renamed = await client.patch(f"/v1/conversations/{conversation['id']}", json={"title": "New"})
    assert renamed.status_code == 200
    assert renamed.json() == {**conversation, "title": "New"}
    cleared = await client.patch(f"/v1/conversations/{conversation['id']}", json={"title": None})
    assert cleared.json()["title"] is None
    assert_problem(await client.patch(f"/v1/conversations/{conversation['id']}", json={}), 400, "title")
    assert_problem(await client.patch("/v1/conversations/888888", json={"title": "x"}), 404)


async def test_delete_takes_the_messages_along(client: httpx.AsyncClient, conn: Connection) -> None:
    user = await create_user(client)
    conversation = await create_conversation(client, user["id"])
    await post_batch(client, conversation["id"], [{"role": "user", "content": "hi", "topics": ["greeting"]}])
    response = await client.delete(f"/v1/conversations/{conversation['id']}")
    assert response.status_code == 204
    # Soft: the rows stay, restorable, gone from every read; tags set aside.
    assert await conn.fetchval("SELECT count(*) FROM messages WHERE deleted_at IS NULL") == 0
    assert await conn.fetchval("SELECT count(*) FROM message_topics") == 0
    assert await conn.fetchval("SELECT count(*) FROM deleted_message_topics") == 1
    assert_problem(await client.get(f"/v1/conversations/{conversation['id']}"), 404)
    assert_problem(await client.get(f"/v1/conversations/{conversation['id']}/messages"), 404)
    assert await conn.fetchval("SELECT count(*) FROM topics") == 1  # topics outlive their messages
    assert_problem(await client.delete(f"/v1/conversations/{conversation['id']}"), 404)


async def test_user_list_is_most_recently_active_first(client: httpx.AsyncClient, conn: Connection) -> None:
    user = await create_user(client)
    first = await create_conversation(client, user["id"], "first")
    second = await create_conversation(client, user["id"], "second")
    # The test runs in one transaction, where now() stands still: date the two apart by hand.
    await conn.execute(
        "UPDATE conversations SET updated_at = now() - (interval '1 hour' * (3 - id + $1)) WHERE user_id = $2",
        first["id"],
        user["id"],
    )
    first = (await client.get(f"/v1/conversations/{first['id']}")).json()
    listed = await client.get(f"/v1/users/{user['id']}/conversations")
    assert [c["id"] for c in listed.json()["items"]] == [second["id"], first["id"]]
    # A new message moves its conversation to the top, in the same transaction.
    await post_batch(client, first["id"], [{"role": "user", "content": "bump"}])
    listed = await client.get(f"/v1/users/{user['id']}/conversations")
    items = listed.json()["items"]
    assert [c["id"] for c in items] == [first["id"], second["id"]]
    assert items[0]["message_count"] == 1
    assert items[0]["updated_at"] > first["updated_at"]


async def test_user_list_pages_by_keyset_and_offset(client: httpx.AsyncClient, conn: Connection) -> None:
    user = await create_user(client)
    other = await create_user(client, "other@example.com")
    await create_conversation(client, other["id"])
    # 25 conversations, many sharing one updated_at: ties are broken by id.
    await conn.execute(
        "INSERT INTO conversations (user_id, title, updated_at) "
        "SELECT $1, 'c' || g, '2026-01-01T00:00:00Z'::timestamptz + (g / 5) * interval '1 minute' "
        "FROM generate_series(1, 25) AS g",
        user["id"],
    )
    path = f"/v1/users/{user['id']}/conversations"
    expected = [
        r["id"]
        for r in await conn.fetch(
            "SELECT id FROM conversations WHERE user_id = $1 ORDER BY updated_at DESC, id DESC", user["id"]
        )
    ]
    paged = await all_pages(client, path, limit=4)
    assert [c["id"] for c in paged] == expected
    by_offset = await client.get(path, params={"offset": 20, "limit": 10, "count": "exact"})
    body = by_offset.json()
    assert [c["id"] for c in body["items"]] == expected[20:]
    assert body["total"] == 25
    assert body["next_cursor"] is None
    estimated = await client.get(path, params={"count": "estimated", "limit": 1})
    assert isinstance(estimated.json()["total"], int)
    assert "total" not in (await client.get(path)).json()


async def test_user_list_of_unknown_user_is_404(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/v1/users/424242/conversations"), 404)


async def test_user_list_for_user_without_conversations_is_empty(client: httpx.AsyncClient) -> None:
    user = await create_user(client)
    response = await client.get(f"/v1/users/{user['id']}/conversations")
    assert response.json() == {"items": [], "next_cursor": None}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 201}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"offset": -1}, "offset"),
        ({"offset": MAX_OFFSET + 1}, "offset"),
        ({"count": "some"}, "count"),
        ({"cursor": "garbage"}, "cursor"),
        ({"cursor": "abc.def"}, "cursor"),
        ({"cursor": ""}, "cursor"),
    ],
)
async def test_bad_paging_parameters_are_400(client: httpx.AsyncClient, params: dict[str, Any], field: str) -> None:
    user = await create_user(client)
    assert_problem(await client.get(f"/v1/users/{user['id']}/conversations", params=params), 400, field)


async def test_cursor_and_offset_together_are_400(client: httpx.AsyncClient) -> None:
    user = await create_user(client)
    for _ in range(3):
        await create_conversation(client, user["id"])
    page = (await client.get(f"/v1/users/{user['id']}/conversations", params={"limit": 1})).json()
    response = await client.get(
        f"/v1/users/{user['id']}/conversations", params={"cursor": page["next_cursor"], "offset": 1}
    )
    assert_problem(response, 400, "offset")


async def test_a_cursor_of_another_user_is_400(client: httpx.AsyncClient) -> None:
    user = await create_user(client)
    other = await create_user(client, "other@example.com")
    for owner in (user, other):
        for _ in range(2):
            await create_conversation(client, owner["id"])
    page = (await client.get(f"/v1/users/{user['id']}/conversations", params={"limit": 1})).json()
    assert page["next_cursor"]
    foreign = await client.get(f"/v1/users/{other['id']}/conversations", params={"cursor": page["next_cursor"]})
    assert_problem(foreign, 400, "cursor")
