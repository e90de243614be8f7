"""Evaluation data sets read from the user's own files.

Classification: an image folder (one sub-folder per class) or a CSV / JSONL manifest (path,label).
Retrieval: COCO caption annotations (`images[{id,file_name}]`, `annotations[{image_id,caption}]`,
optionally a `language`/`lang` field per annotation) or Karpathy split files (`dataset_coco.json`,
`dataset_flickr30k.json`; one split, `test` by default).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sigserve.errors import SigserveError
from sigserve.images import IMAGE_EXTENSIONS

from .templates import canonical_classname, load_classnames

PATH_KEYS = ("path", "filepath", "file_name", "filename", "image", "file")
LABEL_KEYS = ("label", "class", "target", "classname", "class_name")
KARPATHY_NAMES = {"coco": "mscoco_captions", "flickr30k": "flickr30k", "flickr8k": "flickr8k"}
DEFAULT_LANGUAGE = "en"


class DatasetError(SigserveError):
    """The data set files are missing, inconsistent or in an unknown format."""


class ImageFileError(DatasetError):
    """An image file of the data set could not be used (corrupt, too large, ...)."""

    def __init__(self, path: Path | str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = str(path), reason


@dataclass
class ClassificationData:
    name: str
    paths: list[Path]
    labels: np.ndarray  # (N,) int class index
    classnames: list[str]  # one per class index, canonical unless asked otherwise
    source: str = ""


@dataclass
class RetrievalData:
    name: str
    image_paths: list[Path]
    captions: list[str]
    caption_image: np.ndarray  # (T,) index into image_paths
    caption_language: list[str] = field(default_factory=list)

    def languages(self) -> list[str]:
        return sorted(set(self.caption_language))

    def for_language(self, language: str) -> tuple[np.ndarray, np.ndarray]:
        """(image indices, caption indices) of the images that have captions in `language`."""
        caps = np.array([i for i, lang in enumerate(self.caption_language) if lang == language])
        images = np.unique(self.caption_image[caps])
        return images, caps


# --------------------------------------------------------------------------- classification


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _class_dirs(root: Path) -> list[tuple[int, Path]]:
    """(class index, folder): sorted by name, or by number when every folder name is an integer
    (ImageNetV2's layout, where the folder name *is* the class index)."""
    dirs = [d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")]
    if not dirs:
        raise DatasetError(f"{root}: no class sub-folders")
    if all(d.name.isdigit() for d in dirs):
        return sorted(((int(d.name), d) for d in dirs), key=lambda x: x[0])
    return list(enumerate(sorted(dirs, key=lambda d: d.name)))


def _resolve_names(raw_names: list[str] | None, fallback: list[str], needed: int) -> list[str]:
    names = raw_names if raw_names is not None else fallback
    if len(names) < needed:
        raise DatasetError(f"{len(names)} class names for {needed} classes")
    return list(names)


def load_image_folder(root: Path, classnames: list[str] | None) -> ClassificationData:
    """Raw (not yet canonical) class names: the given ones, else the folder names."""
    classes = _class_dirs(root)
    paths, labels = [], []
    for index, folder in classes:
        files = sorted(p for p in folder.rglob("*") if _is_image(p))
        paths += files
        labels += [index] * len(files)
    if not paths:
        raise DatasetError(f"{root}: no images found")
    numeric = classes[0][1].name.isdigit()
    fallback = [d.name for _, d in classes]
    if numeric and classnames is None:
        fallback = [str(i) for i in range(classes[-1][0] + 1)]
    names = _resolve_names(classnames, fallback, classes[-1][0] + 1)
    if not numeric and classnames is not None and len(classnames) != len(classes):
        raise DatasetError(f"{len(classnames)} class names for {len(classes)} class folders")
    return ClassificationData(root.name, paths, np.array(labels, dtype=np.int64), names, str(root))


def _manifest_rows(path: Path) -> list[tuple[str, str]]:
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return [(_pick(r, PATH_KEYS, path), str(_pick(r, LABEL_KEYS, path))) for r in rows]
    with path.open(newline="", encoding="utf-8") as f:
        table = [r for r in csv.reader(f) if r]
    header = [c.strip().lower() for c in table[0]] if table else []
    p_col = next((header.index(k) for k in PATH_KEYS if k in header), None)
    l_col = next((header.index(k) for k in LABEL_KEYS if k in header), None)
    if p_col is None or l_col is None:  # no header: path,label
        return [(r[0].strip(), r[1].strip()) for r in table]
    return [(r[p_col].strip(), r[l_col].strip()) for r in table[1:]]


def _pick(row: dict, keys: tuple[str, ...], path: Path):
    for k in keys:
        if k in row:
            return row[k]
    raise DatasetError(f"{path}: a row has none of the keys {keys}")


def load_manifest(path: Path, classnames: list[str] | None, images: Path | None) -> ClassificationData:
    rows = _manifest_rows(path)
    if not rows:
        raise DatasetError(f"{path}: empty manifest")
    base = images or path.parent
    paths = [Path(p) if Path(p).is_absolute() else base / p for p, _ in rows]
    raw_labels = [lab for _, lab in rows]
    if all(lab.lstrip("-").isdigit() for lab in raw_labels):
        labels = [int(lab) for lab in raw_labels]
        needed = max(labels) + 1
        names = _resolve_names(classnames, [str(i) for i in range(needed)], needed)
    else:
        raw = classnames if classnames is not None else sorted(set(raw_labels))
        names = list(raw)
        index = {canonical_classname(n): i for i, n in enumerate(raw)} | {n: i for i, n in enumerate(raw)}
        missing = sorted({lab for lab in raw_labels if lab not in index and canonical_classname(lab) not in index})
        if missing:
            raise DatasetError(f"labels not in the class names: {missing[:5]}")
        labels = [index[lab] if lab in index else index[canonical_classname(lab)] for lab in raw_labels]
    return ClassificationData(path.stem, paths, np.array(labels, dtype=np.int64), names, str(path))


def load_classification(
    data: str | Path, classnames: str | None = None, images: str | Path | None = None, canonical: bool = True
) -> ClassificationData:
    """Image folder or manifest; `classnames` is a file, "imagenet" or None (folder names / labels).

    With `canonical` the class names are canonicalised, first alias only (§5.1)."""
    data = Path(data)
    raw = load_classnames(classnames) if classnames else None
    if data.is_dir():
        ds = load_image_folder(data, raw)
    elif data.is_file():
        ds = load_manifest(data, raw, Path(images) if images else None)
    else:
        raise DatasetError(f"{data}: no such folder or manifest")
    _check_exists(ds.paths)
    if canonical:
        ds.classnames = [canonical_classname(n) for n in ds.classnames]
    return ds


def _check_exists(paths: list[Path]) -> None:
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DatasetError(f"{len(missing)} image files missing, e.g. {missing[0]}")


# --------------------------------------------------------------------------- retrieval


def _karpathy(obj: dict, images: Path, split: str) -> tuple[list[Path], list[list[tuple[str, str]]]]:
    paths, caps = [], []
    for im in obj["images"]:
        if im.get("split") != split:
            continue
        direct = images / im.get("filepath", "") / im["filename"]
        paths.append(direct if direct.is_file() else images / im["filename"])
        caps.append([(s["raw"].strip(), DEFAULT_LANGUAGE) for s in im["sentences"]])
    if not paths:
        raise DatasetError(f"no images in split {split!r}")
    return paths, caps


def _coco(obj: dict, images: Path) -> tuple[list[Path], list[list[tuple[str, str]]]]:
    by_id: dict = {im["id"]: [] for im in obj["images"]}
    for ann in obj["annotations"]:
        if ann["image_id"] not in by_id:
            raise DatasetError(f"annotation for unknown image_id {ann['image_id']!r}")
        lang = ann.get("language", ann.get("lang", DEFAULT_LANGUAGE))
        by_id[ann["image_id"]].append((str(ann["caption"]).strip(), lang))
    paths, caps = [], []
    for im in obj["images"]:
        if by_id[im["id"]]:  # an image without captions cannot be scored
            paths.append(images / im["file_name"])
            caps.append(by_id[im["id"]])
    return paths, caps


def load_retrieval(
    captions: str | Path, images: str | Path, split: str = "test", name: str | None = None
) -> RetrievalData:
    captions, images = Path(captions), Path(images)
    obj = json.loads(captions.read_text(encoding="utf-8"))
    if "annotations" in obj:
        paths, caps = _coco(obj, images)
        default_name = captions.stem
    elif "images" in obj and obj["images"] and "sentences" in obj["images"][0]:
        paths, caps = _karpathy(obj, images, split)
        default_name = KARPATHY_NAMES.get(obj.get("dataset", ""), captions.stem)
    else:
        raise DatasetError(f"{captions}: neither COCO annotations nor a Karpathy split file")
    _check_exists(paths)
    texts = [t for group in caps for t, _ in group]
    langs = [lang for group in caps for _, lang in group]
    owner = np.array([i for i, group in enumerate(caps) for _ in group], dtype=np.int64)
    return RetrievalData(name or default_name, paths, texts, owner, langs)
