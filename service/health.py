"""Liveness and readiness: is the process up, and can it serve (database, schema, indexes)?

The migrations the served code expects are those it shipped with, read once when the app is
built (``expected_migrations``): a file that appears in the checkout later belongs to code that
is not running, and must not take this process out of rotation.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from litestar import Controller, Request, Response, get
from litestar.di import NamedDependency

from service.db import Database
from service.errors import RETRY_AFTER_SECONDS, problem, problem_responses
from service.migrations import migration_ids
from service.queries import Query, QueryFile
from service.replicas import ReplicaHealth, ReplicatedDatabase


class HealthQueries(QueryFile, file="health"):
    applied_migrations: Query
    invalid_indexes: Query


sql = HealthQueries()


class Liveness(msgspec.Struct):
    status: str


log = logging.getLogger("freya.health")


class Readiness(msgspec.Struct, omit_defaults=True):
    status: str
    schema_version: str
    # Applied in the database but unknown to this code: newer code migrated it (a rolling deploy).
    unknown_migrations: list[str] = msgspec.field(default_factory=list)
    # With FREYA_READ_REPLICA_URLS: each replica's state. Readiness is the primary's alone.
    replicas: list[ReplicaHealth] | msgspec.UnsetType = msgspec.UNSET


_reported: set[str] = set()


def expected_migrations() -> tuple[str, ...]:
    """The migrations this code ships, oldest first: read from disk once, when the app is built."""
    return tuple(migration_ids())


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
        expected: tuple[str, ...] = request.app.state.expected_migrations
        async with db.primary() as conn:
            applied = sorted(m.migration_id for m in await sql.applied_migrations.many(conn, AppliedMigration))
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
        # A database ahead of the code still serves it: migrations are expand-then-contract, so the
        # code running before a deploy works on the schema after it. Reported, not refused.
        unknown = [m for m in applied if m not in expected]
        if news := [m for m in unknown if m not in _reported]:  # once per process, not once per probe
            _reported.update(news)
            log.warning("the database has migrations this code does not know: %s", ", ".join(news))
        replicas = db.health() if isinstance(db, ReplicatedDatabase) and db.replicas else msgspec.UNSET
        return Response(
            Readiness(status="ready", schema_version=expected[-1], unknown_migrations=unknown, replicas=replicas)
        )
