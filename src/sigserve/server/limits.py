"""What every request passes before any route sees it, and the connection-level guard under uvicorn.

RequestGuardMiddleware, per request:
- both Content-Length and Transfer-Encoding: 400 at once (proxies may frame such a body differently
  from us: the request-smuggling shape);
- a declared Content-Length over the cap: 413 without reading the body into memory, and the connection
  closed. Before answering, at most DRAIN_BYTES / DRAIN_SECONDS of the body are read and dropped, so
  that a client still sending (most do, before reading any answer) sees the 413 and not a reset; a
  client that asked `Expect: 100-continue` is answered at once and never sends it;
- the body is read in full (it is JSON: the routes need all of it anyway), each chunk within
  `body_timeout_s` (a stalled client gets 408 and the connection closed) and counted against the cap
  (413 as soon as it crosses);
- a JSON string holding a lone UTF-16 surrogate ("\\ud800" with no partner), which no text library can
  encode, is a 400 naming the field, before any route tries.

GuardedH11Protocol, per connection: the request head (line and headers) must arrive within
`header_timeout_s` of the connection opening or of the previous response; uvicorn by itself only times
out connections that send nothing at all, so a client trickling header bytes could hold a connection
forever.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import h11
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")  # any; pairs (escaped emoji) are fine
SHOWN_CHARS = 40  # the most of a client's own input that an error message repeats
DRAIN_BYTES, DRAIN_SECONDS = 4 * 1024 * 1024, 1.0  # what a refused body may cost us, at most


class RequestGuardMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int, body_timeout_s: float = 30.0):
        self.app, self.max_bytes, self.body_timeout_s = app, max_bytes, body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", []))
        if b"content-length" in headers and b"transfer-encoding" in headers:
            return await _answer(send, 400, "send either Content-Length or Transfer-Encoding, not both", "ambiguous_length")
        declared = _int(headers.get(b"content-length"))
        if declared is not None and declared > self.max_bytes:
            if headers.get(b"expect", b"").lower() != b"100-continue":
                await _drain(receive)
            return await _answer(send, 413, self._too_large(), "request_too_large")
        body, problem = await self._read(receive)
        if problem is not None:
            return await _answer(send, *problem)
        if (param := _lone_surrogate_at(body)) is not None:
            return await _answer(send, 400, f"{param or 'the body'}: invalid Unicode (a lone UTF-16 surrogate); "
                                            "send text as valid UTF-8", "invalid_unicode", param)
        await self.app(scope, _replay(body, receive), send)

    async def _read(self, receive: Receive) -> tuple[bytes, tuple | None]:
        chunks: list[bytes] = []
        size = 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), self.body_timeout_s)
            except TimeoutError:
                return b"", (408, f"request body not received within {self.body_timeout_s:g} s", "request_timeout")
            if message["type"] != "http.request":  # the client went away: let the app see it
                return b"".join(chunks), None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                if message.get("more_body", False):
                    await _drain(receive)
                return b"", (413, self._too_large(), "request_too_large")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks), None

    def _too_large(self) -> str:
        return f"request body larger than {self.max_bytes} bytes"


async def _drain(receive: Receive) -> None:
    """Read and drop what the client is still sending, within DRAIN_BYTES and DRAIN_SECONDS."""
    seen = 0
    try:
        async with asyncio.timeout(DRAIN_SECONDS):
            while seen < DRAIN_BYTES:
                message = await receive()
                seen += len(message.get("body", b""))
                if message["type"] != "http.request" or not message.get("more_body", False):
                    return
    except TimeoutError:
        pass


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body, once, then whatever the connection says next (a disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _lone_surrogate_at(body: bytes) -> str | None:
    """The JSON path of the first string holding a lone surrogate ("" for the body itself), or None.
    The regex is a cheap pre-check; only a hit costs a parse."""
    if not SURROGATE_ESCAPE.search(body):
        return None
    try:
        return _walk(json.loads(body), "")
    except ValueError:
        return None  # not JSON: the route's own validation answers


def _walk(value: Any, path: str) -> str | None:
    if isinstance(value, str):
        return None if _encodable(value) else path
    if isinstance(value, dict):
        for k, v in value.items():
            if not _encodable(k):
                return path or ""
            if (found := _walk(v, f"{path}.{k}" if path else k)) is not None:
                return found
    if isinstance(value, list):
        for i, v in enumerate(value):
            if (found := _walk(v, f"{path}[{i}]")) is not None:
                return found
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def shown(text: str) -> str:
    """A client's input as an error message may repeat it: a short prefix, escaped."""
    cut = text[:SHOWN_CHARS]
    return ascii(cut) + ("..." if len(text) > SHOWN_CHARS else "")


def _int(value: bytes | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


async def _answer(send: Send, status: int, message: str, code: str, param: str | None = None) -> None:
    """OpenAI's error envelope; the connection is closed unless the body was read in full (a 400 for
    invalid Unicode keeps a keep-alive connection usable)."""
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "param": param,
                                 "code": code}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if code != "invalid_unicode":
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request head (see the module docstring)."""

    header_timeout_s = 10.0  # a subclass made by `guarded_protocol` carries the setting

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_deadline: asyncio.TimerHandle | None = None
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE and self._head_deadline is not None:  # the head is in
            self._head_deadline.cancel()
            self._head_deadline = None

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()  # the next request's head has its own deadline

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
        self._head_deadline = self.loop.call_later(self.header_timeout_s, self._head_timed_out)

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def guarded_protocol(header_timeout_s: float) -> type[GuardedH11Protocol]:
    """The protocol class to give uvicorn (`http=`), with this header deadline."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"header_timeout_s": header_timeout_s})

