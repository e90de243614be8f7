"""Key management over HTTP, for operators without a shell on the database host. Admin keys only
(a key created with admin=true, or the static --api-key); errors in the usual envelope.

    POST   /v1/admin/keys              create; the answer carries the secret `key`, shown this once
    GET    /v1/admin/keys              list (?include_revoked=false to hide revoked keys)
    GET    /v1/admin/keys/{id}         one key
    PATCH  /v1/admin/keys/{id}         change name, rpm, images_per_min, quota_images, admin (null: no limit)
    DELETE /v1/admin/keys/{id}         revoke (kept for the usage history; cannot be undone)
    GET    /v1/admin/usage             usage per key, UTC day and model: JSON, or ?format=csv for billing
                                       (?key_id=, ?since=YYYY-MM-DD, ?until=YYYY-MM-DD, inclusive)

A change made here reaches every replica at once through Redis when --redis-url is set, and within
--key-refresh-s otherwise."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
from typing import Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from sigserve.accounts.keys import LIMIT_MOST, AuthError, KeyRecord, KeyStore
from sigserve.accounts.usage import COUNTERS
from sigserve.server.errors import APIError

router = APIRouter(prefix="/v1/admin", tags=["admin"])


async def admin(request: Request) -> KeyRecord:
    key = await request.app.state.access.authorize(request)
    try:
        return KeyStore.require_admin(key)
    except AuthError as exc:
        raise APIError(exc.status, exc.message, type=exc.type, code=exc.code) from None


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$",
                      description="Who uses the key (printable text).")
    rpm: int | None = Field(None, ge=1, le=LIMIT_MOST["rpm"], description="Requests per minute (null: the server default).")
    images_per_min: int | None = Field(None, ge=1, le=LIMIT_MOST["images_per_min"],
                                       description="Images per minute (null: the server default).")
    quota_images: int | None = Field(None, ge=0, le=LIMIT_MOST["quota_images"],
                                     description="Images this key may embed in all (null: no quota).")
    admin: bool = Field(False, description="May manage keys and read every key's usage.")


class KeyUpdate(BaseModel):
    """Only the fields sent change; null removes a limit."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")
    rpm: int | None = Field(None, ge=1, le=LIMIT_MOST["rpm"])
    images_per_min: int | None = Field(None, ge=1, le=LIMIT_MOST["images_per_min"])
    quota_images: int | None = Field(None, ge=0, le=LIMIT_MOST["quota_images"])
    admin: bool | None = None


class KeyInfo(BaseModel):
    object: Literal["api_key"] = "api_key"
    id: str
    name: str
    prefix: str
    admin: bool
    rpm: int | None
    images_per_min: int | None
    quota_images: int | None
    created_at: float
    revoked_at: float | None


class CreatedKey(KeyInfo):
    key: str = Field(description="The secret, shown in this answer only: store it now.")


class KeyList(BaseModel):
    object: Literal["list"] = "list"
    data: list[KeyInfo]


def _info(record: KeyRecord) -> KeyInfo:
    return KeyInfo(id=record.id, name=record.name, prefix=record.display_prefix, admin=record.admin, rpm=record.rpm,
                   images_per_min=record.images_per_min, quota_images=record.quota_images,
                   created_at=record.created_at, revoked_at=record.revoked_at)


def _store(request: Request) -> KeyStore:
    return request.app.state.access.store


async def _existing(request: Request, key_id: str) -> KeyRecord:
    record = await asyncio.to_thread(_store(request).get, key_id)
    if record is None:
        raise APIError(404, f"no key with id {key_id[:40]!r}", param="key_id", code="key_not_found")
    return record


@router.post("/keys", status_code=201, response_model=CreatedKey)
async def create_key(body: KeyCreate, request: Request, _: KeyRecord = Depends(admin)) -> CreatedKey:
    record, secret = await asyncio.to_thread(_store(request).create, body.name, rpm=body.rpm,
                                             images_per_min=body.images_per_min, quota_images=body.quota_images,
                                             admin=body.admin)
    return CreatedKey(**_info(record).model_dump(), key=secret)


@router.get("/keys", response_model=KeyList)
async def list_keys(request: Request, include_revoked: bool = True, _: KeyRecord = Depends(admin)) -> KeyList:
    records = await asyncio.to_thread(_store(request).list, include_revoked)
    return KeyList(data=[_info(r) for r in records])


@router.get("/keys/{key_id}", response_model=KeyInfo)
async def get_key(key_id: str, request: Request, _: KeyRecord = Depends(admin)) -> KeyInfo:
    return _info(await _existing(request, key_id))


@router.patch("/keys/{key_id}", response_model=KeyInfo)
async def update_key(key_id: str, body: KeyUpdate, request: Request, _: KeyRecord = Depends(admin)) -> KeyInfo:
    changes = body.model_dump(exclude_unset=True)
    for field in ("name", "admin"):
        if field in changes and changes[field] is None:
            raise APIError(400, f"{field} cannot be null", param=field, code="invalid_argument")
    if (await _existing(request, key_id)).revoked_at is not None:
        raise APIError(409, f"key {key_id} is revoked; create a new one", param="key_id", code="key_revoked")
    record = await asyncio.to_thread(_store(request).update, key_id, **changes)
    if record is None:
        raise APIError(404, f"no key with id {key_id[:40]!r}", param="key_id", code="key_not_found")
    return _info(record)


@router.delete("/keys/{key_id}", response_model=KeyInfo)
async def revoke_key(key_id: str, request: Request, _: KeyRecord = Depends(admin)) -> KeyInfo:
    record = await _existing(request, key_id)
    if record.revoked_at is not None:
        return _info(record)  # revoking twice is harmless
    revoked = await asyncio.to_thread(_store(request).revoke, key_id)
    return _info(revoked[0] if revoked else await _existing(request, key_id))


@router.get("/usage")
async def usage(request: Request, key_id: str | None = None, since: dt.date | None = None, until: dt.date | None = None,
                format: Literal["json", "csv"] = Query("json"), _: KeyRecord = Depends(admin)) -> Response:
    """Usage per key, UTC day and served model, oldest first, with each key's name (billing export)."""
    meter = request.app.state.access.meter
    rows, records = await asyncio.to_thread(lambda: (meter.daily_rows(key_id, since, until), _store(request).list()))
    names = {r.id: r.name for r in records}
    rows = [{"date": r["date"], "key_id": r["key_id"], "name": names.get(r["key_id"], r["key_id"]), "model": r["model"],
             **{c: r[c] for c in COUNTERS}} for r in rows]
    if format == "json":
        return Response(json.dumps({"object": "list", "data": rows}), media_type="application/json")
    for row in rows:  # a name like "=HYPERLINK(...)" must stay text in a spreadsheet
        if row["name"][:1] in ("=", "+", "-", "@", "\t", "\r"):
            row["name"] = "'" + row["name"]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["date", "key_id", "name", "model", *COUNTERS], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={"content-disposition": 'attachment; filename="sigserve-usage.csv"'})
