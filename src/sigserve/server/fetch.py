"""Turn an image reference (http(s) URL, data URI, bare base64) into bytes, safely.

SSRF defence. A URL given by a caller must not reach the server's own network: loopback,
private (RFC 1918, fc00::/7), link-local, CGNAT, multicast, reserved and unspecified addresses
are refused, and so are cloud metadata endpoints (169.254.169.254, fd00:ec2::254, ...). The
check runs on the addresses the host name resolves to (so "localhost", "127.1", "2130706433"
and DNS names pointing inward are caught), and again for every redirect hop, which is followed
by hand (never by httpx) up to ``max_redirects``.

DNS rebinding. Resolving once to check and letting httpx resolve again to connect would let a
hostile DNS server answer a public address first and a private one second. Instead each hop
resolves the name once, checks every address returned, and then sends the request to the
checked IP itself: the URL's host is replaced by the IP, the ``Host`` header keeps the original
name, and for https the ``sni_hostname`` request extension (honoured by httpcore) makes the TLS
handshake send the original name as SNI and verify the certificate against it. Keep-alive is
off, so a connection opened for one name is never reused for another name on the same IP.
Proxies from the environment are ignored (``trust_env=False``): through a proxy the checked IP
would not be the one contacted.

``allow_private=True`` (or ``allowed_networks=["10.0.0.0/8", ...]`` for a narrower opening)
lifts the private-address rule for deployments that fetch from an internal store. Cloud metadata
addresses stay refused even then: no image lives there, and a leak of instance credentials is
the classic SSRF payoff.

Limits: ``max_bytes`` (checked against Content-Length, then counted while streaming the decoded
body, aborting as soon as it is exceeded; also applied to data URIs and base64), ``timeout_s``
for the whole fetch including DNS and redirects.

Errors are :class:`sigserve.errors.ImageFetchError` subclasses carrying the item index, so the
server answers 400 with ``param: "input[i]"`` and ``code`` = the error's ``code``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import ipaddress
import re
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable
from urllib.parse import unquote_to_bytes

import httpx

from sigserve import __version__
from sigserve.errors import (
    ImageFetchError,
    ImageFetchTimeoutError,
    ImageFetchTooLargeError,
    ImageReferenceError,
    ImageURLRefusedError,
)

Resolver = Callable[[str, int], Awaitable[list[str]]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Instance metadata services (AWS, GCP, Azure, OpenStack, Oracle: 169.254.169.254; AWS IPv6
# fd00:ec2::254; ECS task metadata 169.254.170.2; Alibaba 100.100.100.200).
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "169.254.170.2", "169.254.170.23", "100.100.100.200",
    "fd00:ec2::254", "fd00:ec2::23", "192.0.0.192",
))
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

# Defaults (the server's Settings take these; see docs/server.md).
MAX_IMAGE_BYTES = 20 * 1024 * 1024  # per image, fetched or inline
FETCH_TIMEOUT_S = 10.0  # the whole fetch: DNS, connect, redirects, body
MAX_REDIRECTS = 3
MAX_REQUEST_BYTES = 64 * 1024 * 1024  # downloaded by one request's URLs together
FETCHES_PER_REQUEST = 4  # one request's downloads at once
MAX_FETCHES = 32  # downloads at once, over all requests


class RequestFetches:
    """One request's share of the fetcher: its downloads together stay within `max_bytes`, at most
    `concurrency` of them at a time (a 3 KB request naming 32 URLs of 20 MB must not cost 640 MB)."""

    def __init__(self, max_bytes: int = MAX_REQUEST_BYTES, concurrency: int = FETCHES_PER_REQUEST):
        self.max_bytes, self.used = max_bytes, 0
        self.gate = asyncio.Semaphore(concurrency)

    def spend(self, n: int, index: int | None) -> None:
        self.used += n
        if self.used > self.max_bytes:
            raise ImageFetchTooLargeError(index, f"the request's downloaded images exceed {self.max_bytes} bytes "
                                                 "together: send fewer or smaller images per request")
_REDIRECTS = {301, 302, 303, 307, 308}
_DATA_URI = re.compile(r"^data:([a-z0-9.+-]+/[a-z0-9.+-]+)?((?:;[a-z0-9.+-]+(?:=[^;,]*)?)*),",
                       re.IGNORECASE)
_HTTP_URL = re.compile(r"^https?://[^\s/?#]+\S*$", re.IGNORECASE)
_B64 = re.compile(r"^[A-Za-z0-9+/_-]+={0,2}$")
_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM",
                b"II*\x00", b"MM\x00*", b"\x00\x00\x01\x00")


# -- classification and inline references -------------------------------------------------


def classify_reference(s: object) -> str | None:
    """"url" (http/https), "data" (data URI), "base64" (base64 of a known image format) or
    None, which the server should treat as text. Plain sentences never match."""
    if not isinstance(s, str):
        return None
    text = s.strip()
    if _DATA_URI.match(text):
        return "data"
    if _HTTP_URL.match(text):
        return "url"
    return "base64" if _looks_like_image_base64(text) else None


def _looks_like_image_base64(text: str) -> bool:
    compact = "".join(text.split())
    if len(compact) < 16 or not _B64.match(compact):
        return False
    try:  # only the head: enough for the magic numbers, cheap on a 20 MB string
        head = base64.b64decode(compact[:32].replace("-", "+").replace("_", "/"))
    except (binascii.Error, ValueError):
        return False
    return _is_image_magic(head)


def _is_image_magic(head: bytes) -> bool:
    if head.startswith(_IMAGE_MAGIC):
        return True
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return True
    return head[4:8] == b"ftyp" and head[8:12] in (b"avif", b"avis", b"heic", b"heix", b"mif1")


def _looks_like_a_path(ref: str) -> bool:
    """/etc/passwd, ./cat.jpg, ~/x.png, C:\\x.jpg, cat.jpg: never valid base64 of an image anyway."""
    text = ref.strip()
    return (text.startswith(("/", "./", "../", "~", "file:")) or re.match(r"^[A-Za-z]:[\\/]", text) is not None
            or re.fullmatch(r"[\w.-]+\.(jpe?g|png|webp|gif|bmp|tiff?|avif|heic)", text, re.IGNORECASE) is not None)


def decode_base64(s: str, index: int | None = None, max_bytes: int | None = None) -> bytes:
    """Bytes of a bare base64 string (standard or URL-safe alphabet, padding optional)."""
    compact = "".join(s.split()).replace("-", "+").replace("_", "/")
    if max_bytes is not None and len(compact) * 3 // 4 > max_bytes + 2:
        raise ImageFetchTooLargeError(index, f"inline image is larger than {max_bytes} bytes")
    compact += "=" * (-len(compact) % 4)
    try:
        data = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise ImageReferenceError(index, "not valid base64 image data") from None
    if not data:
        raise ImageReferenceError(index, "empty image data")
    if max_bytes is not None and len(data) > max_bytes:
        raise ImageFetchTooLargeError(index, f"inline image is larger than {max_bytes} bytes")
    return data


def decode_data_uri(s: str, index: int | None = None, max_bytes: int | None = None) -> bytes:
    """Bytes of a `data:[<type>][;base64],<data>` URI."""
    text = s.strip()
    m = _DATA_URI.match(text)
    if not m:
        raise ImageReferenceError(index, "malformed data URI")
    payload = text[m.end():]
    if ";base64" in m.group(2).lower():
        return decode_base64(payload, index, max_bytes)
    if max_bytes is not None and len(payload) > 3 * max_bytes:
        raise ImageFetchTooLargeError(index, f"inline image is larger than {max_bytes} bytes")
    data = unquote_to_bytes(payload)  # the rare percent-encoded form
    if max_bytes is not None and len(data) > max_bytes:
        raise ImageFetchTooLargeError(index, f"inline image is larger than {max_bytes} bytes")
    if not data:
        raise ImageReferenceError(index, "empty image data")
    return data


# -- address policy -----------------------------------------------------------------------


def refusal_reason(ip: IPAddress, allow_private: bool = False,
                   allowed_networks: Iterable = ()) -> str | None:
    """Why this address must not be contacted, or None when it may be."""
    if ip.version == 6:  # judge IPv4 addresses wrapped in IPv6 by the IPv4 inside
        embedded = ip.ipv4_mapped or ip.sixtofour or (
            ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF) if ip in _NAT64 else None)
        if embedded is not None:
            return refusal_reason(embedded, allow_private, allowed_networks)
    if ip in METADATA_ADDRESSES:
        return "cloud metadata address"
    if allow_private or any(ip in net for net in allowed_networks):
        return None
    for label, flag in (("loopback", ip.is_loopback), ("unspecified", ip.is_unspecified),
                        ("link-local", ip.is_link_local), ("multicast", ip.is_multicast),
                        ("private", ip.is_private), ("reserved", ip.is_reserved)):
        if flag:
            return f"{label} address"
    return None if ip.is_global else "non-public address"


async def system_resolver(host: str, port: int) -> list[str]:
    """The addresses the system resolver gives for `host` (deduplicated, in order)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


# -- the fetcher --------------------------------------------------------------------------


class ImageFetcher:
    """Fetches image references with size, time, redirect and address limits.

    `resolver(host, port) -> [ip, ...]` is injectable (tests, custom DNS)."""

    def __init__(
        self,
        *,
        max_bytes: int = MAX_IMAGE_BYTES,
        timeout_s: float = FETCH_TIMEOUT_S,
        max_redirects: int = MAX_REDIRECTS,
        allow_private: bool = False,
        allowed_networks: Iterable[str] = (),
        resolver: Resolver | None = None,
        user_agent: str = f"sigserve-image-fetcher/{__version__}",
        verify: bool | ssl.SSLContext = True,
        max_fetches: int = MAX_FETCHES,
        max_request_bytes: int = MAX_REQUEST_BYTES,
        fetches_per_request: int = FETCHES_PER_REQUEST,
    ):
        self.max_request_bytes, self.fetches_per_request = max_request_bytes, fetches_per_request
        self.max_bytes, self.timeout_s, self.max_redirects = max_bytes, timeout_s, max_redirects
        self.allow_private = allow_private
        self.allowed_networks = tuple(ipaddress.ip_network(n, strict=False)
                                      for n in allowed_networks)
        self._resolve = resolver or system_resolver
        self._gate = asyncio.Semaphore(max_fetches)  # downloads in flight over all requests
        self._user_agent = user_agent
        self._client = httpx.AsyncClient(
            follow_redirects=False, trust_env=False, verify=verify,
            timeout=httpx.Timeout(timeout_s),
            limits=httpx.Limits(max_keepalive_connections=0),
        )

    async def __aenter__(self) -> ImageFetcher:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    def for_request(self) -> RequestFetches:
        return RequestFetches(self.max_request_bytes, self.fetches_per_request)

    async def fetch(self, ref: str, index: int | None = None, request: RequestFetches | None = None) -> bytes:
        """The bytes behind `ref` (URL, data URI or base64). Raises ImageFetchError(index). A URL's
        download counts against `request` (its byte budget and concurrency) and the global limit."""
        if not isinstance(ref, str) or not ref.strip():
            raise ImageReferenceError(index, "expected a URL, data URI or base64 string")
        kind = classify_reference(ref)
        if kind == "data":
            return decode_data_uri(ref, index, self.max_bytes)
        if kind == "url":
            async with request.gate if request else contextlib.nullcontext(), self._gate:
                return await self.fetch_url(ref.strip(), index, request)
        if "://" in ref[:16] or ref.strip().lower().startswith("data:"):
            scheme = ref.strip().split(":", 1)[0][:10]
            raise ImageURLRefusedError(index, f"unsupported reference scheme {scheme!r}")
        if kind is None and _looks_like_a_path(ref):  # never a base64 image: "/9j/..." is a JPEG
            raise ImageReferenceError(index, f"{ref.strip()[:60]!r} looks like a file path; the server does not read "
                                             "its own files: send the image's bytes (a data: URI or base64) or an "
                                             "http(s) URL")
        # Whatever else is handed to us as an image is taken as base64 (no magic required).
        return decode_base64(ref, index, self.max_bytes)

    async def fetch_url(self, url: str, index: int | None = None, request: RequestFetches | None = None) -> bytes:
        target = _parse_url(url, index)
        host = target.host
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self._follow(target, index, request)
        except (TimeoutError, httpx.TimeoutException):
            raise ImageFetchTimeoutError(
                index, f"fetching the image from {host} took longer than {self.timeout_s:g} s"
            ) from None
        except httpx.HTTPError as exc:
            raise ImageFetchError(index, f"could not fetch the image from {host}: "
                                         f"{type(exc).__name__}") from None

    async def _follow(self, url: httpx.URL, index: int | None, request: RequestFetches | None) -> bytes:
        for _hop in range(self.max_redirects + 1):
            ip = await self._checked_ip(url, index)
            response = await self._send(url, ip)
            try:
                location = response.headers.get("location")
                if response.status_code in _REDIRECTS and location:
                    url = _parse_url(_join(url, location, index), index)  # checked next hop
                    continue
                if not 200 <= response.status_code < 300:
                    raise ImageFetchError(
                        index, f"HTTP {response.status_code} from {url.host}")
                return await self._read(response, index, url.host, request)
            finally:
                await response.aclose()
        raise ImageFetchError(index, f"more than {self.max_redirects} redirects")

    async def _checked_ip(self, url: httpx.URL, index: int | None) -> str:
        host = url.raw_host.decode("ascii")
        try:
            addresses = [ipaddress.ip_address(host)]
        except ValueError:
            try:
                addresses = [ipaddress.ip_address(a.split("%")[0])
                             for a in await self._resolve(host, _port(url))]
            except (OSError, UnicodeError) as exc:
                raise ImageFetchError(index, f"could not resolve {host}: {exc}") from None
        if not addresses:
            raise ImageFetchError(index, f"could not resolve {host}")
        for ip in addresses:  # every address: the client must not pick a bad one itself
            if reason := refusal_reason(ip, self.allow_private, self.allowed_networks):
                shown = host if str(ip) == host else f"{host} ({ip})"
                raise ImageURLRefusedError(
                    index, f"refusing to fetch from {shown}: {reason}; only public addresses "
                           "are allowed unless the server sets allow_private")
        return str(addresses[0])

    async def _send(self, url: httpx.URL, ip: str) -> httpx.Response:
        """GET `url` over a connection to `ip`, with the original Host header and TLS name."""
        headers = {"Host": url.netloc.decode("ascii"), "User-Agent": self._user_agent,
                   "Accept": "image/*,*/*;q=0.5"}
        extensions = {}
        if url.scheme == "https":
            extensions["sni_hostname"] = url.raw_host.decode("ascii")
        request = self._client.build_request("GET", url.copy_with(host=ip), headers=headers,
                                             extensions=extensions)
        return await self._client.send(request, stream=True)

    async def _read(self, response: httpx.Response, index: int | None, host: str,
                    request: RequestFetches | None) -> bytes:
        too_large = ImageFetchTooLargeError(
            index, f"the image at {host} is larger than {self.max_bytes} bytes")
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise too_large
        chunks, size = [], 0
        async for chunk in response.aiter_bytes():  # decoded: a gzip bomb is counted expanded
            size += len(chunk)
            if size > self.max_bytes:
                raise too_large
            if request is not None:
                request.spend(len(chunk), index)
            chunks.append(chunk)
        if size == 0:
            raise ImageFetchError(index, f"empty response from {host}")
        return b"".join(chunks)


def _port(url: httpx.URL) -> int:
    return url.port or (443 if url.scheme == "https" else 80)


def _join(base: httpx.URL, location: str, index: int | None) -> str:
    try:
        return str(base.join(location))
    except (httpx.InvalidURL, ValueError, TypeError):
        raise ImageFetchError(index, f"bad redirect location from {base.host}") from None


def _parse_url(url: str, index: int | None) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError, TypeError):
        raise ImageReferenceError(index, "malformed image URL") from None
    if parsed.scheme not in ("http", "https"):
        raise ImageURLRefusedError(index, f"unsupported URL scheme {parsed.scheme!r}")
    if not parsed.raw_host:
        raise ImageReferenceError(index, "image URL without a host")
    return parsed
