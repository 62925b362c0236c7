"""Idempotency keys: a retried POST replays the first answer and never creates twice."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import psycopg
import pytest

from service.db import Connection
from tests.api import assert_problem, create_user, serving

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
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {201, 409}, statuses
    assert statuses.count(201) >= 1
    created = {r.json()["id"] for r in responses if r.status_code == 201}
    assert len(created) == 1
    for response in responses:
        if response.status_code == 409:
            assert "still being processed" in response.json()["detail"]
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM users").fetchone() == (1,)
        assert conn.execute("SELECT count(*) FROM idempotency_keys").fetchone() == (1,)


async def test_a_failed_first_attempt_can_be_retried(client: httpx.AsyncClient, conn: Connection) -> None:
    # A 5xx leaves no stored answer: simulate the first attempt dying by dropping what it stored.
    await conn.execute(
        "INSERT INTO idempotency_keys (principal, key, fingerprint) VALUES ('anonymous', 'died', '\\x00')"
    )
    await conn.execute("UPDATE idempotency_keys SET created_at = now() - interval '1 hour' WHERE key = 'died'")
    retried = await client.post("/v1/users", json=BODY, headers={"Idempotency-Key": "died"})
    assert retried.status_code == 201


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
