"""The answers a receiver gives, ready to send: status, content type and body bytes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property

from convhook.errors import FieldProblem
from convhook.schema import RECEIVED_TEXT

_JSON = "application/json"


@dataclass(frozen=True)
class Reply:
    """One HTTP answer."""

    status: int
    content_type: str
    body: bytes
    allow: str | None = None
    challenge: str | None = None

    @property
    def headers(self) -> dict[str, str]:
        """The response headers (content type, length, ``Allow`` for 405 and
        ``WWW-Authenticate`` for a refused token)."""
        headers = {"content-type": self.content_type, "content-length": str(len(self.body))}
        if self.allow:
            headers["allow"] = self.allow
        if self.challenge:
            headers["www-authenticate"] = self.challenge
        return headers

    @cached_property
    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        """The response headers as ASGI wants them (built once per reply)."""
        return [(k.encode(), v.encode()) for k, v in self.headers.items()]

    def as_tuple(self) -> tuple[int, dict[str, str], bytes]:
        """``(status, headers, body)`` for framework views."""
        return self.status, self.headers, self.body


RECEIVED = Reply(200, "text/plain; charset=utf-8", RECEIVED_TEXT.encode())


def error(status: int, message: str, problems: tuple[FieldProblem, ...] = ()) -> Reply:
    """A JSON error answer naming what was wrong (and each bad field)."""
    doc = {"error": message, "problems": [p.as_dict() for p in problems]}
    return Reply(status, _JSON, json.dumps(doc).encode())


def method_not_allowed(method: str) -> Reply:
    """405 for anything but POST."""
    reply = error(405, f"method {method} is not allowed: webhooks are delivered with POST")
    return Reply(reply.status, reply.content_type, reply.body, allow="POST")


def unauthorized(message: str) -> Reply:
    """401 for a missing or wrong token, with the challenge RFC 7235 asks a 401 to carry."""
    reply = error(401, message)
    return Reply(reply.status, reply.content_type, reply.body, challenge="Bearer")


def check_content_type(value: str | None) -> Reply | None:
    """415 unless the media type is ``application/json`` (parameters such as charset are fine)."""
    if value == _JSON:
        return None
    media = (value or "").split(";", 1)[0].strip().lower()
    if media == _JSON:
        return None
    # The header comes from the sender: echo a bounded part of it.
    shown = (value if len(value) <= 100 else value[:100] + "…") if value else "none"
    return error(415, f"content-type must be application/json, got {shown}")
