"""What an on-call engineer sees: request ids, structured logs, Prometheus metrics.

Every request carries an id (the caller's ``X-Request-ID`` when it is sane, else a new one),
echoed on the response and stamped on every log line written while it runs. The request
pipeline (service/pipeline.py) sets it and feeds the metrics defined here.

Metrics across workers: ``serve`` points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before
granian starts its workers, so prometheus_client writes each worker's values to files there and a
scrape, whichever worker answers it, adds them all up (``scrape``). Without it (tests, one
process) the values live in the process. Each gauge says how workers combine: ``livesum``, the
sum over running workers.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import logging.config
import os
import re
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from contextvars import ContextVar
from typing import Any

import msgspec
from litestar.types import Scope
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

from service import db

REQUEST_ID_HEADER = b"x-request-id"
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

request_id: ContextVar[str] = ContextVar("request_id", default="-")
access_log = logging.getLogger("freya.access")


def _new_id_prefix() -> None:
    global _id_prefix  # noqa: PLW0603 - one per process, drawn again in a forked child
    _id_prefix = os.urandom(8).hex()


_id_prefix = ""
_new_id_prefix()
os.register_at_fork(after_in_child=_new_id_prefix)
_id_numbers = itertools.count()


# Set in the scope of a HEAD request, which app.FreyaApp routes as the GET it answers.
HEAD_AS_GET = "freya.head_as_get"


def logged_method(scope: Scope) -> str:
    """The request's method as logs and metrics name it: a HEAD stays HEAD, routed as GET or not."""
    return "HEAD" if HEAD_AS_GET in scope else str(scope.get("method", ""))


def request_id_of(scope: Scope, headers: Mapping[bytes, bytes] | None = None) -> str:
    """The request's id: the caller's X-Request-ID when sane, else a new one (kept in the scope).

    ``headers``: the scope's headers as a mapping, when the caller has built it already.
    """
    state = scope.setdefault("state", {})
    rid: str | None = state.get("request_id")
    if rid is None:
        given = (headers if headers is not None else dict(scope.get("headers", []))).get(REQUEST_ID_HEADER)
        text = given.decode("latin-1") if given is not None else ""
        # A new id is 32 hex digits: the process's random prefix, then its count of ids so far
        # (unique without a system call for randomness on every request).
        rid = text if _SANE_REQUEST_ID.match(text) else f"{_id_prefix}{next(_id_numbers):016x}"
        state["request_id"] = rid
    return rid


# The metrics. A new one is a module-level definition here (gauges with multiprocess_mode).
# Requests by route template (never the raw path, so ids do not explode the label set).
REQUESTS = Counter("freya_requests", "HTTP requests answered", ["method", "path", "status_code"])
LATENCY = Histogram(
    "freya_request_duration_seconds",
    "Time to answer a request",
    ["method", "path"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
IN_PROGRESS = Gauge("freya_requests_in_progress", "Requests being answered now", multiprocess_mode="livesum")
# Pool gauges, summed over workers (each has its own pool); sampled by watching_pool, as is
# IN_PROGRESS (from requests_running).
POOL_SIZE = Gauge("freya_db_pool_size", "Open database connections in the pools", multiprocess_mode="livesum")
POOL_IDLE = Gauge("freya_db_pool_idle", "Pool connections not in use", multiprocess_mode="livesum")
POOL_MAX = Gauge("freya_db_pool_max", "Most connections the pools may open", multiprocess_mode="livesum")
POOL_WAITING = Gauge("freya_db_pool_waiting", "Requests waiting for a pool connection", multiprocess_mode="livesum")
POOL_SAMPLE_SECONDS = 1.0
# Read replicas (service/replicas.py): every worker polls them, so each worker's latest view counts.
READS = Counter("freya_db_reads", "Read requests' database work, by the server that answered it", ["server"])
REPLICA_LAG = Gauge(
    "freya_replica_lag_seconds",
    "How far each replica's replay trails the primary",
    ["replica"],
    multiprocess_mode="livemax",
)
REPLICA_UP = Gauge(
    "freya_replica_up",
    "1 when the replica takes reads: reachable, in recovery, within FREYA_REPLICA_MAX_LAG_MS",
    ["replica"],
    multiprocess_mode="livemin",
)


class RunningRequests:
    """How many requests this process is answering: a plain count, which the pipeline keeps and
    the gauge samples. In multiprocess mode each gauge write is a locked write to a file, and an
    increment and a decrement per request cost it about 1 % of its CPU."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


requests_running = RunningRequests()


# Each (method, path template, status)'s two metric children: labels() takes a lock and builds
# its key on every call, a third of what recording a request costs.
_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def record_request(method: str, path_template: str, status: int, seconds: float) -> None:
    key = (method, path_template, status)
    children = _children.get(key)
    if children is None:
        if len(_children) > 10_000:  # a template is one of the routes', but a bound costs nothing
            _children.clear()
        children = _children[key] = (
            REQUESTS.labels(method, path_template, str(status)),
            LATENCY.labels(method, path_template),
        )
    children[0].inc()
    children[1].observe(seconds)


def scrape() -> bytes:
    """Prometheus text of every worker's metrics (one process's when not in multiprocess mode)."""
    _sample_gauges()  # this worker's as of now; the others' as of their last sample
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


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


class JsonFormatter(logging.Formatter):
    """One JSON object per line; an access line's ``fields`` (method, path, …) become its keys."""

    def __init__(self) -> None:
        super().__init__()
        self.converter = time.gmtime

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "message": escape_controls(record.getMessage()),
        }
        fields: dict[str, Any] | None = getattr(record, "fields", None)
        if fields:
            entry.update({k: escape_controls(v) if isinstance(v, str) else v for k, v in fields.items()})
        if record.exc_info:
            entry["exception"] = escape_controls(self.formatException(record.exc_info))
        return msgspec.json.encode(entry).decode()


class TextFormatter(logging.Formatter):
    """A readable line in UTC, with the request id (``-`` outside a request, e.g. granian's own lines).

    One line per record, always: control characters in any field (the message, a path, a
    traceback) are escaped.
    """

    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s", defaults={"request_id": "-"}
        )
        self.converter = time.gmtime

    def format(self, record: logging.LogRecord) -> str:
        return escape_controls(super().format(record))


def logging_config(level: str, log_format: str) -> dict[str, Any]:
    """The ``logging.config.dictConfig`` of the service and of granian: one handler on stderr, one format.

    granian's own loggers (``_granian``, ``granian.access``) lose their handlers and pass their
    records to ours, so its start-up and worker lines come out in the service's format too.
    """
    formatter = JsonFormatter if log_format == "json" else TextFormatter
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"freya": {"()": f"{formatter.__module__}.{formatter.__qualname__}"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "freya", "stream": "ext://sys.stderr"}},
        "loggers": {
            "_granian": {"handlers": [], "propagate": True, "level": level},
            "granian.access": {"handlers": [], "propagate": True, "level": level},
            # `serve` prints each migration it applies; yoyo's step by step lines are noise.
            "yoyo": {"level": "WARNING"},
        },
        "root": {"handlers": ["stderr"], "level": level},
    }


def configure_logging(level: str, log_format: str) -> None:
    """Route every logger (ours, Litestar's, asyncpg's, granian's) through one handler on stderr."""
    stamp_request_ids()
    logging.config.dictConfig(logging_config(level, log_format))


@asynccontextmanager
async def watching_pool(database: db.PoolDatabase) -> AsyncIterator[None]:
    """Sample the pool and the requests in progress into their gauges while the app runs (a
    scrape samples its own worker too)."""
    _pool_source[:] = [database]

    async def sample_forever() -> None:
        while True:
            _sample_gauges()
            await asyncio.sleep(POOL_SAMPLE_SECONDS)

    sampler = asyncio.create_task(sample_forever())
    try:
        yield
    finally:
        sampler.cancel()
        with suppress(asyncio.CancelledError):
            await sampler
        _pool_source.clear()
        if "PROMETHEUS_MULTIPROC_DIR" in os.environ:  # this worker's live gauges leave the sums
            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


_pool_source: list[db.PoolDatabase] = []


def _sample_gauges() -> None:
    IN_PROGRESS.set(requests_running.count)
    if not _pool_source:
        return
    database = _pool_source[0]
    POOL_SIZE.set(database.pool.get_size())
    POOL_IDLE.set(database.pool.get_idle_size())
    POOL_MAX.set(database.pool.get_max_size())
    POOL_WAITING.set(database.waiting)
