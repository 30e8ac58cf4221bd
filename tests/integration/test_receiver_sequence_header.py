"""The ``convhook-sequence`` header is not signed: whatever a proxy or a sender puts there is
judged as the inbox will store it, and a value convhook would never send is ignored (the event
is ordered by its lifecycle rank), never a 500 and never a failed write for its batch."""

from __future__ import annotations

import asyncio
import http.client
import uuid

import aiohttp
import pytest

from convhook.receiver import Delivery
from convhook.samples import sample_event
from convhook.signing import Secret, sign
from tests.support.inbox import receiver_at
from tests.support.servers import eventually, serve_app

SECRET = Secret.generate()


def _post_raw(base: str, body: bytes, headers: dict[str, str], raw: bytes) -> int:
    """POST with a header value of arbitrary bytes (aiohttp would refuse to send it)."""
    host, port = base.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.putrequest("POST", "/webhook")
    for name, value in headers.items():
        conn.putheader(name, value)
    conn.putheader("convhook-sequence", raw)
    conn.putheader("content-length", str(len(body)))
    conn.endheaders(body)
    status = conn.getresponse().status
    conn.close()
    return status


@pytest.mark.parametrize(
    ("raw", "kept"),
    [
        (b"1", 1),
        (b"2147483647", 2147483647),
        (b"2147483648", None),
        (b"99999999999", None),
        (b"0", None),
        (b"-1", None),
        (b"\xb2", None),  # superscript two: isdigit() but not a number int() reads
        ("\uff11".encode(), None),  # a fullwidth one
        (b"1e3", None),
        (b"", None),
    ],
)
async def test_a_sequence_header_is_kept_only_when_convhook_could_have_sent_it(
    database_url: str, raw: bytes, kept: int | None
) -> None:
    """Each value answers 200 and the handler sees the sequence only when it is 1..2**31-1."""
    receiver = receiver_at(database_url, SECRET)
    seen: list[int | None] = []

    async def handler(event: object, delivery: Delivery) -> None:
        seen.append(delivery.sequence)

    receiver.add_handler(handler, name="h")
    event = sample_event("conversation.userJoined", overrides={"id": f"conv_{uuid.uuid4().hex}"})
    body = event.to_json()
    headers = {"content-type": "application/json", **sign([SECRET], event.event_id, body)}
    async with receiver, serve_app(receiver.asgi_app()) as base:
        status = await asyncio.to_thread(_post_raw, base, body, headers, raw)
        assert status == 200
        await eventually(lambda: bool(seen))
    assert seen == [kept]


async def test_one_bad_sequence_does_not_fail_its_batch(pg_url: str) -> None:
    """Forty concurrent events, one with a sequence beyond the inbox's column, all answer 200
    on PostgreSQL (their rows are written in one statement)."""
    receiver = receiver_at(pg_url, SECRET)

    async def post(session: aiohttp.ClientSession, base: str, sequence: str) -> int:
        event = sample_event(
            "conversation.userJoined", overrides={"id": f"conv_{uuid.uuid4().hex}"}
        )
        body = event.to_json()
        headers = {
            "content-type": "application/json",
            "convhook-sequence": sequence,
            **sign([SECRET], event.event_id, body),
        }
        async with session.post(f"{base}/webhook", data=body, headers=headers) as r:
            return r.status

    async with receiver, serve_app(receiver.asgi_app()) as base, aiohttp.ClientSession() as s:
        for _ in range(3):
            statuses = await asyncio.gather(
                *(post(s, base, "99999999999" if i == 0 else "1") for i in range(40))
            )
            assert statuses == [200] * 40
