"""Read replicas against a real primary and a real streaming standby (pg_basebackup -R).

Which server answered is read from the servers themselves: pg_stat_statements counts each
statement where it ran (a standby keeps its own counts), pg_stat_database its transactions.
The replica monitor is polled by the tests (``ReplicatedDatabase.poll``) when they need it to
have seen the standby's latest position, instead of waiting for its timer.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psycopg
import pytest

from service import migrations
from service.app import create_app
from service.devdb import EmbeddedPostgres
from service.replicas import ReplicatedDatabase, parse_position
from service.settings import Settings
from tests.api import assert_problem, create_conversation, create_user, post_batch
from tests.conftest import client_for

# Statements that read messages, as pg_stat_statements shows them (the test's own reads of
# pg_stat_statements and the replica monitor's statements do not name the table).
READ_STATEMENTS = "%messages%"
COMMITS = "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[EmbeddedPostgres, EmbeddedPostgres]]:
    primary = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="freya-primary-")))
    standby = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="freya-standby-")))
    try:
        primary.start()
        with psycopg.connect(primary.url(), autocommit=True) as admin:
            admin.execute("CREATE DATABASE freya")
        migrations.apply(primary.url("freya"))
        with psycopg.connect(primary.url("freya"), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        standby.start_standby_of(primary)
        yield primary, standby
    finally:
        standby.destroy()
        primary.destroy()


@asynccontextmanager
async def replicated(
    servers: tuple[EmbeddedPostgres, EmbeddedPostgres], **overrides: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, ReplicatedDatabase]]:
    primary, standby = servers
    settings = Settings(
        database_url=primary.url("freya"),
        read_replica_urls=standby.url("freya"),
        pool_min_size=1,
        pool_max_size=4,
        cursor_secret="s" * 32,
        **overrides,
    )
    app = create_app(settings)
    async with app.lifespan(), client_for(app) as http:
        yield http, app.state.database


async def value(url: str, query: str, *args: Any) -> Any:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(query, *args)
    finally:
        await conn.close()


async def calls(url: str, pattern: str) -> int:
    """How often statements whose text matches ``pattern`` ran on this server."""
    return int(
        await value(
            url,
            "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE query LIKE $1 AND dbid = "
            "(SELECT oid FROM pg_database WHERE datname = current_database())",
            pattern,
        )
    )


async def replayed_to(standby_url: str, token: str) -> None:
    """Wait until the standby has replayed up to ``token`` (a bounded number of checks)."""
    for _ in range(400):
        if await value(standby_url, "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn", token):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the standby did not replay to {token}")


async def position(url: str) -> str:
    return str(await value(url, "SELECT pg_current_wal_insert_lsn()::text"))


async def seed_conversation(http: httpx.AsyncClient) -> tuple[int, list[int], str]:
    """A user, a conversation, ten messages: (conversation id, message ids, the last write's token)."""
    user = await create_user(http, email=f"u{id(http)}@example.com")
    conversation = await create_conversation(http, user["id"])
    response = await http.post(
        f"/v1/conversations/{conversation['id']}/messages/batch",
        json={"messages": [{"role": "user", "content": f"message {n}"} for n in range(10)]},
    )
    assert response.status_code == 201, response.text
    return (
        conversation["id"],
        [item["message"]["id"] for item in response.json()["items"]],
        response.headers["freya-read-after"],
    )


async def test_gets_run_on_the_standby_and_writes_on_the_primary(
    servers: tuple[EmbeddedPostgres, EmbeddedPostgres],
) -> None:
    primary, standby = servers
    primary_url, standby_url = primary.url("freya"), standby.url("freya")
    async with replicated(servers) as (http, database):
        cid, ids, token = await seed_conversation(http)
        parse_position(token)  # a WAL position, opaque to clients
        await replayed_to(standby_url, token)
        await database.poll()
        before = {url: await calls(url, READ_STATEMENTS) for url in (primary_url, standby_url)}
        commits_before = await value(standby_url, COMMITS)
        answers = [await http.get(f"/v1/messages/{ids[n % 10]}") for n in range(60)]
        assert [a.status_code for a in answers] == [200] * 60
        pages = [await http.get(f"/v1/conversations/{cid}/messages", params={"limit": 3}) for _ in range(20)]
        assert [len(p.json()["items"]) for p in pages] == [3] * 20
        assert await calls(standby_url, READ_STATEMENTS) - before[standby_url] >= 80
        assert await calls(primary_url, READ_STATEMENTS) - before[primary_url] == 0
        metrics = (await http.get("/metrics")).text
        assert f'freya_db_reads_total{{server="{database.replicas[0].name}"}} 80.0' in metrics
        assert f'freya_replica_up{{replica="{database.replicas[0].name}"}} 1.0' in metrics
        assert "freya_replica_lag_seconds" in metrics
        ready = (await http.get("/health/ready")).json()
        assert ready["replicas"] == [
            {"name": database.replicas[0].name, "state": "up", "lag_ms": ready["replicas"][0]["lag_ms"], "detail": None}
        ]
    # The service's connections have closed, so their statistics are flushed: the standby counted
    # at least one transaction per GET.
    for _ in range(200):
        commits = await value(
            standby_url, "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        )
        if commits - commits_before >= 80:
            break
        await asyncio.sleep(0.05)
    assert commits - commits_before >= 80


async def test_a_read_with_freya_read_after_sees_the_write_while_replay_is_paused(
    servers: tuple[EmbeddedPostgres, EmbeddedPostgres],
) -> None:
    _, standby = servers
    standby_url = standby.url("freya")
    async with replicated(servers, replica_max_lag_ms=600_000) as (http, database):
        cid, _, token = await seed_conversation(http)
        await replayed_to(standby_url, token)
        await database.poll()
        await value(standby_url, "SELECT pg_wal_replay_pause()")
        try:
            posted = await http.post(f"/v1/conversations/{cid}/messages", json={"role": "user", "content": "fresh"})
            assert posted.status_code == 201
            fresh, token = posted.json()["id"], posted.headers["freya-read-after"]
            await database.poll()
            assert database.replicas[0].state == "up"  # behind, but within the lag limit
            # Without the token the standby answers, from before the write.
            assert_problem(await http.get(f"/v1/messages/{fresh}"), 404)
            header = {"Freya-Read-After": token}
            seen = await http.get(f"/v1/messages/{fresh}", headers=header)
            assert seen.status_code == 200
            assert seen.json()["content"] == "fresh"
            page = await http.get(f"/v1/conversations/{cid}/messages", params={"limit": 1}, headers=header)
            assert [m["id"] for m in page.json()["items"]] == [fresh]
        finally:
            await value(standby_url, "SELECT pg_wal_replay_resume()")
        await replayed_to(standby_url, token)
        await database.poll()
        before = await calls(standby_url, READ_STATEMENTS)
        seen = await http.get(f"/v1/messages/{fresh}", headers={"Freya-Read-After": token})
        assert seen.status_code == 200
        assert await calls(standby_url, READ_STATEMENTS) > before  # caught up: the standby answers

        bad = await http.get(f"/v1/messages/{fresh}", headers={"Freya-Read-After": "yesterday"})
        assert_problem(bad, 400, field="Freya-Read-After")
        assert "freya-read-after" not in (await http.get(f"/v1/messages/{fresh}")).headers
        assert "freya-read-after" not in (await http.post("/v1/users", json={"email": "x"})).headers


async def test_stopping_the_standby_under_read_load_fails_no_read(
    servers: tuple[EmbeddedPostgres, EmbeddedPostgres],
) -> None:
    _, standby = servers
    standby_url = standby.url("freya")
    async with replicated(servers) as (http, database):
        cid, ids, token = await seed_conversation(http)
        await replayed_to(standby_url, token)
        await database.poll()
        statuses: list[int] = []
        loaded, stopped = asyncio.Event(), asyncio.Event()

        async def reader(number: int) -> None:
            after_stop = 0
            while after_stop < 25:
                path = f"/v1/messages/{ids[number]}" if number % 2 else f"/v1/conversations/{cid}/messages"
                statuses.append((await http.get(path)).status_code)
                after_stop += stopped.is_set()
                if len(statuses) >= 40:
                    loaded.set()

        async def stop() -> None:
            await loaded.wait()
            await asyncio.to_thread(standby.stop)
            stopped.set()

        await asyncio.gather(stop(), *(reader(n) for n in range(6)))
        assert len(statuses) >= 40 + 6 * 25
        assert set(statuses) == {200}
        assert database.replicas[0].state == "down"
        ready = await http.get("/health/ready")
        assert ready.status_code == 200
        assert ready.json()["replicas"][0]["state"] == "down"

        await asyncio.to_thread(standby.start)
        replica = database.replicas[0]
        for _ in range(200):
            await database.poll()
            if replica.health().state == "up":
                break
            await asyncio.sleep(0.05)
        assert replica.health().state == "up"
        before = await calls(standby_url, READ_STATEMENTS)
        assert [(await http.get(f"/v1/messages/{ids[0]}")).status_code for _ in range(5)] == [200] * 5
        assert await calls(standby_url, READ_STATEMENTS) >= before + 5


async def test_an_unreachable_replica_is_skipped_from_the_start(
    servers: tuple[EmbeddedPostgres, EmbeddedPostgres],
) -> None:
    primary, _ = servers
    missing = "postgresql://postgres@/freya?host=/nonexistent-freya-socket-dir"
    settings = Settings(database_url=primary.url("freya"), read_replica_urls=missing, cursor_secret="s" * 32)
    app = create_app(settings)
    async with app.lifespan(), client_for(app) as http:
        user = await create_user(http, email="skip@example.com")
        assert (await http.get(f"/v1/users/{user['id']}")).json() == user
        ready = await http.get("/health/ready")
        assert ready.status_code == 200
        [replica] = ready.json()["replicas"]
        assert replica["name"] == "/nonexistent-freya-socket-dir:5432/freya"
        assert replica["state"] == "down"
        assert replica["detail"]
        await post_batch(http, (await create_conversation(http, user["id"]))["id"], [{"role": "user", "content": "x"}])


async def test_a_replica_behind_the_lag_limit_takes_no_reads_until_it_catches_up(
    servers: tuple[EmbeddedPostgres, EmbeddedPostgres],
) -> None:
    primary, standby = servers
    primary_url, standby_url = primary.url("freya"), standby.url("freya")
    async with replicated(servers, replica_max_lag_ms=0) as (http, database):
        cid, _, _ = await seed_conversation(http)
        await caught_up(database, primary_url, standby_url)
        await value(standby_url, "SELECT pg_wal_replay_pause()")
        try:
            posted = await http.post(f"/v1/conversations/{cid}/messages", json={"role": "user", "content": "late"})
            assert posted.status_code == 201
            await database.poll()  # the primary has WAL the standby has not replayed: lag > 0 ms
            ready = (await http.get("/health/ready")).json()
            assert ready["replicas"][0]["state"] == "lagging"
            before = await calls(primary_url, READ_STATEMENTS)
            # No token, yet the fresh message: the lagging standby is skipped, the primary answers.
            assert (await http.get(f"/v1/messages/{posted.json()['id']}")).status_code == 200
            assert await calls(primary_url, READ_STATEMENTS) > before
        finally:
            await value(standby_url, "SELECT pg_wal_replay_resume()")
        await caught_up(database, primary_url, standby_url)


async def caught_up(database: ReplicatedDatabase, primary_url: str, standby_url: str) -> None:
    """With a zero lag limit the replica is up only when it has replayed all the primary wrote by
    the poll (the primary writes some WAL of its own now and then): poll until that is so."""
    for _ in range(50):
        await replayed_to(standby_url, await position(primary_url))
        await database.poll()
        if database.replicas[0].health().state == "up":
            return
    raise AssertionError("the replica never caught up with the primary")
