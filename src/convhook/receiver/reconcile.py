"""Reading a conversation's events back from the producer's API, to fill a gap.

Opt-in: a receiver given the producer's API URL and a workspace key
(``Receiver(reconcile_url=..., reconcile_key=...)``, ``convhook listen --reconcile-api-url``)
asks ``GET /api/v2/conversations/{id}/events?afterSequence=N`` for the events it never got.
Only the HTTP contract is shared with the producer: nothing of the server side is imported.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from convhook import __version__
from convhook.errors import ConfigError, PayloadError
from convhook.receiver.limits import clip, describe
from convhook.wirecheck import check_event

if TYPE_CHECKING:
    import aiohttp

PAGE = 500
"""The most events asked for per request (the API's largest page)."""
MAX_PAGES = 100
"""Pages read for one gap at most: a gap larger than 50,000 events is filled by later looks."""


@dataclass(frozen=True)
class Reconcile:
    """Where and how a receiver reads missing events back.

    ``url`` is the producer's base URL (``https://hooks.example.com``), ``key`` a workspace
    key of the workspace that sends the events. ``wait`` is the longest an event waits for
    its conversation's earlier events (fetched, or still being handled) before its own
    handlers run regardless; ``timeout`` bounds each request.
    """

    url: str
    key: str
    wait: float = 60.0
    timeout: float = 10.0

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError(
                f"the reconcile API URL must be an http:// or https:// URL, got {self.url!r}"
            )
        if not self.key:
            raise ConfigError("the reconcile API needs a workspace key: pass reconcile_key=...")
        if self.wait < 0 or self.timeout <= 0:
            raise ConfigError("reconcile wait must be >= 0 and timeout > 0 seconds")

    def __repr__(self) -> str:
        # The key never reaches a log line or a traceback.
        return f"Reconcile(url={self.url!r}, wait={self.wait}, timeout={self.timeout})"


@dataclass(frozen=True)
class Fetched:
    """One event read back: ``body`` is None when retention pruned it (or it is unusable,
    then ``problem`` says why)."""

    sequence: int
    event_id: str
    event_type: str
    previous_event_id: str | None
    body: bytes | None
    problem: str | None = None


class FetchError(Exception):
    """The API could not give the events: ``retry`` says whether asking later may help."""

    def __init__(self, reason: str, *, retry: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry = retry


class ConversationAPI:
    """The producer's ``/api/v2/conversations/{id}/events`` as the receiver reads it."""

    def __init__(self, config: Reconcile) -> None:
        self.config = config
        self._base = config.url.rstrip("/")
        self._session: aiohttp.ClientSession | None = None

    async def events(self, conversation_id: str, after: int, before: int) -> list[Fetched]:
        """The conversation's events with ``after < sequence < before``, in order.

        Raises :class:`FetchError`: retryable for a network error, a timeout, a 429 or a
        5xx; final for a 404 (unknown conversation), any other 4xx or an unreadable answer.
        """
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.config.timeout),
                headers={
                    "authorization": f"Bearer {self.config.key}",
                    "accept": "application/json",
                    "user-agent": f"convhook-receiver/{__version__}",
                },
            )
        url = f"{self._base}/api/v2/conversations/{quote(conversation_id, safe='')}/events"
        found: list[Fetched] = []
        cursor = after
        for _ in range(MAX_PAGES):
            if cursor >= before - 1:
                break
            params = {"afterSequence": str(cursor), "limit": str(min(PAGE, before - 1 - cursor))}
            page = await self._get(url, params, conversation_id)
            data = page.get("data")
            if not isinstance(data, list):
                raise FetchError("the API's answer has no data list", retry=False)
            for item in data:
                fetched = _item(item)
                if fetched.sequence >= before:
                    return found
                if fetched.sequence > after:
                    found.append(fetched)
            following = page.get("nextAfterSequence")
            # A cursor that does not move on would loop: stop at what was read.
            if not isinstance(following, int) or following <= cursor:
                break
            cursor = following
        return found

    async def _get(self, url: str, params: dict[str, str], conversation_id: str) -> dict[str, Any]:
        import aiohttp

        assert self._session is not None
        try:
            async with self._session.get(url, params=params, allow_redirects=False) as response:
                status = response.status
                text = await response.text(errors="replace")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise FetchError(f"the API did not answer: {clip(describe(exc))}", retry=True) from None
        if status == 404:
            raise FetchError(
                f"the API does not know conversation {clip(conversation_id)} (404)", retry=False
            )
        if status == 429 or status >= 500:
            raise FetchError(f"the API answered {status}", retry=True)
        if status != 200:
            raise FetchError(f"the API answered {status}: {clip(text)}", retry=False)
        try:
            page = json.loads(text)
        except ValueError:
            raise FetchError("the API's answer is not JSON", retry=False) from None
        if not isinstance(page, dict):
            raise FetchError("the API's answer is not a JSON object", retry=False)
        return page

    async def close(self) -> None:
        """Close the HTTP session."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()


def _item(item: Any) -> Fetched:
    """One item of the API's ``data`` list, its event checked as a delivery would be."""
    if not isinstance(item, dict) or not isinstance(item.get("sequence"), int):
        raise FetchError("the API's answer has an item without a sequence", retry=False)
    sequence: int = item["sequence"]
    event_id = str(item.get("eventId") or "")
    event_type = str(item.get("eventType") or "")
    previous = item.get("previousEventId")
    previous = previous if isinstance(previous, str) else None
    event = item.get("event")
    if item.get("pruned") or not isinstance(event, dict) or event.get("payload") is None:
        return Fetched(sequence, event_id, event_type, previous, None, "pruned by retention")
    body = json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()
    try:
        checked = check_event(body)
    except PayloadError as exc:
        return Fetched(sequence, event_id, event_type, previous, None, f"invalid: {exc.message}")
    return Fetched(sequence, checked.event_id, checked.event_type, previous, body)
