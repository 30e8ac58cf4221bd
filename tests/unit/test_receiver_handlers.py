"""Handler registration and reply checks (no I/O)."""

from __future__ import annotations

from typing import Any

from convhook.receiver.handlers import HandlerRegistry
from convhook.receiver.replies import RECEIVED, check_content_type, method_not_allowed


def test_handlers_match_their_types_and_catch_all_matches_everything() -> None:
    """Typed handlers run for their types, the catch-all for every type, in registration order."""
    registry = HandlerRegistry()

    def joined(event: Any) -> None: ...

    def anything(event: Any) -> None: ...

    registry.add(joined, ["conversation.userJoined"])
    registry.add(anything, [])
    assert [h.fn for h in registry.matching("conversation.userJoined")] == [joined, anything]
    assert [h.fn for h in registry.matching("conversation.somethingNew")] == [anything]


def test_names_are_unique_and_delivery_argument_is_detected() -> None:
    """A second registration of one function gets a distinct name; a 2-arg handler gets the delivery."""
    registry = HandlerRegistry()

    async def handler(event: Any, delivery: Any) -> None: ...

    first = registry.add(handler, ["*"])
    second = registry.add(handler, ["*"])
    assert first.name != second.name
    assert first.is_async
    assert first.wants_delivery
    one = registry.add(lambda event: None, ["*"], name="one-arg")
    assert (one.name, one.is_async, one.wants_delivery) == ("one-arg", False, False)


def test_replies_follow_the_contract() -> None:
    """200 is text/plain 'Webhook received successfully'; JSON with a charset is accepted."""
    assert RECEIVED.status == 200
    assert RECEIVED.body == b"Webhook received successfully"
    assert RECEIVED.content_type.startswith("text/plain")
    assert check_content_type("application/json; charset=utf-8") is None
    refused = check_content_type("application/x-www-form-urlencoded")
    assert refused is not None
    assert refused.status == 415
    assert method_not_allowed("PUT").headers["allow"] == "POST"
