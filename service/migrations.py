"""Schema migrations: yoyo applies the plain-SQL files under ``migrations/``.

A migration is ``NNNN_snake_summary.sql`` plus ``NNNN_snake_summary.rollback.sql``; its id is the
file name, so an applied migration is never edited or renamed. yoyo needs a synchronous driver:
psycopg 3, reached with the same URL as asyncpg under the ``postgresql+psycopg`` scheme.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from yoyo import get_backend, read_migrations
from yoyo.backends import DatabaseBackend

from service.settings import PROJECT_ROOT

MIGRATIONS_DIR = PROJECT_ROOT / "migrations"
_FILE = re.compile(r"^(?P<number>\d{4})_(?P<summary>[a-z0-9_]+)\.sql$")
_SUMMARY = re.compile(r"^[a-z][a-z0-9_]*$")


def migration_ids(directory: Path = MIGRATIONS_DIR) -> list[str]:
    """The ids of every migration on disk, oldest first (read without touching the database)."""
    return sorted(p.name.removesuffix(".sql") for p in directory.glob("*.sql") if _FILE.match(p.name))


@contextmanager
def _backend(database_url: str) -> Iterator[DatabaseBackend]:
    """A yoyo backend on psycopg 3, whose connection is closed when done (yoyo leaves it open)."""
    scheme, rest = database_url.split("://", 1)
    backend = get_backend(f"postgresql+psycopg://{rest}" if scheme in ("postgresql", "postgres") else database_url)
    # No named prepared statements (psycopg makes them for a query run five times): behind PgBouncer
    # in transaction mode the next transaction may run on a server connection that lacks them.
    backend.connection.prepare_threshold = None
    try:
        yield backend
    finally:
        backend.connection.close()


def apply(database_url: str, directory: Path = MIGRATIONS_DIR, up_to: str | None = None) -> list[str]:
    """Apply pending migrations in order (all, or up to and including ``up_to``); return their ids."""
    with _backend(database_url) as backend, backend.lock():
        chosen = read_migrations(str(directory))
        if up_to is not None:
            chosen = chosen.filter(lambda m: m.id <= up_to)
        pending = backend.to_apply(chosen)
        backend.apply_migrations(pending)
    return [m.id for m in pending]


def rollback(database_url: str, count: int = 1, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Undo the last ``count`` applied migrations (newest first); return their ids."""
    with _backend(database_url) as backend, backend.lock():
        applied = backend.to_rollback(read_migrations(str(directory)))
        chosen = applied[:count]
        backend.rollback_migrations(chosen)
    return [m.id for m in chosen]


@dataclass(frozen=True)
class MigrationStatus:
    id: str
    applied: bool


def status(database_url: str, directory: Path = MIGRATIONS_DIR) -> list[MigrationStatus]:
    with _backend(database_url) as backend:
        applied = set(backend.get_applied_migration_hashes())
    return [MigrationStatus(m.id, m.hash in applied) for m in read_migrations(str(directory))]


def check_summary(summary: str) -> None:
    """Raise ValueError, in one line meant for a person, unless ``summary`` can name a migration."""
    if not summary:
        raise ValueError("a migration needs a name: make migration name=add_message_flags")
    if not _SUMMARY.match(summary):
        raise ValueError(f"migration name {summary!r} must be snake_case, e.g. add_message_flags")


def create(summary: str, directory: Path = MIGRATIONS_DIR) -> tuple[Path, Path]:
    """Write the next numbered, empty ``.sql`` + ``.rollback.sql`` pair, depending on the newest."""
    check_summary(summary)
    existing = migration_ids(directory)
    number = int(existing[-1][:4]) + 1 if existing else 1
    new_id = f"{number:04d}_{summary}"
    forward, backward = directory / f"{new_id}.sql", directory / f"{new_id}.rollback.sql"
    depends = f"-- depends: {existing[-1]}\n" if existing else ""
    forward.write_text(f"-- What this migration changes, and why.\n{depends}\n")
    backward.write_text(f"-- Undo {new_id}.\n")
    return forward, backward
