"""Zero-shot prompts: labels x templates -> one embedding per label.

One place for the rule that the library's classify, the server's /v1/classify and `sigserve eval`
share: per label, the mean of its L2-normalised prompt embeddings, re-normalised.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from sigserve.errors import InvalidArgumentError
from sigserve.scoring import l2_normalize

DEFAULT_TEMPLATE = "This is a photo of {}."  # transformers' zero-shot pipeline default


def check_templates(templates: Sequence[str] | None) -> list[str]:
    """The templates to use (the default when none), each with a `{}` where the label goes."""
    templates = list(templates) if templates else [DEFAULT_TEMPLATE]
    for i, t in enumerate(templates):
        if not isinstance(t, str) or "{}" not in t:
            raise InvalidArgumentError(f"templates[{i}] must be a string containing '{{}}' where the label goes",
                                       f"templates[{i}]")
    return templates


def build_prompts(labels: Sequence[str], templates: Sequence[str]) -> list[str]:
    """Label-major: all templates of label 0, then of label 1, ... (what class_embeddings expects)."""
    return [t.replace("{}", str(label)) for label in labels for t in templates]


def label_matrix(prompts: Sequence[str], vectors: Mapping[str, np.ndarray], n_labels: int) -> np.ndarray:
    """(L, D) class embeddings from the normalised embedding of every prompt (build_prompts' order)."""
    stacked = np.stack([vectors[p] for p in prompts])
    return class_embeddings(stacked.reshape(n_labels, len(prompts) // n_labels, -1))


def class_embeddings(prompt_embeddings: np.ndarray, eps: float = 0.0) -> np.ndarray:
    """(C, T, D) prompt embeddings, normalised or not -> (C, D) unit class embeddings.
    `eps` is added to the final norm (big_vision uses 1e-8)."""
    return l2_normalize(l2_normalize(prompt_embeddings).mean(axis=1), eps)
