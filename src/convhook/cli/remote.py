"""The API client the remote commands share: where the server is (flags, ``CONVHOOK_API_*``,
a saved profile), one request at a time with timeouts, API errors as one-line CLI errors, the
event stream, and tables that fit the terminal.

Only aiohttp and the standard library: these commands run on an installation without the
server extra.
"""

from __future__ import annotations

import asyncio
import codecs
import json
import os
import re
import tempfile
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from convhook.cli._common import fail, out
from convhook.config import option
from convhook.errors import ConvhookError

if TYPE_CHECKING:
    import aiohttp

T = TypeVar("T")

DEFAULT_PROFILE = "default"
TIMEOUT_S = 30.0
"""Longest wait for one API answer."""
CONNECT_TIMEOUT_S = 10.0
STREAM_IDLE_S = 60.0
"""A stream silent for this long (no message, no heartbeat) is dead: reconnect."""
_WHERE = "pass --api-url, set CONVHOOK_API_URL or run `convhook login`"


def api_url_option() -> Any:
    return option(
        None,
        "--api-url",
        env="API_URL",
        help="Base URL of a running `convhook serve`, e.g. http://127.0.0.1:8080 "
        "(else the profile's).",
    )


def api_key_option() -> Any:
    return option(None, "--api-key", env="API_KEY", help="Workspace API key (else the profile's).")


def profile_option() -> Any:
    return option(
        None,
        "--profile",
        env="PROFILE",
        help=f"Profile saved by `convhook login` (default: {DEFAULT_PROFILE!r}).",
    )


def json_option(what: str = "Print the API's JSON answer.") -> Any:
    return option(False, "--json", env="JSON", help=what)


class RemoteError(ConvhookError):
    """The server refused a request or could not be reached (the CLI exits 1)."""


# --- profiles ---------------------------------------------------------------------------


def profiles_path() -> Path:
    """``$XDG_CONFIG_HOME/convhook/profiles.json`` (``~/.config`` when unset)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "convhook" / "profiles.json"


def read_profiles() -> dict[str, dict[str, str]]:
    """Every saved profile by name; none when the file does not exist."""
    path = profiles_path()
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        fail(f"cannot read the profiles in {path}: {exc}")
    profiles = doc.get("profiles") if isinstance(doc, dict) else None
    if not isinstance(profiles, dict):
        fail(f"{path} is not a convhook profiles file: remove it and run `convhook login`")
    return profiles


def write_profiles(profiles: dict[str, dict[str, str]]) -> Path:
    """Replace the profiles file (mode 0600: it holds API keys), atomically."""
    path = profiles_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # mkstemp creates the file 0600, so the keys are never readable by others, even briefly.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".profiles-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump({"profiles": profiles}, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def normal_url(url: str) -> str:
    """``url`` without its trailing slash; exit 2 unless it is an http(s) URL."""
    if not re.match(r"[Hh][Tt][Tt][Pp][Ss]?://[^/]", url):
        fail(f"--api-url must be an http:// or https:// URL, got {url!r}")
    return url.rstrip("/")


@dataclass(frozen=True)
class Connection:
    """Which server the commands talk to, with which key, and where that came from."""

    url: str
    key: str
    source: str


def connection(api_url: str | None, api_key: str | None, profile: str | None) -> Connection:
    """Resolve the server and key: flags, then ``CONVHOOK_API_*``, then the profile (typer
    already put a flag before its variable). Exit 2 when something is missing."""
    name = profile or DEFAULT_PROFILE
    saved = read_profiles().get(name)
    if saved is None and profile is not None:
        fail(f"no profile {name!r} in {profiles_path()}: run `convhook login --profile {name}`")
    saved = saved or {}
    url = normal_url(api_url) if api_url else saved.get("apiUrl")
    if not url:
        fail(f"no API URL: {_WHERE}")
    key = api_key
    source = "--api-url" if api_url else f"profile {name!r}"
    # The profile's key goes to the profile's server only: a key sent to another URL leaks.
    if key is None and saved.get("apiUrl") == url:
        key = saved.get("apiKey")
    if not key:
        fail(f"no API key for {url}: pass --api-key, set CONVHOOK_API_KEY or run `convhook login`")
    return Connection(url, key, source)


# --- requests ---------------------------------------------------------------------------


def describe(status: int, method: str, path: str, text: str) -> str:
    """An error answer as one line: the API's message and its field problems."""
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("error"), str):
        message = doc["error"]
        problems = [
            f"{p.get('field')}: {p.get('problem')}"
            for p in doc.get("problems") or []
            if isinstance(p, dict)
        ]
        # Validation errors already name their problems in the message.
        problems = [p for p in problems if p not in message]
        if problems:
            message += " (" + "; ".join(problems) + ")"
    else:
        message = " ".join(text.split())[:200] or "no body"
    return f"{method} {path}: HTTP {status}: {message}"


@dataclass
class Client:
    """A session with one server: ``async with Client(conn) as api: await api.get(...)``."""

    conn: Connection
    streaming: bool = False
    """No limit on the whole answer; a silence of :data:`STREAM_IDLE_S` ends it instead."""
    _session: aiohttp.ClientSession | None = field(default=None, init=False)

    async def __aenter__(self) -> Client:
        import aiohttp

        from convhook import __version__

        self._session = aiohttp.ClientSession(
            headers={"x-api-key": self.conn.key, "user-agent": f"convhook-cli/{__version__}"},
            timeout=aiohttp.ClientTimeout(
                total=None if self.streaming else TIMEOUT_S,
                connect=CONNECT_TIMEOUT_S,
                sock_read=STREAM_IDLE_S if self.streaming else None,
            ),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("use the client in `async with Client(conn)`")
        return self._session

    def unreachable(self, exc: BaseException) -> RemoteError:
        errno = getattr(exc, "errno", None)
        # The errno's own words ("Connection refused"), not asyncio's "Connect call failed".
        reason = os.strerror(errno) if errno else str(exc) or type(exc).__name__
        return RemoteError(
            f"cannot reach {self.conn.url} ({reason}): is `convhook serve` running there? "
            f"(the URL is from {self.conn.source})"
        )

    async def call(
        self, method: str, path: str, *, params: dict[str, Any] | None = None, body: Any = None
    ) -> Any:
        """The JSON answer of one request; :class:`RemoteError` for an error answer."""
        import aiohttp

        query = {k: str(v) for k, v in (params or {}).items() if v is not None}
        try:
            async with self.session.request(
                method, self.conn.url + path, params=query, json=body, allow_redirects=False
            ) as r:
                text = await r.text()
                refuse_redirect(r, self.conn.url)
                if r.status >= 400:
                    raise RemoteError(describe(r.status, method, path, text))
        except TimeoutError:
            # Before the connection errors: aiohttp's read timeout is one of them too.
            raise RemoteError(
                f"{method} {path}: no answer from {self.conn.url} within {TIMEOUT_S:.0f} s"
            ) from None
        except aiohttp.ClientConnectionError as exc:
            raise self.unreachable(exc) from None
        if not text:
            return None
        try:
            return json.loads(text)
        except ValueError:
            raise RemoteError(f"{method} {path}: the answer is not JSON: {text[:200]!r}") from None

    async def get(self, path: str, **params: Any) -> Any:
        return await self.call("GET", path, params=params)

    async def pages(self, path: str, params: dict[str, Any], every: bool) -> dict[str, Any]:
        """One page of a list, or every page from ``cursor`` on (``nextCursor`` then null)."""
        page: dict[str, Any] = await self.call("GET", path, params=params)
        data = list(page["data"])
        while every and page.get("nextCursor"):
            page = await self.call("GET", path, params={**params, "cursor": page["nextCursor"]})
            data.extend(page["data"])
        return {"data": data, "nextCursor": page.get("nextCursor")}


def refuse_redirect(response: aiohttp.ClientResponse, url: str) -> None:
    """A redirect is an error naming its target, not followed: the key would go along."""
    if 300 <= response.status < 400:
        target = response.headers.get("location", "?")
        raise RemoteError(
            f"{url} redirects ({response.status}) to {target}: pass the URL it should be "
            "as --api-url"
        )


def run_remote(conn: Connection, work: Callable[[Client], Coroutine[Any, Any, T]]) -> T:
    """Run ``work`` with a client of ``conn``; a server's refusal exits 1 with its message."""

    async def go() -> T:
        async with Client(conn) as api:
            return await work(api)

    try:
        return asyncio.run(go())
    except RemoteError as exc:
        fail(str(exc), code=1)
    except KeyboardInterrupt:
        import typer

        raise typer.Exit(130) from None


def call(conn: Connection, method: str, path: str, **kwargs: Any) -> Any:
    """One request's JSON answer (see :func:`run_remote`)."""
    return run_remote(conn, lambda api: api.call(method, path, **kwargs))


# --- server-sent events -----------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    """One server-sent event: its ``event`` name (``message`` when absent), data and id."""

    event: str
    data: str
    id: str | None


class SseParser:
    """The text/event-stream format (WHATWG HTML, "server-sent events"), fed in chunks of
    any size: lines end with CRLF, LF or CR; comments (``: ping``) are skipped."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None
        self.last_id: str | None = None
        """The id to send back as ``Last-Event-ID`` (it persists across messages)."""
        self.retry_ms: int | None = None

    def feed(self, chunk: bytes) -> list[Message]:
        """The messages ``chunk`` completes."""
        text = self._buffer + self._decoder.decode(chunk)
        # A CR at a chunk's end may be the first half of a CRLF: decide with the next chunk.
        held = "\r" if text.endswith("\r") else ""
        lines = re.split(r"\r\n|\r|\n", text.removesuffix("\r") if held else text)
        self._buffer = lines.pop() + held
        done: list[Message] = []
        for line in lines:
            message = self._line(line)
            if message is not None:
                done.append(message)
        return done

    def _line(self, line: str) -> Message | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._id = value
            self.last_id = value
        elif name == "retry" and value.isdigit():
            self.retry_ms = int(value)
        return None

    def _dispatch(self) -> Message | None:
        event, data, self._event, self._data = self._event, self._data, "", []
        if not data:
            return None
        return Message(event or "message", "\n".join(data), self.last_id)


async def sse(response: aiohttp.ClientResponse, parser: SseParser) -> AsyncIterator[Message]:
    """The messages of a streaming answer as they arrive."""
    async for chunk in response.content.iter_any():
        for message in parser.feed(chunk):
            yield message


# --- tables -----------------------------------------------------------------------------


def table(
    title: str,
    rows: list[dict[str, str]],
    columns: Sequence[str],
    *,
    drop: Sequence[str] = (),
    ids: Sequence[str] = (),
    cut: str | None = None,
    style: Callable[[str, str], str] | None = None,
) -> None:
    """Print ``rows`` as a table that fits the terminal: no cell is shortened but the ``cut``
    column's, which gets what is left, ending in an ellipsis; the ``drop`` columns go first,
    in order, while the table would not fit. Should even that not fit, the ``ids`` columns
    fold onto several lines: an id is copied into other commands and is never cut."""
    from rich.table import Table
    from rich.text import Text

    shown = list(columns)
    for name in drop:
        if _width(rows, shown, cut) <= out.width:
            break
        shown.remove(name)
    fold = _width(rows, shown, cut) > out.width
    grid = Table(title=title, title_justify="left")
    for name in shown:
        if name == cut:
            grid.add_column(name, no_wrap=True)
        elif fold and name in ids:
            grid.add_column(name, overflow="fold")
        else:
            # At its widest cell: rich would otherwise squeeze every column, ids too.
            widest = max([len(name), *(len(r[name]) for r in rows)])
            grid.add_column(name, no_wrap=True, min_width=None if fold else widest)
    if cut in shown:
        # Cut here: rich measures a no_wrap cell's minimum as its whole text and would squeeze
        # the other columns instead.
        room = max(12, out.width - _width(rows, shown, cut) + 12)
        for row in rows:
            text = " ".join(row[cut].split())
            row[cut] = text if len(text) <= room else text[: room - 1] + "…"
    for row in rows:
        # Text, not markup: urls, errors and ids may hold brackets.
        grid.add_row(*(Text(row[c], style=style(c, row[c]) if style else "") for c in shown))
    out.print(grid)


def _width(rows: list[dict[str, str]], columns: list[str], cut: str | None) -> int:
    """The table's width with ``columns`` at their widest cell (``cut`` at 12)."""
    widths = [12 if c == cut else max([len(c), *(len(r[c]) for r in rows)]) for c in columns]
    return sum(widths) + 3 * len(columns) + 1


def short_time(value: str | None) -> str:
    """An API timestamp as ``MM-DD HH:MM:SS`` (UTC), for a table."""
    if not value:
        return ""
    match = re.match(r"\d{4}-(\d\d-\d\d)T(\d\d:\d\d:\d\d)", value)
    return f"{match[1]} {match[2]}" if match else value


def print_fields(doc: dict[str, Any], *, skip: Sequence[str] = ()) -> None:
    """A document as ``key: value`` lines, values as JSON spells them (strings bare)."""
    for key, value in doc.items():
        if key in skip:
            continue
        shown = value if isinstance(value, str) else json.dumps(value)
        out.print(f"[bold]{key}[/]: ", end="")
        out.print(shown, markup=False, highlight=False)
