"""``events tail`` prints whatever a server streams without crashing or being styled by it:
a message that is not a JSON object is skipped with a note, and brackets in any field are
printed as text, not read as markup."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from convhook.cli import _common, _follow
from convhook.cli.remote import Message


@pytest.fixture
def printed(monkeypatch: pytest.MonkeyPatch) -> tuple[io.StringIO, io.StringIO]:
    """The stdout and stderr consoles ``events tail`` writes to, captured."""
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(_follow, "out", Console(file=out, width=300))
    monkeypatch.setattr(_follow, "err", Console(file=err, width=300))
    monkeypatch.setattr(_common, "err", Console(file=err, width=300))
    return out, err


@pytest.mark.parametrize("data", ["[1, 2]", '"text"', "17", "not json"])
def test_a_message_that_is_not_an_object_is_skipped(
    printed: tuple[io.StringIO, io.StringIO], data: str
) -> None:
    """Data that is not a JSON object is skipped with a note naming the message."""
    out, err = printed
    _follow._print_message(Message("event", data, "1.0"), as_json=False)
    assert out.getvalue() == ""
    assert "not a JSON object (id 1.0)" in err.getvalue()


def test_brackets_in_fields_are_text(printed: tuple[io.StringIO, io.StringIO]) -> None:
    """Every field of an event or attempt is printed as sent, markup-looking text included,
    and an event type that is not a string does not break the colour lookup."""
    out, _ = printed
    event = {
        "createdAt": "[bold]now[/]",
        "eventType": ["odd"],
        "conversationId": "[red]c",
        "sequence": "[/]",
        "eventId": "e[1]",
    }
    _follow._print_message(Message("event", json.dumps(event), "1.0"), as_json=False)
    attempt = {
        "attemptedAt": "[blink]t",
        "statusCode": 200,
        "endpointId": "[x]",
        "latencyMs": 3,
        "eventId": "e",
        "attempt": "[/]",
        "outcome": "delivered",
    }
    _follow._print_message(Message("attempt", json.dumps(attempt), "1.1"), as_json=False)
    text = out.getvalue()
    for shown in ("[bold]now[/]", "['odd']", "[red]c", "e[1]", "[blink]t", "[x]"):
        assert shown in text, text
