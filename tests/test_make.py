"""The Makefile's operator targets as a user calls them from a shell: exact output, exit codes."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from collections.abc import Callable

import psycopg

from service import devdb, migrations
from service.app import VERSION
from service.settings import PROJECT_ROOT


def make(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``make …`` in the checkout, as from a terminal (not as a sub-make of ``make test``)."""
    environ = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    return subprocess.run(
        ["make", *args], cwd=PROJECT_ROOT, env={**environ, **env}, capture_output=True, text=True, check=False
    )


def test_db_url_prints_only_the_url_so_psql_can_use_it(fresh_database: Callable[[], str]) -> None:
    url = fresh_database()
    result = make("db-url", FREYA_DATABASE_URL=url)
    assert result.returncode == 0, result.stderr
    assert result.stdout == url + "\n"
    psql = devdb.binaries() / "psql"
    shell = subprocess.run(
        ["bash", "-c", f'"{psql}" "$(make db-url)" -tAc "SELECT count(*) FROM _yoyo_migration"'],
        cwd=PROJECT_ROOT,
        env={**os.environ, "FREYA_DATABASE_URL": url, "MAKEFLAGS": "", "MAKELEVEL": ""},
        capture_output=True,
        text=True,
        check=False,
    )
    assert shell.returncode == 0, shell.stderr
    assert shell.stdout.strip() == str(len(migrations.migration_ids()))


def test_migration_without_or_with_a_bad_name_is_one_line_and_creates_nothing() -> None:
    before = sorted(p.name for p in migrations.MIGRATIONS_DIR.iterdir())
    for args, says in (
        ((), "a migration needs a name"),
        (("name=Add-Flags",), "'Add-Flags' must be snake_case"),
        (("name=it's",), "must be snake_case"),
    ):
        result = make("migration", *args)
        assert result.returncode != 0
        assert result.stdout == ""
        assert len(result.stderr.splitlines()) == 1, result.stderr
        assert says in result.stderr
        assert "Traceback" not in result.stderr
    assert sorted(p.name for p in migrations.MIGRATIONS_DIR.iterdir()) == before


def test_purge_idempotency_keys_target_deletes_only_expired_keys(fresh_database: Callable[[], str]) -> None:
    url = fresh_database()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO idempotency_keys (principal, key, fingerprint, created_at) VALUES "
            "('-', 'old', '\\x00', now() - interval '25 hours'), ('-', 'new', '\\x00', now())"
        )
        result = make("purge-idempotency-keys", FREYA_DATABASE_URL=url)
        assert result.returncode == 0, result.stderr
        assert "purged 1 expired idempotency keys" in result.stdout
        assert conn.execute("SELECT key FROM idempotency_keys").fetchall() == [("new",)]


def test_version() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service", "--version"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    package = importlib.metadata.version("freya-backend")
    assert result.stdout == f"freya-backend {package} (API {VERSION}, schema {migrations.migration_ids()[-1]})\n"
