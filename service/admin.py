"""Database upkeep for operators: table and index health, and ANALYZE / VACUUM on demand.

The database guide asks for regular ANALYZE and VACUUM. Autovacuum does most of it; these are
for after bulk loads and for looking before something is slow. Maintenance statements are
fixed, named queries (sql/admin.sql) chosen from the whitelist below: no identifier ever comes
from a request. VACUUM cannot run inside a transaction, so these run on a pooled connection
outside one.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated, Literal

import msgspec
from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody

from service.db import Connection, Database
from service.errors import problem_responses
from service.queries import Query, QueryFile

Operation = Literal["analyze", "vacuum", "vacuum_analyze"]
Table = Literal["users", "conversations", "messages", "topics", "message_topics"]
TABLES: tuple[Table, ...] = ("users", "conversations", "messages", "topics", "message_topics")


class AdminQueries(QueryFile, file="admin"):
    table_stats: Query
    index_stats: Query
    analyze_users: Query
    analyze_conversations: Query
    analyze_messages: Query
    analyze_topics: Query
    analyze_message_topics: Query
    vacuum_users: Query
    vacuum_conversations: Query
    vacuum_messages: Query
    vacuum_topics: Query
    vacuum_message_topics: Query
    vacuum_analyze_users: Query
    vacuum_analyze_conversations: Query
    vacuum_analyze_messages: Query
    vacuum_analyze_topics: Query
    vacuum_analyze_message_topics: Query


sql = AdminQueries()


class TableStats(msgspec.Struct):
    table_name: str
    live_rows: int
    dead_rows: int
    total_bytes: int
    table_bytes: int
    last_vacuum: datetime | None
    last_autovacuum: datetime | None
    last_analyze: datetime | None
    last_autoanalyze: datetime | None
    changed_since_analyze: int


class IndexStats(msgspec.Struct):
    table_name: str
    index_name: str
    bytes: int
    scans: int
    is_unique: bool
    is_valid: bool
    unused: bool
    redundant_with: str | None


class DatabaseStats(msgspec.Struct):
    tables: list[TableStats]
    indexes: list[IndexStats]


class MaintenanceRequest(msgspec.Struct, forbid_unknown_fields=True):
    operation: Operation
    # Default: every table of the service.
    tables: Annotated[list[Table], msgspec.Meta(min_length=1, max_length=len(TABLES))] | None = None


class TableRun(msgspec.Struct):
    table: str
    seconds: float


class MaintenanceReport(msgspec.Struct):
    operation: Operation
    tables: list[TableRun]
    seconds: float


async def run_maintenance(conn: Connection, operation: Operation, tables: list[Table] | None) -> MaintenanceReport:
    """Run ``operation`` on each table in turn (outside a transaction), timing each."""
    chosen = list(dict.fromkeys(tables or TABLES))
    runs = []
    started = time.perf_counter()
    for table in chosen:
        table_started = time.perf_counter()
        await sql.queries[f"{operation}_{table}"].exec(conn)
        runs.append(TableRun(table, round(time.perf_counter() - table_started, 4)))
    return MaintenanceReport(operation, runs, round(time.perf_counter() - started, 4))


class AdminController(Controller):
    path = "/v1/admin/db"
    tags = ("operations",)

    @get("/stats", summary="Table and index health", responses=problem_responses())
    async def stats(self, db: NamedDependency[Database]) -> DatabaseStats:
        async with db.connection() as conn:
            tables = await sql.table_stats.many(conn, TableStats)
            indexes = await sql.index_stats.many(conn, IndexStats)
        return DatabaseStats(tables, indexes)

    @post(
        "/maintenance",
        status_code=200,
        summary="Run ANALYZE, VACUUM or both on whitelisted tables",
        responses=problem_responses(400),
    )
    async def maintenance(self, data: JSONBody[MaintenanceRequest], db: NamedDependency[Database]) -> MaintenanceReport:
        async with db.primary(autocommit=True) as conn:  # VACUUM runs outside any transaction
            return await run_maintenance(conn, data.operation, data.tables)
