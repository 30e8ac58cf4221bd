"""``/docs``: the interactive API page, with its scripts and styles served by this process.

FastAPI's page loads Swagger UI from a CDN, so it is blank on a machine without internet
access (a private network, an air-gapped site). The assets come from the ``fastapi-offline``
package (Swagger UI 5, which reads OpenAPI 3.1) and are served here, read once and cached by
the browser for a day.
"""

from __future__ import annotations

import functools
from importlib import resources

from fastapi import APIRouter
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response

from convhook.api.errors import ApiError

router = APIRouter(include_in_schema=False)

PREFIX = "/docs/assets"
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon.png": "image/png",
}


@functools.cache
def _asset(name: str) -> bytes:
    return resources.files("fastapi_offline").joinpath("static", name).read_bytes()


@router.get("/docs")
async def docs() -> HTMLResponse:
    """The Swagger UI page for ``/openapi.json``."""
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="convhook producer API",
        swagger_js_url=f"{PREFIX}/swagger-ui-bundle.js",
        swagger_css_url=f"{PREFIX}/swagger-ui.css",
        swagger_favicon_url=f"{PREFIX}/favicon.png",
    )


@router.get(PREFIX + "/{name}")
async def asset(name: str) -> Response:
    """One of the page's files (only those: the name never reaches the file system)."""
    media_type = ASSETS.get(name)
    if media_type is None:
        raise ApiError(404, f"no documentation asset {name!r}")
    return Response(
        _asset(name), media_type=media_type, headers={"cache-control": "public, max-age=86400"}
    )
