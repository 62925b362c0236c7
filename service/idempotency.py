"""Idempotency keys: a retried POST gets the first answer again instead of creating twice.

A POST under /v1 (but /v1/admin) with an ``Idempotency-Key`` header runs in one transaction on
one connection: the key is claimed for the caller (its token name), the handler runs (its
statements are savepoints of that transaction), its response (status and body) is stored, and
only after COMMIT is the response sent. So a failure anywhere before the COMMIT leaves nothing
(no key, no row), and a failure after it (a proxy dropping the reply) leaves the stored answer,
which the retry gets with ``Idempotent-Replayed: true``. A concurrent request with the same key
waits for the first one's transaction and then replays its answer. The same key with a different
method, path, query or body is a 422, a malformed key a 400. A 5xx is rolled back with
everything else, so the client may retry it. Keys are remembered for FREYA_IDEMPOTENCY_TTL_HOURS.
"""

from __future__ import annotations

import hashlib
import logging
import re
from datetime import timedelta
from typing import cast

import msgspec
from litestar.types import ASGIApp, HTTPScope, Message, Receive, ReceiveMessage, Scope, Send

from service.db import Database
from service.errors import Conflict, Invalid
from service.queries import Query, QueryFile

log = logging.getLogger("freya.idempotency")

HEADER = b"idempotency-key"
_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")  # printable ASCII, no spaces: UUIDs, ULIDs, hashes


class IdempotencyQueries(QueryFile, file="idempotency"):
    claim_key: Query
    get_key: Query
    store_response: Query
    purge_expired_keys: Query


sql = IdempotencyQueries()


class _Stored(msgspec.Struct):
    fingerprint: bytes
    status: int | None
    content_type: str | None
    body: bytes | None


class _Failed(Exception):
    """The handler answered 5xx: raised inside the transaction to roll everything back."""


class _Held:
    """The app's response, kept until the transaction that produced it has committed."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.status = 500
        self.content_type = ""

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.content_type = dict(message.get("headers", [])).get(b"content-type", b"").decode("latin-1")
        self.messages.append(message)

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages if m["type"] == "http.response.body")

    async def deliver(self, send: Send) -> None:
        for message in self.messages:
            await send(message)


class Idempotency:
    """Runs POSTs that carry an Idempotency-Key once per (caller, key); see the module docstring."""

    def __init__(self, ttl: timedelta, max_body_bytes: int) -> None:
        self.ttl = ttl
        self.max_body_bytes = max_body_bytes

    @staticmethod
    def key_of(method: str, path: str, headers: dict[bytes, bytes]) -> str | None:
        """The key when this request is one to deduplicate (a POST under /v1 that carries one).

        Admin operations are not deduplicated: VACUUM cannot run inside a transaction.
        """
        raw = headers.get(HEADER)
        if raw is None or method != "POST" or not path.startswith("/v1/") or path.startswith("/v1/admin/"):
            return None
        key = raw.decode("latin-1")
        if not _KEY.match(key):
            raise Invalid(
                "Idempotency-Key must be 1-255 printable ASCII characters without spaces",
                field="Idempotency-Key",
                source="header",
            )
        return key

    async def run(
        self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp, principal: str, key: str
    ) -> None:
        body, replay_receive = await _read_body(receive, self.max_body_bytes)
        if body is None:  # over the size limit: let the app answer its 413
            await next_app(scope, replay_receive, send)
            return
        method = cast("HTTPScope", scope)["method"]
        fingerprint = hashlib.sha256(
            b"\0".join([method.encode(), scope["path"].encode(), scope.get("query_string", b""), body])
        ).digest()
        database: Database = scope["app"].state.database
        held = _Held()
        stored, claimed = None, False
        try:
            async with database.request_transaction() as conn:
                claimed = await sql.claim_key.val(
                    conn, principal=principal, key=key, fingerprint=fingerprint, ttl=self.ttl
                )
                if not claimed:
                    stored = await sql.get_key.one(conn, _Stored, principal=principal, key=key)
                else:
                    await next_app(scope, replay_receive, held.send)
                    if held.status >= 500:
                        raise _Failed
                    await sql.store_response.exec(
                        conn,
                        principal=principal,
                        key=key,
                        status=held.status,
                        content_type=held.content_type,
                        body=held.body,
                    )
        except _Failed:
            pass  # rolled back: the key is free again, nothing the handler did is kept
        if claimed:
            await held.deliver(send)
            return
        if stored is None:  # purged between the claim and the read: rare, and safe to retry
            raise Conflict("this Idempotency-Key expired while it was checked; retry")
        await _replay(stored, fingerprint, send)


async def _replay(stored: _Stored, fingerprint: bytes, send: Send) -> None:
    if stored.fingerprint != fingerprint:
        raise Invalid(
            "this Idempotency-Key was used for a different request; use a new key",
            field="Idempotency-Key",
            source="header",
            status=422,
        )
    if stored.status is None:
        raise Conflict("a request with this Idempotency-Key is still being processed; retry shortly")
    headers = [(b"idempotent-replayed", b"true")]
    if stored.content_type:
        headers.append((b"content-type", stored.content_type.encode("latin-1")))
    body = stored.body or b""
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": stored.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _read_body(receive: Receive, limit: int) -> tuple[bytes | None, Receive]:
    """The whole request body (None when over ``limit``) and a receive that plays it to the app again."""
    messages: list[ReceiveMessage] = []
    size = 0
    more = True
    while more:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
        if size > limit:
            break
    pending = iter(messages)

    async def replay() -> ReceiveMessage:
        for message in pending:
            return message
        return await receive()

    if size > limit:
        return None, replay
    return b"".join(m["body"] for m in messages if m["type"] == "http.request"), replay


async def purge_expired(database: Database, ttl: timedelta) -> int:
    async with database.connection() as conn:
        return int(await sql.purge_expired_keys.val(conn, ttl=ttl))
