"""The bench's CPU meter (tests/bench/cpu.py) on real processes: ours, a child's, PostgreSQL's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from service.db import Connection
from tests.bench import cpu

# About a third of a second of one core's work, then the child says so.
_BUSY = (
    "import sys, time\n"
    "end = time.process_time() + 0.3\n"
    "while time.process_time() < end: pass\n"
    "print('done', flush=True)\n"
)


def test_a_tree_counts_its_live_children_and_those_that_ended() -> None:
    mine = {"tree": os.getpid()}
    before = cpu.tree_seconds(mine)
    subprocess.run([sys.executable, "-c", _BUSY], check=True, capture_output=True)
    ended = cpu.tree_seconds(mine)["tree"] - before["tree"]
    # The child ended and was waited for: its time is its parent's (ours) now.
    assert ended >= 0.25
    with subprocess.Popen(
        [sys.executable, "-c", _BUSY + "sys.stdin.read()\n"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    ) as child:
        assert child.stdout is not None
        assert child.stdout.readline() == b"done\n"
        # Alive, waiting on its stdin: counted in its own tree and in ours.
        live = cpu.tree_seconds({"tree": os.getpid(), "child": child.pid})
        child.kill()
    assert live["child"] >= 0.25
    assert live["tree"] >= before["tree"] + ended + live["child"]
    assert cpu.ms_per_call({"tree": 1.0}, {"tree": 1.5}, 250) == {"tree": 2.0}
    assert cpu.ms_per_call({"tree": 1.0}, {"tree": 1.5}, 0) == {}


def _postmaster_here(data_directory: str) -> int | None:
    """The server's own record of its process (postmaster.pid's first line), when its data
    directory is on this machine."""
    try:
        return int((Path(data_directory) / "postmaster.pid").read_text().split()[0])
    except OSError:
        return None


async def test_a_backends_server_is_found_when_it_runs_here(conn: Connection) -> None:
    backend = await conn.fetchval("SELECT pg_backend_pid()")
    expected = _postmaster_here(await conn.fetchval("SHOW data_directory"))
    assert cpu.postgres_server(os.getpid()) is None  # not a PostgreSQL process
    server = cpu.postgres_server(backend)
    assert server == expected  # None: FREYA_TEST_DATABASE_URL names a server elsewhere
    if server is None:
        return
    before = cpu.tree_seconds({"postgres": server})
    await conn.fetchval("SELECT count(*) FROM generate_series(1, 5000000)")
    assert cpu.tree_seconds({"postgres": server})["postgres"] - before["postgres"] >= 0.05
