"""The dashboard's files over a real uvicorn server: ``/`` leads to ``/ui``, the page and its
assets are served from this server only, unknown names are 404, and the page is small."""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp

from convhook.api import create_app
from convhook.api.deps import ApiSettings
from convhook.events import EventType, OperationalEventType
from convhook.store.producer import ProducerStore
from tests.support.servers import serve_app

UI = Path(__file__).parents[2] / "src" / "convhook" / "ui"


def _app(tmp_path: Path) -> object:
    return create_app(ProducerStore.at(str(tmp_path / "p.db")), ApiSettings(dispatch=False))


async def test_root_redirects_to_the_dashboard(tmp_path: Path) -> None:
    """``GET /`` answers a redirect to ``/ui``, which needs no key to load."""
    async with serve_app(_app(tmp_path)) as base, aiohttp.ClientSession() as http:
        async with http.get(f"{base}/", allow_redirects=False) as r:
            assert r.status == 307
            assert r.headers["location"] == "/ui"
        async with http.get(f"{base}/") as r:
            assert r.status == 200
            assert str(r.url) == f"{base}/ui"
            assert r.headers["content-type"] == "text/html; charset=utf-8"


async def test_the_page_loads_everything_from_this_server(tmp_path: Path) -> None:
    """Every script and style the page names is a path on this server answering its content
    type, no file names another host, and the page forbids loading from anywhere else."""
    async with serve_app(_app(tmp_path)) as base, aiohttp.ClientSession() as http:
        async with http.get(f"{base}/ui") as r:
            assert r.status == 200
            page = await r.text()
            policy = r.headers["content-security-policy"]
        assert "default-src 'self'" in policy
        assert "connect-src 'self'" in policy
        links = [u for u in re.findall(r"""(?:src|href)=['"]([^'"]+)['"]""", page) if u[0] == "/"]
        assert sorted(links) == ["/ui/assets/app.css", "/ui/assets/app.js"]
        kinds = {"/ui/assets/app.css": "text/css", "/ui/assets/app.js": "text/javascript"}
        for link in links:
            async with http.get(base + link) as r:
                assert r.status == 200, link
                assert r.headers["content-type"].startswith(kinds[link])
                assert r.headers["cache-control"] == "no-cache"
                assert await r.read() == (UI / link.rsplit("/", 1)[1]).read_bytes()
                etag = r.headers["etag"]
            async with http.get(base + link, headers={"if-none-match": etag}) as r:
                assert r.status == 304, link
                assert await r.read() == b""
        for name in ("index.html", "app.js", "app.css"):
            text = (UI / name).read_text()
            assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", text), name
            assert "innerHTML" not in text, name


async def test_unknown_assets_are_404(tmp_path: Path) -> None:
    """Only the dashboard's own file names are served under ``/ui/assets``."""
    async with serve_app(_app(tmp_path)) as base, aiohttp.ClientSession() as http:
        for name in ("index.html", "nope.js", "..%2f..%2fapi%2fui.py", "__init__.py"):
            async with http.get(f"{base}/ui/assets/{name}") as r:
                assert r.status == 404, name
                assert "error" in await r.json()


async def test_the_dashboard_is_not_in_the_api_contract(tmp_path: Path) -> None:
    """``/``, ``/ui`` and its assets stay out of ``/openapi.json`` (they are not API)."""
    async with (
        serve_app(_app(tmp_path)) as base,
        aiohttp.ClientSession() as http,
        http.get(f"{base}/openapi.json") as r,
    ):
        paths = (await r.json())["paths"]
    assert not [p for p in paths if p == "/" or p.startswith("/ui")]


def test_page_weight() -> None:
    """The page, its script and its style together stay under 64 KiB uncompressed."""
    sizes = {name: (UI / name).stat().st_size for name in ("index.html", "app.js", "app.css")}
    total = sum(sizes.values())
    print(f"dashboard page weight: {total} bytes ({sizes})")
    assert total < 64 * 1024


def _js_strings(script: str, name: str) -> list[str]:
    """The strings of the array constant ``name`` in ``script``, spread arrays included."""
    found = re.search(rf"const {name} = \[(.*?)\];", script, re.S)
    assert found is not None, f"no const {name} array in app.js"
    items = re.findall(r'"([^"]*)"', found[1])
    for spread in re.findall(r"\.\.\.([A-Z_]+)", found[1]):
        items += _js_strings(script, spread)
    return items


async def test_the_event_type_filter_offers_every_catalogue_type(tmp_path: Path) -> None:
    """The served script's event type filter lists every type of the catalogue, and those
    it files under an endpoint (not a conversation) are exactly the operational ones."""
    async with (
        serve_app(_app(tmp_path)) as base,
        aiohttp.ClientSession() as http,
        http.get(f"{base}/ui/assets/app.js") as r,
    ):
        assert r.status == 200
        script = await r.text()
    operational = _js_strings(script, "OPERATIONAL_TYPES")
    assert operational == [t.value for t in OperationalEventType]
    offered = _js_strings(script, "EVENT_TYPES")
    assert sorted(offered) == sorted(t.value for t in [*EventType, *OperationalEventType])
