"""Quotas hold under concurrency (issue 9, finding 5): images are reserved before the work and
settled after, so a key never goes past its quota, whether the requests race on one server or on
several sharing the database; a failed request gives its images back."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from sigserve.accounts.keys import KeyStore
from sigserve.accounts.usage import QuotaRefusal, Reservation, UsageMeter
from tests.support.images import b64, image_bytes
from tests.support.server import MODEL


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'q.db'}"
    return request.getfixturevalue("postgres_url")


def test_reserve_settle_release(url):
    store = KeyStore(url)
    record, _ = store.create("q", quota_images=10)
    now = [1000.0]
    meter = UsageMeter(store, now=lambda: now[0], reservation_ttl_s=60)
    first = meter.reserve(record.id, 6, 10)
    assert isinstance(first, Reservation) and first.remaining == 4
    refused = meter.reserve(record.id, 5, 10)  # 6 held: 4 left
    assert refused == QuotaRefusal(quota=10, remaining=4)
    meter.settle(first, record.id, images=6)
    assert meter.images_used(record.id) == 6
    second = meter.reserve(record.id, 4, 10)
    assert isinstance(second, Reservation) and second.remaining == 0
    meter.release(second)  # the request failed: its images come back
    assert meter.images_used(record.id) == 6
    third = meter.reserve(record.id, 4, 10)
    assert isinstance(third, Reservation)
    now[0] += 61  # a replica died holding it: it stops counting when it expires
    assert isinstance(meter.reserve(record.id, 4, 10), Reservation)
    store.close()


def test_concurrent_reservations_never_exceed_the_quota(url):
    store = KeyStore(url)
    record, _ = store.create("q", quota_images=12)
    meter = UsageMeter(store)
    start = threading.Barrier(16)

    def one(_):
        start.wait(10)
        return meter.reserve(record.id, 5, 12)

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(16)))
    assert sum(isinstance(r, Reservation) for r in results) == 2  # 2 x 5 <= 12 < 3 x 5
    store.close()


def _five_images() -> dict:
    return {"model": MODEL, "input": [{"image": b64(image_bytes(seed, (24, 24)))} for seed in range(5)]}


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_quota_5_and_20_concurrent_5_image_requests_record_exactly_5(serve, tmp_path, request, backend):
    url = f"sqlite:///{tmp_path / 'keys.db'}" if backend == "sqlite" else request.getfixturevalue("postgres_url")
    store = KeyStore(url)
    record, key = store.create("tight", quota_images=5)
    server = serve(database_url=url)
    body, headers = _five_images(), {"authorization": f"Bearer {key}"}
    start = threading.Barrier(20)

    def one(_):
        start.wait(30)
        return httpx.post(server.url + "/v1/embeddings", json=body, headers=headers, timeout=120)

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(one, range(20)))
    codes = sorted(r.status_code for r in answers)
    assert codes == [200] + [429] * 19, codes
    refused = [r.json()["error"] for r in answers if r.status_code == 429]
    assert {(e["type"], e["code"]) for e in refused} == {("insufficient_quota", "insufficient_quota")}
    assert UsageMeter(store).images_used(record.id) == 5
    store.close()


def test_a_failed_request_gives_its_reservation_back(serve, tmp_path):
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    store = KeyStore(url)
    record, key = store.create("tight", quota_images=5)
    server = serve(database_url=url)
    headers = {"authorization": f"Bearer {key}"}
    bad = _five_images()
    bad["input"][4] = {"image": b64(b"not an image")}
    r = httpx.post(server.url + "/v1/embeddings", json=bad, headers=headers, timeout=60)
    assert r.status_code == 400 and r.json()["error"]["param"] == "input[4]"
    r = httpx.post(server.url + "/v1/embeddings", json=_five_images(), headers=headers, timeout=60)
    assert r.status_code == 200, r.text  # the 5 images held by the failed request came back
    assert UsageMeter(store).images_used(record.id) == 5
    r = httpx.post(server.url + "/v1/embeddings", json={"model": MODEL, "input": "text passes"}, headers=headers,
                   timeout=60)
    assert r.status_code == 200  # the quota counts images only
    store.close()
