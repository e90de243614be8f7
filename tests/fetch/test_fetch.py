"""ImageFetcher: inline references, and URLs under address, size, time and redirect limits.

The HTTP(S) servers are real (127.0.0.1); injected resolvers stand in for hostile DNS."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import time

import pytest

from sigserve.errors import (
    ImageFetchError,
    ImageFetchTimeoutError,
    ImageFetchTooLargeError,
    ImageReferenceError,
    ImageURLRefusedError,
    InputError,
)
from sigserve.server.fetch import ImageFetcher, classify_reference, refusal_reason
from tests.fetch.conftest import PNG

B64 = base64.b64encode(PNG).decode()


def fetch(ref, index=0, **options):
    async def go():
        async with ImageFetcher(**options) as fetcher:
            return await fetcher.fetch(ref, index=index)
    return asyncio.run(go())


def resolver(table, calls=None):
    async def resolve(host, port):
        if calls is not None:
            calls.append(host)
        answer = table[host]
        return answer.pop(0) if isinstance(answer[0], list) else answer
    return resolve


# -- classification and inline data -------------------------------------------------------

@pytest.mark.parametrize("ref, kind", [
    ("https://example.com/cat.png", "url"),
    ("HTTP://example.com", "url"),
    ("data:image/png;base64,AAAA", "data"),
    ("data:;base64,AAAA", "data"),
    (B64, "base64"),
    ("a photo of a cat", None),
    ("data: the new oil", None),
    ("see https://example.com/cat.png", None),
    ("https://example.com/a cat.png", None),
    (base64.b64encode(b"just some words, not an image").decode(), None),
    ("ftp://example.com/cat.png", None),
    ("", None),
    (42, None),
])
def test_classify_reference(ref, kind):
    assert classify_reference(ref) == kind


def test_data_uri_and_base64():
    assert fetch(f"data:image/png;base64,{B64}") == PNG
    assert fetch(B64) == PNG
    urlsafe = base64.urlsafe_b64encode(PNG).decode().rstrip("=")
    assert fetch(urlsafe) == PNG
    assert fetch("data:image/png," + "%89PNG") == b"\x89PNG"


def test_bad_inline_data_names_the_item():
    with pytest.raises(ImageReferenceError) as exc:
        fetch("data:image/png;base64,@@@@", index=3)
    assert isinstance(exc.value, InputError) and exc.value.index == 3
    assert str(exc.value).startswith("input[3]:")
    with pytest.raises(ImageReferenceError):
        fetch("this is not base64!", index=1)


def test_inline_data_over_max_bytes():
    with pytest.raises(ImageFetchTooLargeError):
        fetch(f"data:image/png;base64,{B64}", max_bytes=100)
    with pytest.raises(ImageFetchTooLargeError):
        fetch(B64, max_bytes=100)
    assert fetch(B64, max_bytes=len(PNG)) == PNG


@pytest.mark.parametrize("ref", ["file:///etc/passwd", "ftp://example.com/x.png",
                                 "gopher://example.com/"])
def test_other_schemes_refused(ref):
    with pytest.raises(ImageURLRefusedError):
        fetch(ref)


# -- address policy -----------------------------------------------------------------------

@pytest.mark.parametrize("address, refused", [
    ("127.0.0.1", True), ("10.1.2.3", True), ("172.16.0.1", True), ("192.168.1.1", True),
    ("169.254.1.1", True), ("169.254.169.254", True), ("100.64.0.1", True),
    ("224.0.0.1", True), ("0.0.0.0", True), ("240.0.0.1", True), ("::1", True),
    ("fe80::1", True), ("fd00:ec2::254", True), ("::ffff:127.0.0.1", True),
    ("64:ff9b::a00:1", True), ("8.8.8.8", False), ("2606:4700:4700::1111", False),
])
def test_refusal_reason(address, refused):
    assert (refusal_reason(ipaddress.ip_address(address)) is not None) == refused


def test_metadata_stays_refused_with_allow_private():
    assert refusal_reason(ipaddress.ip_address("10.0.0.1"), allow_private=True) is None
    for address in ("169.254.169.254", "fd00:ec2::254", "::ffff:169.254.169.254"):
        assert refusal_reason(ipaddress.ip_address(address), allow_private=True)


# -- URLs ---------------------------------------------------------------------------------

def test_loopback_server_refused_by_default_without_connecting(http_server):
    base, server = http_server
    with pytest.raises(ImageURLRefusedError) as exc:
        fetch(f"{base}/img", index=2)
    assert exc.value.index == 2 and "loopback" in exc.value.reason
    assert server.hits == []  # refused before any connection


def test_allow_private_fetches(http_server):
    base, server = http_server
    assert fetch(f"{base}/img", allow_private=True) == PNG
    assert fetch(f"{base}/img", allowed_networks=["127.0.0.0/8"]) == PNG
    assert len(server.hits) == 2


def test_ipv4_mapped_literal_refused(http_server):
    base, server = http_server
    port = base.rsplit(":", 1)[1]
    with pytest.raises(ImageURLRefusedError):
        fetch(f"http://[::ffff:127.0.0.1]:{port}/img")


def test_hostname_resolving_to_private_addresses_refused():
    table = {"evil.test": ["93.184.215.14", "10.0.0.7"], "inside.test": ["192.168.0.10"]}
    for host in table:
        with pytest.raises(ImageURLRefusedError) as exc:
            fetch(f"http://{host}/cat.png", resolver=resolver(table))
        assert "private" in exc.value.reason and host in exc.value.reason


def test_connects_to_the_checked_address_not_a_rebound_one(http_server):
    # First answer is allowed; any later lookup would point inside. Only one lookup may happen,
    # and the request must still carry the original Host.
    base, server = http_server
    port = base.rsplit(":", 1)[1]
    calls = []
    rebinding = resolver({"rebind.test": [["127.0.0.1"], ["10.9.9.9"], ["10.9.9.9"]]}, calls)
    data = fetch(f"http://rebind.test:{port}/img", resolver=rebinding,
                 allowed_networks=["127.0.0.1/32"])
    assert data == PNG and calls == ["rebind.test"]
    assert server.hits == [("/img", f"rebind.test:{port}")]


def test_https_uses_original_name_for_sni_and_certificate(https_server):
    port, server, trust = https_server
    pinned = resolver({"images.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]})
    options = dict(resolver=pinned, allowed_networks=["127.0.0.1/32"], verify=trust)
    assert fetch(f"https://images.test:{port}/img", **options) == PNG
    assert server.hits[-1] == ("/img", f"images.test:{port}")
    with pytest.raises(ImageFetchError):  # the certificate is not valid for other.test
        fetch(f"https://other.test:{port}/img", **options)


def test_download_over_max_bytes(http_server):
    base, _ = http_server
    with pytest.raises(ImageFetchTooLargeError):
        fetch(f"{base}/big", allow_private=True, max_bytes=1000)  # declared length
    with pytest.raises(ImageFetchTooLargeError):
        fetch(f"{base}/img", allow_private=True, max_bytes=100)
    start = time.monotonic()
    with pytest.raises(ImageFetchTooLargeError):  # endless stream: aborted, not timed out
        fetch(f"{base}/endless", allow_private=True, max_bytes=1_000_000, timeout_s=20)
    assert time.monotonic() - start < 10


def test_total_timeout(http_server):
    base, _ = http_server
    start = time.monotonic()
    with pytest.raises(ImageFetchTimeoutError) as exc:
        fetch(f"{base}/slow", index=5, allow_private=True, timeout_s=0.5)
    assert time.monotonic() - start < 2.5 and exc.value.index == 5


def test_redirect_limit(http_server):
    base, server = http_server
    assert fetch(f"{base}/chain/2", allow_private=True, max_redirects=2) == PNG
    with pytest.raises(ImageFetchError) as exc:
        fetch(f"{base}/chain/3", allow_private=True, max_redirects=2)
    assert "redirects" in exc.value.reason
    with pytest.raises(ImageFetchError):
        fetch(f"{base}/chain/1", allow_private=True, max_redirects=0)


def test_redirect_to_private_address_refused_per_hop(http_server):
    base, server = http_server
    port = base.rsplit(":", 1)[1]
    first_hop_only = dict(allowed_networks=["127.0.0.1/32"],
                          resolver=resolver({"intranet.test": ["10.1.1.1"]}))
    targets = [f"http://127.0.0.2:{port}/img",           # other loopback address
               "http://intranet.test/secret.png",        # a name resolving inward
               "http://169.254.169.254/latest/meta-data/"]
    for target in targets:
        with pytest.raises(ImageURLRefusedError):
            fetch(f"{base}/to?url={target}", **first_hop_only)
    with pytest.raises(ImageURLRefusedError) as exc:  # metadata even with allow_private
        fetch(f"{base}/to?url=http://169.254.169.254/", allow_private=True)
    assert "metadata" in exc.value.reason
    assert all(path.startswith("/to") for path, _ in server.hits)  # no hop reached /img


def test_redirect_to_non_http_scheme_refused(http_server):
    base, _ = http_server
    with pytest.raises(ImageURLRefusedError):
        fetch(f"{base}/to?url=file:///etc/passwd", allow_private=True)


def test_http_error_status(http_server):
    base, _ = http_server
    with pytest.raises(ImageFetchError) as exc:
        fetch(f"{base}/status/404", allow_private=True)
    assert "404" in exc.value.reason


def test_unresolvable_host():
    async def nxdomain(host, port):
        raise OSError("Name or service not known")
    with pytest.raises(ImageFetchError) as exc:
        fetch("http://nowhere.test/x.png", resolver=nxdomain)
    assert "resolve" in exc.value.reason
