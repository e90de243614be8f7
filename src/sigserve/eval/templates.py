"""Prompt templates and class names, canonicalised the way big_vision's zero-shot evaluator does it
(reference doc §5.1): "_" becomes a space, ASCII punctuation is removed (except an exact string
to keep: "{}" in templates, "," in class names), the text is lowercased and whitespace collapsed.
"""

from __future__ import annotations

import re
import string
from importlib import resources
from pathlib import Path

from sigserve.errors import InvalidArgumentError

BUILTIN_TEMPLATES = "clip"  # the 80 CLIP ImageNet templates plus "{}" (big_vision "clip_paper")
BUILTIN_CLASSNAMES = "imagenet"  # CLIP ImageNet class names (big_vision CLIP_IMAGENET_CLASS_NAMES)

_PUNCT = str.maketrans("", "", string.punctuation)


def canonicalize(text: str, keep: str | None = None) -> str:
    """big_vision's `_canonicalize`: lowercase, punctuation removed, whitespace collapsed.

    `keep` is an exact substring that survives (its characters are still removed elsewhere).
    """
    text = text.replace("_", " ")
    if keep:
        text = keep.join(part.translate(_PUNCT) for part in text.split(keep))
    else:
        text = text.translate(_PUNCT)
    text = text.lower()
    return re.sub(r"\s+", " ", text).strip()


def canonical_classname(name: str) -> str:
    """Canonical class name, first alias only ("a, b" -> "a")."""
    return canonicalize(name, keep=",").split(",")[0].strip()


def canonical_template(template: str) -> str:
    return canonicalize(template, keep="{}")


def _data_lines(filename: str) -> list[str]:
    text = resources.files("sigserve.eval").joinpath("data", filename).read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip()]


def read_lines(path: str | Path) -> list[str]:
    """Non-empty lines of a UTF-8 text file, trailing newline characters removed."""
    text = Path(path).read_text(encoding="utf-8")
    return [line.rstrip("\r\n") for line in text.splitlines() if line.strip()]


def load_templates(spec: str | None = None, canonical: bool = True) -> list[str]:
    """Templates from a file (one a line, "{}" marks the class name) or the built-in "clip" set."""
    if spec is None or spec == BUILTIN_TEMPLATES:
        raw = _data_lines("clip_imagenet_templates.txt")
    else:
        raw = read_lines(spec)
    bad = [t for t in raw if "{}" not in t]
    if bad:
        raise InvalidArgumentError(f"template without '{{}}' placeholder: {bad[0]!r}", "templates")
    return [canonical_template(t) for t in raw] if canonical else list(raw)


def builtin_imagenet_classnames() -> list[str]:
    return _data_lines("imagenet_classes.txt")


def load_classnames(spec: str) -> list[str]:
    """Raw class names from a file (one a line, in class-index order) or "imagenet"."""
    if spec == BUILTIN_CLASSNAMES:
        return builtin_imagenet_classnames()
    return read_lines(spec)


def prompts_for(classname: str, templates: list[str]) -> list[str]:
    """Texts for one class; the placeholder is replaced literally (no str.format)."""
    return [t.replace("{}", classname) for t in templates]
