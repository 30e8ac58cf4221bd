"""``/docs`` works without internet access: the page names only this server's assets, and
each of them is served (cached by the browser); other names under the assets path are 404."""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp

from convhook.api import create_app
from convhook.api.deps import ApiSettings
from convhook.store.producer import ProducerStore
from tests.support.servers import serve_app


async def test_the_docs_page_loads_everything_from_this_server(tmp_path: Path) -> None:
    """Every script, style and icon of /docs is a path on this server that answers 200 with
    its content type; nothing is loaded from another host (a CDN)."""
    app = create_app(ProducerStore.at(str(tmp_path / "p.db")), ApiSettings(dispatch=False))
    async with serve_app(app) as base, aiohttp.ClientSession() as http:
        async with http.get(f"{base}/docs") as r:
            assert r.status == 200
            page = await r.text()
        links = re.findall(r"""(?:src|href)=['"]([^'"]+)['"]""", page)
        assert links
        assert not [u for u in links if "://" in u or u.startswith("//")], links
        assert "cdn" not in page.lower()
        for link in links:
            async with http.get(base + link) as r:
                assert r.status == 200, link
                assert r.headers["cache-control"] == "public, max-age=86400"
                assert len(await r.read()) > 1000
        async with http.get(f"{base}/docs/assets/swagger-ui-bundle.js") as r:
            assert r.headers["content-type"].startswith("text/javascript")
        async with http.get(f"{base}/docs/assets/..%2fpyproject.toml") as r:
            assert r.status == 404
        async with http.get(f"{base}/openapi.json") as r:
            assert (await r.json())["openapi"] == "3.1.0"
