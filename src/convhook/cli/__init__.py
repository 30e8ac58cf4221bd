"""The ``convhook`` command line: one module per command group, found at start-up.

Each module here defines ``register(app)``; heavy imports (servers, database drivers) happen
inside the commands so ``convhook --help`` and ``convhook trigger`` start fast.
"""

from __future__ import annotations

import importlib
import pkgutil

import typer

app = typer.Typer(
    name="convhook",
    help="Conversation-event webhooks: produce, deliver, receive and test them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        from convhook import __version__

        typer.echo(f"convhook {__version__}")
        raise typer.Exit


@app.callback()
def _options(
    ctx: typer.Context,
    version: bool = typer.Option(
        False,
        "--version",
        callback=_version,
        is_eager=True,
        help="Print the version and exit.",
    ),
    log_format: str = typer.Option(
        "text",
        "--log-format",
        envvar="CONVHOOK_LOG_FORMAT",
        show_envvar=True,
        help="Log records of any command as `text` or `json` (the servers also take it after "
        "their name).",
    ),
    log_level: str = typer.Option(
        "warning",
        "--log-level",
        envvar="CONVHOOK_LOG_LEVEL",
        show_envvar=True,
        help="One of debug, info, warning, error, critical.",
    ),
) -> None:
    """Conversation-event webhooks: produce, deliver, receive and test them."""
    from convhook.cli._common import start_logging

    # Every command logs in one format; the servers set theirs again from their own options.
    ctx.call_on_close(start_logging(log_format, log_level))


def _register_all() -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(app)


_register_all()


def main() -> None:
    """Console-script entry point."""
    app()
