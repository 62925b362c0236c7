"""Idempotency keys: a retried POST replays the first answer and never creates twice."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import psycopg
import pytest
from litestar import Litestar
from litestar.exceptions import LitestarException

from service.app import create_app
from service.db import Connection
from service.settings import Settings
from tests.api import assert_problem, create_conversation, create_user, serving

BODY = {"email": "once@example.com", "name": "Once"}


async def test_same_key_same_body_replays(client: httpx.AsyncClient, conn: Connection) -> None:
    first = await client.post("/v1/users", json=BODY, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == 201
    again = await client.post("/v1/users", json=BODY, headers={"Idempotency-Key": "k-1"})
    assert again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert await conn.fetchval("SELECT count(*) FROM users") == 1


async def test_a_replayed_error_stays_that_error(client: httpx.AsyncClient, conn: Connection) -> None:
    await create_user(client, BODY["email"])
    conflict = await client.post("/v1/users", json=BODY, headers={"Idempotency-Key": "k-409"})
    assert_problem(conflict, 409)
    await conn.execute("DELETE FROM users")
    replay = await client.post("/v1/users", json=BODY, headers={"Idempotency-Key": "k-409"})
    assert_problem(replay, 409)
    assert replay.headers["idempotent-replayed"] == "true"


async def test_same_key_other_body_is_422(client: httpx.AsyncClient) -> None:
    await client.post("/v1/users", json=BODY, headers={"Idempotency-Key": "k-2"})
    other = await client.post("/v1/users", json={**BODY, "name": "Twice"}, headers={"Idempotency-Key": "k-2"})
    assert_problem(other, 422, "Idempotency-Key")
    elsewhere = await client.post("/v1/topics", json={"name": "x"}, headers={"Idempotency-Key": "k-2"})
    assert_problem(elsewhere, 422, "Idempotency-Key")


@pytest.mark.parametrize("key", [b"", b"has space", b"x" * 256, b"tab\there", "ünïcode".encode()])
async def test_malformed_keys_are_400(client: httpx.AsyncClient, conn: Connection, key: bytes) -> None:
    response = await client.post("/v1/users", json=BODY, headers={b"Idempotency-Key": key})
    assert_problem(response, 400, "Idempotency-Key")
    assert await conn.fetchval("SELECT count(*) FROM users") == 0


async def test_keys_belong_to_their_caller(fresh_database: Callable[[], str]) -> None:
    tokens = "one:token-number-one-xxxx:read,write;two:token-number-two-xxxx:read,write"
    async with serving(fresh_database(), api_tokens=tokens) as http:
        first = await http.post(
            "/v1/topics",
            json={"name": "a"},
            headers={"Idempotency-Key": "same", "Authorization": "Bearer token-number-one-xxxx"},
        )
        second = await http.post(
            "/v1/topics",
            json={"name": "b"},
            headers={"Idempotency-Key": "same", "Authorization": "Bearer token-number-two-xxxx"},
        )
    assert (first.status_code, second.status_code) == (201, 201)
    assert first.json()["id"] != second.json()["id"]


async def test_twenty_concurrent_identical_requests_make_one_row(fresh_database: Callable[[], str]) -> None:
    url = fresh_database()
    async with serving(url) as http:
        responses = await asyncio.gather(
            *(http.post("/v1/users", json=BODY, headers={"Idempotency-Key": "burst"}) for _ in range(20))
        )
    # The duplicates wait for the first one's transaction, then replay its answer.
    assert [r.status_code for r in responses] == [201] * 20
    assert len({r.json()["id"] for r in responses}) == 1
    assert [r.headers.get("idempotent-replayed") for r in responses].count(None) == 1
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM users").fetchone() == (1,)
        assert conn.execute("SELECT count(*) FROM idempotency_keys").fetchone() == (1,)


async def test_a_failed_first_attempt_leaves_nothing_and_the_retry_writes_once(
    fresh_database: Callable[[], str],
) -> None:
    url = fresh_database()
    async with serving(url, statement_timeout_ms=300) as http:
        user = await create_user(http)
        conversation = (await http.post("/v1/conversations", json={"user_id": user["id"]})).json()
        message = {"role": "user", "content": "once"}
        path = f"/v1/conversations/{conversation['id']}/messages"
        blocker = await asyncpg.connect(url)
        try:
            async with blocker.transaction():
                # The message's trigger updates its conversation: it waits here until the timeout.
                await blocker.execute("SELECT 1 FROM conversations WHERE id = $1 FOR UPDATE", conversation["id"])
                first = await http.post(path, json=message, headers={"Idempotency-Key": "slow"})
        finally:
            await blocker.close()
        assert_problem(first, 504)
        retried = await http.post(path, json=message, headers={"Idempotency-Key": "slow"})
        assert retried.status_code == 201
        assert "idempotent-replayed" not in retried.headers
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM messages").fetchone() == (1,)


def drop_first_reply(app: Litestar) -> Callable[..., Awaitable[None]]:
    """The app behind a connection that breaks as the first answer leaves (a proxy dropping it):
    the fault falls between the commit and the client reading the reply."""
    dropped = False

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        async def breaking_send(message: Any) -> None:
            nonlocal dropped
            if scope["type"] == "http" and message["type"] == "http.response.start" and not dropped:
                dropped = True
                raise ConnectionResetError("the client's connection is gone")
            await send(message)

        await app(scope, receive, breaking_send)

    return wrapped


async def test_a_reply_lost_after_commit_is_replayed_not_rewritten(fresh_database: Callable[[], str]) -> None:
    url = fresh_database()
    app = create_app(Settings(database_url=url, pool_min_size=1, pool_max_size=4, cursor_secret="s" * 32))
    faulty = httpx.AsyncClient(transport=httpx.ASGITransport(app=drop_first_reply(app)), base_url="http://freya.test")
    async with app.lifespan(), faulty:
        # The client sees its connection fail (Litestar reports the send that broke).
        with pytest.raises(LitestarException, match="after response started"):
            await faulty.post("/v1/users", json=BODY, headers={"Idempotency-Key": "lost-reply"})
        retried = await faulty.post("/v1/users", json=BODY, headers={"Idempotency-Key": "lost-reply"})
    assert retried.status_code == 201
    assert retried.headers["idempotent-replayed"] == "true"
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM users").fetchone() == (1,)
        assert conn.execute("SELECT id FROM users").fetchone() == (retried.json()["id"],)


async def test_a_handler_error_keeps_no_partial_write(client: httpx.AsyncClient, conn: Connection) -> None:
    user = await create_user(client)
    conversation = await create_conversation(client, user["id"])
    batch = {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b", "user_id": 999999}]}
    path = f"/v1/conversations/{conversation['id']}/messages/batch"
    refused = await client.post(path, json=batch, headers={"Idempotency-Key": "half"})
    assert_problem(refused, 422)
    assert await conn.fetchval("SELECT count(*) FROM messages") == 0
    replay = await client.post(path, json=batch, headers={"Idempotency-Key": "half"})
    assert replay.status_code == 422
    assert replay.headers["idempotent-replayed"] == "true"


async def test_expired_keys_are_taken_over_and_purged(client: httpx.AsyncClient, conn: Connection) -> None:
    await client.post("/v1/users", json=BODY, headers={"Idempotency-Key": "old"})
    await conn.execute("UPDATE idempotency_keys SET created_at = now() - interval '25 hours'")
    fresh = await client.post(
        "/v1/users", json={**BODY, "email": "new@example.com"}, headers={"Idempotency-Key": "old"}
    )
    assert fresh.status_code == 201
    assert "idempotent-replayed" not in fresh.headers
    await conn.execute("UPDATE idempotency_keys SET created_at = now() - interval '25 hours'")
    from datetime import timedelta

    from service.db import SharedConnectionDatabase
    from service.idempotency import purge_expired

    assert await purge_expired(SharedConnectionDatabase(conn), timedelta(hours=24)) == 1
