"""The command line: ``python -m service <command>``; the Makefile's targets call these."""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import socket
import sys
import typing
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path

import asyncpg
import psycopg

from service import admin, devdb, idempotency, migrations, seed
from service.db import SharedConnectionDatabase
from service.devdb import database_url
from service.settings import Settings, SettingsError, load_settings


class PortInUseError(OSError):
    """Another process listens on the address the service was told to serve on."""


def claim_port(host: str, port: int) -> None:
    """Fail unless host:port is free. granian binds with SO_REUSEPORT, so a second instance
    would otherwise share the port with the first and split its traffic; this probe binds
    without it, which any existing listener refuses."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # Connections of a recent instance in TIME_WAIT do not count; a listener does.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise PortInUseError(
                f"cannot serve on {host}:{port}: {error.strerror} (is another instance running?)"
            ) from None


def serve(settings: Settings, args: argparse.Namespace) -> int:
    from granian import Granian
    from granian.constants import Interfaces, Loops
    from granian.http import HTTP1Settings

    claim_port(settings.host, settings.port)
    url = database_url(settings)
    for migration_id in migrations.apply(url):
        print(f"applied {migration_id}", flush=True)
    # The workers build their app from the environment; hand them the resolved URL, and one
    # cursor key for all of them (a cursor from one worker must be valid at another).
    os.environ["FREYA_DATABASE_URL"] = url
    os.environ.setdefault("FREYA_CURSOR_SECRET", secrets.token_urlsafe(32))
    print(f"serving on http://{settings.host}:{settings.port} (OpenAPI UI at /schema)", flush=True)
    Granian(
        "service.app:create_app_from_env",
        factory=True,
        interface=Interfaces.ASGI,
        loop=Loops.uvloop,
        address=settings.host,
        port=settings.port,
        workers=settings.workers,
        # A worker that dies (killed, out of memory) is replaced instead of taking the service
        # down; granian still exits when a respawned worker dies again within seconds.
        respawn_failed_workers=True,
        # The slowest client's headers; its body is bounded by the request pipeline (a 408).
        http1_settings=HTTP1Settings(header_read_timeout=int(settings.request_read_timeout * 1000)),
    ).serve()
    return 0


def migrate(settings: Settings, args: argparse.Namespace) -> int:
    applied = migrations.apply(database_url(settings))
    for migration_id in applied:
        print(f"applied {migration_id}")
    if not applied:
        print("nothing to apply: the schema is at the latest migration")
    return 0


def rollback(settings: Settings, args: argparse.Namespace) -> int:
    undone = migrations.rollback(database_url(settings), count=args.count)
    for migration_id in undone:
        print(f"rolled back {migration_id}")
    if not undone:
        print("nothing to roll back")
    return 0


def migrate_status(settings: Settings, args: argparse.Namespace) -> int:
    states = migrations.status(database_url(settings))
    applied = [s.id for s in states if s.applied]
    print(f"current revision: {applied[-1] if applied else '(none)'}")
    for state in states:
        print(f"  [{'applied' if state.applied else 'pending'}] {state.id}")
    print(f"{len(applied)} applied, {len(states) - len(applied)} pending")
    return 0


def new_migration(settings: Settings, args: argparse.Namespace) -> int:
    for path in migrations.create(args.name):
        print(f"created {path.relative_to(migrations.MIGRATIONS_DIR.parent)}")
    return 0


def db_url(settings: Settings, args: argparse.Namespace) -> int:
    print(database_url(settings))
    return 0


def db_shell(settings: Settings, args: argparse.Namespace) -> int:
    url = database_url(settings)
    psql = str(devdb.binaries() / "psql")
    os.execv(psql, [psql, url])


def db_stop(settings: Settings, args: argparse.Namespace) -> int:
    if settings.database_url is not None:
        print("FREYA_DATABASE_URL is set: that server is not ours to stop")
        return 1
    stopped = devdb.EmbeddedPostgres(Path(settings.data_dir)).stop()
    print("embedded PostgreSQL stopped" if stopped else "embedded PostgreSQL was not running")
    return 0


def maintain(settings: Settings, args: argparse.Namespace) -> int:
    report = asyncio.run(_maintain(database_url(settings), args.operation, args.table))
    for run in report.tables:
        print(f"{report.operation} {run.table}: {run.seconds:.3f} s")
    print(f"done in {report.seconds:.3f} s")
    return 0


async def _maintain(url: str, operation: admin.Operation, table: admin.Table | None) -> admin.MaintenanceReport:
    conn = await asyncpg.connect(url)
    try:
        return await admin.run_maintenance(conn, operation, [table] if table else None)
    finally:
        await conn.close()


def purge_idempotency_keys(settings: Settings, args: argparse.Namespace) -> int:
    async def purge() -> int:
        conn = await asyncpg.connect(database_url(settings))
        try:
            return await idempotency.purge_expired(
                SharedConnectionDatabase(conn), timedelta(hours=settings.idempotency_ttl_hours)
            )
        finally:
            await conn.close()

    print(f"purged {asyncio.run(purge())} expired idempotency keys")
    return 0


def seed_data(settings: Settings, args: argparse.Namespace) -> int:
    async def run() -> seed.SeedReport:
        conn = await asyncpg.connect(database_url(settings))
        try:
            return await seed.seed(conn, args.messages, args.seed)
        finally:
            await conn.close()

    print(seed.describe(asyncio.run(run())))
    return 0


Command = Callable[[Settings, argparse.Namespace], int]


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m service", description="Freya backend")
    commands = root.add_subparsers(dest="command", required=True)

    def command(name: str, handler: Command, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text)
        sub.set_defaults(handler=handler)
        return sub

    command("serve", serve, "apply pending migrations, then serve the API with granian")
    command("migrate", migrate, "apply pending migrations")
    command("rollback", rollback, "undo the last migration(s)").add_argument(
        "--count", type=int, default=1, help="how many to undo (default 1)"
    )
    command("migrate-status", migrate_status, "show the current revision, applied and pending migrations")
    command("new-migration", new_migration, "create the next numbered migration pair").add_argument(
        "name", help="snake_case summary, e.g. add_message_flags"
    )
    maintenance = command("maintain", maintain, "run ANALYZE, VACUUM or both (VACUUM (ANALYZE))")
    maintenance.add_argument("operation", choices=typing.get_args(admin.Operation))
    maintenance.add_argument("--table", choices=admin.TABLES, help="one table (default: all of them)")
    command("purge-idempotency-keys", purge_idempotency_keys, "delete idempotency keys past their lifetime")
    seeding = command("seed", seed_data, "generate a realistic dataset (deterministic per --seed)")
    seeding.add_argument("--messages", type=int, default=seed.DEFAULT_MESSAGES, help="how many messages")
    seeding.add_argument("--seed", type=int, default=42, help="the random seed number")
    command("db-url", db_url, "print the database URL (starts the embedded server if needed)")
    command("db-shell", db_shell, "open psql on the database")
    command("db-stop", db_stop, "stop the embedded PostgreSQL")
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as error:
        print(f"freya: {error}", file=sys.stderr)
        return 2
    handler: Command = args.handler
    try:
        return handler(settings, args)
    except PortInUseError as error:
        print(f"freya: {error}", file=sys.stderr)
        return 1
    except (devdb.EmbeddedPostgresError, psycopg.OperationalError, OSError) as error:
        print(f"freya: database unavailable: {error}", file=sys.stderr)
        return 1
    except asyncpg.PostgresError as error:
        hint = " (run make migrate first?)" if isinstance(error, asyncpg.UndefinedTableError) else ""
        print(f"freya: database error: {error}{hint}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
