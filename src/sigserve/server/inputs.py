"""Turns every input dialect (plain strings, Jina objects, OpenAI / Voyage content parts,
infinity's `modality`) into one flat list of Items, each naming its place in the request so that
an error can say `input[3]`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from sigserve.server import schemas
from sigserve.server.errors import APIError

Kind = Literal["text", "image"]


@dataclass(frozen=True)
class Item:
    kind: Kind
    value: str  # the text, or the image reference (URL, data URI or base64)
    param: str  # where it sits in the request, e.g. "input[3]"


def parse_items(raw, field: str = "input", modality: str | None = None, single_name: bool = True,
                data_uris_are_images: bool = True) -> list[Item]:
    """`raw` is one item or a list of them. A lone item is named `field`; list items `field[i]`."""
    if isinstance(raw, list):
        return [parse_item(x, f"{field}[{i}]", modality, data_uris_are_images) for i, x in enumerate(raw)]
    return [parse_item(raw, field if single_name else f"{field}[0]", modality, data_uris_are_images)]


def parse_item(x, param: str, modality: str | None = None, data_uris_are_images: bool = True) -> Item:
    """A plain string is text, unless `modality` says image, or it is a `data:image/...;base64,` URI
    (what LangChain, LlamaIndex and LiteLLM send for images) and `data_uris_are_images` is on."""
    if isinstance(x, str):
        image = modality == "image" or (modality is None and data_uris_are_images and is_image_data_uri(x))
        return Item("image" if image else "text", x, param)
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


def is_image_data_uri(text: str) -> bool:
    head = text[:200].lstrip().lower()
    return head.startswith("data:image/") and ";base64," in head


def token_id_input(raw) -> bool:
    """OpenAI's token-array form of `input` (what LangChain sends after tokenising with tiktoken)."""
    rows = raw if isinstance(raw, list) else [raw]
    return bool(rows) and all(isinstance(r, int) or (isinstance(r, list) and all(isinstance(t, int) for t in r))
                              for r in rows)


def require_images(items: Sequence[Item], what: str) -> None:
    for item in items:
        if item.kind != "image":
            raise APIError(400, f"{item.param}: {what} takes images; got text", param=item.param, code="invalid_input")


class ImageSource(Protocol):
    """Resolves an image reference (URL, data URI, base64) to bytes: server.fetch.ImageFetcher.
    Raises sigserve.errors.ImageFetchError (an InputError) carrying `index`."""

    async def fetch(self, ref: str, index: int | None = None, request: Any = None) -> bytes: ...

    def for_request(self) -> Any:
        """A per-request share (byte budget, concurrency) to pass to each fetch of one request."""
        ...
