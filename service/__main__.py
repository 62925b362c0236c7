"""The command line: ``python -m service <command>``; the Makefile's targets call these."""

from __future__ import annotations

import argparse
import asyncio
import errno
import importlib.metadata
import multiprocessing
import os
import secrets
import shutil
import socket
import sys
import typing
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import asyncpg
import psycopg

from service import admin, devdb, idempotency, migrations, purge, seed
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
        except socket.gaierror as error:
            raise SettingsError(f"invalid setting: FREYA_HOST={host}: {error.strerror}") from None
        except OSError as error:
            if error.errno == errno.EADDRNOTAVAIL:
                raise SettingsError(f"invalid setting: FREYA_HOST={host} is not an address of this machine") from None
            hint = " (is another instance running?)" if error.errno == errno.EADDRINUSE else ""
            raise PortInUseError(f"cannot serve on {host}:{port}: {error.strerror}{hint}") from None


def serve(settings: Settings, args: argparse.Namespace) -> int:
    from granian import Granian
    from granian.constants import Interfaces, Loops
    from granian.http import HTTP1Settings
    from granian.log import LogLevels

    from service.observability import configure_logging, logging_config

    claim_port(settings.host, settings.port)
    configure_logging(settings.log_level, settings.log_format)
    url = database_url(settings)
    for migration_id in migrations.apply(url):
        print(f"applied {migration_id}", flush=True)
    # The workers build their app from the environment; hand them the resolved URL, and one
    # cursor key for all of them (a cursor from one worker must be valid at another).
    os.environ["FREYA_DATABASE_URL"] = url
    os.environ.setdefault("FREYA_CURSOR_SECRET", secrets.token_urlsafe(32))
    print(f"serving on http://{settings.host}:{settings.port} (OpenAPI UI at /schema)", flush=True)
    with metrics_directory(Path(settings.data_dir)) as metrics_dir:
        # prometheus_client picks its multiprocess mode when it is first imported, and this process
        # has imported it already: workers must start afresh (spawn), not as forks of this one.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        multiprocessing.set_start_method("spawn", force=True)
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
            # granian's own lines (start, workers, shutdown) in the service's format, on its handler.
            log_level=LogLevels(settings.log_level.lower()),
            log_dictconfig=logging_config(settings.log_level, settings.log_format),
        ).serve()
    return 0


@contextmanager
def metrics_directory(data_dir: Path) -> Iterator[Path]:
    """A fresh, empty directory for this server's worker metrics, removed when it stops.

    Named after the serving process; those of servers that are gone (killed, so never cleaned)
    are removed too, and a server's totals never include another's.
    """
    parent = data_dir / "metrics"
    parent.mkdir(parents=True, exist_ok=True)
    for old in parent.glob("serve-*"):
        pid = old.name.removeprefix("serve-")
        if pid.isdigit() and not _running(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    mine = parent / f"serve-{os.getpid()}"
    shutil.rmtree(mine, ignore_errors=True)
    mine.mkdir()
    try:
        yield mine
    finally:
        shutil.rmtree(mine, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # somebody else's process
        return True
    return True


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
    try:
        if args.check:  # the Makefile asks first, so a bad name is one line and nothing else
            migrations.check_summary(args.name)
            return 0
        created = migrations.create(args.name)
    except ValueError as error:
        print(f"freya: {error}", file=sys.stderr)
        return 2
    for path in created:
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


def purge_deleted(settings: Settings, args: argparse.Namespace) -> int:
    async def run() -> purge.PurgeReport:
        conn = await asyncpg.connect(database_url(settings))
        try:
            return await purge.purge(
                conn,
                retention=timedelta(days=settings.retention_days),
                changes_retention=timedelta(days=settings.changes_retention_days),
            )
        finally:
            await conn.close()

    print(asyncio.run(run()).describe())
    return 0


def seed_data(settings: Settings, args: argparse.Namespace) -> int:
    url = database_url(settings)
    for migration_id in migrations.apply(url):  # a fresh database can be seeded first, as `serve` would do
        print(f"applied {migration_id}", flush=True)

    async def run() -> seed.SeedReport:
        conn = await asyncpg.connect(url)
        try:
            return await seed.seed(conn, args.messages, args.seed)
        finally:
            await conn.close()

    print(seed.describe(asyncio.run(run())))
    return 0


Command = Callable[[Settings, argparse.Namespace], int]


class _Version(argparse.Action):
    """``--version``: the package, the API contract and the newest migration this code ships."""

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        from service.app import VERSION  # the app is heavy to import: only when asked

        package = importlib.metadata.version("freya-backend")
        print(f"freya-backend {package} (API {VERSION}, schema {migrations.migration_ids()[-1]})")
        parser.exit()


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m service", description="Freya backend")
    root.add_argument("--version", action=_Version, nargs=0, help="print the versions and exit")
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
    migration = command("new-migration", new_migration, "create the next numbered migration pair")
    migration.add_argument("name", help="snake_case summary, e.g. add_message_flags")
    migration.add_argument("--check", action="store_true", help="only check the name; create nothing")
    maintenance = command("maintain", maintain, "run ANALYZE, VACUUM or both (VACUUM (ANALYZE))")
    maintenance.add_argument("operation", choices=typing.get_args(admin.Operation))
    maintenance.add_argument("--table", choices=admin.TABLES, help="one table (default: all of them)")
    command(
        "purge",
        purge_deleted,
        "remove rows deleted over FREYA_RETENTION_DAYS ago and changes over FREYA_CHANGES_RETENTION_DAYS old",
    )
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
    except SettingsError as error:  # a setting only a command's work finds unusable (FREYA_HOST, FREYA_DATA_DIR)
        print(f"freya: {error}", file=sys.stderr)
        return 2
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
