"""Operational events on the dashboard, in a real headless browser (Debian's chromium driven by
Playwright) against a real ``convhook serve`` on SQLite: the type filter offers them, and their
rows, listed or live, name the endpoint and link to it, not to a conversation."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Page, async_playwright, expect

from tests.e2e.test_dashboard import CHROMIUM, TIMEOUT_MS, Watch
from tests.support.servers import cli_process, free_port


@pytest.mark.slow
async def test_operational_rows_link_to_their_endpoint(tmp_path: Path) -> None:
    """A live endpoint.disabled row and a listed endpoint.enabled row show ``Endpoint <id>``
    linking to the endpoint on the Endpoints page (pointed out and focused), the filter
    offers and applies the operational types, and no console error occurs."""
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: run scripts/ensure-chromium"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    args = ["serve", "--port", str(port), "--db", str(tmp_path / "o.db"), "--no-dispatch"]
    args.append("--allow-private-targets")
    with cli_process(args, cwd=tmp_path, port=port) as proc:
        found = re.search(r"chk_[A-Za-z0-9_-]+", proc.stderr + proc.stdout)
        assert found is not None, proc.stderr
        key = found[0]
        async with (
            aiohttp.ClientSession(base_url=base, headers={"x-api-key": key}) as http,
            async_playwright() as pw,
        ):

            async def post(path: str, doc: Any = None) -> Any:
                async with http.post(path, json=doc) as r:
                    assert r.status in (200, 201), await r.text()
                    return await r.json()

            endpoint: str = (await post("/api/v2/endpoints", {"url": base + "/nowhere"}))["id"]
            browser = await pw.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
            )
            try:
                page = await browser.new_page()
                page.set_default_timeout(TIMEOUT_MS)
                watch = Watch(page)
                await page.goto(base + "/ui#events")
                await page.get_by_label("API key").fill(key)
                await page.get_by_role("button", name="Sign in").click()
                await expect(page.locator("#live")).to_have_text("Live: connected")
                await post(f"/api/v2/endpoints/{endpoint}/disable")
                await live_row_links_to_the_endpoint(page, endpoint)
                await post(f"/api/v2/endpoints/{endpoint}/enable")
                await filtered_rows_link_to_the_endpoint(page, endpoint)
            finally:
                await browser.close()
    assert not watch.errors, watch.errors
    assert not watch.foreign, watch.foreign


async def live_row_links_to_the_endpoint(page: Page, endpoint: str) -> None:
    """The endpoint.disabled row the stream brings names the endpoint; its link opens the
    Endpoints page with that endpoint's row pointed out and focused."""
    rows = page.locator("#event-rows tr")
    await expect(rows).to_have_count(1)
    await expect(rows.nth(0)).to_contain_text("endpoint.disabled")
    await expect(rows.nth(0)).to_contain_text(f"Endpoint {endpoint}")
    link = rows.nth(0).get_by_role("link", name=endpoint, exact=True)
    assert await link.get_attribute("href") == f"#endpoints/{endpoint}"
    assert await page.locator('a[href^="#conversations/"]').count() == 0
    await link.click()
    await expect(page.get_by_role("heading", name="Endpoints", level=1)).to_be_visible()
    current = page.locator('tr[aria-current="true"]')
    await expect(current).to_have_count(1)
    await expect(current.get_by_role("rowheader")).to_have_text(endpoint)
    await expect(current.get_by_role("rowheader")).to_be_focused()


async def filtered_rows_link_to_the_endpoint(page: Page, endpoint: str) -> None:
    """Filtered by endpoint.enabled, the events page lists that event alone (read from the
    API, not the stream), its row naming and linking the endpoint."""
    await page.get_by_role("link", name="Events").click()
    await page.get_by_label("Event type").select_option("endpoint.enabled")
    await page.get_by_role("button", name="Filter").click()
    rows = page.locator("#event-rows tr")
    await expect(rows).to_have_count(1)
    await expect(rows.nth(0)).to_contain_text("endpoint.enabled")
    link = rows.nth(0).get_by_role("link", name=endpoint, exact=True)
    assert await link.get_attribute("href") == f"#endpoints/{endpoint}"
    await expect(rows.nth(0)).to_contain_text(f"Endpoint {endpoint}")
