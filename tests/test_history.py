"""History lifecycle: soft delete and restore, edit revisions, purge after retention, erasure."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from service import conversations, messages, purge
from service.__main__ import main
from service.db import Connection, configure_connection
from service.errors import NotFound
from service.topic_lists import TopicCache
from tests.api import all_pages, assert_problem, create_conversation, create_user, post_batch, serving


@pytest.fixture
async def chat(client: httpx.AsyncClient) -> dict[str, Any]:
    """A user, a conversation of theirs with three messages (two tagged 'travel')."""
    user = await create_user(client)
    conversation = await create_conversation(client, user["id"])
    items = await post_batch(
        client,
        conversation["id"],
        [
            {"role": "user", "content": "lisbon flights please", "topics": ["travel"]},
            {"role": "assistant", "content": "three lisbon options", "topics": ["travel", "flights"]},
            {"role": "user", "content": "the morning one"},
        ],
    )
    return {"user": user, "conversation": conversation, "messages": [item["message"] for item in items]}


async def visible(client: httpx.AsyncClient, chat: dict[str, Any]) -> dict[str, Any]:
    """What every read says about the chat's messages right now."""
    conversation_id = chat["conversation"]["id"]
    listed = await all_pages(client, f"/v1/conversations/{conversation_id}/messages", order="asc")
    counted = (await client.get(f"/v1/conversations/{conversation_id}/messages", params={"count": "exact"})).json()
    travel = (await client.get("/v1/topics", params={"prefix": "travel"})).json()["items"][0]
    topic = (await client.get(f"/v1/topics/{travel['id']}")).json()
    on_topic = await all_pages(client, f"/v1/topics/{travel['id']}/messages")
    found = (await client.get("/v1/search/messages", params={"q": "lisbon"})).json()["items"]
    conversation = (await client.get(f"/v1/conversations/{conversation_id}")).json()
    return {
        "listed": [m["id"] for m in listed],
        "total": counted["total"],
        "message_count": conversation["message_count"],
        "topic_count": topic["message_count"],
        "on_topic": sorted(m["id"] for m in on_topic),
        "found": sorted(m["id"] for m in found),
    }


async def test_a_deleted_message_is_gone_from_every_read_and_restore_brings_it_back(
    client: httpx.AsyncClient, chat: dict[str, Any]
) -> None:
    first, second, third = (m["id"] for m in chat["messages"])
    before = await visible(client, chat)
    assert before == {
        "listed": [first, second, third],
        "total": 3,
        "message_count": 3,
        "topic_count": 2,
        "on_topic": [first, second],
        "found": [first, second],
    }
    assert (await client.delete(f"/v1/messages/{second}")).status_code == 204
    assert_problem(await client.get(f"/v1/messages/{second}"), 404)
    assert_problem(await client.patch(f"/v1/messages/{second}", json={"content": "x"}), 404)
    assert_problem(await client.get(f"/v1/messages/{second}/revisions"), 404)
    assert_problem(await client.post(f"/v1/messages/{second}/topics", json={"topics": ["more"]}), 404)
    assert_problem(await client.delete(f"/v1/messages/{second}"), 404)
    assert await visible(client, chat) == {
        "listed": [first, third],
        "total": 2,
        "message_count": 2,
        "topic_count": 1,
        "on_topic": [first],
        "found": [first],
    }

    restored = await client.post(f"/v1/messages/{second}/restore")
    assert restored.status_code == 200, restored.text
    assert restored.json() == chat["messages"][1]  # topics and all, as it was
    assert await visible(client, chat) == before
    # Restoring a live message changes nothing and answers it (a retried restore is harmless).
    again = await client.post(f"/v1/messages/{second}/restore")
    assert again.status_code == 200
    assert again.json() == chat["messages"][1]


async def test_restore_unknown_message_is_404(client: httpx.AsyncClient) -> None:
    assert_problem(await client.post("/v1/messages/987654/restore"), 404)
    assert_problem(await client.post("/v1/conversations/987654/restore"), 404)


async def test_a_conversation_comes_back_with_the_messages_deleted_with_it_only(
    client: httpx.AsyncClient, chat: dict[str, Any]
) -> None:
    conversation_id = chat["conversation"]["id"]
    first, second, third = (m["id"] for m in chat["messages"])
    assert (await client.delete(f"/v1/messages/{first}")).status_code == 204
    assert (await client.delete(f"/v1/conversations/{conversation_id}")).status_code == 204

    assert_problem(await client.get(f"/v1/conversations/{conversation_id}"), 404)
    assert_problem(await client.get(f"/v1/conversations/{conversation_id}/messages"), 404)
    assert_problem(await client.patch(f"/v1/conversations/{conversation_id}", json={"title": "x"}), 404)
    assert_problem(
        await client.post(f"/v1/conversations/{conversation_id}/messages", json={"role": "user", "content": "hi"}), 404
    )
    assert (await client.get(f"/v1/users/{chat['user']['id']}/conversations")).json()["items"] == []
    assert (await client.get("/v1/search/messages", params={"q": "lisbon"})).json()["items"] == []
    # A message of a deleted conversation stays deleted until the conversation comes back.
    assert_problem(await client.post(f"/v1/messages/{second}/restore"), 409)

    restored = await client.post(f"/v1/conversations/{conversation_id}/restore")
    assert restored.status_code == 200, restored.text
    body = restored.json()
    assert body["message_count"] == 2
    listed = await all_pages(client, f"/v1/conversations/{conversation_id}/messages", order="asc")
    # The message deleted before the conversation stays deleted; it can be restored on its own.
    assert [m["id"] for m in listed] == [second, third]
    assert (await client.post(f"/v1/messages/{first}/restore")).status_code == 200
    assert (await client.get(f"/v1/conversations/{conversation_id}")).json()["message_count"] == 3
    assert (await client.get(f"/v1/users/{chat['user']['id']}/conversations")).json()["items"][0]["id"] == (
        conversation_id
    )


async def test_a_page_whose_conversation_is_gone_is_a_404_not_a_page_short(
    client: httpx.AsyncClient, conn: Connection, chat: dict[str, Any]
) -> None:
    """A page statement tells an existing conversation by its marker row, and its messages do not
    read the conversation (a live message's conversation is live). Should that ever not hold (here:
    the conversation deleted with its triggers off, its messages left live), the answer is the 404
    of a missing conversation, never a page with a message dropped in the marker's place."""
    conversation_id = chat["conversation"]["id"]
    for order in ("desc", "asc"):
        listed = await client.get(f"/v1/conversations/{conversation_id}/messages", params={"order": order})
        assert len(listed.json()["items"]) == len(chat["messages"])
    # Rolled back with the test's transaction, which the app shares.
    await conn.execute("ALTER TABLE conversations DISABLE TRIGGER USER")
    await conn.execute("UPDATE conversations SET deleted_at = now() WHERE id = $1", conversation_id)
    await conn.execute("ALTER TABLE conversations ENABLE TRIGGER USER")
    assert await conn.fetchval(
        "SELECT count(*) FROM messages WHERE conversation_id = $1 AND deleted_at IS NULL", conversation_id
    ) == len(chat["messages"])
    for order in ("desc", "asc"):
        assert_problem(await client.get(f"/v1/conversations/{conversation_id}/messages", params={"order": order}), 404)


async def test_a_repeated_client_msg_id_of_a_deleted_message_is_a_conflict(
    client: httpx.AsyncClient, conn: Connection, chat: dict[str, Any]
) -> None:
    path = f"/v1/conversations/{chat['conversation']['id']}/messages"
    posted = await client.post(path, json={"role": "user", "content": "once", "client_msg_id": "k-1"})
    assert posted.status_code == 201
    assert (await client.delete(f"/v1/messages/{posted.json()['id']}")).status_code == 204
    count = await conn.fetchval("SELECT count(*) FROM messages")
    assert_problem(
        await client.post(path, json={"role": "user", "content": "once", "client_msg_id": "k-1"}), 409, "client_msg_id"
    )
    batch = await client.post(
        f"{path}/batch",
        json={
            "messages": [
                {"role": "user", "content": "new"},
                {"role": "user", "content": "once", "client_msg_id": "k-1"},
            ]
        },
    )
    assert_problem(batch, 409, "messages[1].client_msg_id")
    assert await conn.fetchval("SELECT count(*) FROM messages") == count


async def test_edits_keep_revisions_newest_first_with_paging(client: httpx.AsyncClient, chat: dict[str, Any]) -> None:
    message = chat["messages"][0]
    path = f"/v1/messages/{message['id']}"
    assert (await client.get(f"{path}/revisions")).json() == {"items": [], "next_cursor": None}
    first = (await client.patch(path, json={"content": "lisbon flights, two people"})).json()
    second = (await client.patch(path, json={"role": "assistant"})).json()
    third = (await client.patch(path, json={"content": "final words"})).json()

    revisions = (await client.get(f"{path}/revisions", params={"count": "exact"})).json()
    assert revisions["total"] == 3
    assert revisions["items"] == [
        {"revision": 3, "role": "assistant", "content": "lisbon flights, two people", "edited_at": third["edited_at"]},
        {"revision": 2, "role": "user", "content": "lisbon flights, two people", "edited_at": second["edited_at"]},
        {"revision": 1, "role": "user", "content": "lisbon flights please", "edited_at": first["edited_at"]},
    ]
    paged = await all_pages(client, f"{path}/revisions", limit=1)
    assert paged == revisions["items"]
    offset = (await client.get(f"{path}/revisions", params={"offset": 2, "limit": 5})).json()
    assert offset["items"] == revisions["items"][2:]
    assert offset["next_cursor"] is None
    other = chat["messages"][1]["id"]
    cursor = (await client.get(f"{path}/revisions", params={"limit": 1})).json()["next_cursor"]
    assert_problem(await client.get(f"/v1/messages/{other}/revisions", params={"cursor": cursor}), 400, "cursor")
    assert_problem(await client.get(f"{path}/revisions", params={"limit": 0}), 400, "limit")
    assert_problem(await client.get("/v1/messages/987654/revisions"), 404)


async def test_the_bulk_edit_keeps_revisions_in_one_statement(
    client: httpx.AsyncClient, conn: Connection, chat: dict[str, Any]
) -> None:
    ids = [m["id"] for m in chat["messages"]]
    statements: list[str] = []

    def record(query: asyncpg.connection.LoggedQuery) -> None:
        statements.append(query.query)

    conn.add_query_logger(record)
    try:
        response = await client.patch(
            "/v1/messages", json={"updates": [{"id": i, "content": f"edited {i}"} for i in ids]}
        )
    finally:
        conn.remove_query_logger(record)
    assert response.json() == {"updated": 3}
    # Savepoints (the test's shared connection wraps each request in one, and the edit runs in a
    # transaction of its own, to run again after a deadlock), and exactly one statement.
    work = [s for s in statements if not s.startswith(("SAVEPOINT", "RELEASE", "ROLLBACK"))]
    assert len(work) == 1
    assert "messages.update_messages" in work[0]
    for message in chat["messages"]:
        [revision] = (await client.get(f"/v1/messages/{message['id']}/revisions")).json()["items"]
        assert (revision["revision"], revision["content"]) == (1, message["content"])


async def backdate(conn: Connection, days: int) -> None:
    """Make every deletion so far ``days`` old (a test runs in one transaction: now() stands still)."""
    await conn.execute(
        "UPDATE conversations SET deleted_at = deleted_at - make_interval(days => $1) WHERE deleted_at IS NOT NULL",
        days,
    )
    await conn.execute(
        "UPDATE messages SET deleted_at = deleted_at - make_interval(days => $1) WHERE deleted_at IS NOT NULL", days
    )


async def test_purge_removes_what_retention_let_go_with_revisions_and_tags(
    client: httpx.AsyncClient, conn: Connection, chat: dict[str, Any]
) -> None:
    first, second, third = (m["id"] for m in chat["messages"])
    await client.patch(f"/v1/messages/{second}", json={"content": "edited"})
    assert (await client.delete(f"/v1/messages/{second}")).status_code == 204
    await backdate(conn, 31)
    # Deleted just now: kept until its retention ends.
    assert (await client.delete(f"/v1/messages/{third}")).status_code == 204
    retention = timedelta(days=30)

    report = await purge.purge(conn, retention=retention, changes_retention=timedelta(days=7), batch=1)
    assert (report.messages, report.revisions, report.tags, report.conversations) == (1, 1, 2, 0)
    assert await conn.fetchval("SELECT array_agg(id ORDER BY id) FROM messages") == [first, third]
    assert await conn.fetchval("SELECT count(*) FROM message_revisions") == 0
    assert await conn.fetchval("SELECT count(*) FROM deleted_message_topics") == 0
    assert_problem(await client.post(f"/v1/messages/{second}/restore"), 404)
    assert (await client.post(f"/v1/messages/{third}/restore")).status_code == 200
    # Running it again finds nothing more.
    again = await purge.purge(conn, retention=retention, changes_retention=timedelta(days=7))
    assert (again.messages, again.conversations) == (0, 0)


async def test_purge_takes_a_conversation_after_its_messages(
    client: httpx.AsyncClient, conn: Connection, chat: dict[str, Any]
) -> None:
    conversation_id = chat["conversation"]["id"]
    assert (await client.delete(f"/v1/conversations/{conversation_id}")).status_code == 204
    await backdate(conn, 31)
    report = await purge.purge(conn, retention=timedelta(days=30), changes_retention=timedelta(days=7), batch=2)
    assert (report.messages, report.conversations, report.tags) == (3, 1, 3)
    assert await conn.fetchval("SELECT count(*) FROM conversations") == 0
    assert_problem(await client.post(f"/v1/conversations/{conversation_id}/restore"), 404)
    assert "purged 3 deleted messages" in report.describe()


async def test_deleting_a_user_erases_everything_of_theirs_at_once(
    client: httpx.AsyncClient, conn: Connection, chat: dict[str, Any]
) -> None:
    other = await create_user(client, "bo@example.com", "Bo")
    others = await create_conversation(client, other["id"])
    # A message of the user in someone else's conversation, and one soft-deleted with revisions.
    await post_batch(client, others["id"], [{"role": "user", "content": "hello bo", "user_id": chat["user"]["id"]}])
    second = chat["messages"][1]["id"]
    await client.patch(f"/v1/messages/{second}", json={"content": "edited"})
    assert (await client.delete(f"/v1/messages/{second}")).status_code == 204

    assert (await client.delete(f"/v1/users/{chat['user']['id']}")).status_code == 204
    left = await conn.fetchrow(
        "SELECT (SELECT count(*) FROM messages) AS messages, (SELECT count(*) FROM conversations) AS conversations, "
        "(SELECT count(*) FROM message_revisions) AS revisions, (SELECT count(*) FROM deleted_message_topics) AS tags, "
        "(SELECT count(*) FROM message_topics) AS live_tags"
    )
    assert left is not None
    assert dict(left) == {"messages": 0, "conversations": 1, "revisions": 0, "tags": 0, "live_tags": 0}
    assert (await client.get(f"/v1/conversations/{others['id']}")).json()["message_count"] == 0


async def test_a_post_racing_a_conversation_delete_never_leaves_a_live_message_in_it(
    fresh_database: Callable[[], str],
) -> None:
    url = fresh_database()
    poster, deleter = await asyncpg.connect(url), await asyncpg.connect(url)
    await configure_connection(poster)
    try:
        user_id = await poster.fetchval("INSERT INTO users (email, name) VALUES ('r@example.com', 'R') RETURNING id")
        conversation_id = await poster.fetchval("INSERT INTO conversations (user_id) VALUES ($1) RETURNING id", user_id)
        one = [messages.MessageCreate(role="user", content="racing")]

        # The post commits while the delete waits for the conversation's row: the delete sees it.
        async with poster.transaction():
            [posted] = await messages.add_messages(poster, TopicCache(), conversation_id, one, in_batch=False)
            deleting = asyncio.create_task(
                conversations.sql.delete_conversation.val(deleter, conversation_id=conversation_id)
            )
            await asyncio.sleep(0.1)
            assert not deleting.done()  # waiting for the post's lock on the conversation
        assert await deleting == conversation_id
        assert await poster.fetchval("SELECT deleted_at IS NOT NULL FROM messages WHERE id = $1", posted.message.id)

        # The other way round: a post waiting for the delete finds the conversation gone.
        await conversations.sql.restore_conversation.val(poster, conversation_id=conversation_id)
        async with deleter.transaction():
            await conversations.sql.delete_conversation.val(deleter, conversation_id=conversation_id)
            posting = asyncio.create_task(
                messages.add_messages(poster, TopicCache(), conversation_id, one, in_batch=False)
            )
            await asyncio.sleep(0.1)
            assert not posting.done()
        with pytest.raises(NotFound):  # the conversation is deleted: a 404
            await posting
        live = await poster.fetchval(
            "SELECT count(*) FROM messages WHERE conversation_id = $1 AND deleted_at IS NULL", conversation_id
        )
        assert live == 0
    finally:
        await poster.close()
        await deleter.close()


def test_make_purge_honours_the_retention_settings(
    fresh_database: Callable[[], str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = fresh_database()

    async def delete_one_message() -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("INSERT INTO users (email, name) VALUES ('p@example.com', 'P')")
            await conn.execute("INSERT INTO conversations (user_id) SELECT id FROM users")
            await conn.execute(
                "INSERT INTO messages (conversation_id, user_id, role, content) "
                "SELECT id, user_id, 'user', 'bye' FROM conversations"
            )
            await conn.execute("UPDATE messages SET deleted_at = now() - interval '2 days'")
        finally:
            await conn.close()

    asyncio.run(delete_one_message())
    monkeypatch.setenv("FREYA_DATABASE_URL", url)
    monkeypatch.setenv("FREYA_RETENTION_DAYS", "3")
    assert main(["purge"]) == 0
    assert "purged 0 deleted messages" in capsys.readouterr().out
    monkeypatch.setenv("FREYA_RETENTION_DAYS", "1")
    assert main(["purge"]) == 0
    out = capsys.readouterr().out
    assert "purged 1 deleted messages (with 0 revisions and 0 tags) and 0 deleted conversations" in out, out
    monkeypatch.setenv("FREYA_CHANGES_RETENTION_DAYS", "-1")
    assert main(["purge"]) == 2
    assert "FREYA_CHANGES_RETENTION_DAYS" in capsys.readouterr().err


async def test_a_restore_racing_deletes_never_answers_404(fresh_database: Callable[[], str]) -> None:
    """Restore is safe to retry whatever else runs: an existing conversation or message is never
    "does not exist". (It read the row back in a statement of its own, after its restore had
    missed a delete committed while it waited for the lock: a 404 for a deleted, restorable row.)"""
    async with serving(fresh_database()) as live_client:
        user = await create_user(live_client)
        conversation = await create_conversation(live_client, user["id"])
        [item] = await post_batch(live_client, conversation["id"], [{"role": "user", "content": "contested"}])
        targets = {
            "conversation": f"/v1/conversations/{conversation['id']}",
            "message": f"/v1/messages/{item['message']['id']}",
        }
        for path in targets.values():

            async def delete_often(path: str = path) -> None:
                for _ in range(60):
                    # 404: deleted already (and not restored since).
                    assert (await live_client.delete(path)).status_code in {204, 404}

            async def restore_often(path: str = path) -> list[int]:
                return [(await live_client.post(f"{path}/restore")).status_code for _ in range(60)]

            _, statuses = await asyncio.gather(delete_often(), restore_often())
            assert set(statuses) == {200}, statuses
