"""Forwarding: re-send a stored event's raw body and webhook headers to another URL.

The bytes and signature headers go out exactly as they came in, so the target verifies
the original signature (within its timestamp tolerance), like ``stripe listen --forward-to``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from convhook import __version__
from convhook.errors import ForwardError as ForwardError  # re-exported: its old home
from convhook.receiver.handlers import Delivery

if TYPE_CHECKING:
    import aiohttp


class Forwarder:
    """A handler that POSTs each event's stored request to ``url``; non-2xx raises."""

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise ForwardError(f"--forward-to must be an http:// or https:// URL, got {url!r}")
        self.url = url
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def __call__(self, event: Any, delivery: Delivery) -> None:
        await self.send(delivery.body, delivery.headers)

    async def send(self, body: bytes, headers: Mapping[str, str]) -> int:
        """POST ``body`` with the stored webhook headers; return the status or raise."""
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        sent = {
            "content-type": "application/json",
            "user-agent": f"convhook-forward/{__version__}",
            **headers,
        }
        try:
            async with self._session.post(
                self.url, data=body, headers=sent, allow_redirects=False
            ) as response:
                text = await response.text(errors="replace")
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            detail = str(exc) or type(exc).__name__
            raise ForwardError(f"forward to {self.url} failed: {detail}") from None
        if not 200 <= status < 300:
            raise ForwardError(f"forward to {self.url} answered {status}: {text[:200]}")
        return status

    async def close(self) -> None:
        """Close the HTTP session."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()
