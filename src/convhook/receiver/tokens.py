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
        authorization = headers.get("authorization")
        api_key = headers.get(API_KEY_HEADER)
        if authorization is None and api_key is None:
            return f"no webhook token: {_HOW}"
        problems = []
        if api_key is not None:
            if self._matches(api_key):
                return None
            problems.append("the x-api-key header does not match the receiver's token")
        if authorization is not None:
            scheme, _, credentials = authorization.strip().partition(" ")
            credentials = credentials.strip(" ")
            if scheme.lower() != "bearer":
                # The scheme is named only when it is Basic: a sender that puts the bare token
                # in the header would otherwise see it echoed.
                problems.append(
                    "the Authorization header uses Basic auth, which this receiver does not take"
                    if scheme.lower() == "basic"
                    else "the Authorization header is not of the form `Bearer <token>`"
                )
            elif not credentials:
                problems.append("the Authorization header has no token after Bearer")
            elif self._matches(credentials):
                return None
            else:
                problems.append("the Bearer token does not match the receiver's token")
        return f"webhook token refused: {'; '.join(problems)}"

    def _matches(self, presented: str) -> bool:
        given = presented.encode("utf-8", "surrogatepass")
        matched = False
        # Every configured token is compared, so the time taken does not tell which one (or
        # how much of one) a guess got right.
        for token in self._tokens:
            matched |= hmac.compare_digest(given, token)
        return matched


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
