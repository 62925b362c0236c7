"""Faults: the database goes away and comes back, connections are killed, the pool is full, SIGTERM.

These run against servers of their own (an embedded PostgreSQL they stop and start, a service
process they signal), with loops bounded by counts, never by wall-clock expectations.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import httpx
import psycopg
import pytest

from service import migrations
from service.devdb import EmbeddedPostgres
from tests.api import assert_problem, create_user, serving, start_service


@pytest.fixture
def own_server() -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL of this test's own, to stop and start at will."""
    server = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="freya-outage-")))
    server.start()
    with psycopg.connect(server.url(), autocommit=True) as admin:
        admin.execute("CREATE DATABASE freya")
    migrations.apply(server.url("freya"))
    try:
        yield server
    finally:
        server.destroy()


async def eventually_ready(http: httpx.AsyncClient, attempts: int = 100) -> httpx.Response:
    for _ in range(attempts):
        response = await http.get("/health/ready")
        if response.status_code == 200:
            return response
        await asyncio.sleep(0.1)
    return response


async def test_database_outage_and_recovery_without_restart(own_server: EmbeddedPostgres) -> None:
    async with serving(own_server.url("freya"), connect_timeout=2.0, pool_acquire_timeout=2.0) as http:
        user = await create_user(http)
        assert (await http.get(f"/v1/users/{user['id']}")).status_code == 200

        await asyncio.to_thread(own_server.stop)
        assert (await http.get("/health/live")).status_code == 200
        for path in ("/health/ready", f"/v1/users/{user['id']}"):
            down = await http.get(path)
            assert_problem(down, 503)
            assert down.headers["retry-after"] == "1"
        assert_problem(await http.post("/v1/users", json={"email": "b@example.com", "name": "B"}), 503)

        await asyncio.to_thread(own_server.start)
        assert (await eventually_ready(http)).status_code == 200
        assert (await http.get(f"/v1/users/{user['id']}")).json() == user
        assert (await http.post("/v1/users", json={"email": "b@example.com", "name": "B"})).status_code == 201


async def test_killed_connections_are_replaced_transparently(fresh_database: Callable[[], str]) -> None:
    url = fresh_database()
    async with serving(url, pool_min_size=4, pool_max_size=4) as http:
        user = await create_user(http)
        await asyncio.gather(*(http.get(f"/v1/users/{user['id']}") for _ in range(8)))
        killer = await asyncpg.connect(url)
        try:
            # MATERIALIZED: filter first, then terminate (never this connection itself).
            killed = await killer.fetchval(
                "WITH target AS MATERIALIZED (SELECT pid FROM pg_stat_activity "
                "WHERE application_name = 'freya-backend' AND datname = current_database()) "
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000)) FROM target"
            )
        finally:
            await killer.close()
        assert killed >= 1
        responses = await asyncio.gather(*(http.get(f"/v1/users/{user['id']}") for _ in range(8)))
        assert [r.status_code for r in responses] == [200] * 8


def hold_lock(url: str, user_id: int, locked: threading.Event, release: threading.Event) -> None:
    with psycopg.connect(url) as conn:
        conn.execute("SELECT 1 FROM users WHERE id = %s FOR UPDATE", (user_id,))
        locked.set()
        release.wait(30)
        conn.rollback()


async def test_failed_requests_never_wait_for_a_busy_pool(fresh_database: Callable[[], str]) -> None:
    url = fresh_database()
    tokens = "writer:token-for-the-busy-pool:read,write"
    auth = {"Authorization": "Bearer token-for-the-busy-pool"}
    async with serving(url, api_tokens=tokens, pool_min_size=1, pool_max_size=1, pool_acquire_timeout=30.0) as http:
        user = await create_user_with(http, auth)
        locked, release = threading.Event(), threading.Event()
        holder = threading.Thread(target=hold_lock, args=(url, user["id"], locked, release))
        holder.start()
        try:
            await asyncio.to_thread(locked.wait, 30)
            # The pool's only connection now waits on the lock.
            stuck = asyncio.create_task(http.patch(f"/v1/users/{user['id']}", json={"name": "Later"}, headers=auth))
            for _ in range(100):
                if (await http.get("/metrics")).text.count("freya_db_pool_idle 0.0"):
                    break
                await asyncio.sleep(0.05)
            answers = [
                await http.post("/v1/users", json={"email": "nope"}, headers=auth),  # validation
                await http.get(f"/v1/users/{user['id']}"),  # no token
                await http.get("/v1/users/x", headers=auth),  # bad path id
                await http.get("/v1/no/such/route", headers=auth),  # routing
                await http.delete("/v1/users", headers=auth),  # method
            ]
            assert [a.status_code for a in answers] == [400, 401, 400, 404, 405]
            assert not stuck.done(), "the pool was not busy, the test proves nothing"
        finally:
            release.set()
            await asyncio.to_thread(holder.join, 30)
        assert (await stuck).status_code == 200


async def create_user_with(http: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, object]:
    response = await http.post("/v1/users", json={"email": "busy@example.com", "name": "Busy"}, headers=headers)
    assert response.status_code == 201, response.text
    created: dict[str, object] = response.json()
    return created


def test_sigterm_lets_in_flight_requests_finish(fresh_database: Callable[[], str]) -> None:
    url = fresh_database()
    process, base = start_service(url)
    try:
        user = httpx.post(f"{base}/v1/users", json={"email": "term@example.com", "name": "T"}, timeout=5).json()
        locked, release = threading.Event(), threading.Event()
        holder = threading.Thread(target=hold_lock, args=(url, user["id"], locked, release))
        holder.start()
        locked.wait(30)
        result: dict[str, httpx.Response] = {}

        def in_flight() -> None:
            result["response"] = httpx.patch(f"{base}/v1/users/{user['id']}", json={"name": "Finished"}, timeout=30)

        request = threading.Thread(target=in_flight)
        request.start()
        with psycopg.connect(url) as watcher:
            for _ in range(300):
                waiting = watcher.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'freya-backend' "
                    "AND wait_event_type = 'Lock'"
                ).fetchone()
                if waiting and waiting[0]:
                    break
                time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        release.set()
        request.join(30)
        holder.join(30)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert result["response"].status_code == 200, output
    assert result["response"].json()["name"] == "Finished"
    assert process.returncode == 0, output
    assert "database pool closed" in output
    with psycopg.connect(url) as conn:
        left = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'freya-backend'").fetchone()
    assert left == (0,)


class Writers:
    """Four clients posting messages in a loop, each under its own Idempotency-Key, as a real
    client does: a 503 or 504 is retried with the same key (after a short pause), a 201 moves on.
    Every answer is recorded as (status, key), 0 for a broken connection."""

    def __init__(self, base: str, conversation_id: int, count: int = 4) -> None:
        self.path = f"{base}/v1/conversations/{conversation_id}/messages"
        self.outcomes: list[tuple[int, str]] = []
        self.done = threading.Event()
        self.threads = [threading.Thread(target=self.write, args=(n,)) for n in range(count)]

    def write(self, writer: int) -> None:
        with httpx.Client(timeout=60) as http:
            for number in itertools.count():
                key = f"w{writer}-{number}"
                status = 0
                while status != 201:
                    if self.done.is_set():
                        return
                    try:
                        response = http.post(
                            self.path, json={"role": "user", "content": key}, headers={"Idempotency-Key": key}
                        )
                        status = response.status_code
                    except httpx.TransportError:
                        self.outcomes.append((0, key))
                        return  # the service stopped answering: the test fails on this 0
                    self.outcomes.append((status, key))
                    if status != 201:
                        self.done.wait(0.05)

    def progress(self, answers: int = 20, status: int = 201) -> None:
        """Wait (bounded by a count of checks) until ``answers`` more answers with ``status``."""
        target = sum(1 for s, _ in self.outcomes if s == status) + answers
        for _ in range(1200):
            if sum(1 for s, _ in self.outcomes if s == status) >= target:
                return
            time.sleep(0.05)
        raise AssertionError(f"no progress: {collections.Counter(s for s, _ in self.outcomes)}")


def service_backends(url: str) -> list[int]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'freya-backend' AND datname = current_database()"
        ).fetchall()
    return [pid for (pid,) in rows]


def test_four_writers_through_killed_sessions_a_crash_and_a_restart_see_no_500(own_server: EmbeddedPostgres) -> None:
    url = own_server.url("freya")
    # ERROR: the output is read at the end, and a pipe full of access lines would block the service.
    process, base = start_service(
        url, FREYA_POOL_MIN_SIZE="4", FREYA_POOL_MAX_SIZE="4", FREYA_CONNECT_TIMEOUT="2", FREYA_LOG_LEVEL="ERROR"
    )
    try:
        user = httpx.post(f"{base}/v1/users", json={"email": "w@example.com", "name": "W"}, timeout=10).json()
        conversation = httpx.post(f"{base}/v1/conversations", json={"user_id": user["id"]}, timeout=10).json()
        writers = Writers(base, conversation["id"])
        stalled: AssertionError | None = None
        for thread in writers.threads:
            thread.start()
        try:
            writers.progress()
            for _ in range(5):  # sessions terminated under load, idle or mid-statement
                with psycopg.connect(url, autocommit=True) as killer:
                    killer.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE application_name = 'freya-backend' AND datname = current_database()"
                    )
                writers.progress(5)
            os.kill(service_backends(url)[0], signal.SIGKILL)  # a crash: PostgreSQL restarts every backend
            writers.progress()
            own_server.stop()  # fast shutdown, then straight back
            own_server.start()
            writers.progress()
        except AssertionError as error:
            stalled = error
        finally:
            writers.done.set()
            for thread in writers.threads:
                thread.join(60)
        # Whatever failed is retried with its key: it lands exactly once, or replays its first answer.
        failed = [key for status, key in writers.outcomes if status != 201]
        retried = [
            httpx.post(
                writers.path, json={"role": "user", "content": key}, headers={"Idempotency-Key": key}, timeout=30
            )
            for key in failed
        ]
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=60)
    assert stalled is None, f"{stalled}\n{output[-6000:]}"
    statuses = collections.Counter(status for status, _ in writers.outcomes)
    assert set(statuses) <= {201, 503, 504}, (statuses, output[-5000:])
    assert statuses[503] > 0, "no fault reached a client: the test proves nothing"
    assert [r.status_code for r in retried] == [201] * len(retried), [r.text for r in retried if r.status_code != 201]
    with psycopg.connect(url) as conn:
        stored = collections.Counter(content for (content,) in conn.execute("SELECT content FROM messages"))
    acknowledged = {key for _, key in writers.outcomes}
    assert set(stored) == acknowledged  # nothing acknowledged is lost, nothing unacknowledged is kept
    assert set(stored.values()) == {1}  # and nothing is written twice
