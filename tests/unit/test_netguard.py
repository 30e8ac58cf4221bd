"""Address classification and URL validation for webhook targets."""

from __future__ import annotations

import pytest

from convhook.netguard import AddressClass, TargetError, classify, dial_host, validate_url


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("8.8.8.8", None),
        ("1.1.1.1", None),
        ("2606:4700:4700::1111", None),
        ("127.0.0.1", AddressClass.LOOPBACK),
        ("127.255.0.9", AddressClass.LOOPBACK),
        ("::1", AddressClass.LOOPBACK),
        ("0.0.0.0", AddressClass.UNSPECIFIED),
        ("::", AddressClass.UNSPECIFIED),
        ("10.1.2.3", AddressClass.PRIVATE),
        ("172.16.0.1", AddressClass.PRIVATE),
        ("192.168.1.1", AddressClass.PRIVATE),
        ("169.254.1.1", AddressClass.LINK_LOCAL),
        ("fe80::1", AddressClass.LINK_LOCAL),
        ("169.254.169.254", AddressClass.METADATA),
        ("fd00:ec2::254", AddressClass.METADATA),
        ("100.64.0.1", AddressClass.CGNAT),
        ("100.127.255.254", AddressClass.CGNAT),
        ("fc00::1", AddressClass.UNIQUE_LOCAL),
        ("fd12:3456::1", AddressClass.UNIQUE_LOCAL),
        ("224.0.0.1", AddressClass.MULTICAST),
        ("ff02::1", AddressClass.MULTICAST),
        ("::ffff:127.0.0.1", AddressClass.LOOPBACK),
        ("::ffff:169.254.169.254", AddressClass.METADATA),
        ("::ffff:10.0.0.1", AddressClass.PRIVATE),
        ("::ffff:8.8.8.8", None),
        ("2002:7f00:1::1", AddressClass.LOOPBACK),
        ("240.0.0.1", AddressClass.RESERVED),
    ],
)
def test_classify(address: str, expected: AddressClass | None) -> None:
    """Each special-purpose range is recognised; public addresses pass."""
    assert classify(address) is expected


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/convhook",
        "http://example.com:8080/x?y=1",
        "https://8.8.8.8/hook",
        "https://[2606:4700:4700::1111]/hook",
    ],
)
def test_public_urls_are_accepted(url: str) -> None:
    """http(s) URLs to public hosts are accepted unchanged."""
    assert validate_url(url) == url


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("ftp://example.com/x", "http:// or https://"),
        ("example.com/x", "http:// or https://"),
        ("https:///x", "no host"),
        ("https://user:pw@example.com/", "credentials"),
        ("http://example.com:99999/", "Port out of range"),
        ("http://127.0.0.1:8080/", "loopback"),
        ("http://localhost:8080/", "loopback"),
        ("http://api.localhost/", "loopback"),
        ("http://[::1]/", "loopback"),
        ("http://10.0.0.8/", "private"),
        ("http://169.254.169.254/latest/meta-data", "cloud-metadata"),
        ("http://metadata.google.internal/", "cloud-metadata"),
        ("http://[fd00:ec2::254]/", "cloud-metadata"),
        ("http://0.0.0.0:80/", "unspecified"),
        ("http://100.64.1.1/", "carrier-grade-nat"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),
        ("http://１２７.０.０.１:8/h", "loopback"),
        ("http://127。0。0。1:8/h", "loopback"),
        ("http://127.1/", "read as 127.0.0.1"),
        ("http://0xa9.0xfe.0xa9.0xfe/", "cloud-metadata"),
        ("http://[64:ff9b::a9fe:a9fe]/", "cloud-metadata"),
        ("http://[::1:8/h", "not a valid URL"),
        ("http://[foo]/", "not a valid URL"),
        ("http://%31%32%37.0.0.1/", "not a valid host name"),
        ("http://exa mple.com/", "spaces or control characters"),
        ("http://[::ffff:127.1]/", "not a valid"),
        ("http://[::127.000.000.001]/", "not a valid"),
        ("http://[fec0::1]/", "unique-local"),
    ],
)
def test_refused_urls(url: str, words: str) -> None:
    """Bad schemes and private, loopback or metadata targets are refused with a reason."""
    with pytest.raises(TargetError, match=words):
        validate_url(url)


def test_allow_private_lets_local_targets_through() -> None:
    """With allow_private a loopback URL is accepted; the scheme is still checked."""
    assert validate_url("http://127.0.0.1:9/", allow_private=True) == "http://127.0.0.1:9/"
    with pytest.raises(TargetError):
        validate_url("file:///etc/passwd", allow_private=True)


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("http://１２７.０.０.１:8/h", "127.0.0.1"),
        ("https://Bücher.Example/x", "xn--bcher-kva.example"),
        ("http://[::FFFF:127.0.0.1]/", "::ffff:7f00:1"),
        ("http://ⓛocalhost/", "localhost"),
    ],
)
def test_dial_host_is_what_the_client_dials(url: str, host: str) -> None:
    """dial_host folds Unicode, IDNA and IPv6 spellings the way aiohttp does before dialling."""
    assert dial_host(url) == host
