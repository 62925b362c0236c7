"""The API docs page works with no internet, in a real browser, and with service tokens on."""

from __future__ import annotations

import base64
import re
import shutil
import signal
import subprocess
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from service.app import create_app
from service.db import Connection, SharedConnectionDatabase
from service.settings import Settings
from tests.api import assert_problem, start_service
from tests.conftest import client_for

READER = "docs-reader-token-0123456789"
WRITER = "docs-writer-token-0123456789"
TOKENS = f"people:{READER}:read; ingest:{WRITER}:write"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def basic(token: str, user: str = "anyone") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()}


@pytest.fixture
async def guarded(conn: Connection) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(api_tokens=TOKENS, cursor_secret="x" * 20), SharedConnectionDatabase(conn))
    async with client_for(app) as http:
        yield http


async def test_the_page_loads_nothing_from_another_host(client: httpx.AsyncClient) -> None:
    page = await client.get("/schema")
    assert page.status_code == 200
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)
    assert len(urls) == 4  # script, preset, styles, favicon
    for url in urls:
        assert url.startswith("/schema/assets/"), url
        asset = await client.get(url)
        assert asset.status_code == 200, url
        assert asset.content
        assert asset.headers["content-type"].split(";")[0] in ("text/javascript", "text/css", "image/png")
    assert_problem(await client.get("/schema/assets/swagger-ui-bundle.js.map"), 404)  # only what the page needs
    assert_problem(await client.get("/schema/assets/..%2Fswagger-ui.js"), 404)


async def test_with_tokens_people_reach_the_docs_with_the_token_as_password(guarded: httpx.AsyncClient) -> None:
    for path in ("/schema", "/schema/openapi.json"):
        refused = await guarded.get(path)
        assert_problem(refused, 401)
        assert refused.headers["www-authenticate"].startswith("Basic ")  # a browser asks for it
        assert (await guarded.get(path, headers=basic(READER))).status_code == 200
        assert (await guarded.get(path, headers=basic(READER, user=""))).status_code == 200
        assert_problem(await guarded.get(path, headers=basic(READER + "x")), 401)
        assert_problem(await guarded.get(path, headers=basic(WRITER)), 403)  # a GET needs read
        assert_problem(await guarded.get(path, headers={"Authorization": "Basic not-base64!"}), 401)
    assert (await guarded.get("/schema/assets/swagger-ui.css")).status_code == 200  # public files
    # Basic is for the docs only: the API itself still takes Bearer tokens alone.
    api = await guarded.get("/v1/users", params={"email": "a@example.com"}, headers=basic(READER))
    assert_problem(api, 401)
    assert api.headers["www-authenticate"].startswith("Bearer")


def rendered_operations(dom: str) -> Counter[str]:
    """The operations Swagger UI drew, by path (one entry per method)."""
    return Counter(re.findall(r'class="opblock-summary-path" data-path="([^"]+)"', dom))


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (Debian package chromium; .ci/run installs it)")
def test_a_browser_with_no_network_shows_every_operation(fresh_database: Callable[[], str], tmp_path: Path) -> None:
    assert CHROMIUM is not None
    process, base = start_service(fresh_database(), FREYA_API_TOKENS=TOKENS, FREYA_DATA_DIR=str(tmp_path / "data"))
    try:
        schema = httpx.get(f"{base}/schema/openapi.json", headers={"Authorization": f"Bearer {READER}"}).json()
        expected = Counter({path: len(methods) for path, methods in schema["paths"].items()})
        host = base.removeprefix("http://")
        browser = subprocess.run(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={tmp_path / 'chromium'}",
                # No network but this service: every other host name fails to resolve.
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                "--virtual-time-budget=20000",
                "--dump-dom",
                # What a person does: open the page and give the token as the password.
                f"http://people:{READER}@{host}/schema",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    assert browser.returncode == 0, browser.stderr[-2000:]
    assert rendered_operations(browser.stdout) == expected, browser.stdout[-3000:]
    assert sum(expected.values()) > 30
    # The assets came from the service (its access log), with the page's Basic credentials or none.
    for asset in ("swagger-ui-bundle.js", "swagger-ui-standalone-preset.js", "swagger-ui.css"):
        assert re.search(rf"GET /schema/assets/{re.escape(asset)} 200", output), output[-3000:]
