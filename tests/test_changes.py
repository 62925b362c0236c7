"""The change feed: every committed change exactly once, in order, none skipped, none rolled back.

These tests commit (the feed serves only ended transactions), so each has its own database.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import asyncpg
import httpx

from service import messages, purge
from service.db import Connection, configure_connection
from service.topic_lists import TopicCache
from tests.api import assert_problem, create_conversation, create_user, post_batch, serving

Item = tuple[str, int, str]


async def read_to_end(client: httpx.AsyncClient, cursor: str | None = None) -> tuple[list[dict[str, Any]], str]:
    """Every change after ``cursor`` visible now, and the cursor to resume from."""
    items: list[dict[str, Any]] = []
    while True:
        response = await client.get("/v1/changes", params={"limit": 200, **({"cursor": cursor} if cursor else {})})
        assert response.status_code == 200, response.text
        page = response.json()
        assert page["next_cursor"], page
        cursor = page["next_cursor"]
        items.extend(page["items"])
        if not page["items"]:
            return items, cursor


def triples(items: list[dict[str, Any]]) -> list[Item]:
    return [(item["entity"], item["id"], item["op"]) for item in items]


async def test_every_kind_of_write_is_one_item_in_order(fresh_database: Callable[[], str]) -> None:
    async with serving(fresh_database()) as client:
        empty = (await client.get("/v1/changes")).json()
        assert empty["items"] == []
        assert empty["next_cursor"]  # present on an empty page too
        user = await create_user(client)
        conversation = await create_conversation(client, user["id"])
        single = (
            await client.post(
                f"/v1/conversations/{conversation['id']}/messages",
                json={"role": "user", "content": "hi", "topics": ["travel"]},
            )
        ).json()
        batch = [
            item["message"]
            for item in await post_batch(
                client,
                conversation["id"],
                [{"role": "user", "content": f"m{n}", "topics": ["travel"]} for n in range(3)],
            )
        ]
        travel = single["topics"][0]["id"]
        await client.patch(f"/v1/messages/{single['id']}", json={"content": "hello"})
        await client.patch("/v1/messages", json={"updates": [{"id": batch[0]["id"], "role": "assistant"}]})
        await client.put(f"/v1/messages/{batch[1]['id']}/topics", json={"topics": ["flights"]})
        await client.post("/v1/topics/assign", json={"message_ids": [single["id"], batch[2]["id"]], "topics": ["x"]})
        await client.delete(f"/v1/messages/{single['id']}/topics/{travel}")
        await client.delete(f"/v1/messages/{batch[0]['id']}")
        await client.post(f"/v1/messages/{batch[0]['id']}/restore")
        await client.patch(f"/v1/conversations/{conversation['id']}", json={"title": "renamed"})
        await client.patch(f"/v1/users/{user['id']}", json={"name": "Ada L."})
        await client.delete(f"/v1/messages/{batch[2]['id']}")
        await client.delete(f"/v1/conversations/{conversation['id']}")
        await client.post(f"/v1/conversations/{conversation['id']}/restore")

        items, cursor = await read_to_end(client, empty["next_cursor"])
        m0, m1, m2, m3 = single["id"], batch[0]["id"], batch[1]["id"], batch[2]["id"]
        topic_ids = {t["name"]: t["id"] for t in (await client.get("/v1/topics")).json()["items"]}
        cid, uid = conversation["id"], user["id"]
        assert triples(items) == [
            ("user", uid, "created"),
            ("conversation", cid, "created"),
            ("topic", travel, "created"),
            ("message", m0, "created"),  # its tag is part of its creation
            ("message", m1, "created"),
            ("message", m2, "created"),
            ("message", m3, "created"),
            ("message", m0, "updated"),  # PATCH
            ("message", m1, "updated"),  # bulk PATCH
            ("topic", topic_ids["flights"], "created"),
            ("message", m2, "updated"),  # PUT topics: removes and adds, one item
            ("topic", topic_ids["x"], "created"),
            ("message", m0, "updated"),  # assign
            ("message", m3, "updated"),
            ("message", m0, "updated"),  # tag removed
            ("message", m1, "deleted"),
            ("message", m1, "restored"),
            ("conversation", cid, "updated"),
            ("user", uid, "updated"),
            ("message", m3, "deleted"),
            ("conversation", cid, "deleted"),  # and the three messages still live, with it
            ("message", m0, "deleted"),
            ("message", m1, "deleted"),
            ("message", m2, "deleted"),
            ("conversation", cid, "restored"),  # with them, not with m3 (deleted before)
            ("message", m0, "restored"),
            ("message", m1, "restored"),
            ("message", m2, "restored"),
        ]
        by_kind = {(item["entity"], item["op"]): item for item in items}
        assert by_kind[("message", "created")]["conversation_id"] == cid
        assert by_kind[("message", "created")]["user_id"] == uid
        assert by_kind[("conversation", "created")]["conversation_id"] == cid
        assert by_kind[("user", "created")]["user_id"] == uid
        assert by_kind[("topic", "created")]["conversation_id"] is None
        seqs = [item["seq"] for item in items]
        assert len(set(seqs)) == len(seqs)

        # Erasure: the user and everything of theirs, each an `erased` item, in one transaction.
        assert (await client.delete(f"/v1/users/{uid}")).status_code == 204
        erased, _ = await read_to_end(client, cursor)
        assert Counter(triples(erased)) == Counter(
            [("user", uid, "erased"), ("conversation", cid, "erased")]
            + [("message", m, "erased") for m in (m0, m1, m2, m3)]
        )


async def test_a_batch_of_1000_messages_is_1000_items(fresh_database: Callable[[], str]) -> None:
    async with serving(fresh_database()) as client:
        user = await create_user(client)
        conversation = await create_conversation(client, user["id"])
        _, cursor = await read_to_end(client)
        batch = [{"role": "user", "content": f"m{n}", "topics": ["bulk", f"t{n % 3}"]} for n in range(1000)]
        posted = await post_batch(client, conversation["id"], batch)
        items, _ = await read_to_end(client, cursor)
        messages_created = [item for item in triples(items) if item[0] == "message"]
        assert messages_created == [("message", p["message"]["id"], "created") for p in posted]
        assert sorted(item[2] for item in triples(items) if item[0] == "topic") == ["created"] * 4


async def test_tags_of_new_messages_skip_the_check_only_in_their_own_statement(
    fresh_database: Callable[[], str],
) -> None:
    """add_messages tells the trigger on its tags that they are on messages it created (migration
    0029); a tag written later in the same transaction, on an older message, is still an item."""
    conn = await asyncpg.connect(fresh_database())
    await configure_connection(conn)
    try:
        user_id = await conn.fetchval("INSERT INTO users (email, name) VALUES ('t@example.com', 'T') RETURNING id")
        conversation = await conn.fetchval("INSERT INTO conversations (user_id) VALUES ($1) RETURNING id", user_id)
        create = messages.MessageCreate
        [old] = await messages.add_messages(
            conn, TopicCache(), conversation, [create(role="user", content="old")], in_batch=False
        )
        async with conn.transaction():
            xid = await conn.fetchval("SELECT pg_current_xact_id()::text::bigint")
            tagged = await messages.add_messages(
                conn,
                TopicCache(),
                conversation,
                [create(role="user", content="new", topics=["a"], client_msg_id="k")],
                in_batch=False,
            )
            # A repeat whose topics are not written (a duplicate) leaves nothing set for the next write.
            await messages.add_messages(
                conn,
                TopicCache(),
                conversation,
                [create(role="user", content="new", topics=["b"], client_msg_id="k")],
                in_batch=False,
            )
            await conn.execute(
                "INSERT INTO message_topics (topic_id, message_id) SELECT id, $1 FROM topics WHERE name = 'a'",
                old.message.id,
            )
            rows = await conn.fetch(
                "SELECT entity::text, entity_id, op::text FROM changes WHERE xid = $1 ORDER BY seq", xid
            )
        topic = tagged[0].message.topics[0].id
        assert [tuple(row) for row in rows] == [
            ("topic", topic, "created"),
            ("message", tagged[0].message.id, "created"),
            ("message", old.message.id, "updated"),
        ]
    finally:
        await conn.close()


async def test_a_change_behind_an_open_transaction_waits_for_it(fresh_database: Callable[[], str]) -> None:
    """The classic gap: a transaction that started first commits last. Nothing may be skipped."""
    url = fresh_database()
    async with serving(url) as client:
        _, start = await read_to_end(client)
        early, late, doomed = [await asyncpg.connect(url) for _ in range(3)]
        try:
            early_tx, late_tx, doomed_tx = early.transaction(), late.transaction(), doomed.transaction()
            await early_tx.start()
            await early.execute("INSERT INTO users (email, name) VALUES ('early@example.com', 'Early')")
            await doomed_tx.start()
            await doomed.execute("INSERT INTO users (email, name) VALUES ('doomed@example.com', 'Doomed')")
            await late_tx.start()
            await late.execute("INSERT INTO users (email, name) VALUES ('late@example.com', 'Late')")
            await late_tx.commit()
            # Committed, but behind the open early transaction: held back, not skipped.
            held, cursor = await read_to_end(client, start)
            assert held == []
            assert cursor == start
            await doomed_tx.rollback()
            await early_tx.commit()
        finally:
            for conn in (early, late, doomed):
                await conn.close()
        items, _ = await read_to_end(client, cursor)
        names = [(await client.get(f"/v1/users/{item['id']}")).json()["name"] for item in items]
        assert names == ["Early", "Late"]  # in transaction order; the rolled-back one never


async def test_wait_holds_an_empty_answer_until_a_change_commits(fresh_database: Callable[[], str]) -> None:
    url = fresh_database()
    async with serving(url) as client:
        _, cursor = await read_to_end(client)
        waiting = [
            asyncio.create_task(client.get("/v1/changes", params={"cursor": cursor, "wait": 30})) for _ in range(3)
        ]
        writer = await asyncpg.connect(url)
        try:
            await asyncio.sleep(0.3)
            assert not any(task.done() for task in waiting)  # nothing committed: they hold
            await writer.execute("INSERT INTO users (email, name) VALUES ('wake@example.com', 'Wake')")
        finally:
            await writer.close()
        for response in await asyncio.gather(*waiting):
            assert response.status_code == 200
            assert [item["op"] for item in response.json()["items"]] == ["created"]
        # wait=0 answers at once, and a wait beyond 30 s is refused.
        assert (await client.get("/v1/changes", params={"cursor": cursor, "wait": 0})).status_code == 200
        assert_problem(await client.get("/v1/changes", params={"wait": 31}), 400, "wait")
        assert_problem(await client.get("/v1/changes", params={"cursor": "forged.cursor"}), 400, "cursor")


async def test_pruned_changes_answer_410_and_purge_reports_purged(fresh_database: Callable[[], str]) -> None:
    url = fresh_database()
    async with serving(url) as client:
        user = await create_user(client)
        conversation = await create_conversation(client, user["id"])
        [item] = await post_batch(client, conversation["id"], [{"role": "user", "content": "bye"}])
        message_id = item["message"]["id"]
        first = (await client.get("/v1/changes", params={"limit": 1})).json()
        await client.delete(f"/v1/messages/{message_id}")
        _, end = await read_to_end(client)
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("UPDATE messages SET deleted_at = deleted_at - interval '31 days'")
            report = await purge.purge(conn, retention=timedelta(days=30), changes_retention=timedelta(days=7))
            assert (report.messages, report.changes) == (1, 0)
            purged, end = await read_to_end(client, end)
            assert triples(purged) == [("message", message_id, "purged")]
            # Changes older than the feed's retention go; a cursor pointing before them is gone.
            await conn.execute("UPDATE changes SET at = at - interval '8 days' WHERE op <> 'purged'")
            report = await purge.purge(conn, retention=timedelta(days=30), changes_retention=timedelta(days=7))
            assert report.changes == 4
        finally:
            await conn.close()
        assert_problem(await client.get("/v1/changes", params={"cursor": first["next_cursor"]}), 410)
        # A follower that was up to date carries on; a new one starts at the oldest change kept.
        assert (await client.get("/v1/changes", params={"cursor": end})).json()["items"] == []
        assert triples((await client.get("/v1/changes")).json()["items"]) == [("message", message_id, "purged")]


class Writer:
    """One of the concurrent writers: random operations, some rolled back, some committed out of
    order; it records the items each committed transaction must produce."""

    def __init__(self, number: int, url: str, client: httpx.AsyncClient, conversations: list[int]) -> None:
        self.rng = random.Random(number)
        self.url = url
        self.client = client
        self.conversations = conversations
        self.live: list[int] = []
        self.deleted: list[int] = []
        self.committed: list[Item] = []

    async def run(self, rounds: int) -> None:
        first, second = await asyncpg.connect(self.url), await asyncpg.connect(self.url)
        await configure_connection(first)
        await configure_connection(second)
        try:
            for _ in range(rounds):
                choice = self.rng.random()
                if choice < 0.15:
                    await self.over_http()
                elif choice < 0.3:
                    await self.out_of_order(first, second)
                else:
                    await self.one_transaction(first, commit=self.rng.random() > 0.2)
                await asyncio.sleep(self.rng.random() / 200)
        finally:
            await first.close()
            await second.close()

    async def post(self, conn: Connection, conversation: int, count: int) -> tuple[list[int], list[Item]]:
        items = [
            messages.MessageCreate(role="user", content=f"load {n}", topics=["load"] if n == 0 else [])
            for n in range(count)
        ]
        ids = [
            item.message.id
            for item in await messages.add_messages(conn, TopicCache(), conversation, items, in_batch=True)
        ]
        return ids, [("message", i, "created") for i in ids]

    async def operation(self, conn: Connection, conversation: int) -> tuple[list[int], list[int], list[Item]]:
        """One write in an open transaction: (ids now live, ids now deleted, its items)."""
        kind = self.rng.choice(["single", "batch", "edit", "delete", "restore"])
        if kind == "edit" and self.live:
            target = self.rng.choice(self.live)
            await messages.sql.update_message.records(
                conn,
                message_id=target,
                content="edited",
                role=None,
                metadata=None,
                token_count=None,
                token_count_estimated=None,
            )
            return [], [], [("message", target, "updated")]
        if kind == "delete" and self.live:
            target = self.rng.choice(self.live)
            await messages.sql.delete_message.val(conn, message_id=target)
            return [], [target], [("message", target, "deleted")]
        if kind == "restore" and self.deleted:
            target = self.rng.choice(self.deleted)
            await messages.sql.restore_message.one(conn, messages._Restored, message_id=target)
            return [target], [], [("message", target, "restored")]
        ids, items = await self.post(conn, conversation, 25 if kind == "batch" else 1)
        return ids, [], items

    def record(self, outcome: tuple[list[int], list[int], list[Item]]) -> None:
        live, deleted, items = outcome
        self.live = [i for i in self.live if i not in deleted] + live
        self.deleted = [i for i in self.deleted if i not in live] + deleted
        self.committed.extend(items)

    async def one_transaction(self, conn: Connection, *, commit: bool) -> None:
        transaction = conn.transaction()
        await transaction.start()
        outcome = await self.operation(conn, self.conversations[0])
        if commit:
            await transaction.commit()
            self.record(outcome)
        else:
            await transaction.rollback()

    async def out_of_order(self, first: Connection, second: Connection) -> None:
        """Two transactions on two conversations: the one that started first commits last."""
        early, late = first.transaction(), second.transaction()
        await early.start()
        self.rng.shuffle(self.conversations)
        early_ids, early_items = await self.post(first, self.conversations[0], 3)
        await late.start()
        late_ids, late_items = await self.post(second, self.conversations[1], 2)
        await late.commit()
        await asyncio.sleep(self.rng.random() / 100)
        await early.commit()
        self.record((late_ids, [], late_items))
        self.record((early_ids, [], early_items))

    async def over_http(self) -> None:
        response = await self.client.post(
            f"/v1/conversations/{self.conversations[0]}/messages", json={"role": "user", "content": "via http"}
        )
        assert response.status_code == 201, response.text
        self.record(([response.json()["id"]], [], [("message", response.json()["id"], "created")]))


async def test_eight_concurrent_writers_and_a_waiting_follower(fresh_database: Callable[[], str]) -> None:
    url = fresh_database()
    async with serving(url) as client:
        user = await create_user(client)
        writers = []
        for number in range(8):
            pair = [(await create_conversation(client, user["id"]))["id"] for _ in range(2)]
            writers.append(Writer(number, url, client, pair))
        await client.post("/v1/topics", json={"name": "load"})
        _, cursor = await read_to_end(client)

        done = asyncio.Event()
        seen: list[dict[str, Any]] = []

        async def follow() -> None:
            position = cursor
            while True:
                response = await client.get("/v1/changes", params={"cursor": position, "wait": 2, "limit": 200})
                assert response.status_code == 200, response.text
                page = response.json()
                seen.extend(page["items"])
                position = page["next_cursor"]
                if not page["items"] and done.is_set():
                    return

        follower = asyncio.create_task(follow())
        await asyncio.gather(*(writer.run(30) for writer in writers))
        done.set()
        await follower

    expected = [item for writer in writers for item in writer.committed]
    assert len(expected) > 500
    assert Counter(triples(seen)) == Counter(expected)  # each committed change exactly once, none else
    assert len({item["seq"] for item in seen}) == len(seen)
    # Per message, the feed's order is the order its writer committed them in.
    order: dict[int, list[str]] = {}
    for _, message_id, op in triples(seen):
        order.setdefault(message_id, []).append(op)
    for writer in writers:
        for _, message_id, op in writer.committed:
            assert order[message_id].pop(0) == op
