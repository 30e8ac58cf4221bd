"""The SSRF guard judges a webhook host as the HTTP client dials it, at creation and at send.

Each case points at a real loopback server: a guard that let the URL through would make it
receive a signed POST, which is what the assertions look for.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from convhook.sender import Sender
from convhook.signing import Secret
from tests.integration.test_endpoints_api import Api, _api
from tests.support.delivery import Receiver
from tests.support.servers import serve_app

# Spellings of 127.0.0.1 that yarl (and so aiohttp) folds to the loopback address, or that the
# system resolver reads as it: fullwidth digits, ideographic and fullwidth full stops, circled
# digits, and the legacy IPv4 forms.
LOOPBACK_SPELLINGS = [
    "１２７.０.０.１",
    "127。0。0。1",
    "127．0．0．1",
    "127｡0｡0｡1",
    "⑫⑦.0.0.1",
    "127.1",
    "0x7f.1",
    "0x7f000001",
    "2130706433",
    "017700000001",
    "[::ffff:127.0.0.1]",
    "[64:ff9b::7f00:1]",
    "ⓛocalhost",
    "LOCALHOST.",
]


@pytest.fixture
async def strict(database_url: str) -> AsyncIterator[Api]:
    """The API with the default SSRF guard, on either engine."""
    async for api in _api(database_url, False):
        yield api


@pytest.fixture
async def hook() -> AsyncIterator[tuple[Receiver, int]]:
    """A real loopback server that records what reaches it, and its port."""
    receiver = Receiver()
    async with serve_app(receiver) as base:
        yield receiver, int(base.rsplit(":", 1)[1].split("/", 1)[0])


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS)
async def test_unicode_and_numeric_loopback_refused_at_creation(
    strict: Api, hook: tuple[Receiver, int], host: str
) -> None:
    """An endpoint whose host normalises to a loopback address answers 422 naming url."""
    _, port = hook
    status, body = await strict.call(
        "POST", "/api/v2/endpoints", {"url": f"http://{host}:{port}/h"}
    )
    assert status == 422, body
    assert body["problems"][0]["field"] == "url"
    status, listed = await strict.call("GET", "/api/v2/endpoints")
    assert status == 200
    assert listed["data"] == []


@pytest.mark.parametrize(
    "url",
    [
        "http://[::1:8/h",
        "http://[foo]/",
        "http://[::1]x/",
        "http://[fe80::1%zz/",
        "http://evil.example\\@127.0.0.1/",
        "http://%31%32%37.0.0.1/",
        "http://exa mple.com/",
        "http://example.com/\r\nx-injected: 1",
        "http://a..b/",
        "http://" + "a" * 64 + ".example/",
    ],
)
async def test_malformed_hosts_answer_422(strict: Api, url: str) -> None:
    """A host that does not parse or normalise cleanly is a 422 naming url, never a 500."""
    status, body = await strict.call("POST", "/api/v2/endpoints", {"url": url})
    assert status == 422, body
    assert body["problems"][0]["field"] == "url"


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS)
async def test_sender_refuses_normalised_loopback_at_send_time(
    hook: tuple[Receiver, int], host: str
) -> None:
    """A stored URL that dials loopback (say, saved before the guard knew the spelling) is a
    failed attempt that names the reason, and the loopback server receives nothing."""
    receiver, port = hook
    async with Sender(timeout=5) as sender:
        result = await sender.send(f"http://{host}:{port}/h", "evt_1", b"{}", [Secret.generate()])
    assert result.status_code is None
    assert result.error is not None
    assert "refusing" in result.error
    assert receiver.received == []


async def test_sender_still_reaches_loopback_when_private_allowed(
    hook: tuple[Receiver, int],
) -> None:
    """With private targets allowed, the normalised loopback address is dialled as usual."""
    receiver, port = hook
    async with Sender(timeout=5, allow_private=True) as sender:
        result = await sender.send(
            f"http://１２７.０.０.１:{port}/h", "evt_1", b"{}", [Secret.generate()]
        )
    assert result.status_code == 200
    assert len(receiver.received) == 1
