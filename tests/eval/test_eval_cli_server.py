"""`sigserve eval` through the CLI (typer's CliRunner), and against a server's /v1/embeddings."""

from __future__ import annotations

import base64
import json
import sys

import httpx
import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from sigserve.eval import (
    LibrarySource,
    Outputs,
    ServerSource,
    evaluate_retrieval,
    evaluate_zeroshot,
    load_classification,
    load_retrieval,
)

ZS_KEYS = {"acc1", "acc5", "mean_per_class_recall"}
RT_KEYS = {f"{d}_retrieval_recall@{k}" for d in ("image", "text") for k in (1, 5, 10)}
RECORD_KEYS = {"dataset", "model", "pretrained", "task", "metrics", "language"}


@pytest.fixture(scope="module")
def cli():
    from sigserve.cli.eval import register

    app = typer.Typer()
    register(app)

    @app.callback()
    def _root() -> None:  # keep `eval` a sub-command, as under the real root
        pass

    runner = CliRunner()
    return lambda *args: runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_root_cli_lists_eval():
    import sigserve.cli

    assert "eval" in sigserve.cli.COMMAND_MODULES


def test_cli_zeroshot_single_and_sweep(cli, tiny_checkpoint, tiny_model, shapes, tmp_path):
    templates = tmp_path / "t.txt"
    templates.write_text("a photo of a {}.\nA drawing of the {}\n")
    common = ["--model", tiny_checkpoint, "--templates", templates, "--cache-dir", tmp_path / "c", "--no-progress"]
    r = cli("eval", "zeroshot", *common, "--data", shapes["folder"], "--output", tmp_path / "one.json")
    assert r.exit_code == 0, r.output
    one = json.loads((tmp_path / "one.json").read_text())
    assert RECORD_KEYS <= set(one) and set(one["metrics"]) == ZS_KEYS
    assert one["task"] == "zeroshot_classification" and one["max_num_patches"] == 256
    assert (tmp_path / "one.md").exists() and not (tmp_path / "one.png").exists()
    # Same figures as the library API on the same data and templates.
    api = evaluate_zeroshot(LibrarySource(tiny_model, "x"), load_classification(shapes["folder"]),
                            ["a photo of a {}", "a drawing of the {}"], [256], Outputs(use_cache=False, progress=False))
    assert one["metrics"] == api.records[0]["metrics"]

    r = cli("eval", "zeroshot", *common, "--data", shapes["manifest"], "--classnames", shapes["classnames"],
            "--max-num-patches", "64,256", "--output", tmp_path / "sweep.json", "--plot", tmp_path / "p.png")
    assert r.exit_code == 0, r.output
    sweep = json.loads((tmp_path / "sweep.json").read_text())
    assert [s["max_num_patches"] for s in sweep] == [64, 256]
    assert all(RECORD_KEYS <= set(s) and set(s["metrics"]) == ZS_KEYS for s in sweep)
    assert sweep[1]["metrics"] == one["metrics"]  # manifest + class-name file = the folder's classes
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_retrieval_and_errors(cli, tiny_checkpoint, shapes, tmp_path):
    out = tmp_path / "rt.json"
    r = cli("eval", "retrieval", "--model", tiny_checkpoint, "--data", shapes["captions"], "--images", shapes["images"],
            "--output", out, "--cache-dir", tmp_path / "c", "--no-progress", "--dataset", "mscoco_captions")
    assert r.exit_code == 0, r.output
    records = json.loads(out.read_text())
    assert sorted(x["language"] for x in records) == ["de", "en"]
    assert all(set(x["metrics"]) == RT_KEYS and x["task"] == "zeroshot_retrieval" for x in records)
    md = (tmp_path / "rt.md").read_text()
    assert "paper T→I R@1" in md and "51.1" in md and "not the paper's split" in md
    r = cli("eval", "retrieval", "--model", tiny_checkpoint, "--data", shapes["captions"], "--images", tmp_path,
            "--output", out, "--no-progress")
    assert r.exit_code == 2 and "missing" in r.output
    r = cli("eval", "zeroshot", "--model", tiny_checkpoint, "--data", shapes["folder"], "--output", out,
            "--max-num-patches", "64,abc")
    assert r.exit_code != 0
    bad = tmp_path / "bad" / "cls"
    bad.mkdir(parents=True)
    (bad / "broken.jpg").write_bytes(b"not an image")
    r = cli("eval", "zeroshot", "--model", tiny_checkpoint, "--data", bad.parent, "--output", out, "--no-cache",
            "--no-progress")
    assert r.exit_code == 2 and "broken.jpg" in r.output  # nothing readable at all: an error, not a metric


def test_cli_skips_a_corrupt_image_and_names_it(cli, tiny_checkpoint, shapes, tmp_path):
    """One corrupt file no longer aborts a run: it is skipped, counted in the record and named in the
    summary and on stderr (exit 0); --strict stops at it (exit 2)."""
    import shutil

    data = shutil.copytree(shapes["folder"], tmp_path / "data")
    first_class = sorted(p for p in data.iterdir())[0]
    (first_class / "zz-broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    out = tmp_path / "zs.json"
    r = cli("eval", "zeroshot", "--model", tiny_checkpoint, "--data", data, "--output", out, "--no-cache",
            "--no-progress", "--templates", "clip")
    assert r.exit_code == 0, r.output
    assert "skipped 1 unreadable image" in r.output and "zz-broken.jpg" in r.output
    record = json.loads(out.read_text())
    assert record["sigserve"]["skipped_images"] == 1
    assert "zz-broken.jpg" in (tmp_path / "zs.md").read_text()
    r = cli("eval", "zeroshot", "--model", tiny_checkpoint, "--data", data, "--output", out, "--no-cache",
            "--no-progress", "--strict")
    assert r.exit_code == 2 and "zz-broken.jpg" in r.output


def test_cli_dummy_load_format(cli, tiny_checkpoint, shapes, tmp_path):
    (tmp_path / "t1.txt").write_text("{}\n")
    r = cli("eval", "zeroshot", "--model", tiny_checkpoint, "--load-format", "dummy", "--data", shapes["folder"],
            "--templates", tmp_path / "t1.txt", "--output", tmp_path / "d.json", "--no-cache", "--no-progress")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "d.json").read_text())["pretrained"] == "dummy"


# --------------------------------------------------------------------------- server backend


def fake_server(model, seen: list, max_items: int = 1000):
    """/v1/embeddings as the server documents it, answered by the library (for the client's sake)."""

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append((request.headers.get("authorization"), body))
        items = body["input"]
        if len(items) > max_items:
            return httpx.Response(413, json={"error": {"message": "too large"}})
        if isinstance(items[0], str):
            emb = model.embed_texts(items)
        else:
            uris = [it["image_url"]["url"] if "image_url" in it else it["image"] for it in items]
            raw = [base64.b64decode(u.split(",", 1)[1]) for u in uris]
            emb = model.embed_images(raw, max_num_patches=body.get("max_num_patches", 256))
        data = [{"object": "embedding", "index": i, "embedding": e.tolist()} for i, e in enumerate(emb)]
        return httpx.Response(200, json={"object": "list", "data": data[::-1], "model": body["model"]})

    return handler


@pytest.mark.parametrize("style,max_items", [("openai", 1000), ("jina", 2)])
def test_server_backend_equals_library(tiny_model, shapes, tmp_path, style, max_items):
    seen: list = []
    handler = fake_server(tiny_model, seen, max_items)
    client = httpx.Client(base_url="http://sigserve.test", transport=httpx.MockTransport(handler))
    backend = ServerSource("http://sigserve.test", "tiny", api_key="k1", client=client, image_style=style)
    ds = load_retrieval(shapes["captions"], shapes["images"])
    out = Outputs(use_cache=False, progress=False, batch_size=5)
    via_server = evaluate_retrieval(backend, ds, [144], out)
    local = evaluate_retrieval(LibrarySource(tiny_model, "tiny"), ds, [144], out)
    for a, b in zip(via_server.records, local.records):
        assert a["metrics"] == pytest.approx(b["metrics"], abs=1e-12)
    auth, image_call = next((h, b) for h, b in seen if not isinstance(b["input"][0], str))
    assert auth == "Bearer k1" and image_call["max_num_patches"] == 144 and image_call["model"] == "tiny"
    item = image_call["input"][0]
    uri = item["image_url"]["url"] if style == "openai" else item["image"]
    assert uri.startswith(("data:image/png;base64,", "data:image/jpeg;base64,"))
    if max_items < 5:  # batches of 5 were refused with 413 and split until they fitted
        assert any(len(b["input"]) == 5 for _, b in seen) and any(len(b["input"]) <= 2 for _, b in seen)


def test_against_the_real_server_app(tiny_model, tiny_checkpoint, shapes, tmp_path):
    """The eval client against sigserve's own FastAPI app, when that layer is present."""
    pytest.importorskip("fastapi")
    try:
        from fastapi.testclient import TestClient

        from sigserve.server.app import create_app
        from sigserve.server.settings import Settings
    except ImportError as exc:  # the server layer is not in this tree
        pytest.skip(f"server not available: {exc}")
    settings = Settings(model=str(tiny_checkpoint), served_model_name="tiny", data_dir=tmp_path,
                        max_image_pixels=4_000_000)
    ds = load_classification(shapes["folder"])
    out = Outputs(use_cache=False, progress=False, batch_size=4)
    with TestClient(create_app(settings, tiny_model), base_url="http://sigserve.test") as client:
        via_server = evaluate_zeroshot(ServerSource("http://sigserve.test", "tiny", client=client), ds,
                                       ["a photo of a {}"], [64], out)
    local = evaluate_zeroshot(LibrarySource(tiny_model, "tiny"), ds, ["a photo of a {}"], [64], out)
    assert via_server.records[0]["metrics"] == pytest.approx(local.records[0]["metrics"], abs=1e-12)
    assert np.isfinite(list(via_server.records[0]["metrics"].values())).all()


def test_cli_server_unreachable_and_plot_without_matplotlib(cli, tiny_checkpoint, shapes, tmp_path, monkeypatch):
    from tests.support.server import free_port

    r = cli("eval", "zeroshot", "--model", "tiny", "--server", f"http://127.0.0.1:{free_port()}",
            "--data", shapes["folder"], "--output", tmp_path / "x.json", "--no-progress")
    assert r.exit_code == 2 and "cannot reach the server" in r.output and "Traceback" not in r.output
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if the eval extra were not installed
    r = cli("eval", "zeroshot", "--model", tiny_checkpoint, "--data", shapes["folder"], "--output", tmp_path / "s.json",
            "--max-num-patches", "64,144", "--no-progress")
    assert r.exit_code == 2 and "matplotlib" in r.output and not (tmp_path / "s.json").exists()
