"""The context window: newest messages within a token budget, oldest first, system messages first."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from service import context
from service.db import Connection
from service.fields import Role
from service.messages import FULL
from tests.api import assert_problem, create_conversation, create_user, post_batch
from tests.conftest import RUN_ID, connection_in_transaction, seeded_database
from tests.test_plans import PAGE_READS, index_scans, no_seq_scan_of, pages_read, plans


@pytest.fixture
async def chat(client: httpx.AsyncClient) -> dict[str, Any]:
    user = await create_user(client)
    conversation = await create_conversation(client, user["id"])
    return {"id": conversation["id"], "context": f"/v1/conversations/{conversation['id']}/context"}


async def post(client: httpx.AsyncClient, conversation_id: int, *messages: tuple[str, int]) -> list[dict[str, Any]]:
    """Messages as (role, token_count), in this order (one batch: one timestamp, ordered by id)."""
    items = await post_batch(
        client,
        conversation_id,
        [{"role": role, "content": f"{role} {n}", "token_count": tokens} for n, (role, tokens) in enumerate(messages)],
    )
    return [item["message"] for item in items]


async def window(client: httpx.AsyncClient, path: str, **params: Any) -> dict[str, Any]:
    response = await client.get(path, params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["total_tokens"] == sum(item["token_count"] for item in body["items"])
    return body


async def test_the_newest_messages_that_fit_oldest_first(client: httpx.AsyncClient, chat: dict[str, Any]) -> None:
    sent = await post(client, chat["id"], ("user", 5), ("assistant", 7), ("user", 3), ("assistant", 10))
    body = await window(client, chat["context"], max_tokens=13)
    assert [m["id"] for m in body["items"]] == [sent[2]["id"], sent[3]["id"]]
    assert body["items"][1] == (await client.get(f"/v1/messages/{sent[3]['id']}")).json()
    assert (body["total_tokens"], body["truncated"]) == (13, True)
    everything = await window(client, chat["context"], max_tokens=25)
    assert ([m["id"] for m in everything["items"]], everything["truncated"]) == ([m["id"] for m in sent], False)
    # Whole messages only: the newest one alone is over the budget, so nothing fits.
    assert await window(client, chat["context"], max_tokens=9) == {"items": [], "total_tokens": 0, "truncated": True}


async def test_system_messages_come_first_whatever_their_age(client: httpx.AsyncClient, chat: dict[str, Any]) -> None:
    sent = await post(
        client, chat["id"], ("system", 4), ("user", 6), ("assistant", 6), ("system", 2), ("user", 3), ("tool", 5)
    )
    body = await window(client, chat["context"], max_tokens=15)
    # 6 for the system messages, then newest first: tool 5, user 3 (14); assistant 6 would pass 15.
    assert [m["id"] for m in body["items"]] == [sent[i]["id"] for i in (0, 3, 4, 5)]
    assert (body["total_tokens"], body["truncated"]) == (14, True)
    without = await window(client, chat["context"], max_tokens=15, include_system="false")
    assert [m["id"] for m in without["items"]] == [sent[i]["id"] for i in (3, 4, 5)]
    only_users = await window(client, chat["context"], max_tokens=100, role="user")
    assert [m["id"] for m in only_users["items"]] == [sent[i]["id"] for i in (0, 3, 1, 4)]
    assert only_users["truncated"] is False
    too_small = await client.get(chat["context"], params={"max_tokens": 5})
    body = assert_problem(too_small, 422, "max_tokens")
    assert "6" in body["detail"]


async def test_matches_a_reference_computed_in_python(client: httpx.AsyncClient, chat: dict[str, Any]) -> None:
    rng = random.Random(14)
    sent: list[dict[str, Any]] = []
    for _ in range(6):  # several batches: several timestamps, ties inside each
        batch = [(rng.choice(["user", "assistant", "system", "tool"]), rng.randrange(0, 40)) for _ in range(15)]
        sent += await post(client, chat["id"], *batch)
    system = [m for m in sent if m["role"] == "system"]
    others = [m for m in sent if m["role"] != "system"]
    for budget in (1, 40, 137, 500, 10_000):
        for include_system, role in ((True, None), (False, None), (True, "user"), (False, "tool")):
            head = system if include_system else []
            spent = sum(m["token_count"] for m in head)
            rest = [m for m in (others if include_system else sent) if role is None or m["role"] == role]
            params: dict[str, Any] = {"max_tokens": budget, "include_system": str(include_system).lower()}
            if role:
                params["role"] = role
            if spent > budget:
                assert_problem(await client.get(chat["context"], params=params), 422, "max_tokens")
                continue
            fitted: list[dict[str, Any]] = []
            for message in reversed(rest):
                if spent + message["token_count"] > budget:
                    break
                spent += message["token_count"]
                fitted.insert(0, message)
            body = await window(client, chat["context"], **params)
            assert [m["id"] for m in body["items"]] == [m["id"] for m in head + fitted], (budget, include_system, role)
            assert body["truncated"] == (len(fitted) < len(rest))


async def test_unknown_empty_and_invalid(client: httpx.AsyncClient, chat: dict[str, Any]) -> None:
    assert await window(client, chat["context"], max_tokens=10) == {"items": [], "total_tokens": 0, "truncated": False}
    assert_problem(await client.get("/v1/conversations/999999/context", params={"max_tokens": 10}), 404)
    cases: list[dict[str, Any]] = [{"max_tokens": 0}, {"max_tokens": 1_000_001}, {}, {"max_tokens": 5, "role": "robot"}]
    for bad in cases:
        response = await client.get(chat["context"], params=bad)
        assert_problem(response, 400, "role" if "role" in bad else "max_tokens")


# The plan test: one conversation of 250,000 messages; the window's cost must follow its answer.
# Beside it 10,000 conversations of 5 messages, as real data has: a generic plan then takes every
# conversation for a small one.
HUGE = 250_000
SMALL = 10_000
HUGE_SEED = [
    "INSERT INTO users (email, name) VALUES ('huge@example.com', 'Huge')",
    "INSERT INTO conversations (user_id, title) SELECT id, 'huge' FROM users",
    f"INSERT INTO conversations (user_id, title) SELECT u.id, 'small' FROM users AS u, generate_series(1, {SMALL})",
    'INSERT INTO messages (conversation_id, user_id, role, content, "timestamp", token_count) '
    "SELECT c.id, c.user_id, 'user', 'small ' || g, '2026-01-01T00:00:00Z'::timestamptz + g * interval '1 second', 10 "
    "FROM conversations AS c, generate_series(1, 5) AS g WHERE c.title = 'small'",
    # Ten messages per timestamp (ties, as batches make), a system message every 50,000.
    f'INSERT INTO messages (conversation_id, user_id, role, content, "timestamp", token_count) '
    f"SELECT c.id, c.user_id, CASE WHEN g % 50000 = 7 THEN 'system' WHEN g % 2 = 0 THEN 'user' ELSE 'assistant' END, "
    f"'message ' || g, '2026-01-01T00:00:00Z'::timestamptz + (g / 10) * interval '1 second', 10 + g % 7 "
    f"FROM conversations AS c, generate_series(1, {HUGE}) AS g WHERE c.title = 'huge'",
    "ANALYZE users, conversations, messages",
]


@pytest.fixture(scope="module")
def huge_url(server_url: str, template_name: str) -> Iterator[str]:
    with seeded_database(server_url, template_name, f"freya_context_{RUN_ID}", HUGE_SEED) as url:
        yield url


@pytest.fixture
async def huge_conn(huge_url: str) -> AsyncIterator[Connection]:
    async with connection_in_transaction(huge_url) as connection:
        yield connection


async def rows_fetched(conn: Connection) -> tuple[int, int]:
    """messages' rows fetched through indexes and its sequential scans so far in this transaction."""
    row = await conn.fetchrow(
        "SELECT idx_tup_fetch, seq_scan FROM pg_stat_xact_user_tables WHERE relid = 'messages'::regclass"
    )
    assert row is not None
    return row["idx_tup_fetch"], row["seq_scan"]


async def test_the_window_reads_what_it_answers_not_the_conversation(huge_conn: Connection) -> None:
    conversation_id = await huge_conn.fetchval("SELECT id FROM conversations WHERE title = 'huge'")
    assert await huge_conn.fetchval("SELECT count(*) FROM messages WHERE conversation_id = $1", conversation_id) == HUGE
    cases: list[tuple[int, Role | None]] = [(2_000, None), (20_000, None), (20_000, "user"), (200_000, None)]
    for max_tokens, role in cases:
        # The first read is sized by the windows read before: once by this conversation's.
        await context.read_window(huge_conn, FULL, conversation_id, max_tokens, include_system=True, role=role)
        fetched_before, scans_before = await rows_fetched(huge_conn)
        window = await context.read_window(huge_conn, FULL, conversation_id, max_tokens, include_system=True, role=role)
        fetched_after, scans_after = await rows_fetched(huge_conn)
        assert window is not None
        rows, tokens, truncated = window
        assert truncated
        assert tokens <= max_tokens
        system = sum(1 for row in rows if row["role"] == "system")
        assert system == HUGE // 50_000
        answered = len(rows) - system
        # The walk reads the answer and a tenth more (its messages' sizes are even here); with
        # role=user it also steps over the other half. The system part: its rows and one more.
        per_answer = 2 if role else 1
        walked = fetched_after - fetched_before - (system + 1)
        assert answered * per_answer <= walked <= (answered * 1.25 + 20) * per_answer, (max_tokens, role, walked)
        assert scans_after == scans_before, "a sequential scan of messages"
        assert answered < HUGE // 10


async def test_the_system_part_reads_its_partial_index(huge_conn: Connection) -> None:
    conversation_id = await huge_conn.fetchval("SELECT id FROM conversations WHERE title = 'huge'")
    query = FULL.query(context.sql.system_messages, window=True)
    params = {"conversation_id": conversation_id, "after_ts": None, "after_id": None, "limit": 16}
    # Prepared statements switch to a generic plan after five runs: both plans read the index.
    for nodes in await plans(huge_conn, query, analyze=True, **params):
        assert "idx_message_system" in index_scans(nodes), nodes
        assert no_seq_scan_of(nodes, "messages")
        assert pages_read(nodes) <= PAGE_READS, pages_read(nodes)
