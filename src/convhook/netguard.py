"""Server-side request forgery guard: which URLs and addresses webhooks may be sent to.

A webhook URL is chosen by the user, so without a guard the dispatcher would POST to the
server's own loopback, the private network it sits in, or the cloud metadata service. The URL
is checked when an endpoint is created (scheme, literal addresses, ``localhost`` names) and
again when connecting: :class:`GuardedResolver` drops every blocked address a name resolves
to, so a DNS name pointing at 127.0.0.1 is refused too and the address dialled is always one
that was checked. ``allow_private=True`` turns the address checks off for local development.
"""

from __future__ import annotations

import enum
import ipaddress
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from convhook.errors import ConfigError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_UNIQUE_LOCAL = ipaddress.ip_network("fc00::/7")
_METADATA = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)
_LOCAL_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")
_METADATA_NAMES = ("metadata.google.internal", "metadata")


class AddressClass(enum.Enum):
    """Why an address is not a public internet destination."""

    METADATA = "cloud-metadata"
    """A cloud provider's instance metadata service (169.254.169.254, fd00:ec2::254)."""
    LOOPBACK = "loopback"
    """This machine (127.0.0.0/8, ::1)."""
    UNSPECIFIED = "unspecified"
    """0.0.0.0 or ::, which reach this machine."""
    LINK_LOCAL = "link-local"
    """169.254.0.0/16, fe80::/10."""
    PRIVATE = "private"
    """RFC 1918 and other non-global ranges."""
    CGNAT = "carrier-grade-nat"
    """Shared address space 100.64.0.0/10."""
    UNIQUE_LOCAL = "unique-local"
    """IPv6 unique local fc00::/7."""
    MULTICAST = "multicast"
    """Group addresses, never a web server."""
    RESERVED = "reserved"
    """Ranges reserved by the IETF."""


class TargetError(ConfigError):
    """A webhook URL or the address it resolves to may not be called."""


def classify(address: str | IPAddress) -> AddressClass | None:
    """The reason ``address`` is blocked, or ``None`` for a public address."""
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address):
        # ::ffff:127.0.0.1 and 2002:7f00:1::/48 (6to4) embed an IPv4 host: judge that host.
        mapped = ip.ipv4_mapped or ip.sixtofour
        if mapped is not None:
            return classify(mapped)
    if ip in _METADATA:
        return AddressClass.METADATA
    if ip.is_loopback:
        return AddressClass.LOOPBACK
    if ip.is_unspecified:
        return AddressClass.UNSPECIFIED
    if ip.is_link_local:
        return AddressClass.LINK_LOCAL
    if ip.is_multicast:
        return AddressClass.MULTICAST
    if isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT:
        return AddressClass.CGNAT
    if isinstance(ip, ipaddress.IPv6Address) and ip in _UNIQUE_LOCAL:
        return AddressClass.UNIQUE_LOCAL
    if ip.is_reserved:
        return AddressClass.RESERVED
    if ip.is_private or not ip.is_global:
        return AddressClass.PRIVATE
    return None


def validate_url(url: str, *, allow_private: bool = False) -> str:
    """Return ``url`` if it is an absolute http(s) URL to an allowed host, else raise."""
    if not isinstance(url, str) or len(url) > 2048:
        raise TargetError("an endpoint URL must be a string of at most 2048 characters")
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https"):
        raise TargetError(f"an endpoint URL must start with http:// or https://, got {url!r}")
    host = parts.hostname
    if not host:
        raise TargetError(f"the endpoint URL {url!r} has no host")
    if parts.username or parts.password:
        raise TargetError("an endpoint URL must not carry credentials; use the signature")
    try:
        _ = parts.port
    except ValueError:
        raise TargetError(f"the endpoint URL {url!r} has an invalid port") from None
    if not allow_private:
        check_host(host)
    return url.strip()


def check_host(host: str) -> None:
    """Raise :class:`TargetError` if ``host`` is a blocked literal address or local name."""
    name = host.lower().rstrip(".")
    if name in _LOCAL_NAMES or name.endswith(".localhost"):
        raise _refused(host, AddressClass.LOOPBACK)
    if name in _METADATA_NAMES:
        raise _refused(host, AddressClass.METADATA)
    try:
        ip = ipaddress.ip_address(name.strip("[]").split("%", 1)[0])
    except ValueError:
        return
    reason = classify(ip)
    if reason is not None:
        raise _refused(host, reason)


def check_literal(host: str) -> None:
    """Raise :class:`TargetError` if ``host`` is a literal blocked address (names pass)."""
    try:
        ip = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return
    reason = classify(ip)
    if reason is not None:
        raise _refused(host, reason)


def _refused(host: str, reason: AddressClass) -> TargetError:
    return TargetError(
        f"refusing to deliver to {host} ({reason.value} address); private targets are "
        "allowed only with --allow-private-targets (CONVHOOK_ALLOW_PRIVATE_TARGETS=1)"
    )


class BlockedAddressError(OSError):
    """Every address a host name resolved to is blocked (raised at connect time)."""

    def __init__(self, host: str, blocked: Iterable[tuple[str, AddressClass]]) -> None:
        listed = ", ".join(f"{addr} ({reason.value})" for addr, reason in blocked)
        super().__init__(f"refusing to connect to {host}: it resolves to {listed}")
        self.host = host


class GuardedResolver(AbstractResolver):
    """A resolver that removes blocked addresses, so aiohttp can only dial checked ones."""

    def __init__(self, inner: AbstractResolver | None = None) -> None:
        self._inner = inner if inner is not None else DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Resolve ``host`` and keep only public addresses; raise if none is left."""
        results = await self._inner.resolve(host, port, family)
        allowed: list[ResolveResult] = []
        blocked: list[tuple[str, AddressClass]] = []
        for result in results:
            reason = classify(result["host"].split("%", 1)[0])
            if reason is None:
                allowed.append(result)
            else:
                blocked.append((result["host"], reason))
        if not allowed:
            raise BlockedAddressError(host, blocked)
        return allowed

    async def close(self) -> None:
        """Release the wrapped resolver."""
        await self._inner.close()
