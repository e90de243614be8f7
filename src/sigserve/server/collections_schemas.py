"""Request and response bodies of the /v1/collections routes (docs/collections.md)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

from sigserve.server.schemas import ImageBase64Part, ImageObject, ImageURLPart, MaxNumPatches, Usage

MetadataValue = Union[str, int, float, bool, list[str], None]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CollectionUsage(Usage):
    searches: int = 0


class CreateCollection(_Strict):
    name: str = Field(..., description="letters, digits, '_' or '-' (at most 64)")
    model: str | None = Field(None, description="the served model that embeds its items and queries "
                                                "(default: the server's first); the collection stays tied to its weights")
    description: str | None = Field(None, max_length=1000)
    metadata_schema: dict[str, Literal["string", "number", "boolean", "string[]"]] | None = Field(
        None, description="declare field types up front (otherwise each key's first value decides)")


class IndexState(BaseModel):
    type: str | None  # None: exact search
    rows: int
    threshold: int
    unindexed_rows: int | None = None


class CollectionObject(BaseModel):
    object: Literal["collection"] = "collection"
    id: str  # the name
    name: str
    description: str | None = None
    count: int
    model: str
    fingerprint: str
    dim: int
    created: int
    owner: str | None = None
    fields: dict[str, str]
    index: IndexState


class CollectionList(BaseModel):
    object: Literal["list"] = "list"
    data: list[CollectionObject]


class Deleted(BaseModel):
    id: str
    object: str
    deleted: bool = True


class NewItem(_Strict):
    id: str | None = Field(None, min_length=1, max_length=1024, description="default: the image's content hash")
    image: Union[str, ImageURLPart, ImageBase64Part, ImageObject] = Field(..., description="URL, data URI or base64")
    metadata: dict[str, Any] | None = Field(None, description="flat JSON: strings, numbers, booleans, lists of strings")


class AddItems(_Strict):
    items: list[NewItem] = Field(..., min_length=1)
    max_num_patches: int | None = MaxNumPatches


class ItemError(BaseModel):
    message: str
    type: str = "invalid_request_error"
    param: str
    code: str | None = None


class ItemStatus(BaseModel):
    index: int
    id: str | None = None
    status: Literal["added", "updated", "failed"]
    error: ItemError | None = None


class AddItemsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[ItemStatus]
    added: int
    updated: int
    failed: int
    errors: bool  # true when some item failed (the others are stored)
    usage: CollectionUsage


class DeleteItems(_Strict):
    ids: list[str] = Field(..., min_length=1)


class DeleteItemsResponse(BaseModel):
    object: Literal["list"] = "list"
    deleted: int


class Item(BaseModel):
    object: Literal["collection.item"] = "collection.item"
    id: str
    source: str | None = None
    content_hash: str
    max_num_patches: int | None  # None: embedded by a fixed-resolution model
    created: dt.datetime
    metadata: dict[str, Any]


class Query(_Strict):
    text: str | None = None
    image: Union[str, ImageURLPart, ImageBase64Part, ImageObject, None] = None


class SearchRequest(_Strict):
    query: Query
    top_k: int | None = Field(None, ge=1, le=10_000, description="default 10; with a threshold, all matches")
    filter: dict[str, Any] | None = None
    threshold: float | None = Field(None, ge=0, le=1, description="text queries: keep probability >= threshold")
    text_weight: float = Field(0.5, ge=0, le=1)
    include_metadata: bool = True
    max_num_patches: int | None = MaxNumPatches


class SearchHit(BaseModel):
    id: str
    score: float
    probability: float | None = None
    source: str | None = None
    metadata: dict[str, Any] | None = None


class SearchResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[SearchHit]
    model: str
    usage: CollectionUsage
