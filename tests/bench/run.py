"""make bench: each hot operation through the service (wrk) and the same SQL through pgbench.

Both run in the same go, on the same database, with the same number of concurrent clients, for
the same time; pgbench uses -M prepared (as asyncpg does) over the Unix socket the service's
pool also uses. The ratio service/pgbench says how much of PostgreSQL's own rate for that SQL
the whole HTTP stack keeps. Results go to a JSON file and a PNG chart; BENCHMARKS.md explains.

    python -m tests.bench.run [--messages 1000000] [--duration 10] [--connections 16] [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlencode

import asyncpg
import psycopg
from psycopg import sql as pgsql

from service import context, devdb, migrations, search
from service import conversations as conversation_queries
from service import messages as message_queries
from service import seed as seeding
from service.admin import run_maintenance
from service.cursors import CursorCodec, TimeKey
from service.db import Connection
from service.pages import estimate_rows
from service.queries import Query
from service.settings import PROJECT_ROOT, load_settings
from service.timestamps import to_micros
from tests.bench import cpu

LOAD = PROJECT_ROOT / "tests" / "load"
BENCH_DATABASE = "freya_bench"
# Targets as same-run ratios (issue 9), or as figures of this machine where the issue gives one.
TARGETS = {
    "page_50": "service >= 0.25x pgbench on the bare page query, >= 1.0x the minimal Litestar handler",
    "message_by_id": "service >= 0.6x the raw ASGI app",
    "deep_keyset_page": "p50 within 1.5x of the newest page's",
    "batch_create_1000": ">= 50,000 messages/s and >= 0.6x COPY of the same batches (service/reference)",
    "search_common": "p99 < 50 ms",
    "search_user_heavy": "p99 < 20 ms, within 2x of search_user_light",
    "search_conversation": "p99 < 20 ms, within 2x of search_conversation_light",
    "statement_cost": "each read statement <= 1.3x the bare statement's per-call cost (pgbench)",
}


@dataclass
class Measure:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int = 0
    # CPU milliseconds per request by tier ("postgres", "server"; cpu.py), where measured.
    cpu_ms: dict[str, float] = field(default_factory=dict)


@dataclass
class Result:
    name: str
    description: str
    service: Measure | None = None
    # pgbench on the statement(s) the service runs for one request, and on the bare SQL that
    # returns the same rows (the honest reference), and the reference app where there is one.
    pgbench: Measure | None = None
    pgbench_bare: Measure | None = None
    reference: Measure | None = None
    reference_name: str = ""
    ratios: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("installing wrk (apt-get) …", flush=True)
        subprocess.run(["apt-get", "update", "-qq"], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, stdout=subprocess.DEVNULL)
        found = shutil.which("wrk")
    if not found:
        sys.exit("make bench needs wrk (a C HTTP load generator): install it, e.g. apt-get install wrk")
    return found


def bench_database(messages: int) -> str:
    """The bench database with exactly ``messages`` seeded messages (made and seeded when needed)."""
    settings = load_settings()
    admin_url = settings.database_url or devdb.EmbeddedPostgres(Path(settings.data_dir)).start()
    url = devdb.with_database(admin_url, BENCH_DATABASE)
    with psycopg.connect(admin_url, autocommit=True) as admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (BENCH_DATABASE,)).fetchone()
    if exists:
        with psycopg.connect(url) as conn:
            try:
                count = conn.execute("SELECT count(*) FROM messages").fetchone()
            except psycopg.Error:
                count = None
        if count == (messages,):
            migrations.apply(url)
            return url
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(pgsql.Identifier(BENCH_DATABASE)))
        admin.execute(pgsql.SQL("CREATE DATABASE {}").format(pgsql.Identifier(BENCH_DATABASE)))
    migrations.apply(url)

    async def fill() -> None:
        conn = await asyncpg.connect(url)
        try:
            report = await seeding.seed(conn, messages, 42)
            print(seeding.describe(report), flush=True)
            # Freshly COPYed tables have no visibility map yet: without this, autovacuum starts in the
            # middle of a measurement and index-only scans still visit the heap.
            await run_maintenance(conn, "vacuum_analyze", None)
        finally:
            await conn.close()

    asyncio.run(fill())
    return url


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Server:
    """An HTTP server process on a free port: the service (python -m service serve) or a reference app."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        environment = {**os.environ, **env, "FREYA_PORT": str(self.port), "FREYA_LOG_LEVEL": "WARNING"}
        environment.pop("FREYA_API_TOKENS", None)
        # Kept open for the server's lifetime and read only if it fails to start.
        self.log = tempfile.TemporaryFile()  # noqa: SIM115
        command = [part.replace("{port}", str(self.port)) for part in command]
        self.process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=environment, stdout=self.log, stderr=self.log)
        for _ in range(600):
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if self.process.poll() is not None:
                    self.log.seek(0)
                    sys.exit(f"{command} did not start:\n" + self.log.read().decode(errors="replace"))
                time.sleep(0.1)
        sys.exit(f"{command} did not start listening within 60 s")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def service(url: str, workers: int, cursor_secret: str) -> Server:
    env = {"FREYA_DATABASE_URL": url, "FREYA_WORKERS": str(workers), "FREYA_CURSOR_SECRET": cursor_secret}
    return Server([sys.executable, "-m", "service", "serve"], env)


def reference(url: str, workers: int, app: str, interface: str) -> Server:
    granian = [sys.executable, "-m", "granian", "--interface", interface, "--loop", "uvloop"]
    command = [*granian, "--workers", str(workers), "--port", "{port}", "--log-level", "warning", app]
    return Server(command, {"FREYA_DATABASE_URL": url})


def run_wrk(wrk: str, url: str, connections: int, duration: int, script: Path | None, env: dict[str, str]) -> Measure:
    command = [wrk, "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "--timeout", "10s"]
    if script is not None:
        command += ["-s", str(script)]
    output = subprocess.run([*command, url], capture_output=True, text=True, check=True, env={**os.environ, **env})
    text = output.stdout

    def latency(percentile: str) -> float:
        match = re.search(rf"^\s*{percentile}%\s+([\d.]+)(us|ms|s)\s*$", text, flags=re.MULTILINE)
        if match is None:
            return float("nan")
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    rate = re.search(r"Requests/sec:\s+([\d.]+)", text)
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    errors = int(bad.group(1)) if bad else 0
    return Measure(float(rate.group(1)) if rate else 0.0, latency("50"), latency("99"), errors)


def literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "ARRAY[" + ", ".join(literal(v) for v in value) + "]" if value else "'{}'"
    if isinstance(value, dict):
        return "'" + json.dumps(value).replace("'", "''") + "'"
    return "'" + str(value).replace("'", "''") + "'"


def with_values(text: str, values: list[str]) -> str:
    """``text`` with its placeholders $1, $2, … replaced by ``values`` (the highest first, so $1
    is not taken for the start of $10)."""
    for number in range(len(values), 0, -1):
        text = text.replace(f"${number}", values[number - 1])
    return text


def pgbench_script(query: Query, params: dict[str, Any], variables: dict[str, str] | None = None) -> str:
    """The query's own SQL with its parameters as literals, or as pgbench variables (``:name``)."""
    text = with_values(
        query.sql,
        [f":{name}" if variables and name in variables else literal(params[name]) for name in query.params],
    )
    sets = "".join(f"\\set {name} {expression}\n" for name, expression in (variables or {}).items())
    return sets + text.rstrip().rstrip(";") + ";\n"


def run_pgbench(url: str, script: str, connections: int, duration: int) -> Measure:
    pgbench = str(devdb.binaries() / "pgbench")
    with tempfile.TemporaryDirectory() as work:
        script_file = Path(work) / "script.sql"
        script_file.write_text(script)
        output = subprocess.run(
            [
                pgbench,
                "-n",
                "-M",
                "prepared",
                f"-c{connections}",
                "-j1",
                f"-T{duration}",
                "-l",
                "--log-prefix",
                str(Path(work) / "log"),
                "-f",
                str(script_file),
                url,
            ],
            capture_output=True,
            text=True,
            check=False,
            cwd=work,
        )
        if output.returncode != 0:
            raise RuntimeError(f"pgbench failed: {output.stderr}")
        latencies = sorted(
            int(line.split()[2]) / 1000 for log in Path(work).glob("log*") for line in log.read_text().splitlines()
        )
    rate = re.search(r"tps = ([\d.]+)", output.stdout)
    failed = re.search(r"number of failed transactions: (\d+)", output.stdout)

    def percentile(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] if latencies else float("nan")

    return Measure(
        float(rate.group(1)) if rate else 0.0, percentile(0.5), percentile(0.99), int(failed.group(1)) if failed else 0
    )


def offset_vs_keyset(url: str, conversation_id: int, depths: list[int]) -> list[dict[str, float]]:
    """Median latency (ms) of a 50-message page at each depth, by OFFSET and by keyset, in SQL."""

    async def measure() -> list[dict[str, float]]:
        conn = await asyncpg.connect(url)
        try:
            query = message_queries.sql.list_messages_newest_first
            base = {"conversation_id": conversation_id, "since": None, "until": None, "role": None, "limit": 50}
            curve = []
            for depth in depths:
                row = await conn.fetchrow(
                    'SELECT "timestamp", id FROM messages WHERE conversation_id = $1 '
                    'ORDER BY "timestamp" DESC, id DESC OFFSET $2 LIMIT 1',
                    conversation_id,
                    max(depth - 1, 0),
                )
                assert row is not None
                keyset = (
                    {"before_ts": row["timestamp"], "before_id": row["id"]}
                    if depth
                    else {"before_ts": None, "before_id": None}
                )
                timings: dict[str, float] = {}
                for label, params in (
                    ("offset_ms", {**base, "before_ts": None, "before_id": None, "offset": depth}),
                    ("keyset_ms", {**base, **keyset, "offset": 0}),
                ):
                    samples = []
                    # Deep OFFSET pages take seconds each: fewer samples there.
                    for _ in range(15 if depth <= 10_000 else 5):
                        started = time.perf_counter()
                        await conn.fetchrow(query.sql, *query.args(params))
                        samples.append((time.perf_counter() - started) * 1000)
                    timings[label] = statistics.median(samples)
                curve.append({"depth": depth, **timings})
            return curve
        finally:
            await conn.close()

    return asyncio.run(measure())


def chart(results: list[Result], curve: list[dict[str, float]], settings: dict[str, Any], path: Path) -> None:
    """Left: each operation's req/s through the service beside its references (pgbench on the bare
    SQL, the reference app), with p99; right: OFFSET against keyset paging by depth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = [r for r in results if r.service is not None]
    figure, (bars, lines) = plt.subplots(1, 2, figsize=(16, 6.5))
    rows = range(len(measured))
    height = 0.27
    series: tuple[tuple[str, Callable[[Result], Measure | None], str], ...] = (
        ("service", lambda r: r.service, "#4c72b0"),
        ("reference app", lambda r: r.reference, "#55a868"),
        ("pgbench, bare SQL", lambda r: r.pgbench_bare or r.pgbench, "#c44e52"),
    )
    for offset, (label, pick, color) in enumerate(series):
        picked = [pick(r) for r in measured]
        values = [m.requests_per_second if m else 0 for m in picked]
        positions = [row + (offset - 1) * height for row in rows]
        bars.barh(positions, values, height=height, color=color, label=label)
        for position, result in zip(positions, measured, strict=True):
            figure_measure = pick(result)
            if figure_measure:
                bars.text(
                    figure_measure.requests_per_second,
                    position,
                    f" {figure_measure.requests_per_second:,.0f}/s p99 {figure_measure.p99_ms:.1f} ms",
                    va="center",
                    fontsize=7,
                )
    bars.set_yticks(list(rows), [r.name for r in measured])
    bars.set_xscale("log")
    bars.set_xlabel("requests (or transactions) per second, log scale")
    bars.set_title(
        f"Service vs references, same run: {settings['messages']:,} messages, "
        f"{settings['workers']} workers, {settings['duration_s']} s each"
    )
    bars.invert_yaxis()
    bars.legend(loc="lower right", fontsize=8)
    depths = [point["depth"] for point in curve]
    lines.plot(depths, [p["offset_ms"] for p in curve], marker="o", label="OFFSET")
    lines.plot(depths, [p["keyset_ms"] for p in curve], marker="o", label="keyset (cursor)")
    lines.set_xlabel("page depth (messages skipped)")
    lines.set_ylabel("median latency of a 50-message page (ms, log scale)")
    lines.set_yscale("log")
    lines.set_title("OFFSET vs keyset paging by depth")
    lines.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def scalar(conn: psycopg.Connection[Any], query: str | pgsql.Composed, *args: Any) -> Any:
    row = conn.execute(query, args).fetchone()
    assert row is not None, query
    return row[0] if len(row) == 1 else row


@dataclass
class Operation:
    name: str
    description: str
    path: str  # through the service (and the reference app), or "" for a pgbench-only comparison
    # pgbench script: the statement(s) the service runs for one request; None where pgbench cannot
    # run them (posting messages COPYs them, and a pgbench script has no data to COPY).
    ours: str | None
    bare: str | None = None  # pgbench script: the bare SQL returning the same rows
    script: Path | None = None  # wrk Lua script
    env: dict[str, str] = field(default_factory=dict)
    connections: int = 16
    # "page" or "message": which reference app serves the same path; "copy": COPY of the same batches
    reference: str = ""
    # Requests sent and not counted before a server's first measured run of this operation (reads
    # only): the first use of a statement on each pooled connection prepares it, which would
    # otherwise land in the p99 of the side that runs first.
    warm_up: bool = True


def bare_script(sql: str, variables: dict[str, str] | None = None) -> str:
    sets = "".join(f"\\set {name} {expression}\n" for name, expression in (variables or {}).items())
    return sets + sql.rstrip().rstrip(";") + ";\n"


class _Recording:
    """A connection that keeps each statement run through it, its arguments written in as literals
    (pgbench then runs what the service ran)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.statements: list[str] = []

    async def fetch(self, text: str, *args: Any) -> list[asyncpg.Record]:
        text = with_values(text, [literal(arg) for arg in args])
        self.statements.append(bare_script(text))
        return await self.conn.fetch(text)


def window_script(url: str, conversation_id: int, max_tokens: int) -> tuple[str, int]:
    """The statements a running service runs for this context window (include_system=false), for
    pgbench, and how many messages it answers. The window is read a few times first: a service
    sizes a window's first chunk by the windows it read before."""

    async def record() -> tuple[str, int]:
        conn = await asyncpg.connect(url)
        try:
            for _ in range(20):
                recording = _Recording(conn)
                window = await context.read_window(
                    cast(Connection, recording),
                    message_queries.FULL,
                    conversation_id,
                    max_tokens,
                    include_system=False,
                    role=None,
                )
        finally:
            await conn.close()
        assert window is not None
        return "".join(recording.statements), len(window[0])

    return asyncio.run(record())


# Candidates for a scoped search's word: the seed's least frequent vocabulary words, then its rare
# words, which have fewer matches at any size. Single words: with an "or" of several, the GIN scan
# reads the scope's whole posting list (see BENCHMARKS.md).
_SCOPED_WORDS = (
    *("lisbon", "porto", "paris", "berlin", "rome", "madrid", "london", "tokyo"),
    *("kyoto", "seoul", "boston", "chicago", "denver", "seattle", "toronto", "sydney"),
    *("quokka", "zeppelin", "marzipan", "fjord", "theremin", "axolotl", "sextant", "origami"),
)


def word_in_at_most(conn: psycopg.Connection[Any], column: str, value: int, most: int = 1000) -> tuple[str, int]:
    """The candidate query with the most matches, but at most ``most``, among the messages whose
    ``column`` ("user_id" or "conversation_id") is ``value``; and its number of matches."""
    scoped = pgsql.SQL("SELECT count(*) FROM messages WHERE {} = %s AND search @@ search_query(%s)").format(
        pgsql.Identifier(column)
    )
    counts = {q: scalar(conn, scoped, value, q) for q in _SCOPED_WORDS}
    fitting = {q: n for q, n in counts.items() if 0 < n <= most} or {min(counts, key=counts.__getitem__): 0}
    best = max(fitting, key=fitting.__getitem__)
    return best, counts[best]


def planned_search_choice(url: str, filters: dict[str, Any]) -> tuple[int, bool]:
    """What the service asks PostgreSQL before a search, to choose its statement: the estimate of
    its matches (for a whole-corpus search), and whether a scoped one filters by its scope."""

    async def estimate() -> tuple[int, bool]:
        conn = await asyncpg.connect(url)
        try:
            async with conn.transaction():
                await search.sql.plan_for_these_values.val(conn)
                return (
                    await estimate_rows(conn, search.sql.count_matching_messages, **filters),
                    await search.filter_by_scope(conn, filters),
                )
        finally:
            await conn.close()

    return asyncio.run(estimate())


BATCH_CONTENTS = [f"batch message {n} with some ordinary words in it" for n in range(1000)]
BATCH_ROLES = ["user", "assistant"] * 500


def copy_batches(
    url: str, connections: int, duration: int, conversations: int = 1000, tag: str | None = None
) -> Measure:
    """What the schema physically allows for batch_create_1000: the same 1,000-message batches
    COPYed into messages (asyncpg's binary copy_records_to_table), one transaction per batch, into
    a random one of the first ``conversations`` conversations, on ``connections`` connections for
    ``duration`` seconds. The same indexes, constraints and triggers apply (the row trigger computes
    search, as COPY cannot). A request's rate is a batch's: req/s x 1,000 is messages/s."""

    async def run() -> Measure:
        pool = await asyncpg.create_pool(url, min_size=connections, max_size=connections)
        try:
            rows = await pool.fetch("SELECT id, user_id FROM conversations ORDER BY id LIMIT $1", conversations)
            owners: dict[int, int] = {row["id"]: row["user_id"] for row in rows}
            topic_id = None if tag is None else await pool.fetchval("SELECT id FROM topic_ids(ARRAY[$1::text])", tag)
            ids = list(owners)
            latencies: list[float] = []
            deadline = time.perf_counter() + duration

            async def client(rng: random.Random) -> None:
                async with pool.acquire() as conn:
                    while time.perf_counter() < deadline:
                        conversation = rng.choice(ids)
                        owner = owners[conversation]
                        batch_rows = [
                            (conversation, owner, role, content)
                            for role, content in zip(BATCH_ROLES, BATCH_CONTENTS, strict=True)
                        ]
                        started = time.perf_counter()
                        async with conn.transaction():
                            if topic_id is None:
                                await conn.copy_records_to_table(
                                    "messages",
                                    records=batch_rows,
                                    columns=["conversation_id", "user_id", "role", "content"],
                                )
                            else:
                                new_ids = await seeding.sql.reserve_ids.val(
                                    conn, table="messages", count=len(batch_rows)
                                )
                                # Each row with its copy of its tags (migration 0030), which the
                                # tags' triggers are told to skip, as the service's batch does.
                                await conn.copy_records_to_table(
                                    "messages",
                                    records=[(i, *row, [topic_id]) for i, row in zip(new_ids, batch_rows, strict=True)],
                                    columns=["id", "conversation_id", "user_id", "role", "content", "topic_ids"],
                                )
                                await seeding.sql.tags_of_new_messages.val(conn)
                                await conn.copy_records_to_table(
                                    "message_topics",
                                    records=[(topic_id, i) for i in new_ids],
                                    columns=["topic_id", "message_id"],
                                )
                        latencies.append((time.perf_counter() - started) * 1000)

            started = time.perf_counter()
            await asyncio.gather(*(client(random.Random(n)) for n in range(connections)))
            elapsed = time.perf_counter() - started
        finally:
            await pool.close()
        latencies.sort()
        return Measure(
            len(latencies) / elapsed,
            latencies[len(latencies) // 2],
            latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        )

    return asyncio.run(run())


def depths_for(size: int) -> list[int]:
    """Page depths for the paging curve that exist in a conversation of ``size`` messages."""
    deepest = max(size - 60, 0)
    return sorted({0, *(d for d in (1_000, 10_000, 50_000, 100_000, 200_000) if d < deepest), min(deepest, 200_000)})


def measure(
    operation: Operation,
    wrk: str,
    url: str,
    servers: dict[str, Server],
    duration: int,
    rounds: int,
    postgres: int | None,
) -> Result:
    """One operation's figures. Against a reference app the sides run in ``rounds`` alternating
    rounds (service, reference app, pgbench on ours, pgbench bare; again), each ``duration`` long:
    this shared machine's speed drifts over minutes by more than the targets' margins, and a
    drift then weighs on every side alike instead of on whichever ran last. Each side's figure
    is its median round (rate, p50) and its worst round's p99; each ratio is the median of the
    rounds' own ratios, all of them kept in ``extra["rounds"]``. ``postgres``: the PostgreSQL
    server's process when it runs on this machine, whose CPU per request each HTTP and COPY run
    reports (with the answering server's)."""
    result = Result(operation.name, operation.description)

    def metered(run: Callable[[], Measure], server: Server | None = None) -> Measure:
        """run()'s figures with the CPU each request cost PostgreSQL and ``server``."""
        roots = {} if postgres is None else {"postgres": postgres}
        if server is not None:
            roots["server"] = server.process.pid
        before = cpu.tree_seconds(roots)
        measured = run()
        measured.cpu_ms = cpu.ms_per_call(before, cpu.tree_seconds(roots), measured.requests_per_second * duration)
        return measured

    sides: dict[str, list[Measure]] = {}

    def through_http(side: str, server: str) -> None:
        if operation.warm_up and side not in sides:
            run_wrk(
                wrk, servers[server].base + operation.path, operation.connections, 2, operation.script, operation.env
            )
        sides.setdefault(side, []).append(
            metered(
                lambda: run_wrk(
                    wrk,
                    servers[server].base + operation.path,
                    operation.connections,
                    duration,
                    operation.script,
                    operation.env,
                ),
                servers[server],
            )
        )

    def through_pgbench(side: str, script: str | None, seconds: int) -> None:
        if script is not None:
            sides.setdefault(side, []).append(run_pgbench(url, script, operation.connections, seconds))

    def through_copy(side: str, tag: str | None) -> None:
        sides.setdefault(side, []).append(metered(lambda: copy_batches(url, operation.connections, duration, tag=tag)))

    if operation.reference == "copy":
        # What the schema physically allows, alternating with the service in rounds as a reference
        # app does (the service used to run first and alone, and then paid alone for the writes
        # that follow a seed: a checkpoint's full-page images, the GIN index's pending list).
        # Beside COPY of the batches, COPY of the same batches with their tags (the service's
        # batches tag every message): the messages with ids drawn first, then their message_topics.
        for _ in range(rounds):
            through_http("service", "service")
            through_copy("reference", None)
            through_copy("copy_with_tags", "batch")
    elif operation.reference:
        for _ in range(rounds):
            through_http("service", "service")
            through_http("reference", operation.reference)
            through_pgbench("pgbench", operation.ours, duration)
            through_pgbench("pgbench_bare", operation.bare, duration)
    else:
        # The service once, whole (its latency targets read one run's p99); the two statements
        # alternate in rounds that share the same time between them.
        if operation.path:
            through_http("service", "service")
        both = operation.ours is not None and operation.bare is not None
        seconds = max(1, round(duration / rounds)) if both else duration
        for _ in range(rounds if both else 1):
            through_pgbench("pgbench", operation.ours, seconds)
            through_pgbench("pgbench_bare", operation.bare, seconds)
    result.reference_name = "COPY" if operation.reference == "copy" else operation.reference
    for side, measures in sides.items():
        if side == "copy_with_tags":
            result.extra[side] = asdict(_median_round(measures))
        else:
            setattr(result, side, _median_round(measures))
    alternated = {side: measures for side, measures in sides.items() if len(measures) > 1}
    if alternated:
        result.extra["rounds"] = [
            {side: measures[i].requests_per_second for side, measures in alternated.items()}
            for i in range(min(len(measures) for measures in alternated.values()))
        ]

    def ratio(top: str, bottom: str) -> float | None:
        """top's rate ÷ bottom's: the median of the rounds' own ratios when both ran in the same
        rounds, else of the medians (None when either side was not run)."""
        if top not in sides or bottom not in sides:
            return None
        if len(sides[top]) != len(sides[bottom]):
            rates = [_median_round(sides[top]).requests_per_second, _median_round(sides[bottom]).requests_per_second]
            return round(rates[0] / rates[1], 3) if rates[1] else None
        pairs = list(zip(sides[top], sides[bottom], strict=True))
        if not all(b.requests_per_second for _, b in pairs):
            return None
        return round(statistics.median(a.requests_per_second / b.requests_per_second for a, b in pairs), 3)

    sql_reference = "pgbench_bare" if "pgbench_bare" in sides else "pgbench"
    named = {
        "service/pgbench_bare": ratio("service", sql_reference),
        "service/reference": ratio("service", "reference"),
        "service/copy_with_tags": ratio("service", "copy_with_tags"),
        # Per-call cost of our statement(s) relative to the bare SQL: > 1 costs PostgreSQL more.
        "statement_cost": ratio("pgbench_bare", "pgbench"),
    }
    result.ratios.update({name: value for name, value in named.items() if value is not None})
    return result


def _median_round(measures: list[Measure]) -> Measure:
    """Rounds of one side as one figure: the median rate, p50 and CPU per request, the worst p99,
    every error."""
    tiers = dict.fromkeys(name for m in measures for name in m.cpu_ms)
    return Measure(
        statistics.median(m.requests_per_second for m in measures),
        statistics.median(m.p50_ms for m in measures),
        max(m.p99_ms for m in measures),
        sum(m.errors for m in measures),
        {name: statistics.median(m.cpu_ms[name] for m in measures if name in m.cpu_ms) for name in tiers},
    )


def page_through_pgbouncer(
    wrk: str, url: str, path: str, workers: int, connections: int, duration: int, secret: str
) -> dict[str, Any]:
    """The page request through PgBouncer in transaction mode beside the direct connection, in one go.

    Two services on the same database, one after the other: one connected directly, one through a
    PgBouncer of its own (FREYA_POOLER=pgbouncer-transaction, two server connections per core). The
    ratio is what the bouncer costs: an extra hop, a transaction around each use that sets the
    statement timeout, and statements parsed each time instead of prepared once.
    """
    from tests.pgbouncer import PgBouncer, binary

    if binary() is None:
        return {"skipped": "pgbouncer is not installed (apt-get install pgbouncer)"}
    pool_size = 2 * (os.cpu_count() or 2)
    measures: dict[str, Measure] = {}
    bouncer = PgBouncer(url, "transaction", pool_size=pool_size).start()
    try:
        for name, target, pooler in (
            ("direct", url, "none"),
            ("pgbouncer_transaction", bouncer.url(BENCH_DATABASE), "pgbouncer-transaction"),
        ):
            env = {"FREYA_WORKERS": str(workers), "FREYA_CURSOR_SECRET": secret, "FREYA_POOLER": pooler}
            server = Server([sys.executable, "-m", "service", "serve"], {"FREYA_DATABASE_URL": target, **env})
            try:
                print(f"page through {name} …", end=" ", flush=True)
                measures[name] = run_wrk(wrk, server.base + path, connections, duration, None, {})
                print(f"{measures[name].requests_per_second:,.0f} req/s", flush=True)
            finally:
                server.stop()
    finally:
        bouncer.stop()
    direct, pooled = measures["direct"], measures["pgbouncer_transaction"]
    return {
        "pgbouncer_server_connections": pool_size,
        "direct": asdict(direct),
        "pgbouncer_transaction": asdict(pooled),
        "ratio": round(pooled.requests_per_second / direct.requests_per_second, 3) if direct.requests_per_second else 0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=seeding.DEFAULT_MESSAGES)
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternating rounds of an operation measured against a reference app"
    )
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="granian worker processes")
    parser.add_argument("--out", type=Path, default=Path(load_settings().data_dir) / "bench")
    parser.add_argument("--only", help="comma-separated operation names, e.g. page_50,batch_create_1000")
    parser.add_argument(
        "--pgbouncer", action="store_true", help="also measure the page through PgBouncer in transaction mode"
    )
    args = parser.parse_args()
    if args.messages < 10_000:
        sys.exit("make bench needs at least 10,000 messages (messages=10000)")

    wrk = ensure_wrk()
    url = bench_database(args.messages)
    args.out.mkdir(parents=True, exist_ok=True)
    with psycopg.connect(url) as conn:
        whale, whale_size = scalar(
            conn, "SELECT id, message_count FROM conversations ORDER BY message_count DESC, id LIMIT 1"
        )
        depth = min(200_000, max(whale_size - 60, 1))
        deep = scalar(
            conn,
            'SELECT "timestamp", id FROM messages WHERE conversation_id = %s ORDER BY "timestamp" DESC, id DESC '
            "OFFSET %s LIMIT 1",
            whale,
            depth - 1,
        )
        max_id = scalar(conn, "SELECT max(id) FROM messages")
        postgres = cpu.postgres_server(scalar(conn, "SELECT pg_backend_pid()"))
        top_topic = scalar(conn, "SELECT topic_id FROM message_topics GROUP BY topic_id ORDER BY count(*) DESC LIMIT 1")
        busiest_user = scalar(conn, "SELECT user_id FROM conversations GROUP BY user_id ORDER BY count(*) DESC LIMIT 1")
        conversation_count = scalar(conn, "SELECT count(*) FROM conversations")
    conversations = min(1000, conversation_count)
    # "time" is among the most frequent words (about 5% of messages); "quokka" is in about 1 in 16,000.
    common, rare = "time", "quokka"
    # Search latency is measured with one client per core: the target is about the query, and with
    # more clients than cores a p99 mostly measures the queue.
    search_clients = os.cpu_count() or 2
    secret = secrets.token_urlsafe(24)
    cursor = CursorCodec(secret).encode(f"messages:{whale}:desc:None:None:None", TimeKey(to_micros(deep[0]), deep[1]))
    page_params = {"conversation_id": whale, "since": None, "until": None, "role": None, "limit": 50, "offset": 0}
    search_params: dict[str, Any] = {
        "conversation_id": None,
        "user_id": None,
        "topic": None,
        "role": None,
        "since": None,
        "until": None,
        "before_rank": None,
        "before_id": None,
        "newest": None,
        "window": search.RANK_WINDOW,
        "recent_ids": search.RECENT_IDS,
        "limit": 20,
        "offset": 0,
        "phrases": [],
        "filter_scope": False,
    }
    # The bare statements return what the API returns: the message object's columns (the issue's
    # six-column page query predates edited_at, metadata and the token count).
    columns = ", ".join(f'"{name}"' if name == "timestamp" else name for name in message_queries.COLUMNS)
    bare_page = (
        f'SELECT {columns} FROM messages WHERE conversation_id = :cid ORDER BY "timestamp" DESC, id DESC LIMIT 50'
    )
    newest_page = {**page_params, "before_ts": None, "before_id": None}

    def search_scripts(q: str, column: str = "", value: int = 0) -> tuple[str, str]:
        """pgbench on what the service runs for a ranked search (optionally scoped: column = value):
        its planner estimate, then the ranking statement that estimate chooses; and on the bare SQL
        ranking every match (the unbounded ranking of before issue 15)."""
        params = {**search_params, "q": q, **({column: value} if column else {})}
        matches, params["filter_scope"] = planned_search_choice(
            url, {name: params[name] for name in search.sql.count_matching_messages.params}
        )
        filters = {name: params[name] for name in search.sql.count_matching_messages.params}
        # As the service does: a whole-corpus search asks for its estimate of matches, a scoped one
        # (with fewer than 1,000 matches) for those of its scope and of q.
        common_word = not column and matches >= search.COMMON
        estimate = "EXPLAIN (FORMAT JSON) " + (
            pgbench_script(
                search.sql.scope_and_matches,
                {name: params[name] for name in search.sql.scope_and_matches.params},
            )
            if column
            else pgbench_script(search.sql.count_matching_messages, filters)
        )
        ours = (
            "BEGIN;\n"
            + pgbench_script(search.sql.plan_for_these_values, {})
            + estimate
            + (
                pgbench_script(search.sql.search_messages_by_rank_common, {**params, "recent_ids": search.RECENT_IDS})
                if common_word
                else pgbench_script(search.sql.search_messages_by_rank, params)
            )
            + "COMMIT;\n"
        )
        scope = f"{column} = {value} AND " if column else ""
        bare = bare_script(
            f"SELECT {columns}, ts_rank_cd(search, websearch_to_tsquery('english', {literal(q)})) AS rank "
            f"FROM messages WHERE {scope}search @@ websearch_to_tsquery('english', {literal(q)}) "
            "ORDER BY rank DESC, id DESC LIMIT 20"
        )
        return ours, bare

    def search_statement_scripts(q: str) -> tuple[str, str]:
        """pgbench on the ranking statement alone (no transaction, no estimate) for a word with
        fewer matches than a common word's, and on bare SQL returning the same rows: every match
        ranked, the page's 20 with their topic ids and highlight, as the statement returns them."""
        params = {**search_params, "q": q}
        params["filter_scope"] = planned_search_choice(
            url, {name: params[name] for name in search.sql.count_matching_messages.params}
        )[1]
        query = f"websearch_to_tsquery('english', {literal(q)})"
        bare = bare_script(
            # search_headline's options (migration 0007), written out.
            f"SELECT p.*, ts_headline('english', p.content, {query}, "
            "'MaxFragments=2, MaxWords=18, MinWords=6, FragmentDelimiter=\" … \"') AS highlight FROM ("
            f"SELECT {columns}, topic_ids, ts_rank_cd(search, {query}) AS rank FROM messages WHERE search @@ {query} "
            "ORDER BY rank DESC, id DESC LIMIT 20) AS p"
        )
        return pgbench_script(search.sql.search_messages_by_rank, params), bare

    common_ours, common_bare = search_scripts(common)
    rare_ours, rare_bare = search_scripts(rare)
    rare_statement, rare_same_rows = search_statement_scripts(rare)
    # Scoped searches (issue 15): the user with the most messages and a user with about a hundred,
    # searching the same word, in up to 1,000 of the first's messages; the largest conversation and
    # one of about a hundred messages, likewise.
    with psycopg.connect(url) as conn:
        heavy_user, heavy_size = scalar(
            conn, "SELECT user_id, count(*) FROM messages GROUP BY user_id ORDER BY count(*) DESC LIMIT 1"
        )
        light_user, light_size = scalar(
            conn,
            "SELECT user_id, count(*) FROM messages GROUP BY user_id ORDER BY abs(count(*) - 100), user_id LIMIT 1",
        )
        small_conversation, small_size = scalar(
            conn, "SELECT id, message_count FROM conversations ORDER BY abs(message_count - 100), id LIMIT 1"
        )
        user_word, user_hits = word_in_at_most(conn, "user_id", heavy_user)
        conversation_word, conversation_hits = word_in_at_most(conn, "conversation_id", whale)
    heavy_ours, heavy_bare = search_scripts(user_word, "user_id", heavy_user)
    light_ours, light_bare = search_scripts(user_word, "user_id", light_user)
    conversation_ours, conversation_bare = search_scripts(conversation_word, "conversation_id", whale)
    small_ours, small_bare = search_scripts(conversation_word, "conversation_id", small_conversation)
    matches = f"search @@ websearch_to_tsquery('english', {literal(common)})"
    facets_ours = common_ours.replace(
        "COMMIT;\n",
        pgbench_script(
            search.sql.search_facets, {**search_params, "q": common, "with_roles": True, "with_topics": True}
        )
        + "COMMIT;\n",
    )
    facets_bare = (
        common_bare
        + bare_script(f"SELECT role, count(*) FROM messages WHERE {matches} GROUP BY role")
        + bare_script(
            "SELECT t.name, count(*) FROM messages AS m JOIN message_topics AS mt ON mt.message_id = m.id "
            f"JOIN topics AS t ON t.id = mt.topic_id WHERE m.{matches} GROUP BY t.name ORDER BY count(*) DESC LIMIT 20"
        )
    )
    # The context window: the statements it runs, and how many messages 4,000 tokens hold, so the
    # bare SQL can return the same rows.
    window_ours, window_size = window_script(url, whale, 4000)

    def around_side(before: bool) -> str:
        """One side of the anchored page's bare SQL, from the anchor's position, which it looks up."""
        compare, direction = ("<", "DESC") if before else (">=", "ASC")
        return (
            f"SELECT {columns}, topic_ids FROM messages WHERE conversation_id = {whale} "
            f'AND ("timestamp", id) {compare} (SELECT "timestamp", id FROM messages WHERE id = {deep[1]}) '
            f'ORDER BY "timestamp" {direction}, id {direction} LIMIT 25'
        )

    # The page statement as the service runs it for a request without fields= (Shape.query).
    served_page = message_queries.FULL.query(message_queries.sql.list_messages_newest_first)
    operations = [
        Operation(
            "page_50",
            "newest 50 messages of a random conversation",
            "/",
            pgbench_script(
                served_page,
                newest_page,
                {"conversation_id": f"random(1, {conversations})"},
            ),
            bare_script(bare_page, {"cid": f"random(1, {conversations})"}),
            script=LOAD / "conversation_page.lua",
            env={"FREYA_CONVERSATIONS": str(conversations)},
            reference="page",
        ),
        Operation(
            "page_50_same_rows_sql",
            "the page statement (with its topic ids) against bare SQL returning the same rows (SQL only)",
            "",
            pgbench_script(
                served_page,
                newest_page,
                {"conversation_id": f"random(1, {conversations})"},
            ),
            bare_script(
                bare_page.replace(" FROM messages", ", topic_ids FROM messages", 1),
                {"cid": f"random(1, {conversations})"},
            ),
        ),
        Operation(
            "deep_keyset_page",
            f"50 messages {depth:,} deep in the largest conversation, by cursor",
            f"/v1/conversations/{whale}/messages?limit=50&cursor={cursor}",
            pgbench_script(
                served_page,
                {**page_params, "before_ts": deep[0], "before_id": deep[1]},
            ),
            bare_script(
                f"SELECT {columns} FROM messages WHERE conversation_id = {whale} "
                f'AND ("timestamp", id) < ({literal(deep[0])}, {deep[1]}) ORDER BY "timestamp" DESC, id DESC LIMIT 50'
            ),
        ),
        Operation(
            "message_by_id",
            "one message with its topics, random id",
            "/",
            pgbench_script(message_queries.sql.get_message, {}, {"message_id": f"random(1, {max_id})"}),
            bare_script(
                f"SELECT {columns}, topic_ids FROM messages WHERE id = :message_id",
                {"message_id": f"random(1, {max_id})"},
            ),
            script=LOAD / "message_by_id.lua",
            env={"FREYA_MAX_MESSAGE_ID": str(max_id)},
            reference="message",
        ),
        Operation(
            "topic_messages",
            "newest 50 messages of the busiest topic",
            f"/v1/topics/{top_topic}/messages?limit=50",
            pgbench_script(
                message_queries.sql.list_topic_messages,
                {"topic_id": top_topic, "before_id": None, "limit": 50, "offset": 0},
            ),
            bare_script(
                f"SELECT {', '.join('m.' + name for name in columns.split(', '))}, m.topic_ids "
                f"FROM message_topics AS mt JOIN messages AS m ON m.id = mt.message_id "
                f"WHERE mt.topic_id = {top_topic} ORDER BY mt.message_id DESC LIMIT 50"
            ),
        ),
        Operation(
            "user_conversations",
            "50 most recently active conversations of the user with the most",
            f"/v1/users/{busiest_user}/conversations?limit=50",
            pgbench_script(
                conversation_queries.sql.list_user_conversations,
                {"user_id": busiest_user, "before_updated_at": None, "before_id": None, "limit": 50, "offset": 0},
            ),
            bare_script(
                "SELECT id, user_id, title, created_at, updated_at, message_count, metadata FROM conversations "
                f"WHERE user_id = {busiest_user} ORDER BY updated_at DESC, id DESC LIMIT 50"
            ),
        ),
        Operation(
            "create_message",
            "post one message with a topic",
            "/",
            None,
            script=LOAD / "create_message.lua",
            env={"FREYA_CONVERSATIONS": str(conversations)},
            warm_up=False,
        ),
        Operation(
            "batch_create_1000",
            "post 1,000 messages in one request",
            "/",
            None,
            script=LOAD / "batch_messages.lua",
            env={"FREYA_CONVERSATIONS": str(conversations), "FREYA_BATCH_SIZE": "1000"},
            connections=4,
            reference="copy",
        ),
        Operation(
            "search_common",
            f"ranked search for a common word ({common!r}), 20 hits",
            f"/v1/search/messages?q={common}&limit=20",
            common_ours,
            common_bare,
            connections=search_clients,
        ),
        Operation(
            "search_rare",
            f"ranked search for a rare word ({rare!r}), 20 hits",
            f"/v1/search/messages?q={rare}&limit=20",
            rare_ours,
            rare_bare,
            connections=search_clients,
        ),
        Operation(
            "search_rare_same_rows_sql",
            f"the ranking statement alone against bare SQL returning the same rows ({rare!r}, SQL only)",
            "",
            rare_statement,
            rare_same_rows,
            connections=search_clients,
        ),
        Operation(
            # The seed makes about 5% system messages: in the largest conversation they alone pass
            # any prompt-sized budget (a 422), so the window is measured without them.
            "context_window",
            f"newest messages of the largest conversation within 4,000 tokens ({window_size}), oldest first",
            f"/v1/conversations/{whale}/context?max_tokens=4000&include_system=false",
            # As the service runs it: a chunk of the newest messages at a time (see service/context.py).
            window_ours,
            # The same rows: with include_system=false system messages are walked like the others.
            bare_script(
                f"SELECT {columns}, topic_ids FROM messages WHERE conversation_id = {whale} "
                f'ORDER BY "timestamp" DESC, id DESC LIMIT {window_size}'
            ),
        ),
        Operation(
            "around_page",
            f"50 messages centred on one {depth:,} deep in the largest conversation",
            f"/v1/conversations/{whale}/messages?limit=50&around={deep[1]}",
            pgbench_script(
                message_queries.sql.list_messages_around,
                {**page_params, "around": deep[1], **message_queries.around_rows(50, "desc")},
            ),
            # The same rows for the same request, which names the anchor by its id only.
            bare_script(f"({around_side(True)}) UNION ALL ({around_side(False)})"),
        ),
        Operation(
            "search_facets",
            f"ranked search for {common!r}, 20 hits, with topic and role facets over all its matches",
            f"/v1/search/messages?q={common}&limit=20&facets=topic,role",
            facets_ours,
            facets_bare,
            connections=search_clients,
        ),
    ]
    operations += [
        Operation(
            "search_user_heavy",
            f"ranked search of the user with the most messages ({heavy_size:,}) for {user_word!r} "
            f"({user_hits:,} of their messages), 20 hits",
            f"/v1/search/messages?{urlencode({'q': user_word, 'user_id': heavy_user, 'limit': 20})}",
            heavy_ours,
            heavy_bare,
            connections=search_clients,
        ),
        Operation(
            "search_user_light",
            f"the same search by a user with {light_size:,} messages",
            f"/v1/search/messages?{urlencode({'q': user_word, 'user_id': light_user, 'limit': 20})}",
            light_ours,
            light_bare,
            connections=search_clients,
        ),
        Operation(
            "search_conversation",
            f"ranked search of the largest conversation ({whale_size:,} messages) for {conversation_word!r} "
            f"({conversation_hits:,} of its messages), 20 hits",
            f"/v1/search/messages?{urlencode({'q': conversation_word, 'conversation_id': whale, 'limit': 20})}",
            conversation_ours,
            conversation_bare,
            connections=search_clients,
        ),
        Operation(
            "search_conversation_light",
            f"the same search in a conversation of {small_size:,} messages",
            "/v1/search/messages?"
            + urlencode({"q": conversation_word, "conversation_id": small_conversation, "limit": 20}),
            small_ours,
            small_bare,
            connections=search_clients,
        ),
    ]
    # Writes go last: the messages they add become the newest ones, which the reads (searches
    # above all) would otherwise meet instead of the seeded data.
    operations.sort(key=lambda operation: operation.name in {"create_message", "batch_create_1000"})
    if args.only:
        wanted = set(args.only.split(","))
        operations = [operation for operation in operations if operation.name in wanted]
        if not operations:
            sys.exit(f"--only names none of the operations: {args.only}")

    settings = {
        "messages": args.messages,
        "duration_s": args.duration,
        "connections": args.connections,
        "workers": args.workers,
    }
    results: list[Result] = []
    failures: dict[str, str] = {}
    curve: list[dict[str, float]] = []
    pgbouncer: dict[str, Any] = {}

    def report() -> None:
        """Written after every operation: a failure later loses nothing measured before it."""
        payload = {
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
            "settings": settings,
            "results": [asdict(r) for r in results],
            "failures": failures,
            "offset_vs_keyset": curve,
            **({"page_through_pgbouncer": pgbouncer} if pgbouncer else {}),
        }
        (args.out / "results.json").write_text(json.dumps(payload, indent=2, default=str))

    servers = {
        "service": service(url, args.workers, secret),
        "page": reference(url, args.workers, "tests.bench.reference_app:page_app", "asgi"),
        "message": reference(url, args.workers, "tests.bench.reference_app:message_app", "asgi"),
    }
    try:
        for operation in operations:
            print(f"{operation.name} …", end=" ", flush=True)
            try:
                result = measure(operation, wrk, url, servers, args.duration, args.rounds, postgres)
            except (RuntimeError, subprocess.CalledProcessError) as error:
                failures[operation.name] = str(error)
                print(f"FAILED: {error}", flush=True)
            else:
                results.append(result)
                print(", ".join(f"{k} {v:.2f}" for k, v in result.ratios.items()), flush=True)
            report()
    finally:
        for server in servers.values():
            server.stop()
    try:
        curve.extend(offset_vs_keyset(url, whale, depths_for(whale_size)))
    except asyncpg.PostgresError as error:
        failures["offset_vs_keyset"] = str(error)
    if args.pgbouncer:
        page = f"/v1/conversations/{whale}/messages?limit=50"
        pgbouncer.update(page_through_pgbouncer(wrk, url, page, args.workers, args.connections, args.duration, secret))
    report()
    if results:
        chart(results, curve, settings, args.out / "chart.png")
    print_summary(results, curve, failures)
    if "ratio" in pgbouncer:
        pooled, direct = pgbouncer["pgbouncer_transaction"], pgbouncer["direct"]
        print(
            f"\npage_50 through PgBouncer (transaction mode): {pooled['requests_per_second']:,.0f} req/s, "
            f"p50 {pooled['p50_ms']:.2f} ms vs direct {direct['requests_per_second']:,.0f} req/s, "
            f"p50 {direct['p50_ms']:.2f} ms: ratio {pgbouncer['ratio']:.2f}"
        )
    print(f"written: {args.out / 'results.json'}, {args.out / 'chart.png'}")
    return 1 if failures else 0


def print_cpu(results: list[Result]) -> None:
    """CPU milliseconds per request of PostgreSQL and of the answering server, side by side."""
    measured = [r for r in results if r.service and r.service.cpu_ms]
    if not measured:
        return
    print("\nCPU per request, ms (from /proc): PostgreSQL + the answering server")

    def cells(m: Measure | None) -> str:
        if m is None or not m.cpu_ms:
            return f"{'-':>17}"
        return " + ".join(
            f"{m.cpu_ms[tier]:>7.3f}" if tier in m.cpu_ms else f"{'-':>7}" for tier in ("postgres", "server")
        )

    print(f"  {'operation':<24} {'service':>17}   {'reference':>17}")
    for r in measured:
        print(f"  {r.name:<24} {cells(r.service)}   {cells(r.reference)}")


def print_summary(results: list[Result], curve: list[dict[str, float]], failures: dict[str, str]) -> None:
    def cells(m: Measure | None) -> str:
        return (
            f"{m.requests_per_second:>10,.0f} {m.p50_ms:>7.2f} {m.p99_ms:>7.2f}"
            if m
            else f"{'-':>10} {'-':>7} {'-':>7}"
        )

    print(
        f"\n{'operation':<24} {'service/s':>10} {'p50':>7} {'p99':>7} {'ref/s':>10} {'p50':>7} {'p99':>7} "
        f"{'ours tps':>10} {'p50':>7} {'p99':>7} {'bare tps':>10} {'p50':>7} {'p99':>7}  ratios"
    )
    for r in results:
        print(
            f"{r.name:<24} {cells(r.service)} {cells(r.reference)} {cells(r.pgbench)} {cells(r.pgbench_bare)}  "
            + ", ".join(f"{k} {v:.2f}" for k, v in r.ratios.items())
        )
    for r in results:
        rounds = r.extra.get("rounds", [])
        if rounds and all("reference" in one for one in rounds):
            each = [f"{one['service'] / one['reference']:.2f}" for one in rounds]
            print(f"\n{r.name}, service ÷ reference app round by round: {', '.join(each)}", end="")
            if all("pgbench_bare" in one for one in rounds):
                bare = [f"{one['service'] / one['pgbench_bare']:.2f}" for one in rounds]
                print(f"; ÷ pgbench bare: {', '.join(bare)}", end="")
            print()
        if rounds and all("pgbench" in one and "pgbench_bare" in one for one in rounds):
            costs = [f"{one['pgbench_bare'] / one['pgbench']:.2f}" for one in rounds]
            print(f"{r.name}, statement_cost round by round: {', '.join(costs)}")
    print_cpu(results)
    by_name = {r.name: r for r in results}
    if "batch_create_1000" in by_name and by_name["batch_create_1000"].service:
        batch = by_name["batch_create_1000"]
        assert batch.service is not None
        print(f"\nbatch create: {batch.service.requests_per_second * 1000:,.0f} messages/s")
        if batch.reference:
            print(f"COPY of the same batches: {batch.reference.requests_per_second * 1000:,.0f} messages/s")
        if tagged := batch.extra.get("copy_with_tags"):
            print(f"COPY of the same batches with their tags: {tagged['requests_per_second'] * 1000:,.0f} messages/s")
        if postgres_ms := batch.service.cpu_ms.get("postgres"):
            # However little the service spent, PostgreSQL's own CPU caps the rate on these cores.
            ceiling = (os.cpu_count() or 1) * 1000 / postgres_ms * 1000
            copies = {
                "COPY": batch.reference.cpu_ms if batch.reference else {},
                "with tags": (tagged or {}).get("cpu_ms", {}),
            }
            listed = ", ".join(f"{name} {ms['postgres']:.1f} ms" for name, ms in copies.items() if "postgres" in ms)
            print(
                f"PostgreSQL's CPU per batch of 1,000: {postgres_ms:.1f} ms ({listed}); on "
                f"{os.cpu_count()} cores that alone allows at most {ceiling:,.0f} messages/s"
            )
    if curve:
        print("\nOFFSET vs keyset, median ms per 50-message page:")
        for point in curve:
            print(f"  depth {point['depth']:>8,}: OFFSET {point['offset_ms']:8.2f}   keyset {point['keyset_ms']:6.2f}")
    print("\ntargets:")
    for name, target in TARGETS.items():
        print(f"  {name}: {target}")
    errors = sum(r.service.errors for r in results if r.service)
    if errors:
        print(f"warning: {errors} non-2xx responses during the service runs")
    for name, error in failures.items():
        print(f"FAILED {name}: {error}")


if __name__ == "__main__":
    sys.exit(main())
