"""Server-side request forgery guard: which URLs and addresses webhooks may be sent to.

A webhook URL is chosen by the user, so without a guard the dispatcher would POST to the
server's own loopback, the private network it sits in, or the cloud metadata service. Every
check judges the host exactly as the HTTP client will dial it: :func:`dial_host` parses the URL
with yarl, as aiohttp does, so Unicode digits and dots (``１２７。０。０。１``), IDNA names and
IPv6 spellings are normalised before they are judged, and the legacy IPv4 forms the system
resolver reads as numbers (``127.1``, ``0x7f.1``, ``2130706433``) are judged as the addresses
they are. The URL is checked when an endpoint is created and again before each attempt;
:class:`GuardedResolver` then drops every blocked address a name resolves to, so a DNS name
pointing at 127.0.0.1 is refused too and the address dialled is always one that was checked.
``allow_private=True`` turns the address checks off for local development.
"""

from __future__ import annotations

import enum
import ipaddress
import re
import socket
from collections.abc import Iterable

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from convhook.errors import TargetError as TargetError  # re-exported: its old home

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_UNIQUE_LOCAL = ipaddress.ip_network("fc00::/7")
_METADATA = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)
_LOCAL_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")
_METADATA_NAMES = ("metadata.google.internal", "metadata")
# NAT64's well-known prefix carries an IPv4 address in its last 32 bits.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
MAX_URL_LENGTH = 2048
# A host as it goes on the wire: LDH labels (underscores occur in real DNS names) of 1-63
# characters, 253 in all. Anything else (spaces, percent signs, empty labels) did not
# normalise cleanly and is refused rather than guessed at.
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")
_IPV6 = re.compile(r"^[0-9A-Fa-f:.]+(%[A-Za-z0-9._~%-]+)?$")


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
    """IPv6 unique local fc00::/7, and the deprecated site-local fec0::/10."""
    MULTICAST = "multicast"
    """Group addresses, never a web server."""
    RESERVED = "reserved"
    """Ranges reserved by the IETF."""


def classify(address: str | IPAddress) -> AddressClass | None:
    """The reason ``address`` is blocked, or ``None`` for a public address."""
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address):
        # ::ffff:127.0.0.1, 2002:7f00:1::/48 (6to4) and 64:ff9b::7f00:1 (NAT64) embed an
        # IPv4 host that a gateway would reach: judge that host.
        mapped = ip.ipv4_mapped or ip.sixtofour
        if mapped is None and ip in _NAT64:
            mapped = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
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
    if isinstance(ip, ipaddress.IPv6Address) and (ip in _UNIQUE_LOCAL or ip.is_site_local):
        return AddressClass.UNIQUE_LOCAL
    if ip.is_reserved:
        return AddressClass.RESERVED
    if ip.is_private or not ip.is_global:
        return AddressClass.PRIVATE
    return None


def validate_url(url: str, *, allow_private: bool = False) -> str:
    """Return ``url`` if it is an absolute http(s) URL to an allowed host, else raise."""
    if not isinstance(url, str) or len(url) > MAX_URL_LENGTH:
        raise TargetError(
            f"an endpoint URL must be a string of at most {MAX_URL_LENGTH} characters"
        )
    url = url.strip()
    if any(ord(c) < 0x21 or 0x7F <= ord(c) <= 0x9F for c in url):
        raise TargetError("an endpoint URL must not contain spaces or control characters")
    parsed = _parse(url)
    if parsed.scheme not in ("http", "https"):
        raise TargetError(f"an endpoint URL must start with http:// or https://, got {url!r}")
    if parsed.user is not None or parsed.password is not None:
        raise TargetError("an endpoint URL must not carry credentials; use the signature")
    host = dial_host(parsed)
    if not allow_private:
        check_host(host)
    return url


def _parse(url: str | URL) -> URL:
    if isinstance(url, URL):
        return url
    try:
        return URL(url)
    except (ValueError, UnicodeError, TypeError) as exc:
        raise TargetError(f"the endpoint URL {url!r} is not a valid URL: {exc}") from None


def dial_host(url: str | URL) -> str:
    """The host the HTTP client dials for ``url``, normalised as aiohttp does (IDNA,
    Unicode digits and dots folded, IPv6 compressed, no brackets); raise :class:`TargetError`
    for a URL without a host or a host that does not normalise to a clean name or address."""
    parsed = _parse(url)
    try:
        host = parsed.raw_host
        _ = parsed.port
    except (ValueError, UnicodeError) as exc:
        raise TargetError(f"the endpoint URL {str(url)!r} has an invalid host: {exc}") from None
    if not host:
        raise TargetError(f"the endpoint URL {str(url)!r} has no host")
    if not _clean(host):
        raise TargetError(
            f"the endpoint URL's host {host!r} is not a valid host name or IP address "
            "once normalised; write it in ASCII (IDNA for international names)"
        )
    return host


def _clean(host: str) -> bool:
    if ":" in host:
        # aiohttp dials any host with a colon as a literal, never asking the resolver: one
        # that is not an address (::ffff:127.1) would be judged by nobody.
        try:
            ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            return False
        return bool(_IPV6.match(host))
    name = host.removesuffix(".")
    if len(name) > 253:
        return False
    return all(_LABEL.match(label) for label in name.split("."))


def numeric_address(host: str) -> IPAddress | None:
    """The address a dialled ``host`` is read as without DNS: an IP literal, or one of the
    legacy IPv4 forms (``127.1``, ``0x7f.1``, ``017700000001``) that the system's resolver
    accepts as numbers; None for a name."""
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        pass
    if not host.isascii() or not host[:1].isdigit():
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def check_host(host: str) -> None:
    """Raise :class:`TargetError` if the dialled ``host`` is a blocked address or local name."""
    name = host.lower().rstrip(".")
    if name in _LOCAL_NAMES or name.endswith(".localhost"):
        raise _refused(host, AddressClass.LOOPBACK)
    if name in _METADATA_NAMES:
        raise _refused(host, AddressClass.METADATA)
    ip = numeric_address(name)
    if ip is None:
        return
    reason = classify(ip)
    if reason is not None:
        raise _refused(host if host == str(ip) else f"{host} (read as {ip})", reason)


def check_url(url: str | URL) -> None:
    """Raise :class:`TargetError` unless ``url``'s dialled host may be called (send time)."""
    check_host(dial_host(url))


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
