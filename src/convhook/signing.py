"""Standard Webhooks v1 signatures: ``whsec_`` secrets, signing and verification.

The signed content is ``{webhook-id}.{webhook-timestamp}.{body}``; the signature is
``v1,<base64 HMAC-SHA256>`` under the secret's base64-decoded key. Several secrets sign at once
during a rotation, giving several space-separated ``v1,`` entries; a verifier accepts the body
if any entry matches any of its secrets. Standard library only, so receivers stay light.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import secrets as _random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from convhook.errors import ConfigError, SecretError, SignatureError

PREFIX = "whsec_"
DEFAULT_TOLERANCE = 300
_MIN_KEY_BYTES = 16
# The reference libraries take any length; HMAC hashes a key longer than one block.
_MAX_KEY_BYTES = 1024
_BLOCK = 64  # SHA-256's block size: the longest key HMAC uses as it is
# Svix sends the same headers under its own prefix; accept both.
_HEADER_PREFIXES = ("webhook-", "svix-")

Clock = Callable[[], float]


@dataclass(frozen=True, repr=False)
class Secret:
    """A signing key; ``str()`` gives its ``whsec_`` form, ``repr()`` never shows it."""

    key: bytes
    # HMAC-SHA256 (RFC 2104) with the key's inner and outer pads hashed once: a signature
    # then copies two hash states instead of re-deriving the pads, which is a measurable
    # share of a receiver's per-request work. Keys are at most one block (64 bytes) long.
    _inner: Any = field(init=False, compare=False)
    _outer: Any = field(init=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.key, bytes | bytearray) or not self.key:
            # An empty key signs with a value anyone can compute: refuse it, never fail open.
            raise SecretError("a webhook secret's key must be a non-empty bytes value")
        key = bytes(self.key)
        if len(key) > _BLOCK:
            key = hashlib.sha256(key).digest()  # RFC 2104: long keys are hashed first
        block = key.ljust(_BLOCK, b"\0")
        object.__setattr__(self, "_inner", hashlib.sha256(bytes(b ^ 0x36 for b in block)))
        object.__setattr__(self, "_outer", hashlib.sha256(bytes(b ^ 0x5C for b in block)))

    @classmethod
    def generate(cls, nbytes: int = 24) -> Secret:
        """A new random secret of ``nbytes`` (24 by default, as Svix issues)."""
        return cls(_random.token_bytes(nbytes))

    @classmethod
    def parse(cls, text: str) -> Secret:
        """Parse ``whsec_<base64>`` (the prefix is optional, and so is base64 padding, as in
        the reference libraries), raising :class:`SecretError` that says what is wrong."""
        if not isinstance(text, str) or not text.removeprefix(PREFIX).strip():
            raise SecretError(
                "a webhook secret is empty: give 'whsec_' followed by base64 "
                "(generate one with `convhook secret`)"
            )
        encoded = text.removeprefix(PREFIX)
        try:
            key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise SecretError(
                "the webhook secret is not valid base64 (after its optional 'whsec_' prefix)"
            ) from None
        if not _MIN_KEY_BYTES <= len(key) <= _MAX_KEY_BYTES:
            raise SecretError(
                f"a webhook secret must decode to {_MIN_KEY_BYTES}..{_MAX_KEY_BYTES} bytes, "
                f"this one decodes to {len(key)}"
            )
        return cls(key)

    def __str__(self) -> str:
        return PREFIX + base64.b64encode(self.key).decode()

    def __repr__(self) -> str:
        return "Secret('whsec_***')"

    def signature(self, msg_id: str, timestamp: int, body: bytes) -> str:
        """The ``v1,<base64>`` signature of one message."""
        return (
            "v1," + base64.b64encode(self.digest(signed_content(msg_id, timestamp, body))).decode()
        )

    def digest(self, content: bytes) -> bytes:
        """The raw HMAC-SHA256 of signed ``content`` (``{id}.{timestamp}.{body}``)."""
        inner = self._inner.copy()
        inner.update(content)
        outer = self._outer.copy()
        outer.update(inner.digest())
        digest: bytes = outer.digest()
        return digest


def signed_content(msg_id: str, timestamp: int, body: bytes) -> bytes:
    """What a signature covers: ``{webhook-id}.{webhook-timestamp}.{body}``."""
    return b"%s.%d.%s" % (msg_id.encode(), timestamp, body)


def signature_header(secrets: Iterable[Secret], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: one ``v1,<base64>`` entry per secret."""
    content = signed_content(msg_id, timestamp, body)
    return " ".join("v1," + base64.b64encode(s.digest(content)).decode() for s in secrets)


def as_secrets(secrets: Secret | str | Iterable[Secret | str]) -> tuple[Secret, ...]:
    """Normalise one or several secrets, parsing strings."""
    if isinstance(secrets, Secret | str):
        secrets = [secrets]
    parsed = tuple(s if isinstance(s, Secret) else Secret.parse(s) for s in secrets)
    if not parsed:
        raise SecretError("at least one webhook secret is needed")
    return parsed


# Parsed secrets by their stored form: endpoints sign with the same few secrets again and
# again, and parsing (base64, the HMAC pads) is most of a signature's cost. Cleared, not grown,
# past the bound; read with one lookup, as writer threads of several databases may share it.
_PARSED: dict[tuple[Secret | str, ...], tuple[Secret, ...]] = {}
_PARSED_MAX = 10_000


def parsed_secrets(secrets: Sequence[Secret | str]) -> tuple[Secret, ...]:
    """:func:`as_secrets` of an endpoint's secrets, parsed once per distinct set;
    :class:`SecretError` if one cannot be read (not remembered: a damaged row is rare)."""
    key = tuple(secrets)
    found = _PARSED.get(key)
    if found is None:
        found = as_secrets(key)
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.clear()
        _PARSED[key] = found
    return found


def sign(
    secrets: Secret | str | Iterable[Secret | str],
    msg_id: str,
    body: bytes,
    *,
    timestamp: int | None = None,
    clock: Clock = time.time,
) -> dict[str, str]:
    """The three Standard Webhooks headers for ``body``, signed with every secret given."""
    ts = int(clock()) if timestamp is None else timestamp
    signature = signature_header(as_secrets(secrets), msg_id, ts, body)
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": signature}


class Verifier:
    """Checks Standard Webhooks signatures against one or more secrets."""

    def __init__(
        self,
        secrets: Secret | str | Iterable[Secret | str],
        *,
        tolerance: int = DEFAULT_TOLERANCE,
        clock: Clock = time.time,
    ) -> None:
        self.secrets = as_secrets(secrets)
        self.tolerance = check_tolerance(tolerance)
        self._clock = clock

    def verify(self, headers: Mapping[str, str], body: bytes) -> str:
        """Check ``body`` against the headers and return the ``webhook-id``.

        ``headers`` must have lower-case keys (as ASGI gives them). Raises
        :class:`SignatureError` saying which header is missing or why the check failed.
        """
        msg_id, raw_ts, raw_sig = _headers(headers)
        try:
            # Only short ASCII integers: int() also reads "١٢٣" and spends quadratic time on
            # thousands of digits, neither of which a sender writes.
            if len(raw_ts) > 20 or not raw_ts.isascii():
                raise ValueError
            timestamp = int(raw_ts)
        except ValueError:
            # The header is the sender's text: quote a bounded part of it, never all of it.
            shown = raw_ts[:40] + ("..." if len(raw_ts) > 40 else "")
            raise SignatureError(f"webhook-timestamp {shown!r} is not an integer") from None
        now = int(self._clock())
        if timestamp < now - self.tolerance:
            raise SignatureError(
                f"webhook-timestamp is {now - timestamp} s old, over the {self.tolerance} s tolerance"
            )
        if timestamp > now + self.tolerance:
            raise SignatureError(
                f"webhook-timestamp is {timestamp - now} s in the future, over the "
                f"{self.tolerance} s tolerance"
            )
        offered = [p[3:].encode() for p in raw_sig.split(" ") if p.startswith("v1,")]
        if not offered:
            raise SignatureError("webhook-signature has no 'v1,' entry")
        content = signed_content(msg_id, timestamp, body)
        for secret in self.secrets:
            expected = base64.b64encode(secret.digest(content))
            for candidate in offered:
                if hmac.compare_digest(expected, candidate):
                    return msg_id
        raise SignatureError("no webhook-signature entry matches the body and secret")


def check_tolerance(tolerance: float) -> int:
    """``tolerance`` as whole seconds; raise :class:`ConfigError` unless it is a finite
    number >= 0 (NaN compares false with everything, so it would accept any timestamp)."""
    if (
        isinstance(tolerance, bool)
        or not isinstance(tolerance, int | float)
        or not math.isfinite(tolerance)
        or tolerance < 0
    ):
        raise ConfigError(
            f"the signature tolerance must be a finite number of seconds >= 0, got {tolerance!r}"
        )
    return int(tolerance)


def _headers(headers: Mapping[str, str]) -> tuple[str, str, str]:
    for prefix in _HEADER_PREFIXES:
        msg_id = headers.get(prefix + "id")
        if msg_id is not None:
            ts = headers.get(prefix + "timestamp")
            sig = headers.get(prefix + "signature")
            if ts is None or sig is None:
                missing = prefix + ("timestamp" if ts is None else "signature")
                raise SignatureError(f"missing header {missing}")
            return msg_id, ts, sig
    raise SignatureError("missing header webhook-id (the request is not signed)")
