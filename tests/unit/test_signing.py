"""Standard Webhooks v1 signing: vectors, interop, rotation, tolerance and bad secrets."""

from __future__ import annotations

import base64
import math
from datetime import UTC, datetime
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from convhook.errors import ConfigError, SecretError, SignatureError
from convhook.receiver import Receiver
from convhook.signing import Secret, Verifier, sign

VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TS = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIG = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
BODY = b'{"eventId":"evt_1","eventType":"conversation.userJoined","payload":{}}'


def fixed(now: float) -> object:
    return lambda: now


def test_known_answer_vector() -> None:
    """The Standard Webhooks reference vector signs to the published signature."""
    headers = sign(VECTOR_SECRET, VECTOR_ID, VECTOR_BODY, timestamp=VECTOR_TS)
    assert headers == {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": str(VECTOR_TS),
        "webhook-signature": VECTOR_SIG,
    }
    verifier = Verifier(VECTOR_SECRET, clock=lambda: VECTOR_TS)
    assert verifier.verify(headers, VECTOR_BODY) == VECTOR_ID


def test_convhook_signs_reference_verifies() -> None:
    """A body signed by convhook verifies with the standardwebhooks package."""
    secret = Secret.generate()
    headers = sign(secret, "evt_abc", BODY)
    assert Webhook(str(secret)).verify(BODY, headers) is not None


def test_reference_signs_convhook_verifies() -> None:
    """A body signed by the standardwebhooks package verifies with convhook."""
    secret = Secret.generate()
    now = datetime.now(tz=UTC)
    signature = Webhook(str(secret)).sign("evt_abc", now, BODY.decode())
    headers = {
        "webhook-id": "evt_abc",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
    }
    assert Verifier(secret).verify(headers, BODY) == "evt_abc"


def test_rotation_signs_with_every_secret() -> None:
    """During a rotation both secrets sign; a verifier holding either one accepts."""
    old, new = Secret.generate(), Secret.generate()
    headers = sign([new, old], "evt_rot", BODY)
    assert headers["webhook-signature"].count("v1,") == 2
    for held in (old, new):
        assert Verifier(held).verify(headers, BODY) == "evt_rot"
        assert Webhook(str(held)).verify(BODY, headers) is not None
    stranger = Secret.generate()
    with pytest.raises(SignatureError, match="no webhook-signature entry matches"):
        Verifier(stranger).verify(headers, BODY)


def test_verifier_with_several_secrets_accepts_either() -> None:
    """A receiver mid-rotation holds both secrets and accepts a body signed by one."""
    old, new = Secret.generate(), Secret.generate()
    verifier = Verifier([old, new])
    assert verifier.verify(sign(old, "a", BODY), BODY) == "a"
    assert verifier.verify(sign(new, "b", BODY), BODY) == "b"


@pytest.mark.parametrize(
    ("skew", "accepted"),
    [(-300, True), (-301, False), (300, True), (301, False), (0, True)],
)
def test_tolerance_edges(skew: int, accepted: bool) -> None:
    """Timestamps up to the tolerance either side pass; one second more fails."""
    secret = Secret.generate()
    now = 1_700_000_000
    headers = sign(secret, "evt_t", BODY, timestamp=now + skew)
    verifier = Verifier(secret, tolerance=300, clock=lambda: now)
    if accepted:
        assert verifier.verify(headers, BODY) == "evt_t"
    else:
        with pytest.raises(SignatureError, match="tolerance"):
            verifier.verify(headers, BODY)


def test_tampered_body_fails() -> None:
    """Changing one byte of the body breaks the signature."""
    secret = Secret.generate()
    headers = sign(secret, "evt_x", BODY)
    with pytest.raises(SignatureError):
        Verifier(secret).verify(headers, BODY.replace(b"evt_1", b"evt_2"))


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "missing header webhook-id"),
        ({"webhook-id": "a", "webhook-signature": "v1,x"}, "missing header webhook-timestamp"),
        ({"webhook-id": "a", "webhook-timestamp": "1"}, "missing header webhook-signature"),
        (
            {"webhook-id": "a", "webhook-timestamp": "soon", "webhook-signature": "v1,x"},
            "not an integer",
        ),
        (
            {"webhook-id": "a", "webhook-timestamp": "{now}", "webhook-signature": "v2,x"},
            "no 'v1,' entry",
        ),
    ],
)
def test_bad_headers_say_what_is_wrong(headers: dict[str, str], message: str) -> None:
    """Each missing or malformed header gives a SignatureError naming it."""
    now = 1_700_000_000
    headers = {k: v.replace("{now}", str(now)) for k, v in headers.items()}
    with pytest.raises(SignatureError, match=message):
        Verifier(Secret.generate(), clock=lambda: now).verify(headers, BODY)


def test_svix_prefixed_headers_are_accepted() -> None:
    """Senders using svix-* header names verify too."""
    secret = Secret.generate()
    headers = {k.replace("webhook-", "svix-"): v for k, v in sign(secret, "m", BODY).items()}
    assert Verifier(secret).verify(headers, BODY) == "m"


def test_secret_round_trips_and_hides_itself() -> None:
    """A generated secret parses back, and repr never shows the key."""
    secret = Secret.generate()
    assert str(secret).startswith("whsec_")
    assert Secret.parse(str(secret)) == secret
    assert str(secret) not in repr(secret)
    assert len(secret.key) == 24


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is empty"),
        ("whsec_", "is empty"),
        ("whsec_not base64!!", "not valid base64"),
        ("whsec_" + base64.b64encode(b"short").decode(), "must decode to"),
    ],
)
def test_bad_secrets_give_clear_errors(text: str, message: str) -> None:
    """A malformed secret raises SecretError saying what is wrong, never a traceback-only error."""
    with pytest.raises(SecretError, match=message):
        Secret.parse(text)
    with pytest.raises(SecretError):
        sign(text, "m", BODY)


def test_no_secret_at_all_is_a_config_error() -> None:
    """A verifier needs at least one secret."""
    with pytest.raises(SecretError, match="at least one"):
        Verifier([])


def test_reference_rejects_convhook_signature_for_other_body() -> None:
    """Interop holds for failures too: the reference refuses a mismatched body."""
    secret = Secret.generate()
    headers = sign(secret, "evt_q", BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(str(secret)).verify(BODY + b" ", headers)


def test_secret_without_prefix_is_accepted_as_the_reference_does() -> None:
    """A bare base64 secret (no whsec_, no padding) parses as the reference libraries read it,
    and their signatures verify with it."""
    bare = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    assert Secret.parse(bare) == Secret.parse("whsec_" + bare)
    unpadded = base64.b64encode(b"k" * 20).decode().rstrip("=")
    assert Secret.parse(unpadded).key == b"k" * 20
    reference = Webhook(bare)
    stamp = datetime.now(UTC)
    signature = reference.sign("msg_bare", stamp, BODY.decode())
    headers = {
        "webhook-id": "msg_bare",
        "webhook-timestamp": str(int(stamp.timestamp())),
        "webhook-signature": signature,
    }
    assert Verifier(bare).verify(headers, BODY) == "msg_bare"


def test_empty_key_is_refused() -> None:
    """Secret(b"") would verify signatures anyone can make with the empty key: it is refused."""
    with pytest.raises(SecretError, match="non-empty"):
        Secret(b"")


def test_long_key_signs_as_the_reference_does() -> None:
    """A key longer than SHA-256's block is hashed first (RFC 2104), as the reference does."""
    key = bytes(range(200))
    secret = Secret(key)
    headers = sign(secret, "msg_long", BODY)
    Webhook(key).verify(BODY, headers)


@pytest.mark.parametrize("tolerance", [math.nan, math.inf, -math.inf, -1, "300", True])
def test_tolerance_must_be_finite_and_non_negative(tolerance: object, tmp_path: Path) -> None:
    """A NaN or infinite tolerance would accept any timestamp (fail open): it is refused, by
    the Verifier and by a Receiver built with it."""
    with pytest.raises(ConfigError, match="tolerance"):
        Verifier(Secret.generate(), tolerance=tolerance)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="tolerance"):
        Receiver(Secret.generate(), store=tmp_path / "inbox.db", tolerance=tolerance)  # type: ignore[arg-type]


@pytest.mark.parametrize("raw", ["9" * 50_000, "１６１４２６５３３０", "12 34"])
def test_bad_timestamp_header_is_refused_with_a_bounded_message(raw: str) -> None:
    """A huge or non-ASCII webhook-timestamp is refused, and the error quotes at most a
    bounded part of it (the message reaches the 401 body and the log)."""
    headers = {"webhook-id": "m", "webhook-timestamp": raw, "webhook-signature": "v1,x"}
    with pytest.raises(SignatureError, match="is not an integer") as caught:
        Verifier(Secret.generate()).verify(headers, BODY)
    assert len(str(caught.value)) < 120
