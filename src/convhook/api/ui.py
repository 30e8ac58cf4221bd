"""``/ui``: the operator's dashboard, a static page with a small script that reads the public
API with a workspace key kept in the browser's session storage.

The server holds no session and no new secret: the page sends the key as ``x-api-key`` like
any other client. Its files ship in the package (no build step, nothing from a CDN).
"""

from __future__ import annotations

import functools
import hashlib
from importlib import resources

from fastapi import APIRouter, Request
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
def _file(name: str) -> tuple[bytes, str]:
    """A file of the page and its entity tag."""
    content = resources.files("convhook").joinpath("ui", name).read_bytes()
    return content, '"' + hashlib.sha256(content).hexdigest()[:32] + '"'


def _answer(request: Request, name: str, media_type: str, headers: dict[str, str]) -> Response:
    # no-cache with an ETag: the browser asks each time and is told 304 until an upgrade
    # changes the file, so a new page never runs an old script.
    content, etag = _file(name)
    headers = {**headers, "etag": etag}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(content, media_type=media_type, headers=headers)


@router.get("/")
async def root() -> RedirectResponse:
    """The dashboard is the site's front page."""
    return RedirectResponse("/ui", status_code=307)


@router.get("/ui")
async def page(request: Request) -> Response:
    """The dashboard's single page."""
    return _answer(request, "index.html", "text/html; charset=utf-8", _PAGE_HEADERS)


@router.get(PREFIX + "/{name}")
async def asset(request: Request, name: str) -> Response:
    """One of the page's files (only those: the name never reaches the file system)."""
    media_type = ASSETS.get(name)
    if media_type is None:
        raise ApiError(404, f"no dashboard asset {name!r}")
    headers = {"cache-control": "no-cache", "x-content-type-options": "nosniff"}
    return _answer(request, name, media_type, headers)
