"""Using a receiver or a store outside its ``async with`` block fails at once with
ClosedError, a usage error: nothing answers 503 or retries it as a database outage."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from convhook.errors import ClosedError, StoreError, UsageError
from convhook.receiver import Receiver
from convhook.samples import sample_event
from convhook.signing import Secret, sign
from convhook.store.producer import ProducerStore

SECRET = Secret.generate()
PROMPTLY = 5.0
"""Seconds a misuse may take to surface; a retry loop would outlast it."""


def signed_request() -> tuple[dict[str, str], bytes]:
    event = sample_event("conversation.userJoined")
    body = event.to_json()
    headers = {"content-type": "application/json", **sign([SECRET], event.event_id, body)}
    return headers, body


async def test_receiver_never_started_raises_closed_error(tmp_path: Path) -> None:
    """A request handed to a receiver that was never started raises ClosedError naming the
    missing ``async with``, instead of answering 503 for the sender to retry."""
    receiver = Receiver([SECRET], tmp_path / "inbox.db")
    headers, body = signed_request()
    with pytest.raises(ClosedError, match="async with") as info:
        await asyncio.wait_for(receiver.handle("POST", headers, body), PROMPTLY)
    assert isinstance(info.value, UsageError)
    assert not isinstance(info.value, StoreError)


async def test_receiver_after_stop_raises_closed_error(tmp_path: Path) -> None:
    """A request handed to a receiver after its ``async with`` block ended raises
    ClosedError; the request inside the block was stored."""
    receiver = Receiver([SECRET], tmp_path / "inbox.db")
    async with receiver:
        headers, body = signed_request()
        assert (await receiver.handle("POST", headers, body)).status == 200
    headers, body = signed_request()
    with pytest.raises(ClosedError):
        await asyncio.wait_for(receiver.handle("POST", headers, body), PROMPTLY)


async def test_producer_store_not_opened_raises_closed_error(database_url: str) -> None:
    """A producer store used before ``open()`` or after ``close()`` raises ClosedError at
    once, on SQLite and PostgreSQL, not a retryable StoreError."""
    store = ProducerStore.at(database_url, auto_upgrade=True)
    with pytest.raises(ClosedError, match="async with") as info:
        await asyncio.wait_for(store.create_workspace("w"), PROMPTLY)
    assert not isinstance(info.value, StoreError)
    async with store:
        workspace, _ = await store.create_workspace("w")
    with pytest.raises(ClosedError):
        await asyncio.wait_for(store.get_conversation(workspace.id, "conv_1"), PROMPTLY)
