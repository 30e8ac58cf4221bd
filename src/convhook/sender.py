"""One HTTP attempt of a webhook: sign, POST, time it, keep the first 4 KiB of the answer.

Redirects are not followed (a 3xx is a failed attempt, as with Svix and Stripe), the whole
request has one timeout, and connections go through :class:`convhook.netguard.GuardedResolver`
unless private targets are allowed. The sender never raises for a network failure: every
attempt ends in an :class:`AttemptResult` the dispatcher records.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType

import aiohttp

from convhook import __version__
from convhook.errors import ClosedError, SecretError
from convhook.netguard import BlockedAddressError, GuardedResolver, TargetError, check_url
from convhook.retry import Outcome, parse_retry_after
from convhook.signing import Secret, parsed_secrets, signature_header

BODY_LIMIT = 4096
DEFAULT_TIMEOUT = 15.0
USER_AGENT = f"convhook/{__version__} (+https://www.standardwebhooks.com)"


# Not frozen: one is built per attempt, and a frozen dataclass sets each field through
# object.__setattr__.
@dataclass(slots=True)
class AttemptResult:
    """What one POST produced."""

    status_code: int | None
    latency_ms: float
    error: str | None = None
    response_body: str = ""
    retry_after: float | None = None
    timed_out: bool = False

    @property
    def outcome(self) -> Outcome:
        """The part of the result the retry policy judges."""
        return Outcome(self.status_code, self.timed_out, self.retry_after)


class Sender:
    """An aiohttp session that makes signed webhook attempts; use as ``async with``."""

    def __init__(
        self,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        allow_private: bool = False,
        user_agent: str = USER_AGENT,
        clock: Callable[[], float] = time.time,
        connections: int = 0,
    ) -> None:
        self.timeout = timeout
        self.allow_private = allow_private
        self.user_agent = user_agent
        self._clock = clock
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None
        # A URL's verdict depends on nothing but the URL: judge each one once.
        self._refused: dict[str, str | None] = {}

    async def __aenter__(self) -> Sender:
        resolver = None if self.allow_private else GuardedResolver()
        connector = aiohttp.TCPConnector(
            limit=self._connections, resolver=resolver, ttl_dns_cache=60
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            auto_decompress=True,
        )
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _refusal(self, url: str) -> str | None:
        if url not in self._refused:
            if len(self._refused) > 10_000:
                self._refused.clear()
            try:
                check_url(url)
                self._refused[url] = None
            except TargetError as exc:
                self._refused[url] = str(exc)
        return self._refused[url]

    async def send(
        self,
        url: str,
        event_id: str,
        body: bytes,
        secrets: Sequence[Secret | str],
        extra: Mapping[str, str] | None = None,
        signed: tuple[int, str] | None = None,
    ) -> AttemptResult:
        """POST ``body`` to ``url`` signed with every secret, with the ``extra`` headers;
        never raises for I/O errors. ``signed`` is a timestamp and the ``webhook-signature``
        made with those secrets at it, already (the sender signs when it is None)."""
        if self._session is None:
            raise ClosedError("Sender is not open: use `async with Sender(...)`")
        if not self.allow_private:
            # aiohttp dials a literal address without asking the resolver, so the host is
            # judged here as aiohttp will normalise it (Unicode digits and dots included).
            refusal = self._refusal(url)
            if refusal is not None:
                return AttemptResult(None, 0.0, refusal)
        if signed is not None:
            timestamp, signature = signed
        else:
            timestamp = int(self._clock())
            try:
                signature = signature_header(parsed_secrets(secrets), event_id, timestamp, body)
            except SecretError as exc:  # a damaged secret row: a failed attempt, not a crash
                return AttemptResult(None, 0.0, f"cannot sign the request: {exc}")
        headers = {
            "content-type": "application/json",
            "user-agent": self.user_agent,
            "webhook-id": event_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature,
        }
        if extra:
            headers.update(extra)
        started = time.perf_counter()
        try:
            async with self._session.post(
                url, data=body, headers=headers, allow_redirects=False
            ) as response:
                text = await _read_capped(response)
                retry_after = parse_retry_after(response.headers.get("retry-after"), self._clock())
                return AttemptResult(
                    response.status, _ms(started), None, text, retry_after=retry_after
                )
        except TimeoutError:
            return AttemptResult(
                None, _ms(started), f"timed out after {self.timeout:g} s", timed_out=True
            )
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, BlockedAddressError):
                return AttemptResult(None, _ms(started), str(exc.os_error))
            return AttemptResult(None, _ms(started), _describe(exc))
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            return AttemptResult(None, _ms(started), _describe(exc))


def _text(data: bytes) -> str:
    # Kept in the attempt log: a NUL byte, which PostgreSQL's text refuses (and which would
    # fail every retry of the record), is written as the four characters \x00. The same rule
    # as convhook.receiver.limits.storable, not imported: that package's import brings the
    # whole receiver into the dispatcher.
    text = data.decode("utf-8", errors="replace")
    return text.replace("\x00", "\\x00") if "\x00" in text else text


async def _read_capped(response: aiohttp.ClientResponse) -> str:
    length = response.content_length
    if length is not None and length <= BODY_LIMIT:
        return _text(await response.read())
    chunks: list[bytes] = []
    size = 0
    while size < BODY_LIMIT:
        chunk = await response.content.read(BODY_LIMIT - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size >= BODY_LIMIT and not response.content.at_eof():
        # The rest is not wanted; closing beats draining an arbitrarily large body.
        response.close()
    return _text(b"".join(chunks))


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    # A message may quote what the server sent, NUL bytes and lone surrogates included.
    text = text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode()
    return f"{type(exc).__name__}: {text}"[:500]


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
