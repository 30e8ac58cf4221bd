"""``/ui``: the operator's dashboard, a static page with a small script that reads the public
API with a workspace key kept in the browser's session storage.

The server holds no session and no new secret: the page sends the key as ``x-api-key`` like
any other client. Its files ship in the package (no build step, nothing from a CDN).
"""

from __future__ import annotations

import functools
from importlib import resources

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response

from convhook.api.errors import ApiError

router = APIRouter(include_in_schema=False)

PREFIX = "/ui/assets"
ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}
# The page names no other host; scripts and styles come from this origin only, and the page
# cannot be framed by another site.
_PAGE_HEADERS = {
    "cache-control": "no-cache",
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


@functools.cache
def _file(name: str) -> bytes:
    return resources.files("convhook").joinpath("ui", name).read_bytes()


@router.get("/")
async def root() -> RedirectResponse:
    """The dashboard is the site's front page."""
    return RedirectResponse("/ui", status_code=307)


@router.get("/ui")
async def page() -> Response:
    """The dashboard's single page."""
    return Response(
        _file("index.html"), media_type="text/html; charset=utf-8", headers=_PAGE_HEADERS
    )


@router.get(PREFIX + "/{name}")
async def asset(name: str) -> Response:
    """One of the page's files (only those: the name never reaches the file system)."""
    media_type = ASSETS.get(name)
    if media_type is None:
        raise ApiError(404, f"no dashboard asset {name!r}")
    # no-cache: revalidated on each load, so an upgrade's page never runs an old script.
    return Response(
        _file(name),
        media_type=media_type,
        headers={"cache-control": "no-cache", "x-content-type-options": "nosniff"},
    )
