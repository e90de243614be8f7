"""Filters: every operator against a reference evaluation in Python (MongoDB semantics), escaping
of hostile values, and clear errors for unknown operators and fields."""

from __future__ import annotations

import numpy as np
import pytest

import sigserve
from sigserve.collections.filters import compile_filter

HOSTILE = ["it's", "100%", "a;b", "x' OR '1'='1", "DROP TABLE photos; --", "back\\slash", 'dou"ble', "_under",
           "SELECT * FROM t WHERE 1=1"]
ROWS = [
    {"brand": "acme", "price": 10, "in_stock": True, "tags": ["red", "big"]},
    {"brand": "globex", "price": 25.5, "in_stock": False, "tags": ["blue"]},
    {"brand": "acme", "price": 49.99, "tags": []},
    {"brand": "initech", "in_stock": True, "tags": ["red"]},
    {"price": 50, "in_stock": False},
    {"brand": "Acme", "price": -3, "in_stock": True, "tags": ["green", "red"]},
] + [{"brand": v, "price": i, "tags": [v]} for i, v in enumerate(HOSTILE)]


def matches(meta: dict, flt: dict) -> bool:
    """MongoDB semantics for the operators we support (the test's own oracle)."""
    for key, cond in flt.items():
        if key == "$and":
            ok = all(matches(meta, f) for f in cond)
        elif key == "$or":
            ok = any(matches(meta, f) for f in cond)
        elif key == "$not":
            ok = not matches(meta, cond)
        else:
            ok = field_matches(meta.get(key), cond if isinstance(cond, dict) else {"$eq": cond})
        if not ok:
            return False
    return True


def field_matches(value, cond: dict) -> bool:
    for op, arg in cond.items():
        is_list = isinstance(value, list)
        if op == "$exists":
            ok = (value is not None) == arg
        elif op == "$not":
            ok = not field_matches(value, arg)
        elif op in ("$eq", "$contains"):
            ok = (arg in value) if is_list else (value is not None and (arg in value if op == "$contains" else value == arg))
        elif op == "$ne":
            ok = not field_matches(value, {"$eq": arg})
        elif op == "$in":
            ok = any(a in value for a in arg) if is_list else value in arg
        elif op == "$nin":
            ok = not field_matches(value, {"$in": arg})
        else:
            ok = value is not None and {"$lt": value < arg, "$lte": value <= arg, "$gt": value > arg,
                                        "$gte": value >= arg}[op]
        if not ok:
            return False
    return True


FILTERS = [
    {"brand": "acme"},
    {"brand": {"$eq": "acme"}},
    {"brand": {"$ne": "acme"}},
    {"price": {"$lt": 25.5}},
    {"price": {"$lte": 25.5}},
    {"price": {"$gt": 10}},
    {"price": {"$gte": 10, "$lt": 50}},
    {"brand": {"$in": ["acme", "globex"]}},
    {"brand": {"$nin": ["acme", "globex"]}},
    {"brand": {"$in": []}},
    {"brand": {"$contains": "cm"}},
    {"tags": {"$contains": "red"}},
    {"tags": "red"},
    {"tags": {"$ne": "red"}},
    {"tags": {"$in": ["blue", "green"]}},
    {"tags": {"$nin": ["red"]}},
    {"in_stock": True},
    {"in_stock": {"$ne": True}},
    {"in_stock": {"$exists": False}},
    {"brand": {"$exists": True}, "price": {"$exists": True}},
    {"price": {"$not": {"$gt": 20}}},
    {"$not": {"brand": "acme"}},
    {"$or": [{"brand": "globex"}, {"price": {"$lt": 0}}]},
    {"$and": [{"tags": {"$contains": "red"}}, {"in_stock": True}]},
    {"$or": [{"$and": [{"brand": "acme"}, {"price": {"$gt": 20}}]}, {"in_stock": False}]},
] + [{"brand": v} for v in HOSTILE] + [{"brand": {"$contains": v}} for v in ("%", "'", ";", "\\", "_")] \
  + [{"tags": {"$contains": v}} for v in HOSTILE]


@pytest.fixture(scope="module")
def shop(tiny_model, tmp_path_factory):
    col = tiny_model.collection("shop", uri=str(tmp_path_factory.mktemp("store")))
    images = [np.full((16, 16 + i, 3), i * 9, np.uint8) for i in range(len(ROWS))]
    col.add(images, ids=[f"item{i}" for i in range(len(ROWS))], metadata=ROWS)
    return col


def found(col, flt) -> set[str]:
    return {h.id for h in col.search(image=np.zeros((16, 16, 3), np.uint8), top_k=100, filter=flt)}


@pytest.mark.parametrize("flt", FILTERS, ids=[str(f) for f in FILTERS])
def test_filter_matches_reference(shop, flt):
    expected = {f"item{i}" for i, row in enumerate(ROWS) if matches(row, flt)}
    assert found(shop, flt) == expected
    assert shop.count(flt) == len(expected)


def test_hostile_values_match_exactly_one_item(shop):
    for i, value in enumerate(HOSTILE):
        assert found(shop, {"brand": value}) == {f"item{len(ROWS) - len(HOSTILE) + i}"}


def test_builtin_fields(shop):
    assert found(shop, {"_id": {"$in": ["item1", "item3"]}}) == {"item1", "item3"}
    assert found(shop, {"_max_num_patches": 256}) == {f"item{i}" for i in range(len(ROWS))}


@pytest.mark.parametrize("flt, param", [
    ({"brand": {"$regex": "a.*"}}, "filter.brand.$regex"),
    ({"$nor": [{"brand": "acme"}]}, "filter.$nor"),
    ({"colour": "red"}, "filter.colour"),
    ({"price": {"$lt": "10"}}, "filter.price.$lt"),
    ({"brand": {"$gt": 3}}, "filter.brand.$gt"),
    ({"in_stock": {"$gt": True}}, "filter.in_stock.$gt"),
    ({"tags": {"$lt": "a"}}, "filter.tags.$lt"),
    ({"price": {"$contains": 1}}, "filter.price.$contains"),
    ({"brand": {"$in": "acme"}}, "filter.brand.$in"),
    ({"$or": []}, "filter.$or"),
    ({"$or": [{"brand": "acme"}, {"nope": 1}]}, "filter.$or[1].nope"),
    ({"price": {"$eq": float("nan")}}, "filter.price.$eq"),
    ({"brand": {"$exists": 1}}, "filter.brand.$exists"),
])
def test_bad_filters_name_the_problem(shop, flt, param):
    with pytest.raises(sigserve.InvalidArgumentError) as err:
        shop.search(image=np.zeros((16, 16, 3), np.uint8), filter=flt)
    assert err.value.param == param
    assert param in str(err.value)


def test_values_are_escaped_not_pasted():
    where = compile_filter({"brand": "x' OR '1'='1"}, {"brand": "string"})
    assert where == "`m_brand` = 'x'' OR ''1''=''1'"


@pytest.mark.parametrize("metadata, param", [
    ({"nested": {"a": 1}}, "metadata[0].nested"),
    ({"nums": [1, 2]}, "metadata[0].nums"),
    ({"price": "cheap"}, "metadata[0].price"),  # price is a number in this collection
    ({"bad key": 1}, "metadata[0].bad key"),
    ({"_id": "x"}, "metadata[0]._id"),
])
def test_bad_metadata_is_refused(shop, metadata, param):
    with pytest.raises(sigserve.InvalidArgumentError) as err:
        shop.add([np.zeros((16, 16, 3), np.uint8)], metadata=[metadata])
    assert err.value.param == param
