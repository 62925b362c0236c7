"""Schema migrations: yoyo applies the plain-SQL files under ``migrations/``.

A migration is ``NNNN_snake_summary.sql`` plus ``NNNN_snake_summary.rollback.sql``; its id is the
file name, so an applied migration is never edited or renamed. yoyo needs a synchronous driver:
psycopg 3, reached with the same URL as asyncpg under the ``postgresql+psycopg`` scheme.
"""

from __future__ import annotations

import re
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


def _backend(database_url: str) -> DatabaseBackend:
    scheme, rest = database_url.split("://", 1)
    return get_backend(f"postgresql+psycopg://{rest}" if scheme in ("postgresql", "postgres") else database_url)


def apply(database_url: str, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply every pending migration in order; return the ids applied."""
    backend = _backend(database_url)
    with backend.lock():
        pending = backend.to_apply(read_migrations(str(directory)))
        backend.apply_migrations(pending)
    return [m.id for m in pending]


def rollback(database_url: str, count: int = 1, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Undo the last ``count`` applied migrations (newest first); return their ids."""
    backend = _backend(database_url)
    with backend.lock():
        applied = backend.to_rollback(read_migrations(str(directory)))
        chosen = applied[:count]
        backend.rollback_migrations(chosen)
    return [m.id for m in chosen]


@dataclass(frozen=True)
class MigrationStatus:
    id: str
    applied: bool


def status(database_url: str, directory: Path = MIGRATIONS_DIR) -> list[MigrationStatus]:
    backend = _backend(database_url)
    applied = set(backend.get_applied_migration_hashes())
    return [
        MigrationStatus(m.id, m.hash in applied) for m in read_migrations(str(directory))
    ]


def create(summary: str, directory: Path = MIGRATIONS_DIR) -> tuple[Path, Path]:
    """Write the next numbered, empty ``.sql`` + ``.rollback.sql`` pair, depending on the newest."""
    if not _SUMMARY.match(summary):
        raise ValueError(f"migration name {summary!r} must be snake_case, e.g. add_message_flags")
    existing = migration_ids(directory)
    number = int(existing[-1][:4]) + 1 if existing else 1
    new_id = f"{number:04d}_{summary}"
    forward, backward = directory / f"{new_id}.sql", directory / f"{new_id}.rollback.sql"
    depends = f"-- depends: {existing[-1]}\n" if existing else ""
    forward.write_text(f"-- TODO: say what this migration changes and why.\n{depends}\n")
    backward.write_text(f"-- Undo {new_id}.\n")
    return forward, backward
