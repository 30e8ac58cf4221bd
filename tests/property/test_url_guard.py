"""Property: the URL guard's verdict equals its verdict on the address the client dials.

The oracle is built from the client's own parts: yarl parses the URL as aiohttp does, and the
system resolver in numeric-only mode says which address a host is read as without DNS (aiohttp
hands an all-digit host straight to ``getaddrinfo``, and a name to its resolver, which reads the
same numeric forms). A host that is a real name is resolved at connect time, where
:class:`convhook.netguard.GuardedResolver` judges the addresses.
"""

from __future__ import annotations

import ipaddress
import socket

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yarl import URL

from convhook.netguard import TargetError, classify, validate_url

# Characters NFKC/IDNA fold onto ASCII digits: fullwidth, mathematical bold/double-struck/
# sans/monospace, circled (1-9).
_DIGIT_FORMS = [
    [chr(0x30 + d) for d in range(10)],
    [chr(0xFF10 + d) for d in range(10)],
    [chr(0x1D7CE + d) for d in range(10)],
    [chr(0x1D7D8 + d) for d in range(10)],
    [chr(0x1D7F6 + d) for d in range(10)],
]
_DOTS = [".", "。", "．", "｡"]


@st.composite
def unicode_ipv4(draw: st.DrawFn) -> str:
    """An IPv4 address whose digits and dots are written in mixed Unicode forms."""
    address = draw(st.sampled_from(_INTERESTING_V4) | st.ip_addresses(v=4))
    out = []
    for index, octet in enumerate(str(address).split(".")):
        if index:
            out.append(draw(st.sampled_from(_DOTS)))
        for digit in octet:
            out.append(draw(st.sampled_from(_DIGIT_FORMS))[int(digit)])
    return "".join(out)


@st.composite
def legacy_ipv4(draw: st.DrawFn) -> str:
    """An IPv4 address in a form inet_aton reads: one to four parts, decimal, octal or hex."""
    value = int(draw(st.sampled_from(_INTERESTING_V4) | st.ip_addresses(v=4)))
    parts = draw(st.integers(1, 4))
    octets = value.to_bytes(4, "big")
    numbers = [*octets[: parts - 1], int.from_bytes(octets[parts - 1 :], "big")]
    written = []
    for number in numbers:
        style = draw(st.sampled_from(["dec", "oct", "hex", "HEX"]))
        written.append(
            {"dec": str(number), "oct": f"0{number:o}", "hex": f"0x{number:x}"}.get(
                style, f"0X{number:X}"
            )
        )
    return ".".join(written)


@st.composite
def ipv6_literal(draw: st.DrawFn) -> str:
    """A bracketed IPv6 address: random, or embedding an interesting IPv4 host."""
    v4 = int(draw(st.sampled_from(_INTERESTING_V4)))
    address = draw(
        st.ip_addresses(v=6)
        | st.sampled_from(
            [
                ipaddress.IPv6Address((0xFFFF << 32) | v4),
                ipaddress.IPv6Address((0x2002 << 112) | (v4 << 80)),
                ipaddress.IPv6Address((0x64FF9B << 96) | v4),
                ipaddress.IPv6Address(1),
                ipaddress.IPv6Address("fe80::1"),
                ipaddress.IPv6Address("fd00:ec2::254"),
            ]
        )
    )
    text = draw(st.sampled_from([address.compressed, address.exploded]))
    if draw(st.booleans()):
        text = text.upper()
    return f"[{text}]"


_INTERESTING_V4 = [
    ipaddress.IPv4Address(a)
    for a in (
        "127.0.0.1",
        "127.255.1.2",
        "0.0.0.0",
        "10.0.0.1",
        "169.254.169.254",
        "192.168.1.1",
        "100.64.0.1",
        "8.8.8.8",
        "1.1.1.1",
        "224.0.0.1",
    )
]

idna_names = st.from_regex(r"\A[a-zA-Z0-9ßäöüéçжλ一-]{1,20}(\.[a-zA-Zäö一]{2,6}){0,2}\Z")

hosts = st.one_of(
    unicode_ipv4(),
    legacy_ipv4(),
    ipv6_literal(),
    idna_names,
    st.sampled_from(["localhost", "ⓛocalhost", "LOCALHOST.", "x.localhost", "metadata"]),
)


def dialled(url: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | str | None:
    """What the client connects to for ``url``: an address, a name to resolve, or None
    when the client could not even parse it."""
    try:
        host = URL(url).raw_host
    except (ValueError, UnicodeError):
        return None
    if not host:
        return None
    try:
        info = socket.getaddrinfo(host, 80, flags=socket.AI_NUMERICHOST)
    except (OSError, UnicodeError):
        return host
    return ipaddress.ip_address(str(info[0][4][0]).split("%", 1)[0])


@settings(
    max_examples=600,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(host=hosts, port=st.integers(1, 65535))
def test_guard_verdict_equals_verdict_on_dialled_address(host: str, port: int) -> None:
    """A URL is refused exactly when the address the client would dial is blocked; a host
    the client cannot parse is refused; names pass to the resolving guard, but local ones."""
    url = f"http://{host}:{port}/hook"
    target = dialled(url)
    try:
        validate_url(url)
        accepted = True
    except TargetError:
        accepted = False
    if target is None:
        assert not accepted
    elif isinstance(target, str):
        local = target.lower().rstrip(".")
        if local in ("localhost", "metadata") or local.endswith(".localhost"):
            assert not accepted
    else:
        assert accepted == (classify(target) is None), (url, target)
