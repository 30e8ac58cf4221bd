"""The dashboard in a real headless browser (Debian's chromium driven by Playwright) against a
real ``convhook serve`` process on SQLite and a real receiver on a loopback port."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from playwright.async_api import ConsoleMessage, Page, Request, async_playwright, expect

from tests.support.delivery import Receiver, Reply
from tests.support.servers import cli_process, free_port, serve_app

# Must match scripts/ensure-chromium, which installs it (`make test` runs it first).
CHROMIUM = Path("/usr/bin/chromium")
TIMEOUT_MS = 15_000


class Watch:
    """What the page did that the test forbids: console errors, uncaught exceptions, and
    requests to any host but 127.0.0.1."""

    def __init__(self, page: Page) -> None:
        self.errors: list[str] = []
        self.foreign: list[str] = []
        page.on("console", self.console)
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))
        page.on("request", self.request)

    def console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text}")

    def request(self, request: Request) -> None:
        parts = urlsplit(request.url)
        if parts.scheme != "data" and parts.hostname != "127.0.0.1":
            self.foreign.append(request.url)


@pytest.fixture
def chromium() -> Path:
    """Debian's chromium; its absence fails the test (never a skip)."""
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: run scripts/ensure-chromium"
    return CHROMIUM


@pytest.mark.slow
async def test_operator_follows_a_conversation_live_and_redelivers(
    tmp_path: Path, chromium: Path
) -> None:
    """Signed in with serve's key, the page creates an endpoint, shows a conversation's events
    and their attempts as they happen, opens an attempt, and a redelivery's new attempt
    appears without a reload; no console error and no request leaves 127.0.0.1."""
    shots = tmp_path / "screenshots"
    # The redelivery's answer is slow, so the page shows the delivery queued before the live
    # stream brings its attempt.
    receiver = Receiver().then(Reply(200), Reply(200), Reply(200), Reply(200, delay=1.0))
    port = free_port()
    args = ["serve", "--port", str(port), "--db", str(tmp_path / "d.db"), "--allow-private-targets"]
    async with serve_app(receiver) as hook:
        with cli_process(args, cwd=tmp_path, port=port) as proc:
            found = re.search(r"chk_[A-Za-z0-9_-]+", proc.stderr + proc.stdout)
            assert found is not None, proc.stderr
            key, base = found[0], f"http://127.0.0.1:{port}"
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(
                    executable_path=str(chromium),
                    headless=True,
                    # Root in a container has no user namespace for the sandbox.
                    args=["--no-sandbox"],
                )
                try:
                    page = await browser.new_page()
                    page.set_default_timeout(TIMEOUT_MS)
                    watch = Watch(page)
                    await drive(page, base, key, hook, shots)
                finally:
                    await browser.close()
    assert not watch.errors, watch.errors
    assert not watch.foreign, watch.foreign
    assert len(receiver.received) == 4
    assert sorted(p.name for p in shots.iterdir()) == sorted(
        f"{n}.png"
        for n in (
            "signin",
            "overview",
            "endpoints",
            "events",
            "event",
            "attempt",
            "redelivered",
            "conversation",
            "failures",
            "overview-after",
        )
    )


# The visible form controls with no accessible name (no label, aria-label or text), and column
# headings without a scope: what a screen reader could not announce.
UNNAMED = """() => [
  ...[...document.querySelectorAll("input, select, textarea, button")]
    .filter((e) => e.getClientRects().length
      && !(e.labels && e.labels.length) && !e.getAttribute("aria-label") && !e.textContent.trim()),
  ...document.querySelectorAll("thead th:not([scope])"),
].map((e) => e.outerHTML)"""


async def drive(page: Page, base: str, key: str, hook: str, shots: Path) -> None:
    """The operator's walk through the pages, a screenshot of each."""

    async def shot(name: str) -> None:
        await page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
        assert await page.evaluate(UNNAMED) == [], f"controls without a name on {name}"

    await page.goto(base + "/")
    assert page.url == base + "/ui"
    await shot("signin")
    # Keyboard only: the skip link, then the key's field; Enter signs in.
    await page.keyboard.press("Tab")
    await page.keyboard.press("Tab")
    await expect(page.get_by_label("API key")).to_be_focused()
    await page.keyboard.type(key)
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("navigation", name="Dashboard")).to_be_visible()
    await expect(page.get_by_role("heading", name="Overview", level=1)).to_be_visible()
    await expect(page.locator("#live")).to_have_text("Live: connected")
    await shot("overview")

    await page.get_by_role("link", name="Endpoints").click()
    await page.get_by_label("URL").fill(hook + "/hooks")
    await page.get_by_role("button", name="Create endpoint").click()
    await expect(page.locator("#secret")).to_have_text(re.compile(r"^whsec_"))
    await expect(page.get_by_role("cell", name=hook + "/hooks", exact=True)).to_be_visible()
    await shot("endpoints")

    await page.get_by_role("link", name="Events").click()
    await expect(page.get_by_role("heading", name="Events", level=1)).to_be_visible()
    rows = page.locator("#event-rows tr")
    await expect(rows).to_have_count(0)
    conversation = await lifecycle(base, key)
    # Newest first: the three events arrive over the stream, no reload.
    await expect(rows).to_have_count(3)
    await expect(rows.nth(2)).to_contain_text("conversation.userJoined")
    await expect(rows.nth(0)).to_contain_text(conversation)
    await shot("events")
    await page.get_by_label("Event type").select_option("conversation.completed")
    await page.get_by_role("button", name="Filter").click()
    await expect(rows).to_have_count(1)
    await expect(rows.nth(0)).to_contain_text("conversation.completed")
    await page.get_by_label("Conversation").fill("conv_none")
    await page.get_by_role("button", name="Filter").click()
    await expect(rows).to_have_count(0)
    await page.get_by_role("link", name="Events").click()
    await expect(rows).to_have_count(3)

    await rows.nth(2).get_by_role("link").first.click()
    await expect(page.locator("#event-body")).to_contain_text(
        '"eventType": "conversation.userJoined"'
    )
    attempts = page.locator("table[data-delivery] tbody tr")
    await expect(attempts).to_have_count(1)
    await expect(attempts.nth(0)).to_contain_text("200")
    await shot("event")

    await attempts.nth(0).get_by_role("button", name=re.compile("^Open attempt 1")).click()
    await expect(page.locator("#attempt-body")).to_have_text("Webhook received successfully")
    await expect(page.locator("#attempt-title")).to_be_focused()
    await shot("attempt")

    await page.get_by_role("button", name="Redeliver", exact=True).click()
    await expect(attempts).to_have_count(2)
    await expect(attempts.nth(1)).to_contain_text("200")
    await shot("redelivered")

    await page.get_by_role("link", name="Conversations").click()
    await page.get_by_label("Conversation id").fill(conversation)
    await page.get_by_role("button", name="Show").click()
    timeline = page.locator("ol.timeline li")
    await expect(timeline).to_have_count(3)
    for i, kind in enumerate(("userJoined", "userLeft", "completed")):
        await expect(timeline.nth(i)).to_contain_text(f"conversation.{kind}")
    await shot("conversation")

    await page.get_by_role("link", name="Failures").click()
    await expect(page.get_by_text("No failed deliveries.")).to_be_visible()
    await shot("failures")

    await page.get_by_role("link", name="Overview").click()
    cards = page.locator("dl.cards")
    await expect(cards).to_contain_text("Delivery success rate (recent)100%")
    await expect(cards).to_contain_text("Backlog (pending deliveries)0")
    await expect(cards).to_contain_text("Disabled endpoints0")
    await shot("overview-after")


async def lifecycle(base: str, key: str) -> str:
    """A conversation created, joined, left and ended through the API; its id."""
    async with aiohttp.ClientSession(headers={"x-api-key": key}) as http:

        async def post(path: str, doc: Any = None) -> Any:
            async with http.post(base + path, json=doc) as r:
                assert r.status in (200, 201), await r.text()
                return await r.json()

        conversation: str = (await post("/api/v2/conversations", {"agentId": "agent-ui"}))["id"]
        for move in ("join", "leave", "end"):
            await post(f"/api/v2/conversations/{conversation}/{move}")
            await asyncio.sleep(0.2)
        return conversation


@pytest.mark.slow
async def test_the_page_follows_again_after_a_server_restart(
    tmp_path: Path, chromium: Path
) -> None:
    """When ``convhook serve`` stops the page says it is reconnecting, and once the server is
    back it follows the stream again: a new conversation's events appear without a reload."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    args = ["serve", "--port", str(port), "--db", str(tmp_path / "r.db"), "--no-dispatch"]
    with cli_process(args, cwd=tmp_path, port=port) as first:
        found = re.search(r"chk_[A-Za-z0-9_-]+", first.stderr + first.stdout)
        assert found is not None, first.stderr
        key = found[0]
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=str(chromium), headless=True, args=["--no-sandbox"]
            )
            try:
                page = await browser.new_page()
                page.set_default_timeout(TIMEOUT_MS)
                watch = Watch(page)
                await page.goto(base + "/ui#events")
                await page.get_by_label("API key").fill(key)
                await page.get_by_role("button", name="Sign in").click()
                live, rows = page.locator("#live"), page.locator("#event-rows tr")
                await expect(live).to_have_text("Live: connected")
                await lifecycle(base, key)
                await expect(rows).to_have_count(3)

                await asyncio.to_thread(first.stop)
                await expect(live).to_have_text("Live: reconnecting")
                with cli_process(args, cwd=tmp_path, port=port):
                    await expect(live).to_have_text("Live: connected")
                    second = await lifecycle(base, key)
                    await expect(rows).to_have_count(6)
                    await expect(rows.nth(0)).to_contain_text(second)
            finally:
                await browser.close()
    # Only the refused connections while the server was down may be logged.
    assert not [e for e in watch.errors if "ERR_CONNECTION_REFUSED" not in e], watch.errors
    assert not watch.foreign, watch.foreign


@pytest.mark.slow
async def test_endpoint_actions_and_failures_from_the_page(tmp_path: Path, chromium: Path) -> None:
    """From the page: the secret is copied and rotated, a test event's 410 disables the
    endpoint, which is enabled again; its failure is recovered since a time, a second one
    redelivered from the failures list."""
    receiver = Receiver().then(Reply(410), Reply(200), Reply(410), Reply(200))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    args = ["serve", "--port", str(port), "--db", str(tmp_path / "a.db"), "--allow-private-targets"]
    async with serve_app(receiver) as hook:
        with cli_process(args, cwd=tmp_path, port=port) as proc:
            found = re.search(r"chk_[A-Za-z0-9_-]+", proc.stderr + proc.stdout)
            assert found is not None, proc.stderr
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(
                    executable_path=str(chromium), headless=True, args=["--no-sandbox"]
                )
                try:
                    context = await browser.new_context()
                    await context.grant_permissions(
                        ["clipboard-read", "clipboard-write"], origin=base
                    )
                    page = await context.new_page()
                    page.set_default_timeout(TIMEOUT_MS)
                    watch = Watch(page)
                    await actions(page, base, found[0], hook + "/gone")
                finally:
                    await browser.close()
        assert len(receiver.received) == 4
    assert not watch.errors, watch.errors
    assert not watch.foreign, watch.foreign


async def actions(page: Page, base: str, key: str, url: str) -> None:
    """The endpoint and failure actions, each checked on the page."""
    await page.goto(base + "/ui#endpoints")
    await page.get_by_label("API key").fill(key)
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_label("URL").fill(url)
    await page.get_by_role("button", name="Create endpoint").click()
    secret = page.locator("#secret")
    await expect(secret).to_have_text(re.compile(r"^whsec_"))
    first = await secret.text_content()
    await page.get_by_role("button", name="Copy secret").click()
    await expect(page.get_by_role("button", name="Copied")).to_be_visible()
    assert await page.evaluate("navigator.clipboard.readText()") == first
    await page.get_by_role("button", name=f"Rotate the secret of {url}").click()
    await expect(secret).not_to_have_text(first or "")
    await expect(secret).to_have_text(re.compile(r"^whsec_"))

    async def test_event_fails() -> None:
        await page.get_by_role("link", name="Endpoints").click()
        await page.get_by_role("button", name=f"Send a test event to {url}").click()
        await expect(page.locator("#event-body")).to_contain_text("A test event")
        # The 410 comes over the live stream while the event's page is open.
        await expect(page.locator("table[data-delivery] tbody tr")).to_contain_text("410")
        await page.get_by_role("link", name="Endpoints").click()
        await expect(page.get_by_role("cell", name=re.compile("^disabled"))).to_contain_text("410")
        await page.get_by_role("button", name=f"Enable {url}").click()
        await expect(page.get_by_role("button", name=f"Disable {url}")).to_be_visible()

    failed = page.get_by_role("table", name="Failed deliveries").locator("tbody tr")
    await test_event_fails()
    await page.get_by_role("link", name="Failures").click()
    await expect(failed).to_have_count(1)
    await page.get_by_label("Failed since").fill("2020-01-01T00:00")
    await page.get_by_role("button", name="Recover").click()
    await expect(page.locator("#alert")).to_have_text("1 deliveries queued again")
    await expect(page.get_by_text("No failed deliveries.")).to_be_visible()

    await test_event_fails()
    await page.get_by_role("link", name="Failures").click()
    await expect(failed).to_have_count(1)
    await failed.get_by_role("checkbox").check()
    await page.get_by_role("button", name="Redeliver selected").click()
    await expect(page.locator("#alert")).to_have_text("1 deliveries queued again")
