"""The service behind a real PgBouncer, in session and in transaction pooling mode.

In transaction mode PgBouncer runs with two server connections per database while the service's
pool holds eight, so clients really share server connections: each transaction may run on another
one, where a named prepared statement or a session setting would be missing (or leak). In session
mode a client keeps its server connection, so the bouncer's pool must hold the service's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest

from service import db
from service.settings import Pooler
from tests.api import assert_problem, create_conversation, create_user, post_batch, serving, start_service
from tests.conftest import RUN_ID, create_database, drop_database
from tests.pgbouncer import PgBouncer, binary

MODES = ["session", "transaction"]

pytestmark = pytest.mark.skipif(
    binary() is None, reason="pgbouncer is not installed (Debian package pgbouncer; .ci/run installs it)"
)


@pytest.fixture(scope="module", params=MODES)
def bouncer(request: pytest.FixtureRequest, server_url: str) -> Iterator[PgBouncer]:
    running = PgBouncer(server_url, request.param, pool_size=2 if request.param == "transaction" else 10).start()
    try:
        yield running
    finally:
        running.stop()


def through(bouncer: PgBouncer, direct_url: str) -> str:
    return bouncer.url(urlsplit(direct_url).path.lstrip("/"))


def pooler(bouncer: PgBouncer) -> Pooler:
    return "pgbouncer-session" if "session" in bouncer.directory.name else "pgbouncer-transaction"


async def test_reads_writes_batches_keys_and_search(bouncer: PgBouncer, fresh_database: Callable[[], str]) -> None:
    url = fresh_database()
    async with serving(through(bouncer, url), pooler=pooler(bouncer)) as http:
        user = await create_user(http)
        conversation = await create_conversation(http, user["id"])
        cid = conversation["id"]
        one = await http.post(
            f"/v1/conversations/{cid}/messages",
            json={"role": "user", "content": "a quokka in the fjord", "topics": ["t"]},
        )
        assert one.status_code == 201, one.text
        batch = await post_batch(
            http, cid, [{"role": "assistant", "content": f"answer {n}", "client_msg_id": f"c{n}"} for n in range(50)]
        )
        assert [item["status"] for item in batch] == ["created"] * 50
        again = await post_batch(http, cid, [{"role": "assistant", "content": "answer 7", "client_msg_id": "c7"}])
        assert again[0]["status"] == "duplicate"

        key = {"Idempotency-Key": "bouncer-key-1"}
        first = await http.post("/v1/users", json={"email": "key@example.com", "name": "K"}, headers=key)
        replay = await http.post("/v1/users", json={"email": "key@example.com", "name": "K"}, headers=key)
        assert first.status_code == replay.status_code == 201
        assert replay.json() == first.json()
        assert replay.headers["idempotent-replayed"] == "true"

        edited = await http.patch(f"/v1/messages/{one.json()['id']}", json={"content": "a quokka on the fjord"})
        assert edited.status_code == 200, edited.text

        # Many requests at once over two server connections: any statement that depended on its
        # server connection (a named prepared statement, a session setting) fails here.
        pages = await asyncio.gather(
            *(http.get(f"/v1/conversations/{cid}/messages", params={"limit": 5 + n % 20}) for n in range(120))
        )
        assert [page.status_code for page in pages] == [200] * 120
        assert pages[0].json()["items"][0]["content"] == "answer 49"
        found = await asyncio.gather(*(http.get("/v1/search/messages", params={"q": "quokka"}) for _ in range(40)))
        assert {tuple(hit["id"] for hit in r.json()["items"]) for r in found} == {(one.json()["id"],)}
        assert (await http.get(f"/v1/messages/{one.json()['id']}")).json()["content"] == "a quokka on the fjord"

    direct = await asyncpg.connect(url)
    try:
        assert await direct.fetchval("SELECT count(*) FROM messages") == 51
        assert await direct.fetchval("SELECT count(*) FROM users") == 2
    finally:
        await direct.close()


async def test_a_statement_over_the_timeout_is_a_504(bouncer: PgBouncer, fresh_database: Callable[[], str]) -> None:
    url = fresh_database()
    async with serving(through(bouncer, url), pooler=pooler(bouncer), statement_timeout_ms=300) as http:
        user = await create_user(http)
        cid = (await create_conversation(http, user["id"]))["id"]
        locker = await asyncpg.connect(url)  # straight to PostgreSQL, past the bouncer
        try:
            async with locker.transaction():
                await locker.execute("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE")
                # More requests than server connections: each must hit the timeout itself.
                waited = await asyncio.gather(*(http.get(f"/v1/conversations/{cid}/messages") for _ in range(4)))
                for response in waited:
                    assert_problem(response, 504)
                write = await http.post(f"/v1/conversations/{cid}/messages", json={"role": "user", "content": "x"})
                assert_problem(write, 504)
        finally:
            await locker.close()
        # The timeout did not poison a connection: everything works again.
        answers = await asyncio.gather(*(http.get(f"/v1/conversations/{cid}/messages") for _ in range(8)))
        assert [a.status_code for a in answers] == [200] * 8


async def test_without_the_pooler_setting_the_service_cannot_start_behind_pgbouncer(
    bouncer: PgBouncer, fresh_database: Callable[[], str]
) -> None:
    # PgBouncer refuses the statement timeout as a start-up parameter: FREYA_POOLER says it is there.
    with pytest.RaisesGroup(pytest.RaisesExc(asyncpg.ProtocolViolationError), flatten_subgroups=True):
        async with serving(through(bouncer, fresh_database())):
            pass


async def test_the_statement_timeout_is_set_on_the_server(
    bouncer: PgBouncer, fresh_database: Callable[[], str]
) -> None:
    """What the service's connection sees through the bouncer, in each mode's own way."""
    url = through(bouncer, fresh_database())
    async with serving(url, pooler=pooler(bouncer), statement_timeout_ms=1234) as http:
        assert (await http.get("/health/ready")).status_code == 200
    database = db.PoolDatabase(
        await db.create_pool(
            url, min_size=1, max_size=1, statement_timeout_ms=1234, connect_timeout=5, pooler=pooler(bouncer)
        ),
        5,
        timeout_per_transaction_ms=1234 if pooler(bouncer) == "pgbouncer-transaction" else None,
    )
    try:
        async with database.connection() as conn:
            assert await conn.fetchval("SHOW statement_timeout") == "1234ms"
    finally:
        await database.pool.close()


def test_serve_migrates_and_serves_through_the_bouncer(bouncer: PgBouncer, server_url: str) -> None:
    """As an operator runs it: `python -m service serve` on an empty database behind the bouncer."""
    name = f"freya_serve_{RUN_ID}_{bouncer.port}"
    url = create_database(server_url, name)
    try:
        process, base = start_service(through(bouncer, url), FREYA_POOLER=pooler(bouncer), FREYA_POOL_MAX_SIZE="4")
        try:
            user = httpx.post(f"{base}/v1/users", json={"email": "serve@example.com", "name": "S"}, timeout=10)
            assert user.status_code == 201, user.text
            assert "freya-read-after" in user.headers
            assert httpx.get(f"{base}/v1/users/{user.json()['id']}", timeout=10).json() == user.json()
        finally:
            process.terminate()
            process.communicate(timeout=60)
        assert process.returncode == 0
    finally:
        drop_database(server_url, name)
