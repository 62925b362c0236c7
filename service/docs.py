"""The API docs page (Swagger UI at /schema), whole without internet.

Swagger UI's script, styles and favicon come from the service itself: the copy packaged on PyPI
as ``swagger-ui-bundle-v2`` (Apache-2.0), served under ``/schema/assets/``. Nothing on the page
reaches another host, so it works on an isolated network.

With service tokens on, the page and ``/schema/openapi.json`` need a token with ``read``, like
every other GET, and accept it as a browser can send it: HTTP Basic with the token as password
(any user name). A browser without it gets a 401 that asks for it (``WWW-Authenticate: Basic``),
so people open the page and type the token once. The assets are Swagger UI's public files, open
to all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Final

from litestar import get
from litestar.datastructures import CacheControlHeader
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.params import PathParameter
from litestar.response import File
from swagger_ui_bundle import swagger_ui_path

from service.errors import NotFound
from service.openapi import CorrectedSwagger

DOCS_PATH: Final = "/schema"
ASSETS_PATH: Final = f"{DOCS_PATH}/assets"
BASIC_REALM: Final = 'Basic realm="Freya API docs", charset="UTF-8"'

# The files the page loads, and nothing else of the package (no maps, no sample pages).
_ASSETS: Final = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui-standalone-preset.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon-32x32.png": "image/png",
}
_ASSETS_DIR: Final = Path(str(swagger_ui_path))


def is_docs(path: str) -> bool:
    """The docs page and the schema it shows (not the assets): where Basic credentials are taken."""
    return path == DOCS_PATH or (path.startswith(f"{DOCS_PATH}/") and not is_asset(path))


def is_asset(path: str) -> bool:
    return path.startswith(f"{ASSETS_PATH}/")


def swagger_ui() -> SwaggerRenderPlugin:
    """Litestar's Swagger UI page, pointed at the service's own copy of the assets."""
    return CorrectedSwagger(
        path="/",
        js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
        css_url=f"{ASSETS_PATH}/swagger-ui.css",
        standalone_preset_js_url=f"{ASSETS_PATH}/swagger-ui-standalone-preset.js",
        favicon=f"<link rel='icon' type='image/png' href='{ASSETS_PATH}/favicon-32x32.png'>",
    )


@get(
    f"{ASSETS_PATH}/{{name:str}}",
    include_in_schema=False,
    sync_to_thread=False,
    cache_control=CacheControlHeader(max_age=86400, public=True),
)
def docs_asset(name: Annotated[str, PathParameter(description="A file of Swagger UI")]) -> File:
    """One of Swagger UI's files, from the installed package."""
    media_type = _ASSETS.get(name)
    if media_type is None:
        raise NotFound(f"no docs asset {name!r}")
    return File(_ASSETS_DIR / name, media_type=media_type, content_disposition_type="inline")
