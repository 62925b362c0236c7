"""`make loadtest`'s Locust mix runs with no failures on whatever data the service has."""

from __future__ import annotations

import asyncio
import csv
import importlib.util
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest

from service import seed
from service.settings import PROJECT_ROOT
from tests.api import start_service

# Never imported here: importing locust monkey-patches the whole process for gevent.
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("locust") is None, reason="Locust is installed with the dev extras (make install)"
)


async def seed_messages(url: str, messages: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        await seed.seed(conn, messages, quiet=True)
    finally:
        await conn.close()


@pytest.mark.parametrize("messages", [0, 4_000], ids=["empty database", "seeded"])
def test_the_load_test_has_no_failures(fresh_database: Callable[[], str], tmp_path: Path, messages: int) -> None:
    url = fresh_database()
    if messages:
        asyncio.run(seed_messages(url, messages))
    process, base = start_service(url, FREYA_DATA_DIR=str(tmp_path))
    try:
        locust = subprocess.run(
            [
                *(sys.executable, "-m", "locust", "-f", "tests/load/locustfile.py", "--headless"),
                *("-u", "4", "-r", "4", "-t", "8s", "--host", base, "--csv", str(tmp_path / "loadtest")),
            ],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)
    assert locust.returncode == 0, locust.stdout[-3000:] + locust.stderr[-3000:]
    with (tmp_path / "loadtest_stats.csv").open() as stats:
        rows = {row["Name"]: row for row in csv.DictReader(stats)}
    # How many requests a few seconds hold depends on the machine; that none failed does not.
    assert int(rows["Aggregated"]["Request Count"]) > 0
    assert int(rows["Aggregated"]["Failure Count"]) == 0
    assert all(int(row["Failure Count"]) == 0 for row in rows.values())
    assert "conversations and" in locust.stdout + locust.stderr  # it learned what exists
