"""Where collections live: one LanceDB database (a local folder by default, or any LanceDB URI such
as another folder or `s3://bucket/prefix`), one table per collection. A collection's own facts
(model, owner, description, declared metadata types) are written into its table's schema metadata
when the table is created, so creating a collection is one atomic LanceDB commit."""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path

import pyarrow as pa

from sigserve import paths
from sigserve.collections import fields as fieldmod
from sigserve.collections.ann import INDEX_THRESHOLD, index_state
from sigserve.collections.errors import CollectionExistsError, CollectionNotFoundError
from sigserve.errors import InvalidArgumentError

COLLECTIONS_FOLDER = "collections"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
META_KEY = b"sigserve.collection"
# Every read first checks for a newer table version, so a server sees what `sigserve index` (or
# another replica) committed at once; on local disk that check is one small directory listing.
READ_CONSISTENCY = timedelta(0)


def default_uri(data_dir: str | os.PathLike | None = None) -> str:
    """The default store: the `collections` folder of `data_dir`, else of sigserve's data folder."""
    folder = Path(data_dir).expanduser() / COLLECTIONS_FOLDER if data_dir else paths.data_dir(COLLECTIONS_FOLDER)
    return str(folder)


@dataclass
class CollectionMeta:
    """What a collection remembers about itself (stored in its table's schema metadata)."""

    name: str
    model: str  # model id the vectors come from
    fingerprint: str  # model.checkpoint.fingerprint(): changes when the weights do
    dim: int
    owner: str | None = None  # API key id of the creator; None: shared (CLI, library, open server)
    description: str | None = None
    created: float = field(default_factory=time.time)

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_schema(cls, name: str, schema: pa.Schema) -> CollectionMeta:
        raw = json.loads((schema.metadata or {}).get(META_KEY, b"{}"))
        if not raw:  # a LanceDB table that sigserve did not create
            raise CollectionNotFoundError(name)
        return cls(**{**raw, "name": name})


def table_schema(dim: int, declared: dict[str, str], meta: CollectionMeta) -> pa.Schema:
    """id, the normalised image embedding, how it was embedded, where it came from, and metadata."""
    base = [
        pa.field("id", pa.string(), nullable=False),
        pa.field("vector", pa.list_(pa.float32(), dim)),  # (dim,) L2-normalised
        pa.field("max_num_patches", pa.int32()),
        pa.field("content_hash", pa.string()),  # sha256 of the image bytes
        pa.field("source", pa.string()),  # path or URL, when there is one
        pa.field("created", pa.timestamp("ms", tz="UTC")),
        pa.field("metadata", pa.string()),  # the caller's metadata, verbatim JSON
    ]
    typed = [pa.field(fieldmod.column(k), fieldmod.ARROW_TYPES[t]) for k, t in declared.items()]
    return pa.schema(base + typed, metadata={META_KEY: meta.to_bytes()})


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise InvalidArgumentError(f"collection names start with a letter or digit and hold only letters, digits, "
                                   f"'_' or '-' (at most 64), got {name!r}", "name")
    return name


class Store:
    """A LanceDB connection plus the table-level operations that need no model."""

    def __init__(self, uri: str | os.PathLike | None = None, index_threshold: int | None = None):
        self.uri = str(uri) if uri is not None else default_uri()
        self.index_threshold = INDEX_THRESHOLD if index_threshold is None else index_threshold
        import lancedb  # here, not at the top: its import costs every server start 1.2 s before /ready

        self.db = lancedb.connect(self.uri, read_consistency_interval=READ_CONSISTENCY)

    def __repr__(self) -> str:
        return f"<sigserve.collections.Store {self.uri}>"

    def names(self) -> list[str]:
        out, token = [], None
        while True:
            page = self.db.list_tables(page_token=token)
            out.extend(page.tables)
            token = page.page_token
            if not token:
                return sorted(out)

    def exists(self, name: str) -> bool:
        return name in self.names()

    def create(self, meta: CollectionMeta, declared: dict[str, str] | None = None):
        check_name(meta.name)
        schema = table_schema(meta.dim, fieldmod.check_schema(declared), meta)
        try:
            return self.db.create_table(meta.name, schema=schema, exist_ok=False)
        except ValueError as exc:  # LanceDB: "Table 'x' already exists"
            if "already exists" in str(exc):
                raise CollectionExistsError(meta.name) from None
            raise

    def table(self, name: str):
        check_name(name)
        try:
            return self.db.open_table(name)
        except ValueError as exc:  # LanceDB: "Table 'x' was not found"
            if "not found" in str(exc):
                raise CollectionNotFoundError(name) from None
            raise

    def meta(self, name: str) -> CollectionMeta:
        return CollectionMeta.from_schema(name, self.table(name).schema)

    def drop(self, name: str) -> None:
        self.meta(name)  # only sigserve's own tables, and NotFound when absent
        self.db.drop_table(name)

    def info(self, name: str) -> dict:
        """A JSON-able description: the stored facts, item count, metadata fields and index state."""
        table = self.table(name)
        meta = CollectionMeta.from_schema(name, table.schema)
        return {**asdict(meta), "count": table.count_rows(), "fields": fieldmod.fields_of(table.schema),
                "index": index_state(table, self.index_threshold), "uri": self.uri}
