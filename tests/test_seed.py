"""Seed data: the requested shape, deterministic from its seed number, usable at once."""

from __future__ import annotations

import random
from collections.abc import Callable

import asyncpg
import pytest

from service import seed
from service.__main__ import main
from tests.api import create_conversation, create_user, post_batch, serving


def test_conversation_lengths_add_up_and_are_skewed() -> None:
    plan = seed.SeedPlan.for_messages(40_000)
    lengths = seed.conversation_lengths(plan, random.Random(1))
    assert sum(lengths) == 40_000
    assert len(lengths) == plan.conversations
    assert min(lengths) >= 1
    assert lengths[0] == 10_000  # the whale: a quarter of everything
    others = sorted(lengths[1:])
    assert others[-1] > 10 * others[len(others) // 2]  # heavy tail


async def seeded_rows(url: str) -> list[tuple[object, ...]]:
    conn = await asyncpg.connect(url)
    try:
        report = await seed.seed(conn, 5_000, seed_number=7, quiet=True)
        assert report.messages == 5_000
        assert report.rows_per_second > 0
        rows = await conn.fetch(
            'SELECT m.id, m.conversation_id, m.role, m.content, m."timestamp" FROM messages AS m ORDER BY m.id'
        )
        counts = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM users) AS users, (SELECT count(*) FROM conversations) AS conversations, "
            "(SELECT count(DISTINCT role) FROM messages) AS roles, (SELECT count(*) FROM message_topics) AS tags, "
            "(SELECT count(*) FROM messages WHERE search IS NULL) AS unsearchable, "
            "(SELECT sum(message_count) FROM conversations) AS counted, "
            "(SELECT count(*) FROM pg_stats WHERE tablename = 'messages') AS analysed"
        )
        assert counts is not None
        assert counts["users"] == 25
        assert counts["conversations"] == 125
        assert counts["roles"] == 4
        assert 1_000 < counts["tags"] < 5_000
        assert counts["unsearchable"] == 0
        assert counts["counted"] == 5_000  # the count triggers saw the COPY
        assert counts["analysed"] > 0
        next_id = await conn.fetchval(
            "INSERT INTO users (email, name) VALUES ('after@example.com', 'After') RETURNING id"
        )
        assert next_id == 26  # sequences moved past the copied ids
        return [tuple(r) for r in rows]
    finally:
        await conn.close()


async def test_the_same_seed_gives_the_same_data(fresh_database: Callable[[], str]) -> None:
    first = await seeded_rows(fresh_database())
    second = await seeded_rows(fresh_database())
    assert first == second
    assert len({content for _, _, _, content, _ in first}) > 4_000  # varied text


def test_cli_seed(
    fresh_database: Callable[[], str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FREYA_DATABASE_URL", fresh_database())
    assert main(["seed", "--messages", "2000", "--seed", "3"]) == 0
    captured = capsys.readouterr()
    assert "seeded 10 users, 50 conversations, 2,000 messages" in captured.out
    assert "rows/s" in captured.out
    assert "messages" in captured.err  # the progress bar


async def table_counts(conn: asyncpg.Connection) -> dict[str, int]:
    row = await conn.fetchrow(
        "SELECT (SELECT count(*) FROM users) AS users, (SELECT count(*) FROM conversations) AS conversations, "
        "(SELECT count(*) FROM messages) AS messages, (SELECT count(*) FROM topics) AS topics, "
        "(SELECT count(*) FROM message_topics) AS tags"
    )
    assert row is not None
    return dict(row)


async def test_seeding_twice_over_api_data_leaves_every_create_working(fresh_database: Callable[[], str]) -> None:
    url = fresh_database()
    async with serving(url) as http:  # what a user made first: a user, and a topic the seed also uses
        ada = await create_user(http)
        assert (await http.post("/v1/topics", json={"name": "travel"})).status_code == 201
    conn = await asyncpg.connect(url)
    try:
        first = await seed.seed(conn, 2_000, seed_number=3, quiet=True)
        second = await seed.seed(conn, 2_000, seed_number=3, quiet=True)  # the same seed number again
        assert first.messages == second.messages == 2_000
        counts = await table_counts(conn)
        assert counts["users"] == 1 + 2 * 10
        assert counts["messages"] == 4_000
        assert counts["topics"] == 20  # the seed's 20 names, "travel" among them, each once
        # Every tag points at a topic and a message that exist (the foreign keys say so; this says
        # the tags are spread over the topics, whoever created them).
        assert await conn.fetchval("SELECT count(DISTINCT topic_id) FROM message_topics") > 10
    finally:
        await conn.close()
    async with serving(url) as http:
        user = await create_user(http, "after.seeds@example.com")
        assert user["id"] > ada["id"]
        conversation = await create_conversation(http, user["id"])
        posted = await http.post(
            f"/v1/conversations/{conversation['id']}/messages",
            json={"role": "user", "content": "after two seeds", "topics": ["travel", "brand-new"]},
        )
        assert posted.status_code == 201, posted.text
        assert {t["name"] for t in posted.json()["topics"]} == {"travel", "brand-new"}
        items = await post_batch(http, conversation["id"], [{"role": "assistant", "content": "a batch too"}])
        assert items[0]["status"] == "created"
        assert (await http.post("/v1/topics", json={"name": "another-new"})).status_code == 201


async def test_a_seed_that_fails_leaves_nothing_behind(fresh_database: Callable[[], str]) -> None:
    url = fresh_database()
    conn = await asyncpg.connect(url)
    try:
        # A real failure from PostgreSQL late in the seed: tagging the first messages is refused.
        await conn.execute(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$; "
            "CREATE TRIGGER refuse BEFORE INSERT ON message_topics FOR EACH ROW EXECUTE FUNCTION refuse()"
        )
        with pytest.raises(asyncpg.RaiseError, match="refused by the test"):
            await seed.seed(conn, 2_000, seed_number=3, quiet=True)
        assert await table_counts(conn) == {"users": 0, "conversations": 0, "messages": 0, "topics": 0, "tags": 0}
        await conn.execute("DROP TRIGGER refuse ON message_topics")
        report = await seed.seed(conn, 2_000, seed_number=3, quiet=True)  # and a retry works
        assert (await table_counts(conn))["messages"] == report.messages
    finally:
        await conn.close()
