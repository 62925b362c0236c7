"""Service tokens: who may call what, and what stays open."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import httpx
import pytest

from service.app import create_app
from service.auth import parse_tokens
from service.db import Connection, SharedConnectionDatabase
from service.settings import Settings, SettingsError, load_settings
from tests.api import assert_problem
from tests.conftest import client_for

READER = "reader-token-0123456789"
WRITER = "writer-token-0123456789"
ADMIN = "admin-token-0123456789ab"
TOKENS = f"dashboard:{READER}:read; ingest:{WRITER}:read,write; ops:{ADMIN}:read,write,admin"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def guarded(conn: Connection) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(api_tokens=TOKENS, cursor_secret="x" * 20), SharedConnectionDatabase(conn))
    async with client_for(app) as http:
        yield http


async def test_no_or_wrong_token_is_401(guarded: httpx.AsyncClient) -> None:
    for headers in (
        {},
        bearer("not-a-token-at-all-xx"),
        {"Authorization": READER},
        {"Authorization": "Basic abc"},
        bearer(READER[:-1]),
        bearer(READER + "x"),
        {"Authorization": "Bearer "},
    ):
        response = await guarded.get("/v1/users", params={"email": "a@example.com"}, headers=headers)
        assert_problem(response, 401)
        assert response.headers["www-authenticate"].startswith("Bearer")


async def test_scopes(guarded: httpx.AsyncClient) -> None:
    body = {"email": "scoped@example.com", "name": "S"}
    assert (
        await guarded.get("/v1/users", params={"email": "a@example.com"}, headers=bearer(READER))
    ).status_code == 200
    assert_problem(await guarded.post("/v1/users", json=body, headers=bearer(READER)), 403)
    created = await guarded.post("/v1/users", json=body, headers=bearer(WRITER))
    assert created.status_code == 201
    assert_problem(await guarded.delete(f"/v1/users/{created.json()['id']}", headers=bearer(READER)), 403)
    assert_problem(await guarded.get("/v1/admin/db/stats", headers=bearer(WRITER)), 403)
    assert (await guarded.get("/v1/admin/db/stats", headers=bearer(ADMIN))).status_code == 200
    # OPTIONS only lists the path's methods: read is enough, and no token is still a 401.
    options = await guarded.options("/v1/users/1", headers=bearer(READER))
    assert options.status_code == 204, options.text
    assert "DELETE" in options.headers["allow"]
    assert_problem(await guarded.options("/v1/users/1"), 401)
    # The scheme name is case-insensitive.
    assert (await guarded.get("/v1/admin/db/stats", headers={"Authorization": f"bearer {ADMIN}"})).status_code == 200


async def test_probes_and_metrics_stay_open_and_nothing_else(guarded: httpx.AsyncClient) -> None:
    assert (await guarded.get("/health/live")).status_code == 200
    assert (await guarded.get("/health/ready")).status_code == 200
    assert (await guarded.get("/metrics")).status_code == 200
    for path in ("/schema/openapi.json", "/schema", "/v1/users/1", "/v1/users/1/conversations"):
        assert_problem(await guarded.get(path), 401)
    # Paths that merely contain the open words are not open.
    for path in ("/v1/health/live", "/v1/metrics", "/v1/users/health", "/v1/search/messages?q=metrics"):
        response = await guarded.get(path)
        assert response.status_code in (401, 404), path
        if response.status_code == 404:
            pytest.fail(f"{path} reached routing without a token")


async def test_tokens_never_reach_the_logs(guarded: httpx.AsyncClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        await guarded.get("/v1/users/1", headers=bearer(ADMIN))
        await guarded.get("/v1/users/1", headers=bearer("a-wrong-token-that-is-long"))
        await guarded.post("/v1/users", json={"email": 5}, headers=bearer(WRITER))
    text = caplog.text + " ".join(str(r.__dict__) for r in caplog.records)
    for secret in (ADMIN, WRITER, "a-wrong-token-that-is-long"):
        assert secret not in text


async def test_a_warning_when_no_tokens_are_set(conn: Connection, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        create_app(Settings(cursor_secret="x" * 20), SharedConnectionDatabase(conn))
    assert "FREYA_API_TOKENS is not set" in caplog.text


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("name:short:read", "16\\+ characters"),
        ("name:long-enough-token-xx:root", "scopes must be among"),
        ("name-only", "name:token:scopes"),
        ("bad name:long-enough-token-xx:read", "letters, digits"),
        ("a:long-enough-token-xx:read;a:long-enough-token-yy:read", "twice"),
        (" ; ", "holds no token"),
    ],
)
def test_bad_token_settings_are_refused_at_start(spec: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message) as error:
        load_settings({"FREYA_API_TOKENS": spec})
    assert "long-enough-token" not in str(error.value)


def test_token_parsing() -> None:
    tokens = parse_tokens(TOKENS)
    assert [(t.name, sorted(t.scopes)) for t in tokens] == [
        ("dashboard", ["read"]),
        ("ingest", ["read", "write"]),
        ("ops", ["admin", "read", "write"]),
    ]
    assert all(READER.encode() not in t.digest for t in tokens)
