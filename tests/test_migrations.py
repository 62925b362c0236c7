"""Migrations: one linear history, a clean round trip, the role migration on data, the guide's indexes."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from service import migrations
from tests.conftest import RUN_ID, create_database, drop_database

GUIDE_INDEXES = {
    "idx_conversation_user_id": "CREATE INDEX idx_conversation_user_id ON public.conversations USING btree (user_id)",
    "idx_message_conversation_id": (
        "CREATE INDEX idx_message_conversation_id ON public.messages USING btree (conversation_id)"
    ),
    "idx_message_user_id": "CREATE INDEX idx_message_user_id ON public.messages USING btree (user_id)",
    "idx_message_timestamp": (
        'CREATE INDEX idx_message_timestamp ON public.messages USING btree (conversation_id, "timestamp")'
    ),
    "idx_user_email": "CREATE UNIQUE INDEX idx_user_email ON public.users USING btree (email)",
    "idx_topic_name": "CREATE UNIQUE INDEX idx_topic_name ON public.topics USING btree (name)",
    "idx_message_topic": "CREATE INDEX idx_message_topic ON public.message_topics USING btree (message_id, topic_id)",
}


@pytest.fixture
def empty_database(server_url: str) -> Iterator[str]:
    name = f"freya_empty_{RUN_ID}"
    drop_database(server_url, name)
    url = create_database(server_url, name)
    yield url
    drop_database(server_url, name)


def table_state(url: str) -> list[tuple[str, ...]]:
    with psycopg.connect(url) as conn:
        return [
            tuple(str(v) for v in row)
            for row in conn.execute(
                "SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns "
                "WHERE table_schema = 'public' AND table_name NOT LIKE '\\_yoyo%' AND table_name NOT LIKE 'yoyo%' "
                "ORDER BY table_name, column_name"
            ).fetchall()
        ]


def test_history_is_one_linear_chain_with_rollbacks() -> None:
    ids = migrations.migration_ids()
    assert ids[:3] == ["0001_initial_schema", "0002_guide_indexes", "0003_message_role"]
    numbers = [int(i[:4]) for i in ids]
    assert numbers == list(range(1, len(ids) + 1)), "numbers must run 0001, 0002, … without gaps"
    for previous, current in zip([None, *ids], ids, strict=False):
        text = (migrations.MIGRATIONS_DIR / f"{current}.sql").read_text()
        depends = re.findall(r"^--\s*depends:\s*(.*)$", text, flags=re.MULTILINE)
        assert depends == ([previous] if previous else []), f"{current} must depend on {previous} only"
        assert (migrations.MIGRATIONS_DIR / f"{current}.rollback.sql").exists()
    # One head: no migration is depended on twice, and every one but the last is depended on.
    assert len(set(ids)) == len(ids)


def test_apply_rollback_everything_apply_again(empty_database: str) -> None:
    applied = migrations.apply(empty_database)
    assert applied == migrations.migration_ids()
    schema = table_state(empty_database)
    assert {row[0] for row in schema} >= {"users", "conversations", "messages", "topics", "message_topics"}
    assert migrations.apply(empty_database) == []

    undone = migrations.rollback(empty_database, count=len(applied))
    assert undone == list(reversed(applied))
    assert table_state(empty_database) == []
    assert all(not s.applied for s in migrations.status(empty_database))

    assert migrations.apply(empty_database) == applied
    assert table_state(empty_database) == schema


def test_rollback_undoes_only_the_last(empty_database: str) -> None:
    applied = migrations.apply(empty_database)
    assert migrations.rollback(empty_database) == [applied[-1]]
    states = migrations.status(empty_database)
    assert [s.applied for s in states] == [True] * (len(applied) - 1) + [False]


def test_role_migration_on_a_populated_table(empty_database: str) -> None:
    migrations.apply(empty_database, up_to="0002_guide_indexes")
    with psycopg.connect(empty_database) as conn:
        conn.execute("INSERT INTO users (email, name) VALUES ('old@example.com', 'Old')")
        conn.execute("INSERT INTO conversations (user_id) SELECT id FROM users")
        conn.execute(
            "INSERT INTO messages (conversation_id, user_id, content) "
            "SELECT c.id, c.user_id, 'message ' || g FROM conversations AS c, generate_series(1, 10000) AS g"
        )
    assert migrations.apply(empty_database, up_to="0003_message_role") == ["0003_message_role"]
    with psycopg.connect(empty_database) as conn:
        roles = conn.execute("SELECT role, count(*) FROM messages GROUP BY role").fetchall()
        assert roles == [("user", 10000)]
        nullable = conn.execute(
            "SELECT is_nullable FROM information_schema.columns WHERE table_name = 'messages' AND column_name = 'role'"
        ).fetchone()
        assert nullable == ("NO",)
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("UPDATE messages SET role = 'robot' WHERE id = (SELECT min(id) FROM messages)")


def test_the_guide_indexes_exist_with_exact_definitions(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' AND indexname = ANY(%s)",
            (list(GUIDE_INDEXES),),
        ).fetchall()
    assert dict(rows) == GUIDE_INDEXES


def test_no_index_duplicates_another(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        duplicates = conn.execute(
            "SELECT indrelid::regclass::text, indkey::text, indclass::text, count(*) FROM pg_index "
            "WHERE indrelid::regclass::text IN ('users', 'conversations', 'messages', 'topics', 'message_topics') "
            "GROUP BY 1, 2, 3, coalesce(pg_get_expr(indexprs, indrelid), ''), "
            "coalesce(pg_get_expr(indpred, indrelid), '') HAVING count(*) > 1"
        ).fetchall()
    assert duplicates == []


def test_unique_and_cascade_constraints(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        constraints: dict[str, str] = dict(
            conn.execute(
                "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE conrelid::regclass::text IN ('users', 'topics', 'conversations', 'messages', 'message_topics')"
            ).fetchall()
        )
    assert constraints["idx_user_email"] == "UNIQUE (email)"
    assert constraints["idx_topic_name"] == "UNIQUE (name)"
    assert constraints["message_topics_pkey"] == "PRIMARY KEY (topic_id, message_id)"
    cascades = [d for d in constraints.values() if d.startswith("FOREIGN KEY")]
    assert len(cascades) == 5
    assert all(d.endswith("ON DELETE CASCADE") for d in cascades)


def test_new_migration_pair_is_numbered_and_depends_on_the_last(tmp_path: Path) -> None:
    for name in ("0001_first.sql", "0001_first.rollback.sql", "0002_second.sql", "0002_second.rollback.sql"):
        (tmp_path / name).write_text("-- x\n")
    forward, backward = migrations.create("add_flags", tmp_path)
    assert (forward.name, backward.name) == ("0003_add_flags.sql", "0003_add_flags.rollback.sql")
    assert "-- depends: 0002_second" in forward.read_text()
    with pytest.raises(ValueError, match="snake_case"):
        migrations.create("Add Flags", tmp_path)


def populated_before(url: str, migration: str, content: str) -> list[str]:
    """Apply the migrations before ``migration``, then write a user, a conversation and 12,000
    messages (they cross a backfill's batches of 5,000) whose content is the SQL expression
    ``content`` of g, 1 to 12,000. Returns the migration ids from ``migration`` on."""
    ids = migrations.migration_ids()
    first = next(n for n, i in enumerate(ids) if i.endswith(f"_{migration}"))
    migrations.apply(url, up_to=ids[first - 1])
    with psycopg.connect(url) as conn:
        conn.execute("INSERT INTO users (email, name) VALUES ('old@example.com', 'Old')")
        conn.execute("INSERT INTO conversations (user_id) SELECT id FROM users")
        conn.execute(
            "INSERT INTO messages (conversation_id, user_id, role, content) "
            f"SELECT c.id, c.user_id, 'user', {content} FROM conversations AS c, generate_series(1, 12000) AS g"
        )
    return ids[first:]


def test_metadata_and_token_count_migrations_on_a_populated_table(empty_database: str) -> None:
    # 'é' is two UTF-8 bytes, '🙂' four.
    later = populated_before(
        empty_database, "message_metadata_columns", "repeat('é', g % 7) || repeat('🙂', g % 3) || 'x'"
    )
    applied = migrations.apply(empty_database, up_to=later[2])
    assert [i[5:] for i in applied] == [
        "message_metadata_columns",
        "message_metadata_backfill",
        "message_metadata_not_null",
    ]
    with psycopg.connect(empty_database) as conn:
        rows = conn.execute("SELECT content, token_count, token_count_estimated, metadata FROM messages").fetchall()
        assert len(rows) == 12000
        for content, tokens, estimated, metadata in rows:
            assert tokens == -(-len(content.encode()) // 4)
            assert estimated is True
            assert metadata == {}
        assert conn.execute("SELECT metadata FROM conversations").fetchall() == [({},)]
        nullable = conn.execute(
            "SELECT table_name, column_name, is_nullable FROM information_schema.columns "
            "WHERE column_name IN ('metadata', 'token_count', 'token_count_estimated') ORDER BY 1, 2"
        ).fetchall()
        assert nullable == [
            ("conversations", "metadata", "NO"),
            ("messages", "metadata", "NO"),
            ("messages", "token_count", "NO"),
            ("messages", "token_count_estimated", "NO"),
        ]
        # A writer that sends no count (an older release, COPY) still gets the estimate.
        conn.execute(
            "INSERT INTO messages (conversation_id, user_id, role, content) "
            "SELECT id, user_id, 'user', 'abcdefghi' FROM conversations"
        )
        assert conn.execute(
            "SELECT token_count, token_count_estimated, metadata FROM messages WHERE content = 'abcdefghi'"
        ).fetchone() == (3, True, {})
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("UPDATE messages SET token_count = -1 WHERE id = (SELECT min(id) FROM messages)")
    with psycopg.connect(empty_database) as conn, pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("UPDATE messages SET metadata = '[1]' WHERE id = (SELECT min(id) FROM messages)")


def test_topic_ids_copy_migrations_on_a_populated_table(empty_database: str) -> None:
    later = populated_before(empty_database, "message_topic_ids", "'m' || g")
    with psycopg.connect(empty_database) as conn:
        # Every third message has no tag, the others one or two.
        conn.execute("INSERT INTO topics (name) VALUES ('a'), ('b')")
        conn.execute(
            "INSERT INTO message_topics (topic_id, message_id) "
            "SELECT t.id, m.id FROM messages AS m JOIN topics AS t "
            "ON (t.name = 'a' AND m.id % 3 = 1) OR (t.name = 'b' AND m.id % 3 <> 0)"
        )
        deleted = conn.execute("SELECT min(id) FROM messages WHERE id % 3 = 2").fetchone()
        conn.execute("UPDATE messages SET deleted_at = now() WHERE id = %s", deleted)
    applied = migrations.apply(empty_database, up_to=later[1])
    assert [i[5:] for i in applied] == ["message_topic_ids", "message_topic_ids_backfill"]
    with psycopg.connect(empty_database) as conn:
        copies: dict[int, list[int | None]] = dict(
            conn.execute("SELECT id % 3, array_agg(DISTINCT cardinality(topic_ids)) FROM messages GROUP BY 1")
        )
        assert copies == {0: [None], 1: [2], 2: [1, None]}  # the deleted message's tags are set aside
        apart = conn.execute(
            "SELECT count(*) FROM messages AS m WHERE m.topic_ids IS DISTINCT FROM "
            "(SELECT array_agg(mt.topic_id ORDER BY mt.topic_id) FROM message_topics AS mt WHERE mt.message_id = m.id)"
        ).fetchone()
        assert apart == (0,)
