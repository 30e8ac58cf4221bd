"""`convhook trigger` as a real subprocess against a real HTTP server on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from convhook.events import UserJoined, parse_event
from convhook.signing import Secret
from tests.support.servers import serve_app

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


@dataclass
class Recorder:
    """An ASGI endpoint that verifies with the reference package and records what it got."""

    secret: str | None
    status: int = 200
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                kind = (await receive())["type"]
                await send({"type": kind + ".complete"})
                if kind == "lifespan.shutdown":
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        status, text = self.status, b"Webhook received successfully"
        if self.secret is not None:
            try:
                Webhook(self.secret).verify(body, headers)
            except Exception:  # noqa: BLE001 - any verification failure is a 401 here
                status, text = 401, b"bad signature"
        self.received.append((headers, body))
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"text/plain")],
            }
        )
        await send({"type": "http.response.body", "body": text})


async def trigger(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run `convhook trigger ARGS` (with ``env`` added) and return (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "convhook",
        "trigger",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
def secret() -> str:
    """A fresh signing secret."""
    return str(Secret.generate())


@pytest.fixture
async def endpoint(secret: str) -> AsyncIterator[tuple[Recorder, str]]:
    """A verifying endpoint on a loopback port."""
    recorder = Recorder(secret)
    async with serve_app(recorder) as base:
        yield recorder, base + "/webhook"


async def test_sends_one_signed_event(endpoint: tuple[Recorder, str], secret: str) -> None:
    """A single trigger is signed, verified by the reference package, and prints the reply."""
    recorder, url = endpoint
    code, out, err = await trigger("conversation.userJoined", "--url", url, "--secret", secret)
    assert code == 0, err
    assert "Webhook received successfully" in out
    assert "200" in err
    headers, body = recorder.received[0]
    event = parse_event(body)
    assert isinstance(event, UserJoined)
    assert headers["webhook-id"] == event.event_id
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"].startswith("convhook/")


async def test_overrides_reach_the_payload(endpoint: tuple[Recorder, str], secret: str) -> None:
    """--set changes payload fields, with JSON values decoded."""
    recorder, url = endpoint
    code, _, err = await trigger(
        "conversation.completed",
        "--url",
        url,
        "--secret",
        secret,
        "--set",
        "customer.name=Jane Roe",
        "--set",
        'postCallMetadata={"vip": true}',
    )
    assert code == 0, err
    payload = json.loads(recorder.received[0][1])["payload"]
    assert payload["customer"]["name"] == "Jane Roe"
    assert payload["postCallMetadata"] == {"vip": True}
    assert payload["conversationStatus"] == "completed"


async def test_many_with_concurrency_prints_a_summary(
    endpoint: tuple[Recorder, str], secret: str
) -> None:
    """--count/--concurrency sends that many distinct events and summarises them as JSON."""
    recorder, url = endpoint
    code, out, err = await trigger(
        "conversation.userLeft",
        "--url",
        url,
        "--secret",
        secret,
        "--count",
        "25",
        "--concurrency",
        "5",
        "--json",
    )
    assert code == 0, err
    summary = json.loads(out)
    assert summary["sent"] == summary["ok"] == 25
    assert len({h["webhook-id"] for h, _ in recorder.received}) == 25


async def test_non_2xx_exits_1(secret: str) -> None:
    """An endpoint answering 500 makes trigger exit 1 and show the status."""
    recorder = Recorder(None, status=500)
    async with serve_app(recorder) as base:
        code, out, _err = await trigger("conversation.userJoined", "--url", base, "--json")
    assert code == 1
    assert json.loads(out)["status"] == 500
    assert "webhook-signature" not in recorder.received[0][0]


async def test_wrong_secret_is_refused_by_the_endpoint(endpoint: tuple[Recorder, str]) -> None:
    """Signing with another secret gets a 401 from the verifying endpoint and exit 1."""
    _, url = endpoint
    code, _, err = await trigger(
        "conversation.userJoined", "--url", url, "--secret", str(Secret.generate())
    )
    assert code == 1
    assert "401" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--secret", "nope"], "must decode to"),
        (["--secret", "whsec_%%%"], "not valid base64"),
        (["--set", "oops"], "field=value"),
    ],
)
async def test_bad_options_give_clear_errors(args: list[str], message: str) -> None:
    """Bad secrets and --set values print one clear error line, never a traceback."""
    code, _, err = await trigger("conversation.userJoined", "--url", "http://127.0.0.1:9/x", *args)
    assert code == 2
    assert message in err
    assert "Traceback" not in err


async def test_unreachable_url_exits_1() -> None:
    """A refused connection is reported and exits 1."""
    code, _, err = await trigger("conversation.userJoined", "--url", "http://127.0.0.1:9/x")
    assert code == 1
    assert "request failed" in err


@pytest.mark.parametrize(
    ("assignment", "expected"),
    [
        (
            "customer.nmae=x",
            [
                'customer has no field "nmae" (did you mean "name"?)',
                "its fields: name, id, createdAt,",
            ],
        ),
        (
            "customerr.name=x",
            ['the conversation has no field "customerr" (did you mean "customer"?)', "agentId"],
        ),
        (
            'customer={"nmae": "x"}',
            ['customer has no field "nmae"', "isDoNotDisturbEnabled"],
        ),
        (
            "customer.name.first=x",
            ["customer.name is a single value, not an object with fields"],
        ),
        (
            "conversationStatus=actve",
            [
                '"actve" is not a valid conversationStatus',
                "allowed: created, queued, dialing, active, completed, failed",
            ],
        ),
        ("conversationStatus=null", ["null is not a valid conversationStatus"]),
        ("endReason=hung_up", ["allowed: user_did_not_answer, user_hangup,", "null"]),
        (
            "eventType=conversation.transferred",
            ['"conversation.transferred" is not a valid eventType', "conversation.userJoined"],
        ),
        ("telephonyType=[1]", ["[1] is not a valid telephonyType; allowed: inbound, outbound"]),
    ],
)
async def test_set_refuses_unknown_fields_and_values(
    endpoint: tuple[Recorder, str], assignment: str, expected: list[str]
) -> None:
    """--set with an unknown field path or a value outside an enumeration exits 2 with one
    error naming the path and what is allowed, and sends nothing."""
    recorder, url = endpoint
    code, _, err = await trigger("conversation.completed", "--url", url, "--set", assignment)
    assert code == 2
    text = " ".join(err.split())  # rich wraps long lines on a non-terminal stderr
    assert text.startswith(f"error: --set {assignment.split('=')[0]}: ")
    for part in expected:
        assert part in text
    assert "--force sends it anyway" in text
    assert "Traceback" not in err
    assert recorder.received == []


@pytest.mark.parametrize("how", ["flag", "env"])
async def test_force_sends_unknown_fields_and_values(
    endpoint: tuple[Recorder, str], secret: str, how: str
) -> None:
    """--force (or CONVHOOK_TRIGGER_FORCE) sends unknown fields and enumeration values as set,
    signed as usual."""
    recorder, url = endpoint
    force = ["--force"] if how == "flag" else []
    env = {"CONVHOOK_TRIGGER_FORCE": "1"} if how == "env" else {}
    code, _, err = await trigger(
        "conversation.completed",
        *("--url", url, "--secret", secret, *force),
        *("--set", "customer.nmae=x", "--set", "conversationStatus=actve"),
        env=env,
    )
    assert code == 0, err
    payload = json.loads(recorder.received[0][1])["payload"]
    assert payload["customer"]["nmae"] == "x"
    assert payload["customer"]["name"]  # the sample's own fields stay
    assert payload["conversationStatus"] == "actve"


async def test_set_takes_known_fields_and_keys_inside_free_form_objects(
    endpoint: tuple[Recorder, str], secret: str
) -> None:
    """Known fields, null where a field allows it, and any key below postCallMetadata,
    customer.metadata or dynamicVariables (merged with the sample's keys) are sent."""
    recorder, url = endpoint
    code, _, err = await trigger(
        "conversation.analysisCompleted",
        *("--url", url, "--secret", secret),
        *("--set", "eventId=evt_custom_1", "--set", "endReason=null"),
        *("--set", "postCallMetadata.vip=true", "--set", "customer.metadata.tier=gold"),
        *("--set", "dynamicVariables.campaign=spring", "--set", "customer.source.method=api"),
    )
    assert code == 0, err
    event = json.loads(recorder.received[0][1])
    payload = event["payload"]
    assert event["eventId"] == "evt_custom_1"
    assert payload["endReason"] is None
    assert payload["postCallMetadata"]["vip"] is True
    assert payload["postCallMetadata"]["sentiment"] == "positive"
    assert payload["customer"]["metadata"] == {"custom_field": "value", "tier": "gold"}
    assert json.loads(payload["dynamicVariables"]) == {
        "source": "website",
        "referrer": "google",
        "campaign": "spring",
    }
    assert payload["customer"]["source"] == {"method": "api"}


async def test_a_value_of_the_wrong_type_is_refused_before_sending(
    endpoint: tuple[Recorder, str],
) -> None:
    """A --set value its field's type refuses exits 2 naming the field, even with --force,
    before any request."""
    recorder, url = endpoint
    code, _, err = await trigger(
        "conversation.userJoined",
        "--url",
        url,
        "--count",
        "3",
        "--force",
        "--set",
        "customer.priority=abc",
    )
    assert code == 2
    assert "payload.customer.priority" in " ".join(err.split())
    assert recorder.received == []
