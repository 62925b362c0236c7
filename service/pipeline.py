"""The one ASGI layer every routed request passes, in this order: name it, authorise it, dedupe it.

1. the request id (observability) is set for logs and echoed as ``X-Request-ID``;
2. the token check (auth) names the caller or answers 401/403, before any database work;
   path ids must be plain integers, query values UTF-8 and time filters RFC 3339 (a 400);
3. a JSON body must say so: a write under /v1 with a body of another media type is a 415;
4. the request's freshness (replicas): a GET of the API may run on a replica, no staler than its
   Freya-Read-After; a successful write answers the primary's position in that header;
5. a POST with an Idempotency-Key (idempotency) runs in one transaction, or is answered from
   its first run;
then the route runs. The request body must arrive within FREYA_REQUEST_READ_TIMEOUT seconds
(a 408 otherwise). A request whose first statement met a broken pooled connection (refused
before it was sent, so nothing can have been written) runs once more on a fresh connection.
On the way out it adds ``Server-Timing`` (database and total time), counts the request for
/metrics and writes one access log line.

One layer rather than a stack of middlewares: each ASGI layer costs every request a few
microseconds, and this service counts them (see BENCHMARKS.md).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import urllib.parse
from collections.abc import Callable
from typing import cast

from litestar.enums import ScopeType
from litestar.exceptions import HTTPException
from litestar.middleware import ASGIMiddleware
from litestar.routes import HTTPRoute
from litestar.types import ASGIApp, HTTPScope, Message, Receive, ReceiveMessage, Scope, Send
from litestar.utils.scope.state import ScopeState

from service import db, replicas
from service.auth import Token, authorize
from service.errors import Invalid, ProblemError, RequestTimeout, UnsupportedMediaType, allow_header
from service.idempotency import Idempotency
from service.observability import (
    REQUEST_ID_HEADER,
    logged_method,
    record_request,
    request_id,
    request_id_of,
    requests_running,
)

access_log = logging.getLogger("freya.access")

_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})
_PLAIN_ID = re.compile(r"^[1-9][0-9]{0,18}$")
_TIME_FILTERS = frozenset({"since", "until"})
# RFC 3339 date-time; without an offset it is taken as UTC (the API's documented leniency).
# At most microseconds, what PostgreSQL keeps: a finer fraction would be rounded, and could round
# a since or an until across the message it should leave out.
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,6})?([Zz]|[+-]\d{2}:\d{2})?$")
_RAW_NON_ASCII = re.compile(rb"[\x80-\xff]")


class RequestPipeline(ASGIMiddleware):
    scopes = (ScopeType.HTTP,)

    def __init__(
        self, tokens: tuple[Token, ...], idempotency: Idempotency, read_timeout: float, *, replicated: bool
    ) -> None:
        self.tokens = tokens
        self.idempotency = idempotency
        self.read_timeout = read_timeout
        self.replicated = replicated

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        started = time.perf_counter()
        headers = dict(scope["headers"])  # built once: the id, the token and the key all read it
        rid = request_id_of(scope, headers)
        context = request_id.set(rid)
        timing = db.start_timing()
        method = cast("HTTPScope", scope)["method"]
        path = scope["path"]
        status = 500
        freshness = replicas.Freshness(read=False)

        async def timed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                total_ms = (time.perf_counter() - started) * 1000
                response_headers = list(message.get("headers", ()))
                # Problem answers (4xx, 5xx) carry the id already (errors.problem adds it).
                if status < 400 or not any(name.lower() == REQUEST_ID_HEADER for name, _ in response_headers):
                    response_headers.append((REQUEST_ID_HEADER, rid.encode()))
                response_headers.append(
                    (b"server-timing", f"db;dur={timing.seconds * 1000:.2f}, app;dur={total_ms:.2f}".encode())
                )
                response_headers.extend(freshness.response_headers(status))
                if method == "OPTIONS":
                    response_headers = _with_every_method(scope, response_headers)
                message["headers"] = response_headers
            await send(message)

        requests_running.count += 1
        try:
            principal = authorize(self.tokens, method, path, headers.get(b"authorization"))
            _require_plain_ids(scope)
            _require_sane_query(scope)
            if method in _WITH_BODY and path.startswith("/v1/"):
                _require_json(headers)
            freshness = replicas.begin_request(method, path, headers)
            key = self.idempotency.key_of(method, path, headers)
            receive, rewind = self._body(method, receive)
            await self._run(scope, receive, rewind, timed_send, next_app, timing, freshness, principal, key)
        except HTTPException as refused:  # 401/403 here: answered by the app's handlers, outside us
            status = refused.status_code
            raise
        except ProblemError as refused:
            status = refused.status
            raise
        finally:
            requests_running.count -= 1
            _account(scope, status, time.perf_counter() - started, timing)
            request_id.reset(context)

    def _body(self, method: str, receive: Receive) -> tuple[Receive, Callable[[], None]]:
        """The route's receive, and how a retry reads the body again. Only a method with a body
        has one a handler reads: only that one needs the deadline (a 408) and the recording."""
        if method not in _WITH_BODY:
            return receive, _nothing_to_rewind
        body = _Replayable(_bounded(receive, asyncio.get_running_loop().time() + self.read_timeout))
        return body.receive, body.rewind

    async def _run(
        self,
        scope: Scope,
        receive: Receive,
        rewind: Callable[[], None],
        send: Send,
        next_app: ASGIApp,
        timing: db.DatabaseTime,
        freshness: replicas.Freshness,
        principal: str,
        key: str | None,
    ) -> None:
        """The route (under its Idempotency-Key when given), once more when a broken connection
        refused its first statement before sending it."""
        state = ScopeState.from_scope(scope)
        for attempt in (1, 2):
            timing.retryable = False
            # A response held back (idempotency) or withheld (a retry) never reached the client:
            # Litestar must not take it for one, or an error after it becomes a bare 500.
            state.response_started = False
            respond = _Attempt(send, timing, first=attempt == 1)
            try:
                if key is not None:
                    await self.idempotency.run(scope, receive, respond, next_app, principal, key)
                elif self.replicated:
                    await replicas.answer(freshness, scope, receive, respond, next_app)
                else:  # no replica can fail under a read, which answer would run again
                    await next_app(scope, receive, respond)
            except Exception:
                if attempt == 1 and timing.retryable:
                    rewind()
                    continue
                state.response_started = respond.started
                raise
            if respond.withheld:
                rewind()
                continue
            return


def _account(scope: Scope, status: int, elapsed: float, timing: db.DatabaseTime) -> None:
    """The answered request in /metrics and in one access log line."""
    path = scope["path"]
    method = logged_method(scope)
    record_request(method, scope.get("path_template", path), status, elapsed)
    if access_log.isEnabledFor(logging.INFO):  # the line's fields are not built for nothing
        duration_ms, db_ms = round(elapsed * 1000, 1), round(timing.seconds * 1000, 1)
        access_log.info(
            "%s %s %d %.1fms db=%.1fms",
            method,
            path,
            status,
            duration_ms,
            db_ms,
            # Separate keys in JSON logs (the request id is on every record already).
            extra={
                "fields": {
                    "method": method,
                    "path": path,
                    "status": status,
                    "duration_ms": duration_ms,
                    "db_ms": db_ms,
                }
            },
        )


def _with_every_method(scope: Scope, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Allow: every method of the path. Litestar's own OPTIONS answer names only the methods of
    the first handler registered on it (DELETE alone for GET, PATCH and DELETE on one path)."""
    template = scope.get("path_template")
    routes = [r for r in scope["litestar_app"].routes if isinstance(r, HTTPRoute) and r.path_format == template]
    if not routes:
        return headers
    allow = allow_header(set().union(*(route.methods for route in routes))).encode()
    return [(name, value) for name, value in headers if name.lower() != b"allow"] + [(b"allow", allow)]


def _require_plain_ids(scope: Scope) -> None:
    """Path ids are plain decimal integers: 1.0, 1e3, +1 or 0x1 name no row (a 400), whatever a
    lenient number parser would make of them."""
    for name, value in scope.get("path_params", {}).items():
        if name.endswith("_id") and not _PLAIN_ID.match(value):
            raise Invalid(f"{name} must be a positive decimal integer", field=name, source="path")


def _require_sane_query(scope: Scope) -> None:
    """Query values are UTF-8 once percent-decoded (Litestar would replace what is not, and search
    for U+FFFD), and UTF-8 sent raw, unescaped, is escaped here (Litestar would read it as Latin-1).
    Time filters (since, until) are RFC 3339 times to the microsecond: a lenient parser would take
    0.5 or 1e9 as seconds since the epoch, and would round a finer fraction, moving an inclusive
    since or an exclusive until across a message. A plain ASCII query without a percent sign or a
    time filter costs three scans."""
    query = scope.get("query_string", b"")
    if not query.isascii():
        query = scope["query_string"] = _RAW_NON_ASCII.sub(lambda byte: b"%%%02X" % byte[0][0], query)
    escaped = b"%" in query
    if escaped:
        for pair in query.split(b"&"):
            raw_name, _, raw_value = pair.partition(b"=")
            try:
                urllib.parse.unquote_to_bytes(raw_value).decode()
            except UnicodeDecodeError:
                field = urllib.parse.unquote_plus(raw_name.decode("latin-1"))
                raise Invalid(f"{field} is not UTF-8 once percent-decoded", field=field, source="query") from None
    # An escaped query may spell a filter's name escaped (%73ince): parsed whole then.
    if not escaped and b"since=" not in query and b"until=" not in query:
        return
    for name, value in urllib.parse.parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if name in _TIME_FILTERS and not _RFC3339.match(value):
            raise Invalid(
                f"{name} must be an RFC 3339 time with at most 6 fraction digits, e.g. 2026-01-31T12:00:00Z",
                field=name,
                source="query",
            )


def _require_json(headers: dict[bytes, bytes]) -> None:
    """A body must be JSON and say so (application/json or a +json type); no body needs no type."""
    content_type = headers.get(b"content-type")
    if content_type is None:
        if headers.get(b"content-length", b"0").strip() in (b"0", b"") and b"transfer-encoding" not in headers:
            return
        raise UnsupportedMediaType("a request body must be JSON, sent with Content-Type: application/json")
    media_type = content_type.split(b";", 1)[0].strip().lower()
    if media_type != b"application/json" and not media_type.endswith(b"+json"):
        raise UnsupportedMediaType(
            f"Content-Type {media_type.decode('latin-1')!r} is not supported: send application/json"
        )


def _bounded(receive: Receive, deadline: float) -> Receive:
    """``receive`` that raises RequestTimeout when the body is not complete by ``deadline``
    (loop time): a client that sends less than its Content-Length, or trickles, is cut off.
    A body that ends in a disconnect is a 400."""
    complete = False

    async def bounded() -> ReceiveMessage:
        nonlocal complete
        if complete:  # the body is in: what follows is the wait for a disconnect
            return await receive()
        try:
            async with asyncio.timeout_at(deadline):
                message = await receive()
        except TimeoutError:
            raise RequestTimeout("the request body did not arrive in time") from None
        if message["type"] == "http.disconnect":
            # Before the body was whole: the server gave up on it (a malformed chunked encoding)
            # or the client left. Either way a 400, not the 500 of "disconnected prematurely".
            raise Invalid("the request body is malformed or incomplete", field="body", source="body")
        complete = not message.get("more_body", False)
        return message

    return bounded


def _nothing_to_rewind() -> None:
    """A request without a body (a GET) has nothing to read again on a retry."""


class _Replayable:
    """The request's receive, recorded so that a retried attempt reads the same body again."""

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._seen: list[ReceiveMessage] = []
        self._pending: list[ReceiveMessage] = []

    async def receive(self) -> ReceiveMessage:
        if self._pending:
            return self._pending.pop(0)
        message = await self._receive()
        if message["type"] == "http.request":
            self._seen.append(message)
        return message

    def rewind(self) -> None:
        self._pending = list(self._seen)


class _Attempt:
    """One run's ``send``: passes the response on and notes that it started, unless it is the 5xx
    of a first run's retryable failure, which it withholds (the request runs once more)."""

    __slots__ = ("_first", "_send", "_timing", "started", "withheld")

    def __init__(self, send: Send, timing: db.DatabaseTime, *, first: bool) -> None:
        self._send = send
        self._timing = timing
        self._first = first
        self.started = False
        self.withheld = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            if self._first and message["status"] >= 500 and self._timing.retryable:
                self.withheld = True
            else:
                self.started = True
        if not self.withheld:
            await self._send(message)
