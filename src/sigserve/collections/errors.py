"""Typed errors of collections. Bad arguments (filters, metadata, names) are the library's
InvalidArgumentError with a `param`; these are the states a request can run into."""

from __future__ import annotations

from sigserve.errors import SigserveError


class CollectionError(SigserveError):
    """Base class of the errors below."""


class CollectionNotFoundError(CollectionError):
    def __init__(self, name: str):
        super().__init__(f"no collection named {name!r}")
        self.name = name


class CollectionExistsError(CollectionError):
    def __init__(self, name: str):
        super().__init__(f"a collection named {name!r} already exists")
        self.name = name


class ModelMismatchError(CollectionError):
    """The collection's vectors come from other weights: its scores would be meaningless."""

    def __init__(self, name: str, stored: str, current: str):
        super().__init__(f"collection {name!r} was built with {stored}; this model is {current}. "
                         "Embeddings of different weights are not comparable: load the model the collection "
                         "was built with, or index into a new collection")
        self.name = name
