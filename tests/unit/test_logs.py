"""The log formats every command shares: JSON lines and one-line text keep ``action`` and the
context fields; bad format or level names are refused with the allowed values."""

from __future__ import annotations

import io
import json
import logging

import pytest

from convhook.logs import check, configure


def _emit(fmt: str) -> str:
    stream = io.StringIO()
    stop = configure(fmt, "info", stream=stream)  # type: ignore[arg-type]
    try:
        logging.getLogger("convhook.test").warning(
            "claim failed: %s", "boom", extra={"action": "claim_failed", "endpoint_id": "ep_1"}
        )
        logging.getLogger("convhook.test").debug("not shown at info")
        logging.getLogger("uvicorn.error").info("Started server process")
    finally:
        stop()
    return stream.getvalue()


def test_json_lines_keep_action_and_fields() -> None:
    """Each record is one JSON object with time, level, logger, action, message and the
    fields passed with ``extra=``; the servers' own records come out the same way."""
    lines = [json.loads(line) for line in _emit("json").splitlines()]
    assert len(lines) == 2
    first = lines[0]
    assert first["level"] == "warning"
    assert first["logger"] == "convhook.test"
    assert first["action"] == "claim_failed"
    assert first["message"] == "claim failed: boom"
    assert first["endpoint_id"] == "ep_1"
    assert first["time"].endswith("Z")
    assert lines[1]["logger"] == "uvicorn.error"


def test_text_is_one_line_per_record_off_a_terminal() -> None:
    """Off a terminal the text format is plain (no rich markup or wrapping): one line with
    the action and ``key=value`` fields."""
    lines = _emit("text").splitlines()
    assert len(lines) == 2
    assert " warning convhook.test claim_failed claim failed: boom endpoint_id=ep_1" in lines[0]
    assert "\x1b" not in lines[0]


@pytest.mark.parametrize(
    ("fmt", "level", "message"),
    [
        ("xml", "info", "--log-format must be one of text, json"),
        ("json", "verbose", "--log-level must be one of debug, info"),
    ],
)
def test_unknown_names_are_refused(fmt: str, level: str, message: str) -> None:
    """An unknown format or level raises ValueError listing the allowed values."""
    with pytest.raises(ValueError, match=message):
        check(fmt, level)
