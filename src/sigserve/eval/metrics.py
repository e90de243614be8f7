"""Zero-shot classification and retrieval metrics, in LAION clip_benchmark's convention.

Ranking and ties: candidates are ordered by score, highest first; candidates with *exactly* equal
scores are ordered by their index, lowest first (the order of a stable sort on -score, and the
one `numpy.argmax` uses for top-1). So a tie between the right answer and a wrong one counts as a
hit when the right answer has the lower index. This makes every metric deterministic; with real
embeddings exact float ties are rare. Metrics are fractions in [0, 1], as clip_benchmark writes them.
"""

from __future__ import annotations

import numpy as np

from sigserve import prompts
from sigserve.scoring import l2_normalize  # noqa: F401  (the eval package's normaliser too)

RECALL_KS = (1, 5, 10)
_CHUNK = 512  # rows of the similarity matrix held at once


def class_embeddings(prompt_embeddings: np.ndarray) -> np.ndarray:
    """(C, T, D) prompt embeddings -> (C, D) zero-shot classifier: the library's rule (mean of the
    L2-normalised prompt embeddings, re-normalised), with +1e-8 on the norm as big_vision's evaluator."""
    return prompts.class_embeddings(prompt_embeddings, eps=1e-8)


def best_positive_rank(scores: np.ndarray, positives: np.ndarray) -> np.ndarray:
    """Per row, the 0-based rank of the best-ranked positive under the tie rule above.

    scores (R, M) float, positives (R, M) bool with at least one True per row.
    """
    if not positives.any(axis=1).all():
        raise ValueError("every row needs at least one positive")
    masked = np.where(positives, scores, -np.inf)
    best = masked.max(axis=1, keepdims=True)
    # The positive with the best score and, among those tied, the lowest index.
    first = np.argmax(positives & (scores == best), axis=1)[:, None]
    index = np.arange(scores.shape[1])[None, :]
    above = (scores > best).sum(axis=1)
    tied_before = ((scores == best) & (index < first)).sum(axis=1)
    return above + tied_before


def label_ranks(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """0-based rank of the true label in each row of (N, C) scores."""
    labels = np.asarray(labels)
    positives = np.zeros(scores.shape, dtype=bool)
    positives[np.arange(len(labels)), labels] = True
    return best_positive_rank(scores, positives)


def predictions(scores: np.ndarray) -> np.ndarray:
    """Top-1 class per row (lowest index among exact ties)."""
    return np.argmax(scores, axis=1)


def mean_per_class_recall(pred: np.ndarray, labels: np.ndarray) -> float:
    """Mean over the classes that occur in `labels` of the fraction of their samples predicted right.

    Same as sklearn's `balanced_accuracy_score` (which clip_benchmark uses): classes with no
    sample are left out of the mean.
    """
    pred, labels = np.asarray(pred), np.asarray(labels)
    recalls = [float(np.mean(pred[labels == c] == c)) for c in np.unique(labels)]
    return float(np.mean(recalls))


def zeroshot_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """acc1, acc5 (top-k with k = min(5, number of classes)) and mean_per_class_recall."""
    scores = np.asarray(scores, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    ranks = label_ranks(scores, labels)
    k5 = min(5, scores.shape[1])
    return {
        "acc1": float(np.mean(ranks < 1)),
        "acc5": float(np.mean(ranks < k5)),
        "mean_per_class_recall": mean_per_class_recall(predictions(scores), labels),
    }


def _chunked_ranks(queries: np.ndarray, keys: np.ndarray, positives_of) -> np.ndarray:
    out = []
    for start in range(0, len(queries), _CHUNK):
        rows = np.arange(start, min(start + _CHUNK, len(queries)))
        scores = queries[rows] @ keys.T
        out.append(best_positive_rank(scores, positives_of(rows)))
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def retrieval_metrics(
    image_embeddings: np.ndarray,
    text_embeddings: np.ndarray,
    text_image_index: np.ndarray,
    ks: tuple[int, ...] = RECALL_KS,
) -> dict[str, float]:
    """clip_benchmark's zero-shot retrieval recall@k.

    `image_retrieval_recall@k`: fraction of texts whose image is among the k best images (text->image).
    `text_retrieval_recall@k`: fraction of images with at least one of their texts among the k
    best texts (image->text). Scores are cosine similarities; every image needs >= 1 text.
    """
    img = np.asarray(image_embeddings, dtype=np.float32)
    txt = np.asarray(text_embeddings, dtype=np.float32)
    owner = np.asarray(text_image_index, dtype=np.int64)
    image_ids = np.arange(len(img))
    t2i = _chunked_ranks(txt, img, lambda rows: image_ids[None, :] == owner[rows][:, None])
    i2t = _chunked_ranks(img, txt, lambda rows: owner[None, :] == rows[:, None])
    metrics = {}
    for k in ks:
        metrics[f"image_retrieval_recall@{k}"] = float(np.mean(t2i < k))
        metrics[f"text_retrieval_recall@{k}"] = float(np.mean(i2t < k))
    return metrics
