"""Helpers every command shares: consoles, error reporting, running coroutines."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import signal
import sys
from collections.abc import Callable, Coroutine, Iterator
from types import FrameType
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console

from convhook.errors import ConvhookError

T = TypeVar("T")

# Data goes to stdout; progress, logs and errors go to stderr.
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``error: message`` on stderr and exit with ``code``."""
    from rich.markup import escape

    # Escaped: messages quote user input and name extras in brackets (`convhook[server]`),
    # which rich would read as markup. Not wrapped: a long command must stay copyable.
    err.print(f"[bold red]error:[/] {escape(message)}", markup=True, soft_wrap=True)
    raise typer.Exit(code)


# What each optional part of the package brings (pyproject.toml's extras).
EXTRAS = {"server": ("fastapi", "prometheus_client", "fastapi_offline")}


def need_extra(command: str, extra: str) -> None:
    """Fail with the install command when ``extra``'s packages are missing: the receiver
    (``listen``, ``trigger``, ``inbox``, ``schema``) installs without them."""
    import importlib.util

    missing = [m for m in EXTRAS[extra] if importlib.util.find_spec(m) is None]
    if missing:
        fail(
            f"`convhook {command}` needs the {extra} extra ({', '.join(missing)} not "
            f"installed): pip install 'convhook[{extra}]'"
        )


def refuse_busy_port(host: str, port: int) -> None:
    """Fail before anything is created when ``host:port`` is taken (uvicorn would say so only
    after the database was opened, a workspace created and a banner printed)."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        # As uvicorn binds: a port whose last connections linger in TIME_WAIT is free.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            fail(
                f"cannot listen on {host}:{port} ({exc.strerror}): pick another --port or stop "
                "what uses it"
            )


def start_logging(log_format: str, log_level: str) -> Callable[[], None]:
    """Check ``--log-format``/``--log-level`` (exit 2 naming the allowed values) and route the
    command's log records (see :mod:`convhook.logs`); returns the function that stops it."""
    from convhook import logs

    try:
        fmt, level = logs.check(log_format, log_level)
    except ValueError as exc:
        fail(str(exc))
    return logs.configure(fmt, level)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine; a :class:`ConvhookError` becomes a one-line error, not a traceback."""
    try:
        return asyncio.run(coro)
    except ConvhookError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


# Python collects its youngest generation every 700 net allocations, which a server or the
# dispatcher reaches every request or two (aiohttp and uvicorn allocate hundreds of short-lived
# objects per request, nearly all freed by reference counting). Every 20,000 still bounds the
# garbage that cycles can hold, and measured +11-14% delivered events/s for the dispatcher.
GC_THRESHOLD = (20_000, 20, 20)


def tune_gc() -> None:
    """Set the collector up for a long-running server (see :data:`GC_THRESHOLD`)."""
    # Objects alive now (modules, settings, the app) stay alive: leave them out of every
    # later full collection.
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)


def run_fast(coro: Coroutine[Any, Any, None]) -> None:
    """Like :func:`run`, on uvloop when installed (it is with uvicorn[standard]): servers and
    the dispatcher spend noticeably less CPU per request on it than on the stdlib loop. The
    garbage collector is tuned for a long-running server first (:func:`tune_gc`)."""
    tune_gc()
    try:
        import uvloop
    except ImportError:
        run(coro)
        return
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(coro)
    except ConvhookError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def print_json(data: Any) -> None:
    """Write ``data`` as JSON on stdout (for ``--json``)."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


class Signalled(Exception):
    """The process got SIGTERM or SIGINT after uvicorn's graceful shutdown."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _signalled(signum: int, frame: FrameType | None) -> None:
    raise Signalled(signum)


@contextlib.contextmanager
def signals_as_exceptions() -> Iterator[None]:
    """uvicorn sends a caught SIGTERM or SIGINT again once it has shut down: within this
    block that signal raises :class:`Signalled` instead of killing the process, so the queued
    log records are written before the caller dies of it (:func:`die_of`)."""
    previous = {sig: signal.signal(sig, _signalled) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def die_of(signum: int) -> NoReturn:
    """Die of ``signum`` as uvicorn means to: a supervisor reads that as a clean stop."""
    signal.signal(signum, signal.SIG_DFL)
    signal.raise_signal(signum)
    raise SystemExit(128 + signum)  # not reached: the default action ends the process
