"""The playground, clicked through in headless Chromium against a live server (tiny checkpoint): what the
page shows equals what the API answers, the code it shows runs, and it asks nothing of other hosts.

SIGSERVE_SCREENSHOTS=docs writes the README's screenshots (docs/playground-*.png) from this run."""

from __future__ import annotations

import ast
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from playwright.sync_api import expect

from sigserve.cli.heatmap import colorize, colormap
from sigserve.images import naflex_size
from tests.playground.conftest import PHONE
from tests.support.images import data_uri
from tests.support.server import MODEL, LiveServer, make_settings

LABELS = ["a cat", "a dog", "a bowl of soup"]
TEXTS = ["a photo of a cat", "a cup of coffee", "an astronaut", "a rocket"]


@pytest.fixture
def pictures(photos, tmp_path) -> dict[str, Path]:
    out = {}
    for name in ("chelsea", "coffee", "astronaut", "rocket"):
        out[name] = tmp_path / f"{name}.png"
        photos[name].convert("RGB").save(out[name])
    return out


@pytest.fixture
def shots(tmp_path) -> Path:
    folder = Path(os.environ.get("SIGSERVE_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def shown_format(p: float) -> str:
    """The page's formatProbability: 4 decimals, or 1 significant decimal in exponent form below 0.001."""
    if p >= 0.001:
        return f"{p:.4f}"
    mantissa, exponent = f"{p:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def api(server, path: str, body: dict, key: str | None = None) -> dict:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    r = httpx.post(server.url + path, json=body, headers=headers, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def bars(page, panel: str) -> list[tuple[str, float, str]]:
    return [tuple(x) for x in page.eval_on_selector_all(
        f"#{panel} .bars li", "els => els.map(e => [e.querySelector('.label').textContent, "
                              "Number(e.dataset.probability), e.querySelector('.value').textContent])")]


def snippet(page, panel: str, language: str) -> str:
    if not page.eval_on_selector(f"#{panel} details.code", "d => d.open"):
        page.click(f"#{panel} details.code summary")  # the "Code" toggle
    return page.inner_text(f"#{panel} pre[data-language={language}]")


def test_classify_bars_equal_the_api_and_the_code_runs(visit, site, pictures, shots, tmp_path):
    v = visit()
    v.open("/")
    page = v.page
    page.set_input_files("#classify input[type=file]", str(pictures["chelsea"]))
    page.fill("#classify textarea[name=labels]", "\n".join(LABELS))
    page.click("#classify button[type=submit]")
    page.wait_for_selector("#classify .bars li >> nth=2")
    answer = api(site, "/v1/classify", {"model": MODEL, "input": [{"image": data_uri(pictures["chelsea"].read_bytes())}],
                                        "labels": LABELS})
    want = [(p["label"], p["score"]) for p in answer["data"][0]["predictions"]]
    shown = bars(page, "classify")
    assert len(shown) == 3 and [(label, p) for label, p, _ in shown] == want
    assert [text for *_, text in shown] == [shown_format(p) for _, p in want]
    assert page.is_visible("#classify .note") and "need not sum to 1" in page.inner_text("#classify .note")
    page.screenshot(path=str(shots / "playground-classify.png"), full_page=True)

    # The code it shows runs where the picture is, and answers the same.
    env = {k: val for k, val in os.environ.items() if k != "SIGSERVE_API_KEY"}
    python = snippet(page, "classify", "python")
    assert "data_uri(\"chelsea.png\", \"image/png\")" in python and "base64," not in python.split("def data_uri")[0]
    done = subprocess.run([sys.executable, "-c", python], cwd=pictures["chelsea"].parent, capture_output=True,
                          text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert [(p["label"], p["score"]) for p in ast.literal_eval(done.stdout)["data"][0]["predictions"]] == want
    curl = snippet(page, "classify", "curl")
    done = subprocess.run(["bash", "-c", curl], cwd=pictures["chelsea"].parent, capture_output=True, text=True,
                          timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert [(p["label"], p["score"]) for p in json.loads(done.stdout)["data"][0]["predictions"]] == want


def cell_colours(page) -> list[list[list[int]]]:
    """RGBA at the centre of every cell of the overlay canvas, rows x cols."""
    return page.evaluate("""() => {
        const c = document.querySelector('#inside canvas');
        const [rows, cols] = [Number(c.dataset.rows), Number(c.dataset.cols)];
        const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        return Array.from({length: rows}, (_, r) => Array.from({length: cols}, (_, k) => {
            const x = Math.floor((k + 0.5) * c.width / cols), y = Math.floor((r + 0.5) * c.height / rows);
            return Array.from(px.slice((y * c.width + x) * 4, (y * c.width + x) * 4 + 4));
        }));
    }""")


def grid_of(page) -> tuple[int, int]:
    return tuple(int(page.get_attribute("#inside canvas", a)) for a in ("data-rows", "data-cols"))


def test_look_inside_grid_slider_and_heatmap_overlay(visit, site, pictures, photos, shots):
    v = visit()
    v.open("/playground")
    page = v.page
    page.click("#tab-inside")
    page.set_input_files("#inside input[type=file]", str(pictures["chelsea"]))
    page.wait_for_selector("#inside canvas[data-rows]")
    height, width = photos["chelsea"].height, photos["chelsea"].width
    h, w = naflex_size(height, width, 256)
    assert grid_of(page) == (h // 16, w // 16)
    info = page.inner_text("#inside .grid-info")
    assert f"resized to {w}×{h} px: {w // 16}×{h // 16} = {(h // 16) * (w // 16)} patches" in info

    page.fill("#inside input[name=text]", "a cat")
    page.click("#inside form button[type=submit]")
    page.wait_for_selector("#inside canvas[data-heatmap=shown]")
    answer = api(site, "/v1/heatmap", {"model": MODEL, "image": data_uri(pictures["chelsea"].read_bytes()),
                                       "texts": ["a cat"], "max_num_patches": 256})
    probs = np.array(answer["data"][0]["probabilities"])
    assert grid_of(page) == probs.shape
    expected = colorize((probs - probs.min()) / (probs.max() - probs.min()), colormap())
    got = np.array(cell_colours(page))  # (rows, cols, 4), opacity 0.6 -> alpha 153
    assert np.abs(got[..., 3] - 153).max() <= 1
    assert np.abs(got[..., :3] - expected.astype(int)).max() <= 3  # canvas alpha premultiplication rounds
    assert page.is_visible("#inside .legend") and page.inner_text("#inside .legend .hi") == shown_format(probs.max())
    page.screenshot(path=str(shots / "playground-look-inside.png"), full_page=True)

    # The slider moves the grid (computed in the page), then the heatmap is drawn again for the new grid.
    page.fill("#inside input[name=max_num_patches]", "64")
    h, w = naflex_size(height, width, 64)
    page.wait_for_selector(f"#inside canvas[data-rows='{h // 16}'][data-cols='{w // 16}'][data-heatmap=shown]")
    assert f"{w // 16}×{h // 16} = {(h // 16) * (w // 16)} patches" in page.inner_text("#inside .grid-info")
    small = np.array(cell_colours(page))
    assert small.shape[:2] == (h // 16, w // 16) and np.abs(small[..., 3] - 153).max() <= 1

    page.fill("#inside input[name=opacity]", "0")  # opacity slider: colours gone, grid stays
    assert np.array(cell_colours(page))[..., 3].max() == 0


def test_naflex_size_in_the_page_equals_python(visit):
    v = visit()
    v.open("/")
    rng = random.Random(0)
    cases = [[rng.randint(1, 4000), rng.randint(1, 4000), rng.choice([16, 64, 144, 256, 576, 784, 1024, rng.randint(16, 1024)])]
             for _ in range(3000)]
    cases += [[1, 1, 256], [16, 2000, 256], [3, 1000, 64], [1000, 3, 1024], [480, 640, 1024], [427, 640, 784],
              [1080, 1920, 576], [224, 1024, 256], [4000, 1, 16]]
    js = v.page.evaluate("async (cases) => { const m = await import('/playground/static/naflex.js'); "
                         "return cases.map(([h, w, L]) => m.naflexSize(h, w, L)); }", cases)
    assert js == [list(naflex_size(h, w, L)) for h, w, L in cases]


def test_compare_both_ways_sorted_as_rerank(visit, site, pictures, shots):
    v = visit()
    v.open("/")
    page = v.page
    page.click("#tab-compare")
    page.set_input_files("#compare .picker[data-name=image] input[type=file]", str(pictures["coffee"]))
    page.fill("#compare textarea[name=texts]", "\n".join(TEXTS))
    page.click("#compare button[type=submit]")
    page.wait_for_selector(f"#compare .bars li >> nth={len(TEXTS) - 1}")
    answer = api(site, "/v1/rerank", {"model": MODEL, "query": {"image": data_uri(pictures["coffee"].read_bytes())},
                                      "documents": TEXTS})
    assert [(label, p) for label, p, _ in bars(page, "compare")] == [
        (TEXTS[r["index"]], r["relevance_score"]) for r in answer["results"]]

    page.check("#compare input[name=mode][value=text]")
    page.fill("#compare input[name=query]", "a cup of coffee")
    names = ["chelsea", "coffee", "astronaut"]
    page.set_input_files("#compare .picker[data-name=images] input[type=file]", [str(pictures[n]) for n in names])
    page.click("#compare button[type=submit]")
    page.wait_for_selector("#compare .tiles li >> nth=2")
    answer = api(site, "/v1/rerank", {"model": MODEL, "query": "a cup of coffee",
                                      "documents": [{"image": data_uri(pictures[n].read_bytes())} for n in names]})
    tiles = page.eval_on_selector_all("#compare .tiles li", "els => els.map(e => [e.querySelector('img').alt, "
                                                            "Number(e.dataset.probability)])")
    assert [tuple(t) for t in tiles] == [(f"{names[r['index']]}.png", r["relevance_score"]) for r in answer["results"]]


def test_keyboard_and_phone_width(visit, pictures, shots):
    v = visit(viewport=PHONE)
    v.open("/")
    page = v.page
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")  # nothing sideways
    page.focus("#tab-classify")
    page.keyboard.press("ArrowRight")
    assert page.get_attribute("#tab-compare", "aria-selected") == "true" and page.is_visible("#compare")
    page.keyboard.press("ArrowLeft")
    assert page.is_visible("#classify")
    page.set_input_files("#classify input[type=file]", str(pictures["astronaut"]))
    page.focus("#classify textarea[name=labels]")
    page.keyboard.press("Control+Enter")  # submits from any field
    page.wait_for_selector("#classify .bars li >> nth=2")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.screenshot(path=str(shots / "playground-phone.png"), full_page=True)


def test_key_in_session_storage_and_errors_in_plain_words(visit, tmp_path, tiny_checkpoint, playground_model, pictures):
    from sigserve.server.app import create_app

    settings = make_settings(tmp_path / "keyed", tiny_checkpoint, api_key="sekret-key")
    with LiveServer(create_app(settings, playground_model)) as keyed:
        v = visit(server=keyed, expected_errors=("status of 401", "status of 400"))
        v.open("/")
        page = v.page
        assert page.inner_text("#model") == "needs an API key"
        assert page.is_hidden("#tab-search")  # GET /v1/collections said 401: no Search panel
        page.set_input_files("#classify input[type=file]", str(pictures["coffee"]))
        page.click("#classify button[type=submit]")
        page.wait_for_selector("#classify .error:not([hidden])")
        assert "needs an API key" in page.inner_text("#classify .error")

        page.fill("#api-key", "sekret-key")
        page.press("#api-key", "Enter")
        expect(page.locator("#model")).to_have_text(MODEL)
        assert page.evaluate("sessionStorage.getItem('sigserve.apiKey')") == "sekret-key"
        page.wait_for_selector("#tab-search:not([hidden])")  # the key may list collections: Search appears
        with page.expect_request("**/v1/classify") as sent:
            page.click("#classify button[type=submit]")
        assert sent.value.headers["authorization"] == "Bearer sekret-key"
        page.wait_for_selector("#classify .bars li")
        assert page.is_hidden("#classify .error")
        assert all("sekret" not in url for url in v.requests)
        assert "sekret" not in snippet(page, "classify", "curl") + snippet(page, "classify", "python")

        broken = tmp_path / "broken.png"
        broken.write_bytes(b"\x89PNG not really")
        page.set_input_files("#classify input[type=file]", str(broken))
        page.click("#classify button[type=submit]")
        page.wait_for_selector("#classify .error:not([hidden])")
        assert page.inner_text("#classify .error").startswith("input[0]: ")  # the server's own words
        page.reload()
        page.wait_for_selector("body[data-ready=true]")
        assert page.input_value("#api-key") == "sekret-key"  # kept for the tab's life


def test_search_panel_over_a_collection(visit, site, pictures, shots):
    name = "playground-test"
    httpx.delete(f"{site.url}/v1/collections/{name}")
    created = httpx.post(f"{site.url}/v1/collections", json={"name": name})
    if created.status_code == 404:
        pytest.skip("this server has no /v1/collections")
    assert created.status_code == 200, created.text
    items = [{"id": n, "image": data_uri(p.read_bytes()), "metadata": {"kind": "cat" if n == "chelsea" else "other"}}
             for n, p in pictures.items()]
    assert httpx.post(f"{site.url}/v1/collections/{name}/items", json={"items": items}, timeout=60).status_code == 200
    v = visit()
    v.open("/")
    page = v.page
    page.click("#tab-search")
    page.select_option("#search select[name=collection]", name)
    page.fill("#search input[name=text]", "a cat")
    page.click("#search button[type=submit]")
    page.wait_for_selector("#search .tiles li >> nth=3")
    answer = api(site, f"/v1/collections/{name}/search", {"query": {"text": "a cat"}, "top_k": 12})
    tiles = page.eval_on_selector_all("#search .tiles li", "els => els.map(e => [e.querySelector('span').textContent, "
                                                           "Number(e.dataset.probability)])")
    assert [tuple(t) for t in tiles] == [(h["id"], h["probability"]) for h in answer["data"]]
    page.screenshot(path=str(shots / "playground-search.png"), full_page=True)

    page.fill("#search textarea[name=filter]", '{"kind": ')
    page.click("#search button[type=submit]")
    assert "not valid JSON" in page.inner_text("#search .error")
    page.fill("#search textarea[name=filter]", '{"kind": "cat"}')
    page.click("#search button[type=submit]")
    expect(page.locator("#search .tiles li")).to_have_count(1)
    assert page.inner_text("#search .tiles li span") == "chelsea"
