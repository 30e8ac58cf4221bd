"""The soak test's fault-injecting loopback proxy in front of ``convhook listen``.

Each delivery's first attempt may meet one fault; its retries pass. The dispatcher's retry
schedule (5 s, then 5 min, then 30 min) would otherwise turn a second or third injected fault
into a drain of half an hour, which says nothing more about losing events.

Kinds of fault:

- ``503 before the receiver``: answered by the proxy; the receiver never sees the request.
- ``500 after the receiver stored it``: forwarded, then the receiver's 2xx is replaced, as
  when a reply is lost on the way back; the retry is a duplicate for the receiver.
- ``timeout``: held past the dispatcher's request timeout and forwarded afterwards, so the
  receiver stores an event whose sender gave up; the retry is a duplicate too.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import aiohttp
from aiohttp import web

REJECT = "503 before the receiver"
LOST_REPLY = "500 after the receiver stored it"
TIMEOUT = "timeout past the dispatcher's limit"
# What the receiver needs to verify and store a delivery, passed through unchanged.
_PASSED = ("content-type", "webhook-id", "webhook-timestamp", "webhook-signature")


class FaultProxy:
    """Forwards POSTs to ``target``, injecting faults into a share of first attempts."""

    def __init__(
        self,
        target: str,
        *,
        error_share: float,
        timeout_share: float,
        hold: float,
        seed: int = 1,
    ) -> None:
        self.target = target
        self.error_share = error_share
        self.timeout_share = timeout_share
        self.hold = hold
        self.enabled = True
        self.faults: Counter[str] = Counter()
        self.requests = 0
        self.duplicates = 0
        """Requests forwarded for an event the receiver had already answered 2xx."""
        self.unreachable = 0
        """Requests the receiver could not be reached for (answered 502)."""
        self._rng = random.Random(seed)
        self._seen: set[str] = set()
        self._stored: set[str] = set()
        self._late: set[asyncio.Task[None]] = set()
        self._http: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None

    async def start(self, port: int) -> None:
        """Listen on 127.0.0.1:``port``."""
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        app = web.Application()
        app.router.add_post("/{path:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()

    async def close(self) -> None:
        """Finish the late forwards of timed-out requests, then stop listening."""
        if self._late:
            await asyncio.gather(*self._late, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
        if self._http is not None:
            await self._http.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k: request.headers[k] for k in _PASSED if k in request.headers}
        event_id = headers.get("webhook-id", "")
        self.requests += 1
        first = event_id not in self._seen
        self._seen.add(event_id)
        roll = self._rng.random() if first and self.enabled else 1.0
        if roll < self.error_share / 2:
            self.faults[REJECT] += 1
            return web.Response(status=503, text="injected fault")
        if roll < self.error_share:
            self.faults[LOST_REPLY] += 1
            await self._forward(event_id, body, headers)
            return web.Response(status=500, text="injected fault")
        if roll < self.error_share + self.timeout_share:
            self.faults[TIMEOUT] += 1
            # A task of its own: the dispatcher hangs up at its timeout, and the forward must
            # still happen whatever the server does with this handler then.
            late = asyncio.create_task(self._forward_later(event_id, body, headers))
            self._late.add(late)
            late.add_done_callback(self._late.discard)
            await asyncio.sleep(self.hold)
            return web.Response(status=504, text="injected fault")
        status, text = await self._forward(event_id, body, headers)
        return web.Response(status=status, text=text)

    async def _forward_later(self, event_id: str, body: bytes, headers: dict[str, str]) -> None:
        await asyncio.sleep(self.hold)
        await self._forward(event_id, body, headers)

    async def _forward(
        self, event_id: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, str]:
        assert self._http is not None, "start() first"
        if event_id in self._stored:
            self.duplicates += 1
        try:
            async with self._http.post(
                self.target, data=body, headers=headers, allow_redirects=False
            ) as reply:
                text = await reply.text()
                if 200 <= reply.status < 300:
                    self._stored.add(event_id)
                return reply.status, text
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.unreachable += 1
            return 502, f"receiver unreachable: {exc!r}"
