"""A small evaluation data set made here: coloured shapes in class folders, a CSV manifest, and COCO
caption annotations describing the same images in English and (for some images) German."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

COLOURS = {"red": (220, 30, 30), "blue": (30, 60, 220), "green": (30, 170, 60), "yellow": (235, 215, 40)}
GERMAN = {"red": "rote", "blue": "blaue", "green": "grüne", "yellow": "gelbe",
          "circle": "Kreis", "square": "Quadrat", "triangle": "Dreieck"}
CLASSES = ["red_circle", "blue_square", "green_triangle", "yellow_circle", "blue_triangle", "green_square"]
PER_CLASS = 3


def draw_shape(colour: str, shape: str, size: tuple[int, int], rng: random.Random) -> Image.Image:
    w, h = size
    bg = tuple(rng.randrange(200, 256) for _ in range(3))
    im = Image.new("RGB", size, bg)
    d = ImageDraw.Draw(im)
    r = min(w, h) * rng.uniform(0.25, 0.4)
    cx, cy = w * rng.uniform(0.4, 0.6), h * rng.uniform(0.4, 0.6)
    box = (cx - r, cy - r, cx + r, cy + r)
    fill = COLOURS[colour]
    if shape == "circle":
        d.ellipse(box, fill=fill)
    elif shape == "square":
        d.rectangle(box, fill=fill)
    else:
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    return im


def make_dataset(root: Path) -> dict[str, Path]:
    rng = random.Random(1234)
    folder, flat = root / "shapes", root / "coco_images"
    flat.mkdir(parents=True)
    images, annotations, rows = [], [], []
    for c, name in enumerate(CLASSES):
        colour, shape = name.split("_")
        (folder / name).mkdir(parents=True)
        for i in range(PER_CLASS):
            size = (rng.randrange(48, 200), rng.randrange(48, 200))  # other aspect ratios, other grids
            im = draw_shape(colour, shape, size, rng)
            ext = "png" if i % 2 == 0 else "jpg"
            im.save(folder / name / f"{i}.{ext}")
            fname = f"{name}_{i}.{ext}"
            im.save(flat / fname)
            image_id = 100 + len(images)
            images.append({"id": image_id, "file_name": fname, "width": size[0], "height": size[1]})
            wide = "wide" if size[0] > size[1] else "tall"
            annotations.append({"image_id": image_id, "caption": f"A {colour} {shape} in a {wide} picture, number {i}."})
            annotations.append({"image_id": image_id, "caption": f"picture {i} of a {shape} coloured {colour}"})
            if i < 2:  # German captions for only some images: that language has fewer images
                annotations.append({"image_id": image_id, "language": "de",
                                    "caption": f"Bild {i}: ein {GERMAN[colour]} {GERMAN[shape]} auf hellem Grund."})
            rows.append((f"shapes/{name}/{i}.{ext}", str(c)))
    for k, a in enumerate(annotations):
        a["id"] = k
    captions = root / "captions.json"
    captions.write_text(json.dumps({"images": images, "annotations": annotations}, ensure_ascii=False))
    manifest = root / "manifest.csv"
    with manifest.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label"])
        w.writerows(rows)
    names = root / "classnames.txt"
    names.write_text("\n".join(n.replace("_", " ") for n in CLASSES) + "\n")
    return {"folder": folder, "images": flat, "captions": captions, "manifest": manifest, "classnames": names}


@pytest.fixture(scope="session")
def shapes(tmp_path_factory) -> dict[str, Path]:
    return make_dataset(tmp_path_factory.mktemp("eval-data"))
