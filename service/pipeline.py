"""The one ASGI layer every routed request passes, in this order: name it, authorise it, dedupe it.

1. the request id (observability) is set for logs and echoed as ``X-Request-ID``;
2. the token check (auth) names the caller or answers 401/403, before any database work;
3. a POST with an Idempotency-Key (idempotency) is claimed, or answered from its first run;
4. the request's freshness (replicas): a GET of the API may run on a replica, no staler than its
   Freya-Read-After; a successful write answers the primary's position in that header;
then the route runs. On the way out it adds ``Server-Timing`` (database and total time), counts
the request for /metrics and writes one access log line.

One layer rather than a stack of middlewares: each ASGI layer costs every request a few
microseconds, and this service counts them (see BENCHMARKS.md).
"""

from __future__ import annotations

import logging
import time
from typing import cast

from litestar.enums import ScopeType
from litestar.exceptions import HTTPException
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, HTTPScope, Message, Receive, Scope, Send

from service import db, replicas
from service.auth import Token, authorize
from service.errors import ProblemError
from service.idempotency import Idempotency
from service.observability import IN_PROGRESS, REQUEST_ID_HEADER, record_request, request_id, request_id_of

access_log = logging.getLogger("freya.access")


class RequestPipeline(ASGIMiddleware):
    scopes = (ScopeType.HTTP,)

    def __init__(self, tokens: tuple[Token, ...], idempotency: Idempotency) -> None:
        self.tokens = tokens
        self.idempotency = idempotency

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
                # Problem answers carry the id already (errors.problem adds it).
                if not any(name.lower() == REQUEST_ID_HEADER for name, _ in response_headers):
                    response_headers.append((REQUEST_ID_HEADER, rid.encode()))
                response_headers.append(
                    (b"server-timing", f"db;dur={timing.seconds * 1000:.2f}, app;dur={total_ms:.2f}".encode())
                )
                response_headers.extend(freshness.response_headers(status))
                message["headers"] = response_headers
            await send(message)

        IN_PROGRESS.inc()
        try:
            principal = authorize(self.tokens, method, path, headers.get(b"authorization"))
            freshness = replicas.begin_request(method, path, headers)
            key = self.idempotency.key_of(method, path, headers)
            if key is None:
                await replicas.answer(freshness, scope, receive, timed_send, next_app)
            else:
                await self.idempotency.run(scope, receive, timed_send, next_app, principal, key)
        except HTTPException as refused:  # 401/403 here: answered by the app's handlers, outside us
            status = refused.status_code
            raise
        except ProblemError as refused:
            status = refused.status
            raise
        finally:
            IN_PROGRESS.dec()
            elapsed = time.perf_counter() - started
            record_request(method, scope.get("path_template", path), status, elapsed)
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
            request_id.reset(context)
