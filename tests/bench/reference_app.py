"""The references `make bench` measures the service against, each what a team would write.

``page_app``: a minimal Litestar + asyncpg handler on the bare page query, msgspec Structs out
(the afternoon's version of GET /v1/conversations/{id}/messages: the message object's columns,
without topics, cursors, auth, metrics or logs). ``message_app``: a raw ASGI app, no framework,
on the bare single-message query.
granian serves them with the service's worker count; FREYA_DATABASE_URL names the database.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

import asyncpg
import msgspec
from litestar import Litestar, get
from litestar.datastructures import State

BARE_PAGE = (
    'SELECT id, conversation_id, user_id, role, content, "timestamp", edited_at, metadata, token_count, '
    'token_count_estimated FROM messages WHERE conversation_id = $1 ORDER BY "timestamp" DESC, id DESC LIMIT 50'
)
BARE_MESSAGE = (
    'SELECT id, conversation_id, user_id, role, content, "timestamp", edited_at, metadata, token_count, '
    "token_count_estimated FROM messages WHERE id = $1"
)


class Message(msgspec.Struct):
    id: int
    conversation_id: int
    user_id: int
    role: str
    content: str
    timestamp: datetime
    edited_at: datetime | None
    metadata: dict[str, Any]
    token_count: int
    token_count_estimated: bool


class Items(msgspec.Struct):
    items: list[Message]


async def _jsonb(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    await conn.set_type_codec("jsonb", encoder=msgspec.json.encode, decoder=msgspec.json.decode, schema="pg_catalog")


async def _new_pool() -> asyncpg.Pool[asyncpg.Record]:
    return await asyncpg.create_pool(os.environ["FREYA_DATABASE_URL"], min_size=2, max_size=8, init=_jsonb)


async def _open_pool(app: Litestar) -> None:
    app.state.pool = await _new_pool()


async def _close_pool(app: Litestar) -> None:
    await app.state.pool.close()


@get("/v1/conversations/{conversation_id:int}/messages")
async def conversation_page(conversation_id: int, state: State) -> Items:
    async with state.pool.acquire() as conn:
        rows = await conn.fetch(BARE_PAGE, conversation_id)
    return Items([Message(*row) for row in rows])


page_app = Litestar([conversation_page], on_startup=[_open_pool], on_shutdown=[_close_pool])


_pool: asyncpg.Pool[asyncpg.Record] | None = None


async def message_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """GET /v1/messages/{id}: the row as JSON, or 404."""
    global _pool  # noqa: PLW0603 - one pool per process, opened by the lifespan
    if scope["type"] == "lifespan":
        while True:
            event = await receive()
            if event["type"] == "lifespan.startup":
                _pool = await _new_pool()
                await send({"type": "lifespan.startup.complete"})
            elif event["type"] == "lifespan.shutdown":
                if _pool is not None:
                    await _pool.close()
                await send({"type": "lifespan.shutdown.complete"})
                return
    assert _pool is not None
    row = await _pool.fetchrow(BARE_MESSAGE, int(scope["path"].rsplit("/", 1)[1]))
    status, body = (404, b"{}") if row is None else (200, msgspec.json.encode(Message(*row)))
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
