"""A write that PostgreSQL rolls back to break a deadlock runs again instead of answering 503.

Each test makes the deadlock happen for sure: a transaction of the test's own holds a row the
write needs, the write takes what it can and waits for that row, and then the test asks for a
row the write holds. PostgreSQL breaks the cycle after deadlock_timeout (1 s) in the session that
has waited that long first, the write's, and rolls the write back; the test's transaction then
commits, and the write, run again, goes through.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import asyncpg
import httpx
import pytest

from tests.api import create_conversation, create_user, serving, until_the_service_waits_on_a_lock

Write = Callable[[httpx.AsyncClient, dict[str, Any], dict[str, Any], list[int]], Coroutine[Any, Any, httpx.Response]]


async def assign(
    http: httpx.AsyncClient, user: dict[str, Any], conversation: dict[str, Any], ids: list[int]
) -> httpx.Response:
    return await http.post("/v1/topics/assign", json={"message_ids": ids, "topics": ["lisbon"]})


async def bulk_edit(
    http: httpx.AsyncClient, user: dict[str, Any], conversation: dict[str, Any], ids: list[int]
) -> httpx.Response:
    return await http.patch("/v1/messages", json={"updates": [{"id": i, "content": "edited"} for i in ids]})


async def delete_conversation(
    http: httpx.AsyncClient, user: dict[str, Any], conversation: dict[str, Any], ids: list[int]
) -> httpx.Response:
    return await http.delete(f"/v1/conversations/{conversation['id']}")


async def restore_conversation(
    http: httpx.AsyncClient, user: dict[str, Any], conversation: dict[str, Any], ids: list[int]
) -> httpx.Response:
    return await http.post(f"/v1/conversations/{conversation['id']}/restore")


async def delete_user(
    http: httpx.AsyncClient, user: dict[str, Any], conversation: dict[str, Any], ids: list[int]
) -> httpx.Response:
    return await http.delete(f"/v1/users/{user['id']}")


# Each write with the row the test then asks for: one the write holds while it waits.
CASES = [
    (assign, "SELECT 1 FROM messages WHERE id = $1 FOR UPDATE", "first"),
    (bulk_edit, "SELECT 1 FROM messages WHERE id = $1 FOR UPDATE", "first"),
    (delete_conversation, "SELECT 1 FROM conversations WHERE id = $1 FOR UPDATE", "conversation"),
    (restore_conversation, "SELECT 1 FROM conversations WHERE id = $1 FOR UPDATE", "conversation"),
    (delete_user, "SELECT 1 FROM users WHERE id = $1 FOR UPDATE", "user"),
]


@pytest.mark.parametrize(("write", "lock", "held"), CASES, ids=[case[0].__name__ for case in CASES])
async def test_a_write_rolled_back_to_break_a_deadlock_runs_again(
    fresh_database: Callable[[], str], write: Write, lock: str, held: str
) -> None:
    url = fresh_database()
    async with serving(url) as http:
        user = await create_user(http)
        conversation = await create_conversation(http, user["id"])
        batch = await http.post(
            f"/v1/conversations/{conversation['id']}/messages/batch",
            json={"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]},
        )
        first, second = sorted(item["message"]["id"] for item in batch.json()["items"])
        rows = {"first": first, "conversation": conversation["id"], "user": user["id"]}
        if write is restore_conversation:
            assert (await http.delete(f"/v1/conversations/{conversation['id']}")).status_code == 204
        other = await asyncpg.connect(url)
        try:
            async with other.transaction():
                await other.execute("SELECT 1 FROM messages WHERE id = $1 FOR UPDATE", second)
                request = asyncio.create_task(write(http, user, conversation, [first, second]))
                await until_the_service_waits_on_a_lock(other)
                # The write holds this row and waits for the test's: this returns only once
                # PostgreSQL has broken the deadlock by rolling the write back.
                await other.execute(lock, rows[held])
            response = await request
        finally:
            await other.close()
        assert response.status_code in (200, 204), response.text
        if write is assign:
            topics = (await http.get(f"/v1/messages/{second}")).json()["topics"]
            assert [topic["name"] for topic in topics] == ["lisbon"]
        elif write is bulk_edit:
            assert (await http.get(f"/v1/messages/{second}")).json()["content"] == "edited"
        elif write is delete_conversation:
            assert (await http.get(f"/v1/conversations/{conversation['id']}")).status_code == 404
        elif write is restore_conversation:
            assert len((await http.get(f"/v1/conversations/{conversation['id']}/messages")).json()["items"]) == 2
        else:
            assert (await http.get(f"/v1/users/{user['id']}")).status_code == 404
