"""Every failure arrives as OpenAI's error envelope with the right status, and as the openai
client's own exception type; nothing leaks a traceback; probes tell the truth."""

from __future__ import annotations

import concurrent.futures as cf

import httpx
import openai
import pytest

from tests.support.images import b64
from tests.support.server import MODEL, WrappedModel

ENVELOPE_KEYS = {"message", "type", "param", "code"}


def envelope(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == ENVELOPE_KEYS
    return body["error"]


def test_404_405_422(http):
    assert envelope(http.get("/v1/nothing-here"), 404)["type"] == "not_found_error"
    assert envelope(http.get("/v1/embeddings"), 405)["code"] == "method_not_allowed"
    err = envelope(http.post("/v1/embeddings", content=b"{not json", headers={"content-type": "application/json"}), 422)
    assert err["type"] == "invalid_request_error"
    err = envelope(http.post("/v1/embeddings", json={"input": "a cat"}), 422)
    assert err["param"] == "model"
    err = envelope(http.post("/v1/embeddings", json={"model": MODEL, "input": "x", "max_num_patches": 8}), 422)
    assert err["param"] == "max_num_patches"


def test_413_declared_and_streamed(http):
    big = b'{"model": "x", "input": "' + b"a" * (3 * 1024 * 1024) + b'"}'  # the cap is 2 MiB here
    assert envelope(http.post("/v1/embeddings", content=big, headers={"content-type": "application/json"}), 413)[
        "code"] == "request_too_large"

    def chunks():  # no Content-Length: counted while it arrives
        for i in range(0, len(big), 64 * 1024):
            yield big[i: i + 64 * 1024]

    r = http.post("/v1/embeddings", content=chunks(), headers={"content-type": "application/json"})
    assert envelope(r, 413)["code"] == "request_too_large"


def _sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_request_id_and_metrics(http):
    before = http.get("/metrics").text
    body = {"model": MODEL, "input": ["a cat", {"image": b64(_png())}]}
    assert http.post("/v1/embeddings", json=body).status_code == 200
    r = http.get("/v1/models", headers={"x-request-id": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123" and int(r.headers["openai-processing-ms"]) >= 0
    http.get("/v1/nothing-here")
    text = http.get("/metrics").text
    assert 'sigserve_requests_total{method="GET",route="/v1/models",status="200"}' in text
    assert 'route="unmatched",status="404"' in text  # raw paths never become label values
    assert 'sigserve_errors_total{type="not_found_error"}' in text
    labelled = f'{{model="{MODEL}"}}'
    for name, grew_by in ((f'sigserve_batch_size_count{{model="{MODEL}",tower="text"}}', 1),
                          (f'sigserve_batch_size_count{{model="{MODEL}",tower="image"}}', 1),
                          ("sigserve_images_total" + labelled, 1), ("sigserve_patches_total" + labelled, 1),
                          ("sigserve_text_tokens_total" + labelled, 1)):
        assert _sample(text, name) >= _sample(before, name) + grew_by, name
    assert f'sigserve_queue_depth{{model="{MODEL}",tower="image"}}' in text


def test_models_listing(client, tiny_model):
    models = client.models.list()
    (card,) = models.data
    assert card.id == MODEL and card.object == "model"
    extra = card.model_dump()
    assert extra["capabilities"] == ["embeddings", "classify", "rerank", "patch_features", "heatmap"]
    assert extra["embedding_dim"] == tiny_model.embedding_dim
    assert extra["max_num_patches"]["min"] == 16 and extra["max_num_patches"]["max"] == 4096
    assert extra["dummy"] is False and "per_1k_images" in extra["pricing"]


def test_unexpected_error_is_a_clean_500(make_server, server_model):
    server = make_server(WrappedModel(server_model, raise_on_text=RuntimeError("secret internals /etc/passwd")))
    r = httpx.post(server.url + "/v1/embeddings", json={"model": MODEL, "input": ["a", "b"]}, timeout=30)
    err = envelope(r, 500)
    assert err["type"] == "server_error" and "secret" not in r.text and "Traceback" not in r.text
    assert httpx.get(server.url + "/ready").status_code == 200  # one failed batch is not a dead worker


def test_dead_worker_fails_ready_not_health(make_server, server_model):
    class Fatal(BaseException):  # escapes `except Exception`: kills the worker thread
        pass

    server = make_server(WrappedModel(server_model, raise_on_image=Fatal()))
    assert httpx.get(server.url + "/ready").status_code == 200
    r = httpx.post(server.url + "/v1/embeddings", json={"model": MODEL, "input": [{"image": b64(_png())}]}, timeout=30)
    assert envelope(r, 503)["code"] == "engine_unavailable"
    assert envelope(httpx.get(server.url + "/ready"), 503)["code"] == "not_ready"
    assert httpx.get(server.url + "/health").status_code == 200
    # later requests fail fast instead of hanging
    r = httpx.post(server.url + "/v1/embeddings", json={"model": MODEL, "input": "a cat"}, timeout=10)
    assert r.status_code == 503
    assert f'sigserve_ready{{model="{MODEL}"}} 0.0' in httpx.get(server.url + "/metrics").text


def test_full_queue_is_429_with_retry_after(make_server, server_model):
    server = make_server(WrappedModel(server_model, delay_s=0.3), max_pending_items=4, max_batch_texts=1)
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=60)

    def call(i):
        try:
            client.embeddings.create(model=MODEL, input=[f"text {i}", f"more {i}"])
            return "ok"
        except openai.RateLimitError as exc:
            assert exc.response.headers["retry-after"] == "1"
            assert exc.body["code"] == "queue_full"
            return "429"

    with cf.ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(call, range(8)))
    assert "ok" in outcomes and "429" in outcomes
    assert httpx.get(server.url + "/ready").status_code == 200


def test_static_api_key(make_server):
    server = make_server(api_key="sekret-key")
    anonymous = openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as err:
        anonymous.embeddings.create(model=MODEL, input="a cat")
    assert err.value.body["code"] == "invalid_api_key"
    good = openai.OpenAI(base_url=server.url + "/v1", api_key="sekret-key", max_retries=0)
    assert len(good.embeddings.create(model=MODEL, input="a cat").data) == 1
    assert httpx.get(server.url + "/health").status_code == 200  # probes need no key
    r = httpx.post(server.url + "/v1/embeddings", json={"model": MODEL, "input": "x"}, headers={"x-api-key": "sekret-key"})
    assert r.status_code == 200


def test_database_keys_rate_limits_and_usage(make_server, tmp_path):
    from sigserve.accounts.keys import KeyStore, database_url_for

    url = database_url_for(tmp_path / "keys")
    store = KeyStore(url)
    _, limited = store.create("limited", rpm=2)
    _, admin = store.create("ops", admin=True)
    store.close()
    server = make_server(database_url=url)
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=limited, max_retries=0)
    raw = client.embeddings.with_raw_response.create(model=MODEL, input=[{"image": b64(_png())}, "a cat"])
    assert raw.headers["x-ratelimit-limit-requests"] == "2"
    client.embeddings.create(model=MODEL, input="a dog")
    with pytest.raises(openai.RateLimitError) as err:
        client.embeddings.create(model=MODEL, input="a bird")
    assert err.value.body["type"] == "rate_limit_error" and int(err.value.response.headers["retry-after"]) >= 1
    usage = httpx.get(server.url + "/v1/usage", headers={"authorization": f"Bearer {limited}"}).json()
    assert usage["data"]["requests"] == 2 and usage["data"]["images"] == 1
    everyone = httpx.get(server.url + "/v1/usage", headers={"authorization": f"Bearer {admin}"}).json()
    assert "keys" in everyone
    assert httpx.get(server.url + "/v1/usage").status_code == 401


def test_errors_after_admission_still_carry_rate_limit_headers(make_server, tmp_path):
    from sigserve.accounts.keys import KeyStore, database_url_for

    url = database_url_for(tmp_path / "keys")
    store = KeyStore(url)
    _, key = store.create("limited", rpm=5)
    store.close()
    server = make_server(database_url=url)
    r = httpx.post(server.url + "/v1/embeddings", headers={"authorization": f"Bearer {key}"},
                   json={"model": MODEL, "input": [{"image": b64(b"not an image")}]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "input[0]"
    assert r.headers["x-ratelimit-limit-requests"] == "5"
    assert r.headers["x-ratelimit-remaining-requests"] == "4"


def _png() -> bytes:
    from tests.support.images import image_bytes

    return image_bytes(7, (40, 30))


def test_a_request_refused_while_parsing_charges_no_rate_limit(make_server, tmp_path):
    """The body is parsed and checked once, before the limits are charged: a classify request that
    carries a text item (or names another model) is a 400/404 that costs the key nothing. When the
    image count was parsed apart from the handler, such a request spent the key's only token."""
    from sigserve.accounts.keys import KeyStore, database_url_for

    url = database_url_for(tmp_path / "keys")
    store = KeyStore(url)
    _, key = store.create("one-a-minute", rpm=1)
    store.close()
    server = make_server(database_url=url)
    auth = {"authorization": f"Bearer {key}"}
    r = httpx.post(server.url + "/v1/classify", headers=auth,
                   json={"model": MODEL, "input": [{"text": "not an image"}], "labels": ["x"]})
    assert envelope(r, 422 if r.status_code == 422 else 400)["param"].startswith("input")
    r = httpx.post(server.url + "/v1/classify", headers=auth,
                   json={"model": MODEL, "input": ["a cat"], "labels": ["x"], "templates": ["no slot"]})
    assert envelope(r, 400)["param"] == "templates[0]"
    r = httpx.post(server.url + "/v1/embeddings", headers=auth, json={"model": "someone-else", "input": "x"})
    assert envelope(r, 404)["code"] == "model_not_found"
    r = httpx.post(server.url + "/v1/embeddings", headers=auth, json={"model": MODEL, "input": "a cat"})
    assert r.status_code == 200 and r.headers["x-ratelimit-remaining-requests"] == "0"
