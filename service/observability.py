"""What an on-call engineer sees: request ids, structured logs, Prometheus metrics.

Every request carries an id (the caller's ``X-Request-ID`` when it is sane, else a new one),
echoed on the response and stamped on every log line written while it runs. The request
pipeline (service/pipeline.py) sets it and feeds the metrics defined here.
"""

from __future__ import annotations

import logging
import re
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import Any

import msgspec
from litestar.types import Scope
from prometheus_client import Counter, Gauge, Histogram

from service import db

REQUEST_ID_HEADER = b"x-request-id"
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

request_id: ContextVar[str] = ContextVar("request_id", default="-")
access_log = logging.getLogger("freya.access")


def request_id_of(scope: Scope, headers: Mapping[bytes, bytes] | None = None) -> str:
    """The request's id: the caller's X-Request-ID when sane, else a new one (kept in the scope).

    ``headers``: the scope's headers as a mapping, when the caller has built it already.
    """
    state = scope.setdefault("state", {})
    rid: str | None = state.get("request_id")
    if rid is None:
        given = (headers if headers is not None else dict(scope.get("headers", []))).get(REQUEST_ID_HEADER)
        text = given.decode("latin-1") if given is not None else ""
        rid = text if _SANE_REQUEST_ID.match(text) else uuid.uuid4().hex
        state["request_id"] = rid
    return rid


# Requests by route template (never the raw path, so ids do not explode the label set).
REQUESTS = Counter("freya_requests", "HTTP requests answered", ["method", "path", "status_code"])
LATENCY = Histogram(
    "freya_request_duration_seconds",
    "Time to answer a request",
    ["method", "path"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
IN_PROGRESS = Gauge("freya_requests_in_progress", "Requests being answered now")


def record_request(method: str, path_template: str, status: int, seconds: float) -> None:
    REQUESTS.labels(method, path_template, str(status)).inc()
    LATENCY.labels(method, path_template).observe(seconds)


_plain_record_factory = logging.getLogRecordFactory()


def _record_with_request_id(*args: Any, **kwargs: Any) -> logging.LogRecord:
    record = _plain_record_factory(*args, **kwargs)
    record.request_id = request_id.get()
    return record


def stamp_request_ids() -> None:
    """Give every log record, whoever writes it and wherever it goes, the current request's id."""
    logging.setLogRecordFactory(_record_with_request_id)


# C0 and C1 controls, DEL, and the Unicode line and paragraph separators: whatever a log reader
# may take for the end of a line. A request path like /v1/users/1%0Aforged must not forge one.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def escape_controls(text: str) -> str:
    r"""``text`` with each control character written as an escape (``\n``, ``\x1b``, ``\u2028``)."""
    return _CONTROL.sub(_escape_one, text)


def _escape_one(match: re.Match[str]) -> str:
    return match.group().encode("unicode_escape").decode("ascii")


class TextFormatter(logging.Formatter):
    """One line per record, always: control characters in any field (the message, a path, a
    traceback) are escaped."""

    def format(self, record: logging.LogRecord) -> str:
        return escape_controls(super().format(record))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "message": escape_controls(record.getMessage()),
        }
        if record.exc_info:
            entry["exception"] = escape_controls(self.formatException(record.exc_info))
        return msgspec.json.encode(entry).decode()


def configure_logging(level: str, log_format: str) -> None:
    """Route every logger (ours, Litestar's, asyncpg's) through one handler on stderr."""
    stamp_request_ids()
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        formatter = TextFormatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
        formatter.converter = time.gmtime
        handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


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
