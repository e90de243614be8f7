"""User metadata: flat JSON (strings, numbers, booleans, lists of strings) checked item by item.

Storage (see docs/collections.md, "How metadata is stored"): each item's metadata is kept verbatim
as a JSON string (what `get` and search hits return, exactly as given), and every key also gets a
typed column `m_<key>` (string, float64, bool or list<string>) that filters run on. Typed columns
keep filters native to LanceDB (no JSON parsing per row, indexable); the JSON copy keeps the
caller's values exact (an integer stays an integer). A key's type is fixed by its first value (or
by `metadata_schema` at creation); the table schema is the one record of the keys seen."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import pyarrow as pa

from sigserve.errors import InvalidArgumentError

COLUMN_PREFIX = "m_"
KEY_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
MAX_STRING = 4096  # characters per string value: metadata is for filtering and display, not documents
MAX_LIST = 256  # strings per list value
ARROW_TYPES = {"string": pa.string(), "number": pa.float64(), "boolean": pa.bool_(), "string[]": pa.list_(pa.string())}
TYPE_OF_ARROW = {str(v): k for k, v in ARROW_TYPES.items()}
# Fields every item has, filterable under a leading underscore (user keys cannot start with one).
BUILTIN_FIELDS = {"_id": ("id", "string"), "_source": ("source", "string"),
                  "_max_num_patches": ("max_num_patches", "integer")}


def column(key: str) -> str:
    return COLUMN_PREFIX + key


def fields_of(schema: pa.Schema) -> dict[str, str]:
    """{key: type name} of the metadata columns in a table schema."""
    return {f.name[len(COLUMN_PREFIX):]: TYPE_OF_ARROW[str(f.type)]
            for f in schema if f.name.startswith(COLUMN_PREFIX)}


def check_schema(declared: dict | None) -> dict[str, str]:
    """A `metadata_schema` given at creation: {"brand": "string", "price": "number", ...}."""
    out = {}
    for key, kind in (declared or {}).items():
        check_key(key, f"metadata_schema.{key}")
        if kind not in ARROW_TYPES:
            raise InvalidArgumentError(f"metadata_schema.{key}: type must be one of {', '.join(ARROW_TYPES)}, "
                                       f"got {kind!r}", f"metadata_schema.{key}")
        out[key] = kind
    return out


def check_key(key: Any, param: str) -> None:
    if not isinstance(key, str) or not KEY_PATTERN.match(key):
        raise InvalidArgumentError(f"{param}: metadata keys must start with a letter and hold only letters, digits, "
                                   f"'_' or '-' (at most 64), got {key!r}", param)


def type_of(value: Any, param: str) -> str | None:
    """The metadata type of one value (None for null), or InvalidArgumentError naming `param`."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise InvalidArgumentError(f"{param}: numbers must be finite, got {value!r}", param)
        return "number"
    if isinstance(value, str):
        if len(value) > MAX_STRING:
            raise InvalidArgumentError(f"{param}: strings are limited to {MAX_STRING} characters", param)
        return "string"
    if isinstance(value, (list, tuple)):
        if len(value) > MAX_LIST or not all(isinstance(v, str) and len(v) <= MAX_STRING for v in value):
            raise InvalidArgumentError(f"{param}: a list must hold at most {MAX_LIST} strings "
                                       f"(of at most {MAX_STRING} characters)", param)
        return "string[]"
    raise InvalidArgumentError(f"{param}: metadata values must be strings, numbers, booleans or lists of strings "
                               f"(flat JSON), got {type(value).__name__}", param)


def check_metadata(metadata: Any, known: dict[str, str], param: str = "metadata") -> dict[str, str]:
    """Validate one item's metadata against the known field types. Returns the NEW keys it brings
    with their types; raises InvalidArgumentError naming `param.key` on the first problem."""
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise InvalidArgumentError(f"{param}: metadata must be a JSON object", param)
    new: dict[str, str] = {}
    for key, value in metadata.items():
        where = f"{param}.{key}"
        check_key(key, where)
        kind = type_of(value, where)
        expected = known.get(key, new.get(key))
        if kind is None:
            continue
        if expected is None:
            new[key] = kind
        elif expected != kind:
            raise InvalidArgumentError(f"{where}: this collection stores {key!r} as {expected}, got a {kind}", where)
    return new


def to_json(metadata: dict | None) -> str:
    return json.dumps(metadata or {}, ensure_ascii=False, separators=(",", ":"))


def from_json(text: str | None) -> dict:
    return json.loads(text) if text else {}


def column_arrays(metadata: list[dict | None], fields: dict[str, str]) -> dict[str, pa.Array]:
    """The typed columns for a batch of rows (null where an item lacks the key)."""
    out = {}
    for key, kind in fields.items():
        values = [(m or {}).get(key) for m in metadata]
        if kind == "number":
            values = [None if v is None else float(v) for v in values]
        out[column(key)] = pa.array(values, type=ARROW_TYPES[kind])
    return out
