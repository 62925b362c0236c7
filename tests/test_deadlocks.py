"""Writes of many rows lock them in one order, and one rolled back to break a deadlock anyway
(with a transaction outside the service) runs again instead of answering 503.

The order: a conversation before its messages, messages in id order, the user last. Each order
test holds the row the write takes first and checks that the write, waiting for it, holds
nothing it would take after it. Each retry test makes the deadlock happen for sure: a
transaction of the test's own holds a row the write needs, the write takes what it can and waits
for that row, and then the test asks for a row the write holds. PostgreSQL breaks the cycle
after deadlock_timeout (1 s) in the session that has waited that long first, the write's, and
rolls the write back; the test's transaction then commits, and the write, run again, goes
through.
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


async def two_messages(http: httpx.AsyncClient, *, deleted: bool) -> tuple[Any, Any, int, int]:
    """A user's conversation with two messages (their ids in order); ``deleted``: deleted with it."""
    user = await create_user(http)
    conversation = await create_conversation(http, user["id"])
    batch = await http.post(
        f"/v1/conversations/{conversation['id']}/messages/batch",
        json={"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]},
    )
    first, second = sorted(item["message"]["id"] for item in batch.json()["items"])
    if deleted:
        assert (await http.delete(f"/v1/conversations/{conversation['id']}")).status_code == 204
    return user, conversation, first, second


# Each write with the row the test then asks for: one the write holds while it waits.
CASES = [
    (assign, "SELECT 1 FROM messages WHERE id = $1 FOR UPDATE", "first"),
    (bulk_edit, "SELECT 1 FROM messages WHERE id = $1 FOR UPDATE", "first"),
    (delete_conversation, "SELECT 1 FROM conversations WHERE id = $1 FOR UPDATE", "conversation"),
    (restore_conversation, "SELECT 1 FROM conversations WHERE id = $1 FOR UPDATE", "conversation"),
    # Erasure takes the conversations first, and holds this one while it waits for the message.
    (delete_user, "SELECT 1 FROM conversations WHERE id = $1 FOR UPDATE", "conversation"),
]


@pytest.mark.parametrize(("write", "lock", "held"), CASES, ids=[case[0].__name__ for case in CASES])
async def test_a_write_rolled_back_to_break_a_deadlock_runs_again(
    fresh_database: Callable[[], str], write: Write, lock: str, held: str
) -> None:
    url = fresh_database()
    async with serving(url) as http:
        user, conversation, first, second = await two_messages(http, deleted=write is restore_conversation)
        rows = {"first": first, "conversation": conversation["id"], "user": user["id"]}
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


@pytest.mark.parametrize("write", [delete_conversation, restore_conversation, delete_user], ids=lambda w: w.__name__)
async def test_writes_of_many_messages_lock_them_in_id_order(fresh_database: Callable[[], str], write: Write) -> None:
    """The order that keeps them from deadlocking with a bulk edit or an assignment: while such a
    write waits for the conversation's first message, it holds none of the others. The second
    message is made to come first both by time and as stored (its first's row is rewritten later
    in time), the orders the statements' scans would otherwise lock them in."""
    url = fresh_database()
    async with serving(url) as http:
        user, conversation, first, second = await two_messages(http, deleted=write is restore_conversation)
        other = await asyncpg.connect(url)
        try:
            later = 'UPDATE messages SET "timestamp" = "timestamp" + interval \'1 hour\' WHERE id = $1'
            await other.execute(later, first)
            async with other.transaction():
                await other.execute("SELECT 1 FROM messages WHERE id = $1 FOR UPDATE", first)
                request = asyncio.create_task(write(http, user, conversation, [first, second]))
                await until_the_service_waits_on_a_lock(other)
                # Raises LockNotAvailableError if the write took the second message first.
                await other.execute("SELECT 1 FROM messages WHERE id = $1 FOR UPDATE NOWAIT", second)
            response = await request
        finally:
            await other.close()
        assert response.status_code in (200, 204), response.text


async def test_erasure_locks_the_conversations_it_recounts_before_the_user(fresh_database: Callable[[], str]) -> None:
    """A post locks its conversation, then (its foreign key) its author: an erasure of that author
    waiting for the conversation must not hold the user's row meanwhile, or the two deadlock."""
    url = fresh_database()
    async with serving(url) as http:
        author, owner = await create_user(http), await create_user(http, "grace@example.com", "Grace")
        conversation = await create_conversation(http, owner["id"])
        posted = await http.post(
            f"/v1/conversations/{conversation['id']}/messages",
            json={"role": "user", "content": "hello", "user_id": author["id"]},
        )
        assert posted.status_code == 201, posted.text
        other = await asyncpg.connect(url)
        try:
            async with other.transaction():
                await other.execute("SELECT 1 FROM conversations WHERE id = $1 FOR NO KEY UPDATE", conversation["id"])
                request = asyncio.create_task(http.delete(f"/v1/users/{author['id']}"))
                await until_the_service_waits_on_a_lock(other)
                # What the post's foreign key check takes; raises if the erasure holds the user.
                await other.execute("SELECT 1 FROM users WHERE id = $1 FOR KEY SHARE NOWAIT", author["id"])
            response = await request
        finally:
            await other.close()
        assert response.status_code == 204, response.text
        page = (await http.get(f"/v1/conversations/{conversation['id']}")).json()
        assert page["message_count"] == 0
