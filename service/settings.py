"""Settings: every knob of the service, read once from FREYA_* environment variables and validated.

A bad value stops the service at start with a message naming the variable, never later.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

import msgspec

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PREFIX = "FREYA_"


Pooler = Literal["none", "pgbouncer-session", "pgbouncer-transaction"]


class SettingsError(ValueError):
    """An environment variable holds a value the service cannot run with."""


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    # Unset: an embedded PostgreSQL under data_dir, started on demand.
    database_url: str | None = None
    data_dir: str = str(PROJECT_ROOT / ".freya")
    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 8000
    # One granian worker process per core, as production runs it (1 is for debugging).
    workers: Annotated[int, msgspec.Meta(ge=1, le=64)] = min(64, os.cpu_count() or 1)
    # Small pools win: a worker's Python, not PostgreSQL, is the bottleneck of a request (BENCHMARKS.md).
    pool_min_size: Annotated[int, msgspec.Meta(ge=0, le=100)] = 2
    pool_max_size: Annotated[int, msgspec.Meta(ge=1, le=100)] = 8
    # Seconds a request waits for a free connection before it gets a 503.
    pool_acquire_timeout: Annotated[float, msgspec.Meta(gt=0, le=300)] = 5.0
    # Milliseconds one statement may run before PostgreSQL cancels it (a 504 to the client).
    statement_timeout_ms: Annotated[int, msgspec.Meta(ge=1, le=3_600_000)] = 10_000
    # Seconds to establish a new database connection.
    connect_timeout: Annotated[float, msgspec.Meta(gt=0, le=300)] = 5.0
    # Seconds a client has to send a request (headers and body). Slower (a body shorter than its
    # Content-Length, a chunked body without its last chunk, a trickle) gets a 408 and the
    # connection closed, instead of holding a worker's connection open.
    request_read_timeout: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 30.0
    max_body_bytes: Annotated[int, msgspec.Meta(ge=1024, le=256 * 1024 * 1024)] = 16 * 1024 * 1024
    # Signs keyset cursors. Unset: `serve` draws one per start and shares it with its workers, so
    # cursors stop working across restarts; set it (16+ characters) for cursors that outlive them.
    cursor_secret: Annotated[str, msgspec.Meta(min_length=16)] | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # text: one readable line per record; json: one JSON object per line, for log collectors.
    log_format: Literal["text", "json"] = "text"
    # Service tokens, "name:token:scope,scope;…" with scopes read, write, admin. Unset: no
    # authentication (the service warns at start).
    api_tokens: str | None = None
    # How long an Idempotency-Key is remembered, in hours.
    idempotency_ttl_hours: Annotated[int, msgspec.Meta(ge=1, le=24 * 30)] = 24
    # Days a deleted conversation or message stays restorable; then `make purge` removes it for good.
    retention_days: Annotated[int, msgspec.Meta(ge=0, le=36_500)] = 30
    # Days the change feed keeps a change; `make purge` prunes older ones (their cursors get a 410).
    changes_retention_days: Annotated[int, msgspec.Meta(ge=0, le=36_500)] = 7
    # Check the schema and prepare every query at start; tests that share one connection turn it off.
    migrate_on_serve: bool = True
    # Streaming standbys that answer GETs, comma-separated URLs (service/replicas.py).
    read_replica_urls: str | None = None
    # A replica further behind the primary than this (milliseconds) is skipped until it catches up.
    replica_max_lag_ms: Annotated[int, msgspec.Meta(ge=0, le=3_600_000)] = 5000
    # What stands between the service and PostgreSQL: nothing, or PgBouncer in session or
    # transaction pooling mode (service/db.py adapts statements and the statement timeout to it).
    pooler: Pooler = "none"

    def __post_init__(self) -> None:
        if self.pool_min_size > self.pool_max_size:
            raise ValueError(
                f"FREYA_POOL_MIN_SIZE ({self.pool_min_size}) exceeds FREYA_POOL_MAX_SIZE ({self.pool_max_size})"
            )
        if self.api_tokens is not None:
            # Imported here: auth needs nothing of settings, and settings must stay importable first.
            from service.auth import parse_tokens

            parse_tokens(self.api_tokens)
        if self.database_url is not None and not _is_postgres_url(self.database_url):
            raise ValueError("FREYA_DATABASE_URL must start with postgresql:// or postgres://")
        if any(not _is_postgres_url(url) for url in self.replica_urls):
            raise ValueError("FREYA_READ_REPLICA_URLS must be postgresql:// or postgres:// URLs, comma-separated")

    @property
    def replica_urls(self) -> list[str]:
        """FREYA_READ_REPLICA_URLS as a list (empty when unset)."""
        return [url.strip() for url in (self.read_replica_urls or "").split(",") if url.strip()]


def _is_postgres_url(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


def _env_name(field: str) -> str:
    return PREFIX + field.upper()


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from FREYA_* variables; raise SettingsError naming the bad variable."""
    environ = os.environ if environ is None else environ
    raw: dict[str, str] = {}
    for field in msgspec.structs.fields(Settings):
        value = environ.get(_env_name(field.name))
        if value is not None and value != "":
            raw[field.name] = value
    try:
        # strict=False lets msgspec parse "8000" as an int and "true" as a bool.
        return msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as error:
        message = str(error)
        # msgspec names the field as `$.pool_max_size`; tell the operator the variable instead.
        for field in msgspec.structs.fields(Settings):
            message = message.replace(f"`$.{field.name}`", _env_name(field.name))
        raise SettingsError(f"invalid setting: {message}") from None
