"""Helpers every command shares: consoles, error reporting, running coroutines."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Coroutine
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console

from convhook.errors import ConvhookError

T = TypeVar("T")

# Data goes to stdout; progress, logs and errors go to stderr.
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``error: message`` on stderr and exit with ``code``."""
    err.print(f"[bold red]error:[/] {message}", markup=True)
    raise typer.Exit(code)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine; a :class:`ConvhookError` becomes a one-line error, not a traceback."""
    try:
        return asyncio.run(coro)
    except ConvhookError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def print_json(data: Any) -> None:
    """Write ``data`` as JSON on stdout (for ``--json``)."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()
