"""Collections: an image library embedded once and searched by text, image or both, with
metadata filters and calibrated probabilities, stored in LanceDB (embedded by default).

    import sigserve
    model = sigserve.load("google/siglip2-base-patch16-naflex")
    photos = model.collection("photos")                  # or sigserve.collections.open(model, "photos")
    photos.add(["beach.jpg", "dog.jpg"], metadata=[{"year": 2023}, {"year": 2024}])
    photos.search("a dog on a beach", threshold=0.5)     # every photo with P(match) >= 0.5
"""

from __future__ import annotations

import os

from sigserve.collections.collection import AddResult, Collection, Hit, content_hash
from sigserve.collections.errors import CollectionError, CollectionExistsError, CollectionNotFoundError, ModelMismatchError
from sigserve.collections.store import CollectionMeta, Store, default_uri


def open(model, name: str, uri: str | os.PathLike | None = None, *, create: bool = True,
         description: str | None = None, metadata_schema: dict | None = None, owner: str | None = None,
         index_threshold: int | None = None, store: Store | None = None) -> Collection:
    """The collection `name` in the store at `uri` (default: <data folder>/collections), created
    for `model` when absent (unless create=False). Searching or adding with a model other than the
    one it was built with raises ModelMismatchError."""
    store = store or Store(uri, index_threshold=index_threshold)
    if create and not store.exists(name):
        try:
            create_collection(store, model, name, description=description, metadata_schema=metadata_schema, owner=owner)
        except CollectionExistsError:
            pass  # created meanwhile by another process: open theirs
    return Collection(store, name, model)


def create_collection(store: Store, model, name: str, *, description: str | None = None,
                      metadata_schema: dict | None = None, owner: str | None = None) -> CollectionMeta:
    meta = CollectionMeta(name=name, model=model.checkpoint.model_id, fingerprint=model.checkpoint.fingerprint(),
                          dim=model.embedding_dim, owner=owner, description=description)
    store.create(meta, metadata_schema)
    return meta


__all__ = ["open", "create_collection", "Collection", "Hit", "AddResult", "Store", "CollectionMeta", "default_uri",
           "content_hash", "CollectionError", "CollectionNotFoundError", "CollectionExistsError", "ModelMismatchError"]
