"""Shorthands for tests that drive the HTTP API: create rows through it and check problem answers."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import asyncpg
import httpx
import msgspec

from service.app import create_app
from service.settings import PROJECT_ROOT, Settings

PROBLEM = "application/problem+json"


def assert_problem(
    response: httpx.Response, status: int, field: str | None = None, source: str | None = None
) -> dict[str, Any]:
    """The response is an RFC 9457 problem with this status (and an error naming ``field``, which
    stands in ``source``: path, query, header or body)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"].startswith("https://")
    assert body["title"]
    assert body["detail"]
    if field is not None:
        assert field in [e["field"] for e in body.get("errors", [])], body
    if source is not None:
        assert source in [e.get("source") for e in body["errors"] if e["field"] == field], body
    return body


async def create_user(client: httpx.AsyncClient, email: str = "ada@example.com", name: str = "Ada") -> Any:
    response = await client.post("/v1/users", json={"email": email, "name": name})
    assert response.status_code == 201, response.text
    return response.json()


async def create_conversation(client: httpx.AsyncClient, user_id: int, title: str | None = "Chat") -> Any:
    response = await client.post("/v1/conversations", json={"user_id": user_id, "title": title})
    assert response.status_code == 201, response.text
    return response.json()


async def post_batch(client: httpx.AsyncClient, conversation_id: int, messages: list[dict[str, Any]]) -> Any:
    response = await client.post(f"/v1/conversations/{conversation_id}/messages/batch", json={"messages": messages})
    assert response.status_code == 201, response.text
    return response.json()["items"]


async def all_pages(client: httpx.AsyncClient, path: str, **params: Any) -> list[Any]:
    """Every item of a keyset-paginated list, following next_cursor to the end."""
    items: list[Any] = []
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = await client.get(path, params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return items


@asynccontextmanager
async def serving(database_url: str, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The app on its own pool over ``database_url``: requests really run at once and commit.

    A context manager in the test body rather than a fixture: Litestar's lifespan must end in the
    task that started it.
    """
    settings = msgspec.structs.replace(
        Settings(database_url=database_url, pool_min_size=2, pool_max_size=8, cursor_secret="s" * 32), **overrides
    )
    app = create_app(settings)
    transport = httpx.ASGITransport(app=cast(Any, app))
    async with app.lifespan(), httpx.AsyncClient(transport=transport, base_url="http://freya.test") as http:
        yield http


async def until_the_service_waits_on_a_lock(conn: asyncpg.Connection[Any]) -> None:
    """Returns once one of the service's connections waits on a row lock (the test's, typically)."""
    for _ in range(200):
        waiting = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND application_name = 'freya-backend'"
        )
        if waiting:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("no connection of the service waited on a lock")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class ServedProcess(subprocess.Popen[str]):
    """A served process whose output (stdout and stderr) is read as it comes, by a thread.

    A test reads it only at the end, with ``communicate()``; left in the pipe, a busy server's log
    lines (an access line per request) would fill it and block the server mid-test.
    """

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        super().__init__(
            command, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self._output: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.stdout is not None
        with self.stdout:
            for line in self.stdout:
                self._output.append(line)

    def communicate(self, input: str | None = None, timeout: float | None = None) -> tuple[str, str]:
        """All the output once the process has ended (stderr is part of it: the second item is empty)."""
        self.wait(timeout)
        self._reader.join(timeout)
        return "".join(self._output), ""


def start_service(database_url: str, **settings: str) -> tuple[ServedProcess, str]:
    """`python -m service serve` on a free port, as an operator starts it; waits until it is ready.

    ``settings``: more environment, e.g. ``FREYA_WORKERS="2"``. Returns the process (its output
    collected, to read with ``communicate()`` after it ends) and its base URL.
    """
    port = free_port()
    # One worker unless a test asks for more: the service's default is one per core.
    env = {
        "FREYA_WORKERS": "1",
        **os.environ,
        "FREYA_DATABASE_URL": database_url,
        "FREYA_PORT": str(port),
        "FREYA_POOL_MIN_SIZE": "1",
        **settings,
    }
    process = ServedProcess([sys.executable, "-m", "service", "serve"], env)
    base = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{base}/health/ready", timeout=2).status_code == 200:
                return process, base
        except httpx.TransportError:
            pass
        if process.poll() is not None:
            raise AssertionError("serve exited before it was ready:\n" + (process.communicate()[0] or ""))
        time.sleep(0.1)
    process.kill()
    raise AssertionError("serve was not ready after 600 checks:\n" + process.communicate()[0])
