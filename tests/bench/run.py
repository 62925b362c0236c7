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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import psycopg
from psycopg import sql as pgsql

from service import context, devdb, migrations, search
from service import messages as message_queries
from service import seed as seeding
from service.admin import run_maintenance
from service.cursors import CursorCodec, TimeKey
from service.queries import Query
from service.settings import PROJECT_ROOT, load_settings
from service.timestamps import to_micros

LOAD = PROJECT_ROOT / "tests" / "load"
OUT = PROJECT_ROOT / ".freya" / "bench"
BENCH_DATABASE = "freya_bench"
TARGETS = {
    "page_50": "service/pgbench >= 0.35",
    "deep_keyset_page": "p50 within 1.5x of page_50's",
    "batch_create_1000": ">= 50,000 messages/s",
    "search_common": "p99 < 50 ms",
}


@dataclass
class Measure:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int = 0


@dataclass
class Result:
    name: str
    description: str
    service: Measure
    pgbench: Measure
    ratio: float = 0.0
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


class Service:
    def __init__(self, url: str, workers: int, cursor_secret: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "FREYA_DATABASE_URL": url,
            "FREYA_PORT": str(self.port),
            "FREYA_WORKERS": str(workers),
            "FREYA_LOG_LEVEL": "WARNING",
            "FREYA_CURSOR_SECRET": cursor_secret,
        }
        env.pop("FREYA_API_TOKENS", None)
        # Kept open for the service's lifetime and read only if it fails to start.
        self.log = tempfile.TemporaryFile()  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "service", "serve"], cwd=PROJECT_ROOT, env=env, stdout=self.log, stderr=self.log
        )
        for _ in range(600):
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if self.process.poll() is not None:
                    self.log.seek(0)
                    sys.exit("the service did not start:\n" + self.log.read().decode(errors="replace"))
                time.sleep(0.1)
        sys.exit("the service did not start listening within 60 s")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(30)


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


def pgbench_script(query: Query, params: dict[str, Any], variables: dict[str, str] | None = None) -> str:
    """The query's own SQL with its parameters as literals, or as pgbench variables (``:name``)."""
    text = query.sql
    for number, name in reversed(list(enumerate(query.params, start=1))):
        value = f":{name}" if variables and name in variables else literal(params[name])
        text = text.replace(f"${number}", value)
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


def chart(results: list[Result], curve: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (bars, lines) = plt.subplots(1, 2, figsize=(14, 5.5))
    names = [r.name for r in results]
    bars.barh(names, [r.ratio for r in results], color="#4c72b0")
    bars.axvline(0.35, color="#c44e52", linestyle="--", label="0.35 target (page_50)")
    bars.set_xlabel("service req/s ÷ pgbench tps (same SQL, same concurrency)")
    bars.set_title("Service throughput relative to PostgreSQL's own rate")
    bars.invert_yaxis()
    bars.legend(loc="lower right")
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


def scalar(conn: psycopg.Connection[Any], query: str, *args: Any) -> Any:
    row = conn.execute(query, args).fetchone()
    assert row is not None, query
    return row[0] if len(row) == 1 else row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=seeding.DEFAULT_MESSAGES)
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2, help="granian worker processes")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--only", help="comma-separated operation names, e.g. page_50,batch_create_1000")
    args = parser.parse_args()

    wrk = ensure_wrk()
    url = bench_database(args.messages)
    args.out.mkdir(parents=True, exist_ok=True)
    with psycopg.connect(url) as conn:
        whale = scalar(conn, "SELECT id FROM conversations ORDER BY message_count DESC, id LIMIT 1")
        depth = min(200_000, scalar(conn, "SELECT message_count FROM conversations WHERE id = %s", whale) - 60)
        deep = scalar(
            conn,
            'SELECT "timestamp", id FROM messages WHERE conversation_id = %s ORDER BY "timestamp" DESC, id DESC '
            "OFFSET %s LIMIT 1",
            whale,
            depth - 1,
        )
        max_id = scalar(conn, "SELECT max(id) FROM messages")
        top_topic = scalar(conn, "SELECT topic_id FROM message_topics GROUP BY topic_id ORDER BY count(*) DESC LIMIT 1")
        conversations = min(1000, scalar(conn, "SELECT count(*) FROM conversations"))
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
        "limit": 20,
        "offset": 0,
        "phrases": [],
    }
    batch = {
        "roles": ["user", "assistant"] * 500,
        "contents": [f"batch message {n} with some ordinary words in it" for n in range(1000)],
        "user_ids": [None] * 1000,
        "client_msg_ids": [None] * 1000,
        "metadata": [{}] * 1000,
        "token_counts": [12] * 1000,
        "token_counts_estimated": [True] * 1000,
        "tag_items": list(range(1, 1001)),
        "tag_names": ["batch"] * 1000,
    }
    one = {
        "roles": ["user"],
        "contents": ["load test message about flights to lisbon"],
        "user_ids": [None],
        "client_msg_ids": [None],
        "metadata": [{}],
        "token_counts": [11],
        "token_counts_estimated": [True],
        "tag_items": [1],
        "tag_names": ["loadtest"],
    }

    def search_script(q: str) -> str:
        query = search.sql.search_messages_by_rank
        return (
            "BEGIN;\n"
            + pgbench_script(search.sql.plan_for_these_values, {})
            + pgbench_script(query, {**search_params, "q": q})
            + "COMMIT;\n"
        )

    operations: list[tuple[str, str, str, Path | None, dict[str, str], str, int]] = [
        (
            "page_50",
            "newest 50 messages of the largest conversation",
            f"/v1/conversations/{whale}/messages?limit=50",
            None,
            {},
            pgbench_script(
                message_queries.sql.list_messages_newest_first, {**page_params, "before_ts": None, "before_id": None}
            ),
            args.connections,
        ),
        (
            "deep_keyset_page",
            f"50 messages {depth:,} deep, by cursor",
            f"/v1/conversations/{whale}/messages?limit=50&cursor={cursor}",
            None,
            {},
            pgbench_script(
                message_queries.sql.list_messages_newest_first,
                {**page_params, "before_ts": deep[0], "before_id": deep[1]},
            ),
            args.connections,
        ),
        (
            "message_by_id",
            "one message with its topics, random id",
            "/",
            LOAD / "message_by_id.lua",
            {"FREYA_MAX_MESSAGE_ID": str(max_id)},
            pgbench_script(message_queries.sql.get_message, {}, {"message_id": f"random(1, {max_id})"}),
            args.connections,
        ),
        (
            "create_message",
            "post one message with a topic",
            "/",
            LOAD / "create_message.lua",
            {"FREYA_CONVERSATIONS": str(conversations)},
            pgbench_script(message_queries.sql.add_messages, one, {"conversation_id": f"random(1, {conversations})"}),
            args.connections,
        ),
        (
            "batch_create_1000",
            "post 1,000 messages in one request",
            "/",
            LOAD / "batch_messages.lua",
            {"FREYA_CONVERSATIONS": str(conversations), "FREYA_BATCH_SIZE": "1000"},
            pgbench_script(message_queries.sql.add_messages, batch, {"conversation_id": f"random(1, {conversations})"}),
            4,
        ),
        (
            "search_common",
            f"ranked search for a common word ({common!r}), 20 hits",
            f"/v1/search/messages?q={common}&limit=20",
            None,
            {},
            search_script(common),
            search_clients,
        ),
        (
            "search_rare",
            f"ranked search for a rare word ({rare!r}), 20 hits",
            f"/v1/search/messages?q={rare}&limit=20",
            None,
            {},
            search_script(rare),
            search_clients,
        ),
        (
            "topic_messages",
            "newest 50 messages of the busiest topic",
            f"/v1/topics/{top_topic}/messages?limit=50",
            None,
            {},
            pgbench_script(
                message_queries.sql.list_topic_messages,
                {"topic_id": top_topic, "before_id": None, "limit": 50, "offset": 0},
            ),
            args.connections,
        ),
        (
            "context_window",
            # The seed makes about 5% system messages: in the largest conversation they alone pass any
            # prompt-sized budget (a 422), so the window is measured without them.
            "newest messages of the largest conversation within 4,000 tokens, oldest first",
            f"/v1/conversations/{whale}/context?max_tokens=4000&include_system=false",
            None,
            {},
            pgbench_script(
                context.sql.context_window,
                {"conversation_id": whale, "max_tokens": 4000, "include_system": False, "role": None},
            ),
            args.connections,
        ),
        (
            "around_page",
            f"50 messages centred on one {depth:,} deep",
            f"/v1/conversations/{whale}/messages?limit=50&around={deep[1]}",
            None,
            {},
            pgbench_script(message_queries.sql.list_messages_around, {**page_params, "around": deep[1]}),
            args.connections,
        ),
        (
            "search_facets",
            f"ranked search for {common!r} with topic and role facets over all its matches",
            f"/v1/search/messages?q={common}&limit=20&facets=topic,role",
            None,
            {},
            "BEGIN;\n"
            + pgbench_script(search.sql.plan_for_these_values, {})
            + pgbench_script(search.sql.search_messages_by_rank, {**search_params, "q": common})
            + pgbench_script(
                search.sql.search_facets,
                {
                    **{
                        k: v
                        for k, v in search_params.items()
                        if k not in ("before_rank", "before_id", "limit", "offset")
                    },
                    "q": common,
                    "with_roles": True,
                    "with_topics": True,
                },
            )
            + "COMMIT;\n",
            search_clients,
        ),
    ]

    if args.only:
        wanted = set(args.only.split(","))
        operations = [operation for operation in operations if operation[0] in wanted]
        if not operations:
            sys.exit(f"--only names none of the operations: {args.only}")
    service = Service(url, args.workers, secret)
    results: list[Result] = []
    try:
        for name, description, path, script, env, sql_script, connections in operations:
            print(f"{name}: service …", end=" ", flush=True)
            through_service = run_wrk(wrk, service.base + path, connections, args.duration, script, env)
            print("pgbench …", end=" ", flush=True)
            direct = run_pgbench(url, sql_script, connections, args.duration)
            ratio = (
                through_service.requests_per_second / direct.requests_per_second if direct.requests_per_second else 0
            )
            results.append(Result(name, description, through_service, direct, round(ratio, 3)))
            print(f"{through_service.requests_per_second:,.0f} req/s vs {direct.requests_per_second:,.0f} tps")
    finally:
        service.stop()
    curve = offset_vs_keyset(url, whale, [d for d in (0, 1_000, 10_000, 50_000, 100_000) if d < depth] + [depth])

    by_name = {r.name: r for r in results}
    if "batch_create_1000" in by_name:
        batch_result = by_name["batch_create_1000"]
        batch_result.extra["messages_per_second"] = round(batch_result.service.requests_per_second * 1000)
    checks: dict[str, bool] = {}
    if "page_50" in by_name:
        checks["page_50"] = by_name["page_50"].ratio >= 0.35
    if {"page_50", "deep_keyset_page"} <= by_name.keys():
        checks["deep_keyset_page"] = (
            by_name["deep_keyset_page"].service.p50_ms <= 1.5 * by_name["page_50"].service.p50_ms
        )
    if "batch_create_1000" in by_name:
        checks["batch_create_1000"] = by_name["batch_create_1000"].extra["messages_per_second"] >= 50_000
    if "search_common" in by_name:
        checks["search_common"] = by_name["search_common"].service.p99_ms < 50
    report = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "settings": {
            "messages": args.messages,
            "duration_s": args.duration,
            "connections": args.connections,
            "workers": args.workers,
        },
        "results": [asdict(r) for r in results],
        "offset_vs_keyset": curve,
        "targets": {name: {"target": TARGETS[name], "met": met} for name, met in checks.items()},
    }
    (args.out / "results.json").write_text(json.dumps(report, indent=2, default=str))
    chart(results, curve, args.out / "chart.png")

    print(
        f"\n{'operation':<20} {'service req/s':>14} {'p50 ms':>8} {'p99 ms':>8} {'pgbench tps':>12} "
        f"{'p50 ms':>8} {'p99 ms':>8} {'ratio':>7}"
    )
    for r in results:
        print(
            f"{r.name:<20} {r.service.requests_per_second:>14,.0f} {r.service.p50_ms:>8.2f} {r.service.p99_ms:>8.2f} "
            f"{r.pgbench.requests_per_second:>12,.0f} {r.pgbench.p50_ms:>8.2f} {r.pgbench.p99_ms:>8.2f} "
            f"{r.ratio:>7.2f}"
        )
    print("\nOFFSET vs keyset, median ms per 50-message page:")
    for point in curve:
        print(f"  depth {point['depth']:>8,}: OFFSET {point['offset_ms']:8.2f}   keyset {point['keyset_ms']:6.2f}")
    print("\ntargets:")
    for name, met in checks.items():
        print(f"  {'met ' if met else 'MISSED'} {name}: {TARGETS[name]}")
    if "batch_create_1000" in by_name:
        print(f"\nbatch create: {by_name['batch_create_1000'].extra['messages_per_second']:,} messages/s")
    print(f"written: {args.out / 'results.json'}, {args.out / 'chart.png'}")
    errors = sum(r.service.errors for r in results)
    if errors:
        print(f"warning: {errors} non-2xx responses during the service runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
