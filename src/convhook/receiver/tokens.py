"""Shared-token authentication, for senders that protect their webhooks with a static secret
in a header instead of a signature.

A request is accepted when it carries one of the configured tokens as
``Authorization: Bearer <token>`` or ``x-api-key: <token>``. A token proves who sent a
request, nothing more: it does not cover the body, and a captured request can be sent again
at any time, so a signature (``secrets=``) is the stronger check whenever the sender offers
one. Basic auth and tokens in the URL are not taken: a URL ends up in access logs and proxy
logs, and Basic auth needs a user-name convention the senders do not share.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping

from convhook.errors import ConfigError

API_KEY_HEADER = "x-api-key"
_HOW = "send it as `Authorization: Bearer <token>` or `x-api-key: <token>`"


class TokenCheck:
    """Accepts a request that carries one of ``tokens`` (several during a rotation)."""

    def __init__(self, tokens: Iterable[str]) -> None:
        encoded = []
        for token in tokens:
            check_token(token)
            encoded.append(token.encode("ascii"))
        if not encoded:
            raise ConfigError("no webhook token given: pass at least one token")
        self._tokens = tuple(encoded)

    def problem(self, headers: Mapping[str, str]) -> str | None:
        """None when ``headers`` (lower-case names) carry a valid token, else what is missing
        or wrong; the text never repeats a presented or configured token."""
        api_key = headers.get(API_KEY_HEADER)
        bearer, authorization_problem = _bearer(headers.get("authorization"))
        if api_key is not None and bearer is not None:
            # As in the API: which of two different tokens was meant cannot be known.
            if not hmac.compare_digest(_encode(api_key), _encode(bearer)):
                return (
                    "webhook token refused: x-api-key and Authorization: Bearer carry different "
                    "tokens: send one of them"
                )
            presented, where = api_key, "the token"
        elif api_key is not None:
            presented, where = api_key, "the x-api-key header"
        elif bearer is not None:
            presented, where = bearer, "the Bearer token"
        elif authorization_problem is not None:
            return f"webhook token refused: {authorization_problem}; {_HOW}"
        else:
            return f"no webhook token: {_HOW}"
        if not presented:
            return f"webhook token refused: {where} is empty"
        if self._matches(presented):
            return None
        return f"webhook token refused: {where} does not match the receiver's token"

    def _matches(self, presented: str) -> bool:
        given = _encode(presented)
        matched = False
        # Every configured token is compared, so the time taken does not tell which one (or
        # how much of one) a guess got right.
        for token in self._tokens:
            matched |= hmac.compare_digest(given, token)
        return matched


def _bearer(authorization: str | None) -> tuple[str | None, str | None]:
    """The Bearer token in an Authorization header, or None and what is wrong with it."""
    if authorization is None:
        return None, None
    scheme, _, credentials = authorization.strip().partition(" ")
    credentials = credentials.strip(" ")
    if scheme.lower() == "bearer":
        if credentials:
            return credentials, None
        return None, "the Authorization header has no token after Bearer"
    # The scheme is named only when it is Basic: a sender that puts the bare token in the
    # header would otherwise see it echoed.
    if scheme.lower() == "basic":
        return None, "the Authorization header uses Basic auth, which this receiver does not take"
    return None, "the Authorization header is not of the form `Bearer <token>`"


def _encode(text: str) -> bytes:
    # Header values may hold any character (non-ASCII str cannot go to compare_digest);
    # configured tokens are ASCII, so such a value never matches.
    return text.encode("utf-8", "surrogatepass")


def check_token(token: object) -> None:
    """Refuse a token that no HTTP header could carry intact (never echoing it)."""
    if not isinstance(token, str):
        raise ConfigError(f"a webhook token must be a string, got {type(token).__name__}")
    if not token:
        raise ConfigError("a webhook token is empty: give the token the sender puts in its headers")
    # Header values are trimmed and may be re-encoded on the way, so only visible ASCII
    # arrives byte for byte.
    if not all("!" <= c <= "~" for c in token):
        raise ConfigError(
            "a webhook token holds a space, a control character or a non-ASCII character, "
            "which HTTP headers do not carry intact: use visible ASCII only, e.g. "
            "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
        )
