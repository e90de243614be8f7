"""HTTP routes of collections: /v1/collections, its items and its search. Same keys, rate limits,
usage metering and error envelope as the other routes (Access: authorize, admit, record).

Models: a collection is tied to the weights that built it (their content fingerprint is stored): it is
created with the model the body names (default: the server's first), and its items and searches are
embedded by whichever served model has those weights; when none has, 409 model_mismatch.

Tenancy: a collection belongs to the key that created it (its id is stored as the owner); other
keys get 404, admin keys see all. On an open server (no keys) callers are anonymous and
collections are shared (owner None, as for collections made by the CLI or the library).

Writes: one asyncio lock per collection serialises this process's writers (so a request's
"added"/"updated" answer and its metadata checks see no interleaved write); across processes
and replicas LanceDB's optimistic concurrency resolves concurrent commits. A request is answered
only after its LanceDB commit returned, so an acknowledged item survives a crash or kill -9."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from typing import Literal

from fastapi import APIRouter, Depends, Request, Response

from sigserve.accounts.keys import KeyRecord
from sigserve.collections import Collection, CollectionMeta, Store, default_uri
from sigserve.collections import fields as fieldmod
from sigserve.collections.errors import CollectionExistsError, CollectionNotFoundError, ModelMismatchError
from sigserve.errors import InputError, InvalidArgumentError
from sigserve.scoring import l2_normalize
from sigserve.server import collections_schemas as cs
from sigserve.server.errors import APIError
from sigserve.server.inputs import Item, parse_item
from sigserve.server.models import Served
from sigserve.server.routes import caller, record_usage
from sigserve.server.schemas import Usage
from sigserve.server.serving import Serving

Stored = Literal["added", "updated"]
log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/collections", tags=["collections"])


def owner_of(key: KeyRecord) -> str | None:
    return None if key.kind == "anonymous" else key.id


@contextlib.contextmanager
def http_errors():
    """The collection states a request can run into, as HTTP answers."""
    try:
        yield
    except CollectionNotFoundError as exc:
        raise APIError(404, str(exc), param="name", code="collection_not_found") from None
    except CollectionExistsError as exc:
        raise APIError(409, str(exc), param="name", code="collection_exists") from None
    except ModelMismatchError as exc:
        raise APIError(409, str(exc), code="model_mismatch") from None


class CollectionService:
    """Per app (built on first use): the store, and this process's writer locks."""

    def __init__(self, state):
        settings = state.settings
        self.store = Store(settings.collections_uri or default_uri(settings.data_dir),
                           index_threshold=settings.collections_index_threshold)
        self.models, self.settings = state.models, settings
        self._locks: dict[str, asyncio.Lock] = {}
        self._optimizing: dict[str, asyncio.Task] = {}

    def lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    async def meta(self, name: str, key: KeyRecord) -> CollectionMeta:
        """The collection's facts, or 404 when it does not exist or is not this caller's."""
        with http_errors():
            meta = await asyncio.to_thread(self.store.meta, name)
        if not (key.admin or meta.owner == owner_of(key)):  # the same 404 as a missing one: no existence leak
            raise APIError(404, f"no collection named {name!r}", param="name", code="collection_not_found")
        return meta

    def served_for(self, meta: CollectionMeta) -> Served:
        """The served model with the weights that built the collection; 409 when none has them."""
        served = self.models.by_fingerprint(meta.fingerprint)
        if served is None:
            raise APIError(409, f"collection {meta.name!r} was built by {meta.model} (weights {meta.fingerprint}); no model "
                                f"served here has those weights (served: {', '.join(self.models.names)})",
                           code="model_mismatch")
        return served

    async def open(self, name: str, key: KeyRecord) -> tuple[Collection, Serving]:
        meta = await self.meta(name, key)
        served = self.served_for(meta)
        with http_errors():
            col = await asyncio.to_thread(Collection, self.store, name, served.engine.model)
            col.check_model()
        return col, served.serving

    async def describe(self, name: str) -> cs.CollectionObject:
        with http_errors():
            info = await asyncio.to_thread(self.store.info, name)
        return cs.CollectionObject(id=name, name=name, description=info["description"], count=info["count"],
                                   model=info["model"], fingerprint=info["fingerprint"], dim=info["dim"],
                                   created=int(info["created"]), owner=info["owner"], fields=info["fields"],
                                   index=cs.IndexState(**info["index"]))

    # -- items ---------------------------------------------------------------------------------------

    async def add_items(self, col: Collection, serving: Serving, body: cs.AddItems, key: KeyRecord) -> cs.AddItemsResponse:
        name, engine = col.name, serving.engine
        if len(body.items) > self.settings.max_items:
            raise APIError(400, f"{len(body.items)} items; at most {self.settings.max_items} per request",
                           param="items", code="too_many_items")
        serving.check_max_num_patches(body.max_num_patches)
        mnp = serving.sequence_length(body.max_num_patches)
        refs = [parse_item(it.image, f"items[{i}].image", "image") for i, it in enumerate(body.items)]
        errors: dict[int, cs.ItemError] = {}
        with engine.admit(len(refs), key.id):
            share = serving.images.for_request()  # the request's downloads: one byte budget, a few at a time
            prepared = await asyncio.gather(*(self._prepare(serving, i, ref, mnp, share) for i, ref in enumerate(refs)))
            for i, p in enumerate(prepared):
                if isinstance(p, cs.ItemError):
                    errors[i] = p
            good = [i for i in range(len(refs)) if i not in errors]
            embedded = await engine.embed_images([prepared[i][0] for i in good]) if good else None
        async with self.lock(name):  # checks and commit see no interleaved write of this process
            stored = await asyncio.to_thread(self._store, col, body, good, prepared, embedded, mnp, errors)
        self._maybe_optimize(name, col)
        data = [cs.ItemStatus(index=i, status="failed", error=errors[i]) if i in errors
                else cs.ItemStatus(index=i, id=stored[i][0], status=stored[i][1]) for i in range(len(refs))]
        patches = sum(prepared[i][0].num_patches for i in stored)
        usage = cs.CollectionUsage(images=len(stored), patches=patches)
        added = sum(s == "added" for _, s in stored.values())
        return cs.AddItemsResponse(data=data, added=added, updated=len(stored) - added, failed=len(errors),
                                   errors=bool(errors), usage=usage)

    @staticmethod
    async def _prepare(serving: Serving, i: int, ref: Item, mnp: int | None, share):
        """(patches, sha256 of the bytes, source) for one item, or its error (the others go on)."""
        try:
            blob = await serving.images.fetch(ref.value, i, share)
            patches = (await serving.engine.load_images([blob], mnp))[0]
        except InputError as exc:
            return cs.ItemError(message=f"{ref.param}: {exc.reason}", param=ref.param,
                                code=getattr(exc, "code", "invalid_input"))
        source = ref.value if ref.value.startswith(("http://", "https://")) else None
        return patches, hashlib.sha256(blob).hexdigest(), source

    @staticmethod
    def _store(col: Collection, body, good, prepared, embedded, mnp, errors) -> dict[int, tuple[str, Stored]]:
        """Metadata checks, then one commit of the good items. {item index: (id, added|updated)}."""
        known: dict[str, str] = col.fields
        keep = []
        for j, i in enumerate(good):
            try:
                known.update(fieldmod.check_metadata(body.items[i].metadata, known, f"items[{i}].metadata"))
                keep.append((j, i))
            except InvalidArgumentError as exc:
                errors[i] = cs.ItemError(message=str(exc), param=exc.param or f"items[{i}].metadata",
                                         code="invalid_metadata")
        if not keep:
            return {}
        ids = [body.items[i].id or prepared[i][1] for _, i in keep]
        existing = {row["id"] for row in col.get(ids) if row}
        col.add_embeddings(embedded.embeddings[[j for j, _ in keep]], ids=ids, hashes=[prepared[i][1] for _, i in keep],
                           sources=[prepared[i][2] for _, i in keep], metadata=[body.items[i].metadata for _, i in keep],
                           max_num_patches=mnp, auto_index=False)
        return {i: (item_id, "updated" if item_id in existing else "added") for (_, i), item_id in zip(keep, ids)}

    def _maybe_optimize(self, name: str, col: Collection) -> None:
        """Build or update the ANN index in the background after a large ingest (never twice at once)."""
        if name in self._optimizing:
            return

        async def run():
            try:
                if await asyncio.to_thread(col.needs_optimize):
                    state = await asyncio.to_thread(col.optimize)
                    log.info("collection %s optimised: %s", name, state)
            except Exception:  # a failed build is retried after the next ingest
                log.exception("optimising collection %s failed", name)
            finally:
                self._optimizing.pop(name, None)

        self._optimizing[name] = asyncio.ensure_future(run())

    # -- search --------------------------------------------------------------------------------------

    async def search(self, col: Collection, serving: Serving, body: cs.SearchRequest, key: KeyRecord) -> cs.SearchResponse:
        serving.check_max_num_patches(body.max_num_patches)
        query = []
        if body.query.text is not None:
            query.append(Item("text", body.query.text, "query.text"))
        if body.query.image is not None:
            query.append(parse_item(body.query.image, "query.image", "image"))
        if not query:
            raise APIError(400, "query needs a text, an image, or both", param="query", code="empty_query")
        with serving.engine.admit(len(query), key.id):
            enc = await serving.encode(query, serving.sequence_length(body.max_num_patches))
        vectors = dict(zip([q.kind for q in query], l2_normalize(enc.vectors)))
        hits = await asyncio.to_thread(col.search_vectors, vectors.get("text"), vectors.get("image"),
                                       top_k=body.top_k, filter=body.filter, threshold=body.threshold,
                                       text_weight=body.text_weight)
        data = [cs.SearchHit(id=h.id, score=h.score, probability=h.probability, source=h.source,
                             metadata=h.metadata if body.include_metadata else None) for h in hits]
        usage = cs.CollectionUsage(**enc.usage.model_dump(), searches=1)
        return cs.SearchResponse(data=data, model=serving.name, usage=usage)


def service(request: Request) -> CollectionService:
    state = request.app.state
    if getattr(state, "collections", None) is None:  # no await in between: one per app
        state.collections = CollectionService(state)
    return state.collections


async def _metered(request: Request, response: Response, key: KeyRecord, images: int, work,
                   serving: Serving | None = None):
    """Admit (rate limits, quota), run, record usage under `serving`'s model (default: the server's first):
    the path every route takes (routes._served), without cancelling on disconnect: a write that
    committed must be recorded and answered."""
    access = request.app.state.access
    admission = await access.admit(key, images)  # rate limits charged, quota reserved
    response.headers.update(admission.headers)
    request.state.response_headers = admission.headers
    try:
        result = await work()
    except BaseException:
        await asyncio.shield(access.release(admission))  # the quota reserved comes back
        raise
    usage = getattr(result, "usage", None) or Usage()
    await record_usage(request, key, serving or request.app.state.models.default.serving, usage, admission)
    return result


# -- routes ------------------------------------------------------------------------------------------


@router.post("", response_model=cs.CollectionObject)
async def create_collection(body: cs.CreateCollection, request: Request, response: Response,
                            key: KeyRecord = Depends(caller)) -> cs.CollectionObject:
    svc = service(request)
    served = svc.models.resolve(body.model) if body.model is not None else svc.models.default
    model = served.engine.model

    async def work():
        meta = CollectionMeta(name=body.name, model=model.checkpoint.model_id, fingerprint=model.checkpoint.fingerprint(),
                              dim=model.embedding_dim, owner=owner_of(key), description=body.description)
        with http_errors():
            await asyncio.to_thread(svc.store.create, meta, body.metadata_schema)
        return await svc.describe(body.name)

    return await _metered(request, response, key, 0, work, served.serving)


@router.get("", response_model=cs.CollectionList)
async def list_collections(request: Request, response: Response, key: KeyRecord = Depends(caller)) -> cs.CollectionList:
    svc = service(request)

    async def work():
        names = await asyncio.to_thread(svc.store.names)
        out = []
        for name in names:
            try:
                await svc.meta(name, key)
                out.append(await svc.describe(name))
            except APIError:  # not this caller's, deleted meanwhile, or not a collection
                continue
        return cs.CollectionList(data=out)

    return await _metered(request, response, key, 0, work)


@router.get("/{name}", response_model=cs.CollectionObject)
async def get_collection(name: str, request: Request, response: Response,
                         key: KeyRecord = Depends(caller)) -> cs.CollectionObject:
    svc = service(request)

    async def work():
        await svc.meta(name, key)
        return await svc.describe(name)

    return await _metered(request, response, key, 0, work)


@router.delete("/{name}", response_model=cs.Deleted)
async def delete_collection(name: str, request: Request, response: Response,
                            key: KeyRecord = Depends(caller)) -> cs.Deleted:
    svc = service(request)

    async def work():
        await svc.meta(name, key)
        async with svc.lock(name):
            with http_errors():
                await asyncio.to_thread(svc.store.drop, name)
        return cs.Deleted(id=name, object="collection.deleted")

    return await _metered(request, response, key, 0, work)


@router.post("/{name}/items", response_model=cs.AddItemsResponse, response_model_exclude_none=True)
async def add_items(name: str, body: cs.AddItems, request: Request, response: Response,
                    key: KeyRecord = Depends(caller)) -> cs.AddItemsResponse:
    svc = service(request)
    col, serving = await svc.open(name, key)
    return await _metered(request, response, key, len(body.items), lambda: svc.add_items(col, serving, body, key),
                          serving)


@router.delete("/{name}/items", response_model=cs.DeleteItemsResponse)
async def delete_items(name: str, body: cs.DeleteItems, request: Request, response: Response,
                       key: KeyRecord = Depends(caller)) -> cs.DeleteItemsResponse:
    svc = service(request)

    async def work():
        col, _ = await svc.open(name, key)
        async with svc.lock(name):
            deleted = await asyncio.to_thread(col.delete, body.ids)
        return cs.DeleteItemsResponse(deleted=deleted)

    return await _metered(request, response, key, 0, work)


@router.get("/{name}/items/{item_id:path}", response_model=cs.Item)
async def get_item(name: str, item_id: str, request: Request, response: Response,
                   key: KeyRecord = Depends(caller)) -> cs.Item:
    svc = service(request)

    async def work():
        meta = await svc.meta(name, key)
        served = svc.models.by_fingerprint(meta.fingerprint) or svc.models.default  # reading needs no embedding
        with http_errors():
            col = await asyncio.to_thread(Collection, svc.store, name, served.engine.model)
        row = (await asyncio.to_thread(col.get, [item_id]))[0]
        if row is None:
            raise APIError(404, f"no item {item_id!r} in collection {name!r}", param="id", code="item_not_found")
        return cs.Item(**row)

    return await _metered(request, response, key, 0, work)


@router.post("/{name}/search", response_model=cs.SearchResponse, response_model_exclude_none=True)
async def search(name: str, body: cs.SearchRequest, request: Request, response: Response,
                 key: KeyRecord = Depends(caller)) -> cs.SearchResponse:
    svc = service(request)
    col, serving = await svc.open(name, key)
    images = int(body.query.image is not None)
    return await _metered(request, response, key, images, lambda: svc.search(col, serving, body, key), serving)


__all__ = ["router", "CollectionService"]
