"""Turns every input dialect (plain strings, Jina objects, OpenAI / Voyage content parts,
infinity's `modality`) into one flat list of Items, each naming its place in the request so that
an error can say `input[3]`."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Literal, Protocol, Sequence

from sigserve.server import schemas
from sigserve.server.errors import APIError

Kind = Literal["text", "image"]


@dataclass(frozen=True)
class Item:
    kind: Kind
    value: str  # the text, or the image reference (URL, data URI or base64)
    param: str  # where it sits in the request, e.g. "input[3]"


def parse_items(raw, field: str = "input", modality: str | None = None, single_name: bool = True) -> list[Item]:
    """`raw` is one item or a list of them. A lone item is named `field`; list items `field[i]`."""
    if isinstance(raw, list):
        return [parse_item(x, f"{field}[{i}]", modality) for i, x in enumerate(raw)]
    return [parse_item(raw, field if single_name else f"{field}[0]", modality)]


def parse_item(x, param: str, modality: str | None = None) -> Item:
    if isinstance(x, str):
        return Item("image" if modality == "image" else "text", x, param)
    if isinstance(x, (schemas.TextObject, schemas.TextPart)):
        return Item("text", x.text, param)
    if isinstance(x, schemas.ImageObject):
        return Item("image", x.image, param)
    if isinstance(x, schemas.ImageURLPart):
        url = x.image_url if isinstance(x.image_url, str) else x.image_url.url
        return Item("image", url, param)
    if isinstance(x, schemas.ImageBase64Part):
        return Item("image", x.image_base64, param)
    raise APIError(400, f"{param}: unsupported input item", param=param)  # unreachable after validation


def require_images(items: Sequence[Item], what: str) -> None:
    for item in items:
        if item.kind != "image":
            raise APIError(400, f"{item.param}: {what} takes images; got text", param=item.param, code="invalid_input")


class ImageSource(Protocol):
    """Resolves an image reference to its bytes (the fetch module when configured)."""

    async def load(self, reference: str, param: str) -> bytes: ...


_DATA_URI = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[^,;]*)*?),(?P<data>.*)$", re.S)


class InlineImageSource:
    """Data URIs and bare base64 only: the fallback when no fetcher for http(s) URLs is wired in."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes

    async def load(self, reference: str, param: str) -> bytes:
        ref = reference.strip()
        if ref.startswith(("http://", "https://")):
            raise APIError(400, f"{param}: fetching image URLs is not enabled on this server", param=param,
                           code="url_fetch_disabled")
        m = _DATA_URI.match(ref) if ref.startswith("data:") else None
        if ref.startswith("data:") and not (m and ";base64" in m.group("params")):
            raise APIError(400, f"{param}: only base64 data URIs are accepted", param=param, code="invalid_image")
        data = m.group("data") if m else ref
        try:
            raw = base64.b64decode(re.sub(r"\s+", "", data), validate=True)
        except (binascii.Error, ValueError):
            raise APIError(400, f"{param}: not an http(s) URL, a data URI or valid base64", param=param,
                           code="invalid_image") from None
        if len(raw) > self.max_bytes:
            raise APIError(413, f"{param}: image larger than {self.max_bytes} bytes", param=param, code="image_too_large")
        return raw
