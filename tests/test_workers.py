"""The served process as operators run it: several granian workers, one view of metrics, JSON logs."""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.api import start_service


def requests_to(text: str, path: str) -> float:
    """freya_requests_total for one route template, summed over methods and statuses."""
    pattern = rf'^freya_requests_total\{{[^}}]*path="{re.escape(path)}"[^}}]*\}} (\S+)$'
    return sum(float(value) for value in re.findall(pattern, text, flags=re.MULTILINE))


def test_metrics_add_up_every_worker_and_logs_are_json(fresh_database: Callable[[], str], tmp_path: Path) -> None:
    process, base = start_service(
        fresh_database(), FREYA_WORKERS="2", FREYA_LOG_FORMAT="json", FREYA_DATA_DIR=str(tmp_path)
    )
    metrics_dirs = list((tmp_path / "metrics").iterdir())
    try:
        assert len(metrics_dirs) == 1  # this server's own, fresh
        sent = 0
        workers: set[str] = set()
        # New connections, eight at a time, so that both workers accept some; keep sending until
        # both have answered (each worker writes its own file), then compare the totals.
        limits = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(base_url=base, limits=limits, timeout=30) as http, ThreadPoolExecutor(8) as pool:
            while len(workers) < 2 and sent < 2_000:
                answers = list(pool.map(lambda _: http.get("/v1/users/123456789").status_code, range(80)))
                assert answers == [404] * len(answers)
                sent += len(answers)
                workers = {p.name for p in metrics_dirs[0].glob("counter_*.db")}
            assert len(workers) == 2, "one worker answered every request: the test proves nothing"
            # Every scrape, whichever worker answers it, sees all of them.
            for _ in range(6):
                scraped = http.get("/metrics")
                assert scraped.status_code == 200
                assert requests_to(scraped.text, "/v1/users/{user_id}") == sent
            pools = re.search(r"^freya_db_pool_max (\S+)$", scraped.text, flags=re.MULTILINE)
            assert pools is not None
            assert float(pools.group(1)) == 2 * 8  # both workers' pools
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    assert not metrics_dirs[0].exists()  # removed when the server stops

    records = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    access = [r for r in records if r["logger"] == "freya.access" and r["path"] == "/v1/users/123456789"]
    assert len(access) == sent
    assert {(r["method"], r["status"]) for r in access} == {("GET", 404)}
    assert all(r["request_id"] != "-" and r["duration_ms"] >= r["db_ms"] for r in access)
    granian = [r for r in records if r["logger"].startswith("_granian")]
    assert any("Spawning worker-2" in r["message"] for r in granian), output
    # Nothing on stderr or stdout is a log line in another format (stdout has serve's own report).
    others = [line for line in output.splitlines() if not line.startswith("{")]
    assert all(line.startswith(("applied ", "serving on ")) for line in others), others
