"""The error contract under load and locks: a slow statement is a 504, a full pool a 503, never a hang."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import asyncpg
import httpx
import pytest

from service.app import create_app
from service.db import Connection
from service.settings import Settings
from tests.api import assert_problem, create_conversation, create_user, serving, until_the_service_waits_on_a_lock
from tests.conftest import client_for


async def test_a_statement_over_the_timeout_is_504(fresh_database: Callable[[], str]) -> None:
    url = fresh_database()
    app = create_app(Settings(database_url=url, pool_min_size=1, pool_max_size=2, statement_timeout_ms=300))
    async with app.lifespan(), client_for(app) as http:
        user = await create_user(http)
        blocker = await asyncpg.connect(url)
        try:
            async with blocker.transaction():
                await blocker.execute("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", user["id"])
                response = await asyncio.wait_for(
                    http.patch(f"/v1/users/{user['id']}", json={"name": "Blocked"}), timeout=10
                )
        finally:
            await blocker.close()
        assert_problem(response, 504)
        # The pool's connection survived the cancelled statement.
        assert (await http.get(f"/v1/users/{user['id']}")).json()["name"] == user["name"]


async def test_an_exhausted_pool_is_503_with_retry_after(fresh_database: Callable[[], str]) -> None:
    url = fresh_database()
    app = create_app(
        Settings(
            database_url=url, pool_min_size=1, pool_max_size=1, pool_acquire_timeout=0.3, statement_timeout_ms=5000
        )
    )
    async with app.lifespan(), client_for(app) as http:
        user = await create_user(http)
        blocker = await asyncpg.connect(url)
        try:
            async with blocker.transaction():
                await blocker.execute("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", user["id"])
                # The one connection waits on the lock; the next request finds the pool empty.
                stuck = asyncio.create_task(http.patch(f"/v1/users/{user['id']}", json={"name": "Waits"}))
                await until_the_service_waits_on_a_lock(blocker)
                busy = await asyncio.wait_for(http.get(f"/v1/users/{user['id']}"), timeout=10)
            await stuck
        finally:
            await blocker.close()
    body = assert_problem(busy, 503)
    assert busy.headers["retry-after"] == "1"
    assert "connection" in body["detail"]


async def test_an_unknown_user_id_names_the_field_not_the_database(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/conversations", json={"user_id": 424242, "title": "x"})
    body = assert_problem(response, 422, "user_id")
    assert "violates" not in response.text
    assert "conversations" not in body["detail"]


async def test_a_batch_racing_the_delete_of_its_conversation_is_404(fresh_database: Callable[[], str]) -> None:
    url = fresh_database()
    async with serving(url) as http:
        user = await create_user(http)
        conversation = await create_conversation(http, user["id"])
        deleter = await asyncpg.connect(url)
        try:
            async with deleter.transaction():
                await deleter.execute("DELETE FROM conversations WHERE id = $1", conversation["id"])
                # The batch sees the conversation (the DELETE is not committed) and waits on its row lock.
                batch = asyncio.create_task(
                    http.post(
                        f"/v1/conversations/{conversation['id']}/messages/batch",
                        json={"messages": [{"role": "user", "content": "late"}]},
                    )
                )
                await until_the_service_waits_on_a_lock(deleter)
        finally:
            await deleter.close()
        response = await batch
    body = assert_problem(response, 404)
    assert "conversation" in body["detail"]
    assert "violates" not in response.text


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b'{"role":"user","content":"\xff\xfe"}', "not valid UTF-8"),
        (b'{"role":"user","content":"\xed\xa0\x80"}', "not valid UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ],
)
async def test_undecodable_bodies_are_400(client: httpx.AsyncClient, body: bytes, detail: str) -> None:
    for path in ("/v1/users", "/v1/conversations/1/messages"):
        response = await client.post(path, content=body, headers={"Content-Type": "application/json"})
        assert detail in assert_problem(response, 400, "body")["detail"]


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/users", b'{"email": "a@example.com", "name": "A", "metadata": {"n": 1e999}}', "metadata.n"),
        ("/v1/users", b"-1e400", "body"),
        (
            "/v1/conversations/1/messages/batch",
            b'{"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b", "token_count": 2e308}]}',
            "messages[1].token_count",
        ),
        ("/v1/users", b'{"metadata": {"big": [1, ' + b"9" * 5000 + b"]}}", "metadata.big[1]"),
        # Past what is worth parsing a second time to find it, the body is named.
        ("/v1/users", b'{"metadata": {"n": 1e999, "pad": "' + b"x" * 300_000 + b'"}}', "body"),
    ],
)
async def test_a_number_no_double_holds_is_a_400_naming_its_field(
    client: httpx.AsyncClient, path: str, body: bytes, field: str
) -> None:
    response = await client.post(path, content=body, headers={"Content-Type": "application/json"})
    assert assert_problem(response, 400, field)["detail"].startswith(f"{field} is a number out of range")


async def test_a_missing_body_is_a_400_that_says_so(client: httpx.AsyncClient) -> None:
    for path in ("/v1/users", "/v1/conversations/1/messages", "/v1/conversations/1/messages/batch"):
        response = await client.post(path, headers={"Content-Type": "application/json"})
        assert assert_problem(response, 400, "body")["detail"] == "body: is required: a JSON object"


@pytest.mark.parametrize("media_type", ["text/plain", "application/xml", "application/x-www-form-urlencoded"])
async def test_a_json_body_of_another_media_type_is_415(
    client: httpx.AsyncClient, conn: Connection, media_type: str
) -> None:
    body = b'{"email": "typed@example.com", "name": "Typed"}'
    response = await client.post("/v1/users", content=body, headers={"Content-Type": media_type})
    assert_problem(response, 415)
    assert await conn.fetchval("SELECT count(*) FROM users") == 0
    for accepted in ("application/json; charset=utf-8", "application/problem+json"):
        again = await client.post("/v1/users", content=body, headers={"Content-Type": accepted})
        assert again.status_code in (201, 409), again.text


# Each with the request that names it, whether Litestar or the service refuses it.
SOURCES = [
    ("path", "user_id", "GET", "/v1/users/1.0", {}, None),
    ("query", "limit", "GET", "/v1/users/{user}/conversations?limit=0", {}, None),
    ("query", "q", "GET", "/v1/search/messages?q=%FF", {}, None),
    ("query", "since", "GET", "/v1/conversations/{conversation}/messages?since=1900000000", {}, None),
    ("query", "cursor", "GET", "/v1/conversations/{conversation}/messages?cursor=forged", {}, None),
    ("query", "fields", "GET", "/v1/conversations/{conversation}/messages?fields=id,secret", {}, None),
    ("query", "offset", "GET", "/v1/users/{user}/conversations?cursor=x&offset=1", {}, None),
    ("header", "Idempotency-Key", "POST", "/v1/users", {"Idempotency-Key": "two words"}, {"email": "b@example.com"}),
    ("header", "Freya-Read-After", "GET", "/v1/users/{user}", {"Freya-Read-After": "yesterday"}, None),
    ("body", "email", "POST", "/v1/users", {}, {"email": "not an email"}),
    ("body", "title", "PATCH", "/v1/conversations/{conversation}", {}, {}),
    ("body", "user_id", "POST", "/v1/conversations", {}, {"user_id": 999999, "title": "t"}),  # a 422
    ("body", "metadata.n", "POST", "/v1/conversations/{conversation}/messages", {}, None),
]


@pytest.mark.parametrize(("source", "field", "method", "path", "headers", "json"), SOURCES, ids=[s[1] for s in SOURCES])
async def test_an_error_says_where_its_field_stands(
    client: httpx.AsyncClient,
    source: str,
    field: str,
    method: str,
    path: str,
    headers: dict[str, str],
    json: dict[str, object] | None,
) -> None:
    user = await create_user(client)
    conversation = await create_conversation(client, user["id"])
    url = path.format(user=user["id"], conversation=conversation["id"])
    if field == "metadata.n":  # a number out of range: refused before msgspec sees the body
        content = b'{"role": "user", "content": "x", "metadata": {"n": 1e999}}'
        response = await client.post(url, content=content, headers={"Content-Type": "application/json"})
    else:
        response = await client.request(method, url, headers=headers, json=json)
    assert_problem(response, 422 if source == "body" and field == "user_id" else 400, field, source)


@pytest.mark.parametrize("user_id", ["1.0", "1e3", "+1", "01", "0x1", "1_0", "%201"])
async def test_path_ids_are_plain_decimal_integers(client: httpx.AsyncClient, user_id: str) -> None:
    await create_user(client)
    assert_problem(await client.get(f"/v1/users/{user_id}"), 400, "user_id")


@pytest.mark.parametrize("until", ["0.5", "1e9", "1700000000", "soon"])
async def test_time_filters_are_rfc3339(client: httpx.AsyncClient, until: str) -> None:
    user = await create_user(client)
    conversation = await create_conversation(client, user["id"])
    response = await client.get(f"/v1/conversations/{conversation['id']}/messages", params={"until": until})
    assert_problem(response, 400, "until")


async def test_query_values_must_be_utf8(client: httpx.AsyncClient) -> None:
    for query, field in (("q=%FF%FE", "q"), ("q=ok&role=%C3", "role"), ("q%20text=%ED%A0%80", "q text")):
        assert_problem(await client.get(f"/v1/search/messages?{query}"), 400, field)
    assert (await client.get("/v1/search/messages?q=caf%C3%A9")).status_code == 200


async def test_time_filters_are_microseconds_at_most(client: httpx.AsyncClient) -> None:
    """A finer fraction would be rounded, and could move an inclusive since or an exclusive until
    across a message: refused instead."""
    user = await create_user(client)
    conversation = await create_conversation(client, user["id"])
    path = f"/v1/conversations/{conversation['id']}/messages"
    stored = (await client.post(path, json={"role": "user", "content": "hi"})).json()
    assert [m["id"] for m in (await client.get(path, params={"since": stored["timestamp"]})).json()["items"]] == [
        stored["id"]
    ]
    assert (await client.get(path, params={"until": stored["timestamp"]})).json()["items"] == []
    for since in ("2000-01-01T00:00:00.1234567Z", "2000-01-01T00:00:00.123456789012Z"):
        assert_problem(await client.get(path, params={"since": since}), 400, "since")
    # Spelled escaped, the name is still a time filter's.
    assert_problem(await client.get(f"{path}?%73ince=1900000000"), 400, "since")


async def test_options_lists_every_method_of_the_path(client: httpx.AsyncClient) -> None:
    response = await client.options("/v1/users/2")
    assert response.headers["allow"] == "DELETE, GET, HEAD, OPTIONS, PATCH"
    refused = await client.put("/v1/users/2", json={})
    assert refused.status_code == 405
    assert refused.headers["allow"] == "DELETE, GET, HEAD, OPTIONS, PATCH"


async def test_head_answers_as_get_without_the_body(client: httpx.AsyncClient) -> None:
    user = await create_user(client)
    conversation = await create_conversation(client, user["id"])
    for path in (f"/v1/users/{user['id']}", f"/v1/conversations/{conversation['id']}/messages", "/health/live"):
        got, head = await client.get(path), await client.head(path)
        assert head.status_code == got.status_code == 200, (path, head.status_code)
        assert head.content == b""
        assert head.headers["content-length"] == got.headers["content-length"] == str(len(got.content))
        assert head.headers["content-type"] == got.headers["content-type"]
    missing = await client.head("/v1/users/999999")
    assert missing.status_code == 404
    assert missing.content == b""
    assert missing.headers["content-type"].startswith("application/problem+json")
    # Only GET routes answer HEAD: a write's path still refuses it.
    refused = await client.head(f"/v1/conversations/{conversation['id']}/messages/batch")
    assert refused.status_code == 405
    assert refused.content == b""


async def test_a_failed_head_is_logged_as_head(
    client: httpx.AsyncClient, conn: Connection, caplog: pytest.LogCaptureFixture
) -> None:
    """The app routes a HEAD as its GET; the log line of its failure still names HEAD."""
    user = await create_user(client)
    await conn.execute("ALTER TABLE users RENAME COLUMN name TO full_name")  # undone with the test's transaction
    with caplog.at_level(logging.ERROR, logger="freya"):
        failed = await client.head(f"/v1/users/{user['id']}")
    assert failed.status_code == 500
    assert f"unhandled error on HEAD /v1/users/{user['id']}" in caplog.text
