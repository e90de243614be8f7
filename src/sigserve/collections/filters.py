"""Mongo-style JSON filters compiled to a LanceDB `where` string.

    {"brand": "acme", "price": {"$lt": 50}, "tags": {"$contains": "red"},
     "$or": [{"color": "red"}, {"in_stock": true}]}

Every value is type-checked against the field's stored type and written as an escaped SQL
literal; field names must be known metadata keys (or the built-ins `_id`, `_source`,
`_max_num_patches`) and are always back-quoted; nothing from the caller is pasted as SQL.
Negations ($ne, $nin, $not) follow MongoDB: they also match items that lack the field.
Errors are InvalidArgumentError with `param` naming the place in the filter (filter.price.$lt)."""

from __future__ import annotations

import math
from typing import Any

from sigserve.collections.fields import BUILTIN_FIELDS, column
from sigserve.errors import InvalidArgumentError

COMPARISONS = {"$eq": "=", "$ne": "<>", "$lt": "<", "$lte": "<=", "$gt": ">", "$gte": ">="}
FIELD_OPERATORS = set(COMPARISONS) | {"$in", "$nin", "$contains", "$exists", "$not"}
LOGICAL = {"$and", "$or", "$not"}
MAX_DEPTH = 16  # nesting bound: a filter is data from the network


def compile_filter(flt: dict | None, fields: dict[str, str]) -> str | None:
    """The where-string for `flt` (None when there is nothing to filter)."""
    if flt is None or flt == {}:
        return None
    return _document(flt, fields, "filter", 0)


def _fail(param: str, message: str) -> InvalidArgumentError:
    return InvalidArgumentError(f"{param}: {message}", param)


def _document(flt: Any, fields: dict[str, str], param: str, depth: int) -> str:
    if depth > MAX_DEPTH:
        raise _fail(param, f"filters nest at most {MAX_DEPTH} levels")
    if not isinstance(flt, dict) or not flt:
        raise _fail(param, "a filter is a non-empty JSON object")
    parts = []
    for key, value in flt.items():
        where = f"{param}.{key}"
        if key in ("$and", "$or"):
            if not isinstance(value, list) or not value:
                raise _fail(where, f"{key} takes a non-empty list of filters")
            joiner = " AND " if key == "$and" else " OR "
            parts.append("(" + joiner.join(_document(v, fields, f"{where}[{i}]", depth + 1)
                                           for i, v in enumerate(value)) + ")")
        elif key == "$not":
            parts.append(_negate(_document(value, fields, where, depth + 1)))
        elif key.startswith("$"):
            raise _fail(where, f"unknown operator {key!r} (top level takes field names, $and, $or, $not)")
        else:
            parts.append(_field(key, value, fields, where, depth))
    return parts[0] if len(parts) == 1 else "(" + " AND ".join(parts) + ")"


def _field(name: str, cond: Any, fields: dict[str, str], param: str, depth: int) -> str:
    if name in BUILTIN_FIELDS:
        col, kind = BUILTIN_FIELDS[name]
    elif name in fields:
        col, kind = column(name), fields[name]
    else:
        known = ", ".join(sorted(fields)) or "none yet"
        raise _fail(param, f"unknown field {name!r} (metadata fields of this collection: {known}; "
                           f"built-in: {', '.join(BUILTIN_FIELDS)})")
    ident = f"`{col}`"
    if not isinstance(cond, dict):
        return _operator("$eq", cond, ident, kind, param, depth)
    if not cond:
        raise _fail(param, "an empty condition object")
    parts = [_operator(op, value, ident, kind, f"{param}.{op}", depth) for op, value in cond.items()]
    return parts[0] if len(parts) == 1 else "(" + " AND ".join(parts) + ")"


def _operator(op: str, value: Any, ident: str, kind: str, param: str, depth: int) -> str:
    if op not in FIELD_OPERATORS:
        raise _fail(param, f"unknown operator {op!r} (one of {', '.join(sorted(FIELD_OPERATORS))})")
    if op == "$not":
        if depth > MAX_DEPTH or not isinstance(value, dict) or not value:
            raise _fail(param, "$not takes an object of operators, e.g. {\"$not\": {\"$gt\": 5}}")
        inner = [_operator(o, v, ident, kind, f"{param}.{o}", depth + 1) for o, v in value.items()]
        return _negate(" AND ".join(inner))
    if op == "$exists":
        if not isinstance(value, bool):
            raise _fail(param, "$exists takes true or false")
        return f"{ident} IS NOT NULL" if value else f"{ident} IS NULL"
    if kind == "string[]":
        return _list_operator(op, value, ident, param)
    if op == "$contains":
        if kind != "string":
            raise _fail(param, f"$contains applies to strings and lists of strings, not {kind}")
        return f"strpos({ident}, {_literal(value, 'string', param)}) > 0"
    if op in ("$in", "$nin"):
        if not isinstance(value, list):
            raise _fail(param, f"{op} takes a list of values")
        if not value:  # x IN () is not SQL: nothing is in an empty list
            return "FALSE" if op == "$in" else "TRUE"
        listed = ", ".join(_literal(v, kind, f"{param}[{i}]") for i, v in enumerate(value))
        positive = f"{ident} IN ({listed})"
        return positive if op == "$in" else _negate(positive)
    if kind == "boolean" and op not in ("$eq", "$ne"):
        raise _fail(param, f"{op} does not apply to booleans (use $eq or $ne)")
    positive = f"{ident} {COMPARISONS['$eq' if op == '$ne' else op]} {_literal(value, kind, param)}"
    return _negate(positive) if op == "$ne" else positive


def _list_operator(op: str, value: Any, ident: str, param: str) -> str:
    """Lists of strings: $eq/$contains = has this element, $in = has any of these; $ne/$nin negate."""
    if op in ("$eq", "$ne", "$contains"):
        positive = f"array_has({ident}, {_literal(value, 'string', param)})"
        return _negate(positive) if op == "$ne" else positive
    if op in ("$in", "$nin"):
        if not isinstance(value, list):
            raise _fail(param, f"{op} takes a list of values")
        if not value:
            return "FALSE" if op == "$in" else "TRUE"
        listed = ", ".join(_literal(v, "string", f"{param}[{i}]") for i, v in enumerate(value))
        positive = f"array_has_any({ident}, [{listed}])"
        return positive if op == "$in" else _negate(positive)
    raise _fail(param, f"{op} does not apply to lists (use $contains, $in, $nin, $eq, $ne or $exists)")


def _negate(sql: str) -> str:
    # IS NOT TRUE, not NOT: a missing field makes the inner test NULL, and a negation should match it.
    return f"({sql}) IS NOT TRUE"


def _literal(value: Any, kind: str, param: str) -> str:
    """An SQL literal of the field's type; anything else is refused, never converted."""
    if kind == "string":
        if not isinstance(value, str):
            raise _fail(param, f"expected a string, got {_json_type(value)}")
        if "\x00" in value:
            raise _fail(param, "strings cannot contain NUL characters")
        return "'" + value.replace("'", "''") + "'"  # standard SQL: backslashes are literal
    if kind in ("number", "integer"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _fail(param, f"expected a number, got {_json_type(value)}")
        number = float(value)
        if not math.isfinite(number):
            raise _fail(param, "numbers must be finite")
        if number.is_integer() and abs(number) < 2**53:
            return str(int(number))  # an integer literal compares with integer and float columns alike
        if kind == "integer":
            raise _fail(param, f"expected an integer, got {value!r}")
        return repr(number)
    if kind == "boolean":
        if not isinstance(value, bool):
            raise _fail(param, f"expected true or false, got {_json_type(value)}")
        return "TRUE" if value else "FALSE"
    raise _fail(param, f"values of type {kind} cannot be compared")


def _json_type(value: Any) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list",
             dict: "an object", type(None): "null"}
    return names.get(type(value), type(value).__name__)
