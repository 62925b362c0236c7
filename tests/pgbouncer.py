"""A PgBouncer of the test run's own: Debian's ``pgbouncer`` binary, its config in a temporary directory.

Used by the PgBouncer tests and by ``make bench``. It listens on a free local TCP port and passes
every database name through to the PostgreSQL server it stands in front of.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs, urlsplit

from service import devdb
from tests.api import free_port

Mode = Literal["session", "transaction"]


def binary() -> str | None:
    """The pgbouncer executable, or None where the package is not installed."""
    return shutil.which("pgbouncer") or next(
        (path for path in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.access(path, os.X_OK)), None
    )


class PgBouncer:
    """``pgbouncer`` in ``mode`` in front of the server of ``server_url``; ``pool_size`` server
    connections per database and user (small, so that clients really share them)."""

    def __init__(self, server_url: str, mode: Mode, pool_size: int = 2) -> None:
        executable = binary()
        if executable is None:
            raise FileNotFoundError("pgbouncer is not installed")
        self.executable = executable
        self.directory = Path(tempfile.mkdtemp(prefix=f"freya-pgbouncer-{mode}-"))
        self.port = free_port()
        parts = urlsplit(server_url)
        query = parse_qs(parts.query)
        self.user = parts.username or "postgres"
        host = parts.hostname or query.get("host", ["/tmp"])[0]
        port = parts.port or int(query.get("port", ["5432"])[0])
        (self.directory / "userlist.txt").write_text(f'"{self.user}" "{parts.password or ""}"\n')
        (self.directory / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"* = host={host} port={port}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {self.directory / 'userlist.txt'}\n"
            f"pool_mode = {mode}\n"
            f"default_pool_size = {pool_size}\n"
            "max_client_conn = 500\n"
            f"logfile = {self.directory / 'pgbouncer.log'}\n"
            f"pidfile = {self.directory / 'pgbouncer.pid'}\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, database: str) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def start(self) -> PgBouncer:
        command = [self.executable]
        if os.geteuid() == 0:  # PgBouncer refuses to run as root: it switches to the servers' user
            entry = devdb._ensure_system_user(devdb.SYSTEM_USER)
            for path in (self.directory, *self.directory.iterdir()):
                os.chown(path, entry.pw_uid, entry.pw_gid)
            command += ["-u", devdb.SYSTEM_USER]
        self.process = subprocess.Popen(
            [*command, str(self.directory / "pgbouncer.ini")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        for _ in range(300):
            if self.process.poll() is not None:
                raise RuntimeError(f"pgbouncer exited:\n{self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"pgbouncer did not listen on port {self.port}:\n{self.log()}")

    def log(self) -> str:
        path = self.directory / "pgbouncer.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)
        shutil.rmtree(self.directory, ignore_errors=True)
