"""Liveness and readiness: is the process up, and can it serve (database, schema, indexes)?"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, Response, get
from litestar.di import NamedDependency

from service.db import Database
from service.errors import RETRY_AFTER_SECONDS, problem, problem_responses
from service.migrations import migration_ids
from service.queries import Query, QueryFile


class HealthQueries(QueryFile, file="health"):
    applied_migrations: Query
    invalid_indexes: Query


sql = HealthQueries()


class Liveness(msgspec.Struct):
    status: str


class Readiness(msgspec.Struct):
    status: str
    schema_version: str


class AppliedMigration(msgspec.Struct):
    migration_id: str


class InvalidIndex(msgspec.Struct):
    index_name: str


class HealthController(Controller):
    path = "/health"
    tags = ("operations",)

    @get("/live", summary="The process runs")
    async def live(self) -> Liveness:
        return Liveness(status="live")

    @get(
        "/ready",
        summary="The database answers, the schema is current and no index is invalid",
        responses=problem_responses(),
    )
    async def ready(
        self, request: Request[Any, Any, Any], db: NamedDependency[Database]
    ) -> Response[Readiness] | Response[dict[str, object]]:
        expected = migration_ids()
        async with db.connection() as conn:
            applied = {m.migration_id for m in await sql.applied_migrations.many(conn, AppliedMigration)}
            invalid = [i.index_name for i in await sql.invalid_indexes.many(conn, InvalidIndex)]
        reasons = []
        if missing := [m for m in expected if m not in applied]:
            reasons.append(f"migrations not applied: {', '.join(missing)}")
        if invalid:
            reasons.append(f"invalid indexes: {', '.join(invalid)}")
        if reasons:
            return problem(
                503, "Not ready", "not-ready", "; ".join(reasons), headers={"Retry-After": RETRY_AFTER_SECONDS}
            )
        return Response(Readiness(status="ready", schema_version=expected[-1]))
