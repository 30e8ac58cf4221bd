"""A receiver stopped on one event loop starts again on another (a server's lifespan, then a
`ThreadedReceiver`, say) and still runs handlers: real SQLite inbox."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from convhook.events import AnyEvent
from convhook.receiver import Receiver
from convhook.receiver.frameworks import ThreadedReceiver
from convhook.samples import sample_event
from convhook.signing import Secret, sign

SECRET = Secret.generate()


def _request() -> tuple[str, bytes, dict[str, str]]:
    event = sample_event("conversation.userLeft")
    body = event.to_json()
    headers = {"content-type": "application/json", **sign([SECRET], event.event_id, body)}
    return event.event_id, body, headers


async def _receive_one(receiver: Receiver, seen: list[str]) -> str:
    event_id, body, headers = _request()
    async with receiver:
        reply = await receiver.handle("POST", headers, body)
        assert reply.status == 200
        deadline = time.monotonic() + 10
        while event_id not in seen:
            assert time.monotonic() < deadline, "the handler did not run"
            await asyncio.sleep(0.01)
    return event_id


def test_a_receiver_restarts_on_another_loop(tmp_path: Path) -> None:
    """Started and stopped under one `asyncio.run`, the same receiver runs handlers for new
    events under a second one and then on a `ThreadedReceiver`'s loop."""
    receiver = Receiver(SECRET, tmp_path / "inbox.db")
    seen: list[str] = []

    @receiver.on_any
    async def record(event: AnyEvent) -> None:
        seen.append(event.event_id)

    first = asyncio.run(_receive_one(receiver, seen))
    second = asyncio.run(_receive_one(receiver, seen))
    event_id, body, headers = _request()
    with ThreadedReceiver(receiver) as threaded:
        assert threaded.handle(body, headers)[0] == 200
        deadline = time.monotonic() + 10
        while event_id not in seen:
            assert time.monotonic() < deadline, "the handler did not run on the thread's loop"
            time.sleep(0.01)
    assert seen == [first, second, event_id]
