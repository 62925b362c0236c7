"""Message and conversation metadata, and token counts: written by every write path, read by every read."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from service.db import Connection
from service.fields import MAX_METADATA_BYTES
from tests.api import all_pages, assert_problem, create_conversation, create_user, post_batch

META = {"model": "freya-large", "latency_ms": 812, "nested": {"tools": ["search", None, True], "score": 0.25}}


@pytest.fixture
async def chat(client: httpx.AsyncClient) -> dict[str, Any]:
    user = await create_user(client)
    conversation = await create_conversation(client, user["id"])
    return {"conversation": conversation, "messages": f"/v1/conversations/{conversation['id']}/messages"}


async def every_read_of(client: httpx.AsyncClient, message: dict[str, Any], conversation_id: int) -> list[Any]:
    """The message as each read returns it: by id, in both list orders, in its topic's page."""
    reads = [(await client.get(f"/v1/messages/{message['id']}")).json()]
    for order in ("desc", "asc"):
        listed = await all_pages(client, f"/v1/conversations/{conversation_id}/messages", order=order)
        reads.append(next(item for item in listed if item["id"] == message["id"]))
    for topic in message["topics"]:
        tagged = await all_pages(client, f"/v1/topics/{topic['id']}/messages")
        reads.append(next(item for item in tagged if item["id"] == message["id"]))
    around = (
        await client.get(f"/v1/conversations/{conversation_id}/messages", params={"around": message["id"]})
    ).json()
    reads.append(next(item for item in around["items"] if item["id"] == message["id"]))
    window = (await client.get(f"/v1/conversations/{conversation_id}/context", params={"max_tokens": 10**6})).json()
    reads.append(next(item for item in window["items"] if item["id"] == message["id"]))
    hits = (await client.get("/v1/search/messages", params={"q": message["content"]})).json()["items"]
    hit = next(item for item in hits if item["id"] == message["id"])
    reads.append({k: v for k, v in hit.items() if k not in ("rank", "highlight")})
    return reads


async def test_a_posted_message_keeps_its_metadata_and_token_count(
    client: httpx.AsyncClient, chat: dict[str, Any]
) -> None:
    response = await client.post(
        chat["messages"],
        json={"role": "assistant", "content": "Here you go", "metadata": META, "token_count": 7, "topics": ["x"]},
    )
    assert response.status_code == 201, response.text
    message = response.json()
    assert message["metadata"] == META
    assert (message["token_count"], message["token_count_estimated"]) == (7, False)
    for read in await every_read_of(client, message, chat["conversation"]["id"]):
        assert read == message


@pytest.mark.parametrize(
    ("content", "tokens"),
    [("a", 1), ("abcd", 1), ("abcde", 2), ("é" * 3, 2), ("🙂", 1), ("🙂🙂x", 3), ("x" * 4001, 1001)],
)
async def test_without_a_count_the_estimate_is_utf8_bytes_over_four_rounded_up(
    client: httpx.AsyncClient, chat: dict[str, Any], content: str, tokens: int
) -> None:
    response = await client.post(chat["messages"], json={"role": "user", "content": content})
    message = response.json()
    assert (message["token_count"], message["token_count_estimated"], message["metadata"]) == (tokens, True, {})
    assert (await client.get(f"/v1/messages/{message['id']}")).json() == message


async def test_a_batch_mixes_given_counts_and_estimates(client: httpx.AsyncClient, chat: dict[str, Any]) -> None:
    items = await post_batch(
        client,
        chat["conversation"]["id"],
        [
            {"role": "user", "content": "twelve bytes", "metadata": {"n": 1}},
            {"role": "assistant", "content": "given", "token_count": 0, "client_msg_id": "k"},
            {"role": "assistant", "content": "again", "token_count": 99, "client_msg_id": "k"},
        ],
    )
    first, second, repeat = (item["message"] for item in items)
    assert (first["token_count"], first["token_count_estimated"], first["metadata"]) == (3, True, {"n": 1})
    assert (second["token_count"], second["token_count_estimated"], second["metadata"]) == (0, False, {})
    assert items[2]["status"] == "duplicate"
    assert repeat == second
    # A retry of the batch returns the stored rows, metadata and counts included.
    again = await post_batch(
        client, chat["conversation"]["id"], [{"role": "user", "content": "x", "client_msg_id": "k"}]
    )
    assert again[0]["message"] == second


async def test_patch_replaces_metadata_and_recounts_new_content(
    client: httpx.AsyncClient, chat: dict[str, Any]
) -> None:
    posted = (
        await client.post(
            chat["messages"], json={"role": "user", "content": "hello", "token_count": 1, "metadata": {"a": 1}}
        )
    ).json()
    path = f"/v1/messages/{posted['id']}"
    only_metadata = (await client.patch(path, json={"metadata": {"b": [2]}})).json()
    assert (only_metadata["metadata"], only_metadata["token_count"], only_metadata["content"]) == (
        {"b": [2]},
        1,
        "hello",
    )
    # New content without a count: the old count no longer describes it, the estimate does.
    new_content = (await client.patch(path, json={"content": "a longer message now"})).json()
    assert (new_content["token_count"], new_content["token_count_estimated"]) == (5, True)
    counted = (await client.patch(path, json={"token_count": 4})).json()
    assert (counted["token_count"], counted["token_count_estimated"], counted["metadata"]) == (4, False, {"b": [2]})
    role_only = (await client.patch(path, json={"role": "assistant"})).json()
    assert (role_only["token_count"], role_only["token_count_estimated"]) == (4, False)
    assert_problem(await client.patch(path, json={}), 400, "content")
    assert_problem(await client.patch(path, json={"token_count": -1}), 400, "token_count")
    assert_problem(await client.patch(path, json={"metadata": [1]}), 400, "metadata")


async def test_bulk_patch_sets_metadata_and_counts(client: httpx.AsyncClient, chat: dict[str, Any]) -> None:
    items = await post_batch(
        client, chat["conversation"]["id"], [{"role": "user", "content": "one"}, {"role": "user", "content": "two"}]
    )
    first, second = (item["message"]["id"] for item in items)
    response = await client.patch(
        "/v1/messages",
        json={
            "updates": [
                {"id": first, "metadata": {"pinned": True}, "token_count": 11},
                {"id": second, "content": "two, at some length"},
            ]
        },
    )
    assert response.json() == {"updated": 2}, response.text
    one = (await client.get(f"/v1/messages/{first}")).json()
    two = (await client.get(f"/v1/messages/{second}")).json()
    assert (one["metadata"], one["token_count"], one["token_count_estimated"], one["content"]) == (
        {"pinned": True},
        11,
        False,
        "one",
    )
    assert (two["metadata"], two["token_count"], two["token_count_estimated"]) == ({}, 5, True)
    empty = await client.patch("/v1/messages", json={"updates": [{"id": first}]})
    assert_problem(empty, 400, "updates[0]")


async def test_fields_selects_metadata_and_counts(client: httpx.AsyncClient, chat: dict[str, Any]) -> None:
    await client.post(chat["messages"], json={"role": "user", "content": "hi", "metadata": {"k": "v"}})
    page = (await client.get(chat["messages"], params={"fields": "metadata,token_count,token_count_estimated"})).json()
    assert page["items"] == [{"metadata": {"k": "v"}, "token_count": 1, "token_count_estimated": True}]


async def test_metadata_beyond_16_kib_or_with_nul_is_a_400_and_writes_nothing(
    client: httpx.AsyncClient, conn: Connection, chat: dict[str, Any]
) -> None:
    # {"k":"…"} is 8 bytes around the string.
    at_limit = {"k": "x" * (MAX_METADATA_BYTES - 8)}
    ok = await client.post(chat["messages"], json={"role": "user", "content": "big", "metadata": at_limit})
    assert ok.status_code == 201
    assert ok.json()["metadata"] == at_limit
    too_big = {"k": "x" * (MAX_METADATA_BYTES - 7)}
    assert_problem(
        await client.post(chat["messages"], json={"role": "user", "content": "c", "metadata": too_big}), 400, "metadata"
    )
    with_nul = {"deep": [{"k\u0000": 1}]}
    assert_problem(
        await client.post(chat["messages"], json={"role": "user", "content": "c", "metadata": with_nul}),
        400,
        "metadata",
    )
    batch = await client.post(
        f"{chat['messages']}/batch",
        json={
            "messages": [
                {"role": "user", "content": "fine"},
                {"role": "user", "content": "c", "metadata": {"v": "\u0000"}},
            ]
        },
    )
    assert_problem(batch, 400, "messages[1].metadata")
    assert_problem(
        await client.post(chat["messages"], json={"role": "user", "content": "c", "metadata": "text"}), 400, "metadata"
    )
    assert_problem(
        await client.post(chat["messages"], json={"role": "user", "content": "c", "token_count": 2**31}),
        400,
        "token_count",
    )
    assert await conn.fetchval("SELECT count(*) FROM messages") == 1


async def test_conversations_take_metadata(client: httpx.AsyncClient) -> None:
    user = await create_user(client)
    created = (
        await client.post("/v1/conversations", json={"user_id": user["id"], "metadata": {"channel": "web"}})
    ).json()
    assert created["metadata"] == {"channel": "web"}
    path = f"/v1/conversations/{created['id']}"
    assert (await client.get(path)).json() == created
    listed = (await client.get(f"/v1/users/{user['id']}/conversations")).json()["items"]
    assert listed == [created]
    retitled = (await client.patch(path, json={"title": "Renamed"})).json()
    assert (retitled["title"], retitled["metadata"]) == ("Renamed", {"channel": "web"})
    replaced = (await client.patch(path, json={"metadata": {"channel": "app"}})).json()
    assert (replaced["title"], replaced["metadata"]) == ("Renamed", {"channel": "app"})
    cleared = (await client.patch(path, json={"title": None})).json()
    assert (cleared["title"], cleared["metadata"]) == (None, {"channel": "app"})
    plain = await create_conversation(client, user["id"])
    assert plain["metadata"] == {}
    assert_problem(await client.patch(path, json={}), 400, "title")
    too_big = {"k": "x" * MAX_METADATA_BYTES}
    assert_problem(
        await client.post("/v1/conversations", json={"user_id": user["id"], "metadata": too_big}), 400, "metadata"
    )


async def test_deeply_nested_metadata_is_a_400_not_a_500(client: httpx.AsyncClient, chat: dict[str, Any]) -> None:
    nested = '{"k": ' * 5000 + "1" + "}" * 5000
    body = '{"role": "user", "content": "c", "metadata": ' + nested + "}"
    response = await client.post(chat["messages"], content=body, headers={"content-type": "application/json"})
    assert_problem(response, 400)
    # As deep as Python's JSON decoder goes, PostgreSQL stores it and it comes back as written.
    deep: Any = 1
    for _ in range(800):
        deep = {"k": deep}
    stored = await client.post(chat["messages"], json={"role": "user", "content": "c", "metadata": deep})
    assert stored.status_code == 201, stored.text
    assert (await client.get(f"/v1/messages/{stored.json()['id']}")).json()["metadata"] == deep
