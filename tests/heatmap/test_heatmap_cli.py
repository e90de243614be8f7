"""`sigserve heatmap`: the overlay picture shows the library's heatmap, patch by patch."""

from __future__ import annotations

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from sigserve.cli import build_app
from sigserve.cli.heatmap import LEGEND_HEIGHT, colorize, colormap

runner = CliRunner()


def test_overlay_colours_are_the_heatmap(tiny_checkpoint, tiny_model, photos, tmp_path):
    photos["chelsea"].save(tmp_path / "cat.png")
    out = tmp_path / "cat-heat.png"
    result = runner.invoke(build_app(), ["heatmap", str(tmp_path / "cat.png"), "a cat", "-o", str(out), "-m",
                                         str(tiny_checkpoint), "--max-num-patches", "64", "--opacity", "1"])
    assert result.exit_code == 0, result.output
    picture = Image.open(out)
    cat = photos["chelsea"]
    assert picture.size == (cat.width, cat.height + LEGEND_HEIGHT)
    [probs] = tiny_model.heatmap(cat, ["a cat"], max_num_patches=64)
    rows, cols = probs.shape
    assert f"{rows}x{cols} grid" in result.output
    expected = colorize((probs - probs.min()) / (probs.max() - probs.min()), colormap())  # opacity 1: colours only
    pixels = np.asarray(picture.convert("RGB"))
    for r in range(rows):
        for c in range(cols):
            y, x = int((r + 0.5) * cat.height / rows), int((c + 0.5) * cat.width / cols)
            assert np.abs(pixels[y, x].astype(int) - expected[r, c]).max() <= 1, (r, c)


def test_several_texts_and_bad_input(tiny_checkpoint, photos, tmp_path):
    photos["coffee"].save(tmp_path / "coffee.jpg")
    args = ["-m", str(tiny_checkpoint), "-o", str(tmp_path / "out.png")]
    result = runner.invoke(build_app(), ["heatmap", str(tmp_path / "coffee.jpg"), "a cup", "a cat", *args])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out-0.png").is_file() and (tmp_path / "out-1.png").is_file()
    (tmp_path / "bad.png").write_bytes(b"not an image")
    result = runner.invoke(build_app(), ["heatmap", str(tmp_path / "bad.png"), "a cup", *args])
    assert result.exit_code == 2 and ("cannot decode" in result.output or "not a readable image" in result.output)
