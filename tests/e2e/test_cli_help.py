"""Every command's ``--help`` shows one example, and every option with a fixed set of values
names them."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import typer

from convhook.cli import app

# Options whose values are a fixed set, by command path: the help must list every value.
CHOICES = {
    ("serve",): {"--log-format": ("text", "json"), "--synchronous": ("FULL", "NORMAL")},
    ("dispatcher",): {"--log-format": ("text", "json"), "--log-level": ("debug", "warning")},
    ("schema",): {"--format": ("jsonschema", "openapi")},
    ("inbox", "list"): {"--status": ("pending", "running", "done", "failed")},
}


def _commands() -> Iterator[tuple[tuple[str, ...], Any]]:
    root: Any = typer.main.get_command(app)
    ctx = root.context_class(root)

    def walk(command: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
        # typer ships its own click: look for the group's methods, not click's classes.
        if hasattr(command, "list_commands"):
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                assert sub is not None
                yield from walk(sub, (*path, name))
        else:
            yield path, command

    yield from walk(root, ())


ALL = list(_commands())


@pytest.mark.parametrize(("path", "command"), ALL, ids=[" ".join(p) for p, _ in ALL])
def test_every_command_shows_an_example(path: tuple[str, ...], command: Any) -> None:
    """The help text holds an ``Example:`` that runs this very command."""
    text = command.help or ""
    assert "Example:" in text, path
    example = text.split("Example:", 1)[1]
    assert f"convhook {' '.join(path)}" in " ".join(example.split()), example


@pytest.mark.parametrize("path", list(CHOICES), ids=[" ".join(p) for p in CHOICES])
def test_options_with_fixed_values_name_them(path: tuple[str, ...]) -> None:
    """``--help`` lists the values of each option that takes a fixed set of them."""
    from typer.testing import CliRunner

    shown = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    for name, values in CHOICES[path].items():
        # The option's entry: its line and the wrapped ones up to the next option.
        start = next(n for n, line in enumerate(lines) if re.match(rf"\W*{name}\s", line))
        entry = [lines[start]]
        for line in lines[start + 1 :]:
            if re.match(r"\W*-", line):
                break
            entry.append(line)
        text = " ".join(entry)
        for value in values:
            assert value in text, (path, name, value, text)
