"""What an on-call engineer sees: request ids, structured logs, Server-Timing, Prometheus metrics.

Every request carries an id (the caller's ``X-Request-ID`` when it is sane, else a new one),
echoed on the response and stamped on every log line written while it runs. Time spent in the
database is summed per request by the query layer and reported in ``Server-Timing``.
"""

from __future__ import annotations

import logging
import re
import sys
import time
import uuid
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import msgspec
from litestar.datastructures import MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.plugins.prometheus import PrometheusConfig
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import Gauge

from service import db

REQUEST_ID_HEADER = "x-request-id"
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

request_id: ContextVar[str] = ContextVar("request_id", default="-")
access_log = logging.getLogger("freya.access")


def _request_id_of(scope: Scope) -> str:
    state = scope.setdefault("state", {})
    if "request_id" not in state:
        given = dict(scope.get("headers", [])).get(REQUEST_ID_HEADER.encode())
        text = given.decode("latin-1") if given is not None else ""
        state["request_id"] = text if _SANE_REQUEST_ID.match(text) else uuid.uuid4().hex
    rid: str = state["request_id"]
    return rid


class RequestContextMiddleware(ASGIMiddleware):
    """Outermost: names the request, times it and its database work, logs one access line."""

    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        rid = _request_id_of(scope)
        token = request_id.set(rid)
        timer = db.start_timing()
        started = time.perf_counter()
        status = 500

        async def timed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableScopeHeaders.from_message(message)
                total_ms = (time.perf_counter() - started) * 1000
                headers["server-timing"] = f"db;dur={timer.seconds * 1000:.2f}, app;dur={total_ms:.2f}"
            await send(message)

        try:
            await next_app(scope, receive, timed_send)
        finally:
            access_log.info(
                "%s %s %d %.1fms db=%.1fms",
                scope.get("method", "-"),
                scope["path"],
                status,
                (time.perf_counter() - started) * 1000,
                timer.seconds * 1000,
            )
            request_id.reset(token)


async def add_request_id_header(message: Message, scope: Scope) -> None:
    """before_send hook: every response, routed or not (a 404 too), echoes its request id."""
    if message["type"] == "http.response.start":
        MutableScopeHeaders.from_message(message)[REQUEST_ID_HEADER] = _request_id_of(scope)


_plain_record_factory = logging.getLogRecordFactory()


def _record_with_request_id(*args: Any, **kwargs: Any) -> logging.LogRecord:
    record = _plain_record_factory(*args, **kwargs)
    record.request_id = request_id.get()
    return record


def stamp_request_ids() -> None:
    """Give every log record, whoever writes it and wherever it goes, the current request's id."""
    logging.setLogRecordFactory(_record_with_request_id)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return msgspec.json.encode(entry).decode()


def configure_logging(level: str, log_format: str) -> None:
    """Route every logger (ours, Litestar's, asyncpg's) through one handler on stderr."""
    stamp_request_ids()
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
        formatter.converter = time.gmtime
        handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def prometheus_config() -> PrometheusConfig:
    # Requests by route template (group_path), status and method, with a latency histogram.
    return PrometheusConfig(app_name="freya", prefix="freya", group_path=True, exclude=["/metrics"])


# Pool gauges read the live pool at scrape time (the service runs one pool per worker process).
_pool_source: list[db.PoolDatabase] = []


def watch_pool(database: db.PoolDatabase) -> None:
    _pool_source[:] = [database]


def _pool_value(read: str) -> float:
    if not _pool_source:
        return 0.0
    database = _pool_source[0]
    values = {
        "size": database.pool.get_size(),
        "idle": database.pool.get_idle_size(),
        "max": database.pool.get_max_size(),
        "waiting": database.waiting,
    }
    return float(values[read])


def _reader(read: str) -> Callable[[], float]:
    return lambda: _pool_value(read)


for _name, _doc in (
    ("size", "Open database connections in the pool"),
    ("idle", "Pool connections not in use"),
    ("max", "Most connections the pool may open"),
    ("waiting", "Requests waiting for a pool connection"),
):
    Gauge(f"freya_db_pool_{_name}", _doc).set_function(_reader(_name))
