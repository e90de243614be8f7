"""Templates, class names and data set readers."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from sigserve.eval.datasets import DatasetError, load_classification, load_retrieval
from sigserve.eval.templates import canonical_classname, canonicalize, load_classnames, load_templates


def test_canonicalize_as_big_vision():
    assert canonicalize("A_Photo  of\tthe   Dog!!") == "a photo of the dog"
    assert canonicalize("a close-up photo of a {}.", keep="{}") == "a closeup photo of a {}"
    assert canonicalize("{odd} {}.", keep="{}") == "odd {}"
    assert canonical_classname("Geoffroy's spider monkey") == "geoffroys spider monkey"
    assert canonical_classname("kite (bird of prey)") == "kite bird of prey"
    assert canonical_classname("Tench, Tinca tinca") == "tench"  # first alias only


def test_builtin_templates_are_clip_paper_81_canonicalised():
    t = load_templates()
    assert len(t) == 81 and len(set(t)) == 81
    assert t[0] == "a bad photo of a {}" and t[-1] == "{}"
    assert "a closeup photo of a {}" in t and "itap of my {}" in t
    assert all(x == x.lower() and "." not in x for x in t)
    raw = load_templates(canonical=False)
    assert raw[0] == "a bad photo of a {}." and "a close-up photo of the {}." in raw


def test_builtin_imagenet_classnames():
    names = load_classnames("imagenet")
    assert len(names) == 1000
    assert names[:3] == ["tench", "goldfish", "great white shark"]
    assert names[999] == "toilet paper" and names[21] == "kite (bird of prey)"
    assert names.count("missile") == 2 and names.count("sunglasses") == 2  # as CLIP's list has them


def test_template_file(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("A Photo of a {}.\n\nitap of the {}\n")
    assert load_templates(str(f)) == ["a photo of a {}", "itap of the {}"]
    f.write_text("no placeholder\n")
    with pytest.raises(ValueError):
        load_templates(str(f))


def _img(path, size=(20, 20)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (10, 20, 30)).save(path)


def test_image_folder(tmp_path):
    for cls, n in [("b_cls", 2), ("a_cls", 1)]:
        for i in range(n):
            _img(tmp_path / "d" / cls / f"{i}.png")
    (tmp_path / "d" / "a_cls" / "notes.txt").write_text("skip me")
    ds = load_classification(tmp_path / "d")
    assert ds.classnames == ["a cls", "b cls"]
    assert ds.labels.tolist() == [0, 1, 1]
    names = tmp_path / "names.txt"
    names.write_text("Alpha_One\nBeta\n")
    assert load_classification(tmp_path / "d", str(names)).classnames == ["alpha one", "beta"]
    names.write_text("only one\n")
    with pytest.raises(DatasetError):
        load_classification(tmp_path / "d", str(names))


def test_numeric_folders_are_class_indices(tmp_path):
    for cls in ["0", "2", "10"]:  # ImageNetV2 layout: numeric sort, the name is the index
        _img(tmp_path / "v2" / cls / "x.jpeg")
    ds = load_classification(tmp_path / "v2", "imagenet")
    assert ds.labels.tolist() == [0, 2, 10]
    assert len(ds.classnames) == 1000 and ds.classnames[2] == "great white shark"


def test_manifests(tmp_path):
    for i in range(3):
        _img(tmp_path / "imgs" / f"{i}.png")
    jl = tmp_path / "m.jsonl"
    jl.write_text("\n".join(json.dumps({"path": f"imgs/{i}.png", "label": lab})
                            for i, lab in enumerate(["dog", "Cat", "dog"])))
    ds = load_classification(jl)
    assert ds.classnames == ["cat", "dog"] and ds.labels.tolist() == [1, 0, 1]
    csv_ = tmp_path / "m.csv"
    csv_.write_text("0.png,1\n1.png,0\n")  # no header; --images gives the base folder
    ds = load_classification(csv_, images=tmp_path / "imgs")
    assert ds.labels.tolist() == [1, 0] and ds.paths[0] == tmp_path / "imgs" / "0.png"
    csv_.write_text("path,label\nimgs/9.png,0\n")
    with pytest.raises(DatasetError, match="missing"):
        load_classification(csv_)


def test_karpathy_split(tmp_path):
    _img(tmp_path / "im" / "val2014" / "a.jpg")
    _img(tmp_path / "im" / "b.jpg")  # found by file name alone (flat folder)
    _img(tmp_path / "im" / "c.jpg")
    obj = {"dataset": "coco", "images": [
        {"filepath": "val2014", "filename": "a.jpg", "split": "test", "sentences": [{"raw": "A cat. "}, {"raw": "cat"}]},
        {"filepath": "val2014", "filename": "b.jpg", "split": "test", "sentences": [{"raw": "dog"}]},
        {"filepath": "val2014", "filename": "c.jpg", "split": "train", "sentences": [{"raw": "x"}]},
    ]}
    f = tmp_path / "dataset_coco.json"
    f.write_text(json.dumps(obj))
    ds = load_retrieval(f, tmp_path / "im")
    assert ds.name == "mscoco_captions"
    assert ds.image_paths == [tmp_path / "im" / "val2014" / "a.jpg", tmp_path / "im" / "b.jpg"]
    assert ds.captions == ["A cat.", "cat", "dog"] and ds.caption_image.tolist() == [0, 0, 1]
    assert ds.languages() == ["en"]
    assert load_retrieval(f, tmp_path / "im", split="train").captions == ["x"]


def test_coco_annotations_with_languages(tmp_path):
    for n in "abc":
        _img(tmp_path / f"{n}.png")
    obj = {"images": [{"id": 7, "file_name": "a.png"}, {"id": 8, "file_name": "b.png"}, {"id": 9, "file_name": "c.png"}],
           "annotations": [{"image_id": 8, "caption": "zwei", "lang": "de"}, {"image_id": 7, "caption": "one"},
                           {"image_id": 8, "caption": "two", "language": "en"}]}
    f = tmp_path / "caps.json"
    f.write_text(json.dumps(obj))
    ds = load_retrieval(f, tmp_path)
    assert [p.name for p in ds.image_paths] == ["a.png", "b.png"]  # c has no caption: left out
    assert ds.languages() == ["de", "en"]
    images, caps = ds.for_language("de")
    assert images.tolist() == [1] and [ds.captions[i] for i in caps] == ["zwei"]
    images, caps = ds.for_language("en")
    assert images.tolist() == [0, 1] and np.array(ds.captions)[caps].tolist() == ["one", "two"]
