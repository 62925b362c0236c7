"""The application: routes, the error contract, OpenAPI, and the database pool's lifetime."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any, cast

import msgspec
from litestar import Controller, Litestar, Request, Response, get, route
from litestar.datastructures import State
from litestar.di import Provide
from litestar.enums import HttpMethod
from litestar.openapi import OpenAPIConfig
from litestar.types import LifeSpanReceive, LifeSpanScope, LifeSpanSend, Message, Receive, Scope, Send
from prometheus_client import CONTENT_TYPE_LATEST

from service import (
    admin,
    changes,
    context,
    conversations,
    db,
    errors,
    health,
    idempotency,
    messages,
    replicas,
    revisions,
    search,
    topics,
    users,
)
from service.admin import AdminController
from service.auth import parse_tokens
from service.changes import ChangesController, FeedWatch
from service.context import ContextController
from service.conversations import ConversationsController, UserConversationsController
from service.cursors import CursorCodec
from service.devdb import database_url
from service.docs import DOCS_PATH, docs_asset, swagger_ui
from service.health import HealthController, expected_migrations
from service.idempotency import Idempotency
from service.messages import ConversationMessagesController, MessagesController, TopicMessagesController
from service.observability import HEAD_AS_GET, configure_logging, scrape, stamp_request_ids, watching_pool
from service.openapi import OpenAPIJson
from service.pages import paging_provider
from service.pipeline import RequestPipeline
from service.queries import prepare_all, queries_of
from service.revisions import RevisionsController
from service.search import SearchController
from service.settings import Settings, load_settings
from service.topics import MessageTopicsController, TopicsController
from service.users import UsersController

log = logging.getLogger("freya")

VERSION = "1.0.0"

# The SQL files this app runs, prepared at start (the seed's, for one, is not among them).
SERVED_QUERIES = (
    admin.sql,
    changes.sql,
    context.sql,
    conversations.sql,
    health.sql,
    idempotency.sql,
    messages.sql,
    replicas.sql,
    revisions.sql,
    search.sql,
    topics.sql,
    users.sql,
)


@route(
    # Litestar's router does not fall back from a matched prefix, so /v1/… needs its own.
    ["/{rest:path}", "/v1/{rest:path}"],
    http_method=[HttpMethod.GET, HttpMethod.POST, HttpMethod.PUT, HttpMethod.PATCH, HttpMethod.DELETE],
    include_in_schema=False,
)
async def unknown_route(request: Request[Any, Any, Any]) -> None:
    """Any other path: routed here so that it passes the pipeline (token check first, then 404)."""
    raise errors.NotFound(f"no route {request.url.path}")


class FreyaApp(Litestar):
    """Litestar, answering HEAD as GET without the body (RFC 9110 9.3.2: the same status and
    headers, Content-Length included). Litestar routes HEAD apart from GET, and would answer it
    with a 405 on every GET route; the rewrite happens before its router sees the request."""

    async def __call__(
        self, scope: Scope | LifeSpanScope, receive: Receive | LifeSpanReceive, send: Send | LifeSpanSend
    ) -> None:
        fields = cast("dict[str, Any]", scope)
        if fields["type"] == "http" and fields["method"] == "HEAD":
            fields["method"] = "GET"
            fields[HEAD_AS_GET] = True
            send = _without_body(cast("Send", send))
        await super().__call__(scope, receive, send)


def _without_body(send: Send) -> Send:
    async def send_head(message: Message) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            message = {**message, "body": b""}
        await send(message)

    return send_head


class MetricsController(Controller):
    """Prometheus text: the pipeline's request metrics and the pool gauges, of every worker."""

    path = "/metrics"
    include_in_schema = False

    @get(sync_to_thread=False)
    def metrics(self) -> Response[bytes]:
        return Response(scrape(), media_type=CONTENT_TYPE_LATEST)


def create_app(settings: Settings, database: db.Database | None = None) -> Litestar:
    """The Litestar app. Without ``database`` its lifespan opens a pool on ``settings.database_url``
    and prepares every SQL query before the app reports ready; tests pass their own connection.
    """
    stamp_request_ids()
    cursors = CursorCodec(settings.cursor_secret)
    if cursors.generated:
        log.warning("FREYA_CURSOR_SECRET is not set: cursors are signed with a key drawn at start")
    tokens = parse_tokens(settings.api_tokens) if settings.api_tokens else ()
    if not tokens:
        log.warning("FREYA_API_TOKENS is not set: every API route is open to anyone who can reach the port")
    feed_watch = FeedWatch()
    state = State(
        {"cursors": cursors, "feed_watch": feed_watch, "expected_migrations": expected_migrations()}
        | ({"database": database} if database is not None else {})
    )

    @asynccontextmanager
    async def feed_watch_lifespan(app: Litestar) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await feed_watch.close()

    @asynccontextmanager
    async def pool_lifespan(app: Litestar) -> AsyncIterator[None]:
        if database is not None:
            yield
            return
        url = settings.database_url
        if url is None:
            raise RuntimeError("FREYA_DATABASE_URL is not set (python -m service serve resolves it)")

        async def open_pool(server_url: str) -> db.PoolDatabase:
            pool = await db.create_pool(
                server_url,
                min_size=settings.pool_min_size,
                max_size=settings.pool_max_size,
                statement_timeout_ms=settings.statement_timeout_ms,
                connect_timeout=settings.connect_timeout,
                pooler=settings.pooler,
            )
            per_transaction = settings.statement_timeout_ms if settings.pooler == "pgbouncer-transaction" else None
            return db.PoolDatabase(pool, settings.pool_acquire_timeout, timeout_per_transaction_ms=per_transaction)

        primary = await open_pool(url)
        routed = replicas.ReplicatedDatabase(
            primary, settings.replica_urls, settings.replica_max_lag_ms, open_pool, settings.connect_timeout
        )
        monitor: asyncio.Task[None] | None = None
        try:
            async with primary.pool.acquire() as conn:
                prepared = await prepare_all(conn, queries_of(SERVED_QUERIES))
            log.info(
                "database pool open (%d-%d connections, pooler %s), %d queries prepared",
                settings.pool_min_size,
                settings.pool_max_size,
                settings.pooler,
                prepared,
            )
            if routed.replicas:
                # The first poll before the first request: replicas that are up take reads at once.
                await routed.poll()
                monitor = asyncio.create_task(routed.watch())
            app.state.database = routed
            async with watching_pool(primary):
                yield
        finally:
            if monitor is not None:
                monitor.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await monitor
            # Graceful: waits for connections in use to be released, i.e. in-flight requests.
            await asyncio.gather(primary.pool.close(), routed.close())
            log.info("database pool closed")

    def provide_database() -> db.Database:
        database: db.Database = state.database  # the test's, or the one pool_lifespan opened
        return database

    return FreyaApp(
        route_handlers=[
            HealthController,
            UsersController,
            ConversationsController,
            UserConversationsController,
            ConversationMessagesController,
            ContextController,
            MessagesController,
            RevisionsController,
            TopicMessagesController,
            TopicsController,
            MessageTopicsController,
            SearchController,
            ChangesController,
            AdminController,
            MetricsController,
            docs_asset,
            unknown_route,
        ],
        middleware=[
            RequestPipeline(
                tokens,
                Idempotency(timedelta(hours=settings.idempotency_ttl_hours), settings.max_body_bytes),
                settings.request_read_timeout,
                replicated=bool(settings.replica_urls),
            )
        ],
        # Logging is ours (observability.configure_logging): one handler, request ids, text or JSON.
        logging_config=None,
        dependencies={
            # Closures over the app's state rather than functions of ``state: State``: Litestar
            # would build a State for each of them on every request.
            "db": Provide(provide_database, sync_to_thread=False),
            "paging": Provide(paging_provider(cursors), sync_to_thread=False),
        },
        exception_handlers=errors.EXCEPTION_HANDLERS,
        request_class=errors.JsonBodyRequest,
        lifespan=[pool_lifespan, feed_watch_lifespan],
        state=state,
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="Freya backend",
            version=VERSION,
            description="Chat history of the Freya assistant: users, conversations, messages, topics.",
            path=DOCS_PATH,
            render_plugins=[swagger_ui(), OpenAPIJson(path="/openapi.json")],
        ),
    )


# Allocations (less deallocations) between two collections of the youngest generation; Python's
# default is 700.
YOUNG_GENERATION_THRESHOLD = 20_000


def settle_garbage_collector() -> None:
    """Tune the cyclic garbage collector once a worker is up, for a request's allocations.

    A page request creates a few hundred objects that reference counting frees when it ends, but
    eight requests in flight together pass Python's default threshold of 700 again and again, and
    each collection walks every object young enough, and every tenth walks the whole heap (the
    app's routes, schema and statements: 70,000 objects). Measured on a 50-message page: 32 µs of
    collector time per request, none with a threshold these peaks do not reach. The start-up
    objects are frozen out of the collections for good (they live as long as the worker).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, *gc.get_threshold()[1:])


def create_app_from_env() -> Litestar:
    """The factory granian calls in each worker."""
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    if settings.database_url is None:
        settings = msgspec.structs.replace(settings, database_url=database_url(settings))
    app = create_app(settings)
    # After the lifespan's own start-up (the pool, the prepared statements): on_startup runs last.
    app.on_startup.append(settle_garbage_collector)
    return app
