"""Users resource: every status of the contract and the bad input it must refuse."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from service.db import Connection
from tests.api import assert_problem, create_user


async def test_create_returns_the_stored_user(client: httpx.AsyncClient, conn: Connection) -> None:
    user = await create_user(client, "Ada.Lovelace@Example.COM", "Ada Lovelace")
    assert user["email"] == "ada.lovelace@example.com"
    assert user["name"] == "Ada Lovelace"
    assert user["created_at"].endswith("Z")
    stored = await conn.fetchrow("SELECT email, name FROM users WHERE id = $1", user["id"])
    assert stored is not None
    assert dict(stored) == {"email": "ada.lovelace@example.com", "name": "Ada Lovelace"}


async def test_get_by_id(client: httpx.AsyncClient) -> None:
    user = await create_user(client)
    response = await client.get(f"/v1/users/{user['id']}")
    assert response.status_code == 200
    assert response.json() == user


async def test_get_unknown_id_is_404(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/v1/users/987654321"), 404)


async def test_find_by_email_ignores_case(client: httpx.AsyncClient) -> None:
    user = await create_user(client, "grace@example.com", "Grace")
    response = await client.get("/v1/users", params={"email": "GRACE@example.com"})
    assert response.status_code == 200
    assert response.json() == {"items": [user], "next_cursor": None}
    empty = await client.get("/v1/users", params={"email": "nobody@example.com"})
    assert empty.json() == {"items": [], "next_cursor": None}


async def test_find_without_email_is_400(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/v1/users"), 400)


async def test_duplicate_email_in_another_case_is_409(client: httpx.AsyncClient, conn: Connection) -> None:
    await create_user(client, "ada@example.com")
    body = assert_problem(await client.post("/v1/users", json={"email": "ADA@Example.com", "name": "Other"}), 409)
    assert "email" in body["detail"]
    assert await conn.fetchval("SELECT count(*) FROM users") == 1


async def test_patch_changes_only_given_fields(client: httpx.AsyncClient) -> None:
    user = await create_user(client)
    renamed = await client.patch(f"/v1/users/{user['id']}", json={"name": "Countess"})
    assert renamed.status_code == 200
    assert renamed.json() == {**user, "name": "Countess"}
    moved = await client.patch(f"/v1/users/{user['id']}", json={"email": "Countess@Example.com"})
    assert moved.json() == {**user, "name": "Countess", "email": "countess@example.com"}
    unchanged = await client.patch(f"/v1/users/{user['id']}", json={})
    assert unchanged.json() == moved.json()


async def test_patch_to_a_taken_email_is_409(client: httpx.AsyncClient) -> None:
    await create_user(client, "taken@example.com")
    user = await create_user(client, "free@example.com")
    assert_problem(await client.patch(f"/v1/users/{user['id']}", json={"email": "Taken@example.com"}), 409)


async def test_patch_unknown_user_is_404(client: httpx.AsyncClient) -> None:
    assert_problem(await client.patch("/v1/users/424242", json={"name": "x"}), 404)


async def test_patch_null_is_400(client: httpx.AsyncClient) -> None:
    user = await create_user(client)
    assert_problem(await client.patch(f"/v1/users/{user['id']}", json={"name": None}), 400, "name")


async def test_delete_cascades_to_conversations_and_messages(client: httpx.AsyncClient, conn: Connection) -> None:
    user = await create_user(client)
    other = await create_user(client, "other@example.com", "Other")
    conversation_id = await conn.fetchval("INSERT INTO conversations (user_id) VALUES ($1) RETURNING id", user["id"])
    other_conversation = await conn.fetchval(
        "INSERT INTO conversations (user_id) VALUES ($1) RETURNING id", other["id"]
    )
    topic_id = await conn.fetchval("INSERT INTO topics (name) VALUES ('cascade') RETURNING id")
    message_id = await conn.fetchval(
        "INSERT INTO messages (conversation_id, user_id, role, content) VALUES ($1, $2, 'user', 'hi') RETURNING id",
        conversation_id,
        user["id"],
    )
    # The user's message in someone else's conversation goes too; the conversation stays.
    await conn.execute(
        "INSERT INTO messages (conversation_id, user_id, role, content) VALUES ($1, $2, 'user', 'there')",
        other_conversation,
        user["id"],
    )
    await conn.execute("INSERT INTO message_topics (topic_id, message_id) VALUES ($1, $2)", topic_id, message_id)

    response = await client.delete(f"/v1/users/{user['id']}")
    assert response.status_code == 204
    assert response.content == b""
    assert await conn.fetchval("SELECT count(*) FROM conversations WHERE user_id = $1", user["id"]) == 0
    assert await conn.fetchval("SELECT count(*) FROM messages WHERE user_id = $1", user["id"]) == 0
    assert await conn.fetchval("SELECT count(*) FROM message_topics") == 0
    assert await conn.fetchval("SELECT count(*) FROM conversations WHERE id = $1", other_conversation) == 1
    assert_problem(await client.get(f"/v1/users/{user['id']}"), 404)


async def test_delete_unknown_user_is_404(client: httpx.AsyncClient) -> None:
    assert_problem(await client.delete("/v1/users/31337"), 404)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "a@example.com", "name": "A", "admin": True}, "admin"),
        ({"email": "a@example.com"}, "name"),
        ({"name": "A"}, "email"),
        ({"email": 42, "name": "A"}, "email"),
        ({"email": "a@example.com", "name": ["A"]}, "name"),
        ({"email": "a@example.com", "name": "A\u0000da"}, "name"),
        ({"email": "a\u0000@example.com", "name": "A"}, "email"),
        ({"email": "a@example.com", "name": "x" * 201}, "name"),
        ({"email": "a@example.com", "name": ""}, "name"),
        ({"email": "x" * 310 + "@example.com", "name": "A"}, "email"),
        ({"email": "not-an-email", "name": "A"}, "email"),
    ],
)
async def test_bad_create_bodies_are_400_naming_the_field(
    client: httpx.AsyncClient, conn: Connection, body: dict[str, Any], field: str
) -> None:
    assert_problem(await client.post("/v1/users", json=body), 400, field)
    assert await conn.fetchval("SELECT count(*) FROM users") == 0


@pytest.mark.parametrize("content", [b"{not json", b"[]", b"null", b""])
async def test_malformed_json_is_400(client: httpx.AsyncClient, content: bytes) -> None:
    response = await client.post("/v1/users", content=content, headers={"content-type": "application/json"})
    assert_problem(response, 400)


@pytest.mark.parametrize("user_id", ["abc", "0", "-1", "99999999999999999999", "1.5"])
async def test_bad_path_ids_are_400(client: httpx.AsyncClient, user_id: str) -> None:
    assert_problem(await client.get(f"/v1/users/{user_id}"), 400, "user_id")


async def test_nul_in_query_is_400(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/v1/users", params={"email": "a\u0000@example.com"}), 400, "email")
