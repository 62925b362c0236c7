"""Seed data: the requested shape, deterministic from its seed number, usable at once."""

from __future__ import annotations

import random
from collections.abc import Callable

import asyncpg
import pytest

from service import seed
from service.__main__ import main


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
