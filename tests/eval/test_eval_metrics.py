"""Metric functions on small hand-made similarity matrices with answers worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from sigserve.eval.metrics import (
    best_positive_rank,
    class_embeddings,
    label_ranks,
    mean_per_class_recall,
    retrieval_metrics,
    zeroshot_metrics,
)


def test_zeroshot_metrics_by_hand():
    scores = np.array([
        [0.9, 0.1, 0.0, 0.2, 0.3, 0.4],   # label 0: rank 0
        [0.9, 0.8, 0.7, 0.6, 0.5, 0.4],   # label 5: rank 5 (not in top 5)
        [0.1, 0.2, 0.3, 0.9, 0.5, 0.4],   # label 4: rank 1
        [0.3, 0.2, 0.1, 0.0, 0.5, 0.4],   # label 2: rank 3
    ], dtype=np.float32)
    labels = np.array([0, 5, 4, 2])
    m = zeroshot_metrics(scores, labels)
    assert m["acc1"] == pytest.approx(1 / 4)
    assert m["acc5"] == pytest.approx(3 / 4)
    # predictions 0, 0, 3, 4 -> per-class recall: class0 1/1, class5 0/1, class4 0/1, class2 0/1
    assert m["mean_per_class_recall"] == pytest.approx(1 / 4)


def test_mean_per_class_recall_ignores_classes_without_samples():
    # class 0: 1 of 2 right, class 1: 1 of 1 right; class 2 is only ever predicted, never a label
    assert mean_per_class_recall(np.array([0, 2, 1]), np.array([0, 0, 1])) == pytest.approx(0.75)


def test_acc5_with_fewer_than_five_classes_is_top_all():
    scores = np.array([[0.1, 0.2, 0.3], [0.3, 0.2, 0.1]])
    m = zeroshot_metrics(scores, np.array([0, 1]))
    assert m["acc1"] == 0.0 and m["acc5"] == 1.0


def test_ties_are_broken_by_lower_index_first():
    scores = np.array([[0.5, 0.5, 0.1], [0.5, 0.5, 0.1], [0.2, 0.2, 0.2]])
    # row 0: label 0 wins the tie; row 1: label 1 loses it to index 0; row 2: label 2 is last of three
    assert label_ranks(scores, np.array([0, 1, 2])).tolist() == [0, 1, 2]
    m = zeroshot_metrics(scores, np.array([0, 1, 2]))
    assert m["acc1"] == pytest.approx(1 / 3)


def test_best_positive_rank_takes_the_best_of_several_positives():
    scores = np.array([[0.9, 0.1, 0.8, 0.7, 0.8]])
    positives = np.array([[False, True, False, False, True]])
    # best positive is index 4 (0.8); above it 0.9; tied 0.8 at lower index 2 -> rank 2
    assert best_positive_rank(scores, positives).tolist() == [2]
    with pytest.raises(ValueError):
        best_positive_rank(scores, np.zeros_like(positives))


def test_retrieval_metrics_by_hand():
    # Identity image embeddings make each text "embedding" its own row of scores against 3 images.
    images = np.eye(3, dtype=np.float32)
    texts = np.array([
        [0.9, 0.1, 0.2],   # image 0: T->I rank 0
        [0.1, 0.2, 0.3],   # image 0: rank 2
        [0.4, 0.3, 0.1],   # image 1: rank 1
        [0.1, 0.2, 0.8],   # image 2: rank 0
        [0.5, 0.5, 0.5],   # image 2: tie with all, lower indices first -> rank 2
    ], dtype=np.float32)
    owner = np.array([0, 0, 1, 2, 2])
    m = retrieval_metrics(images, texts, owner, ks=(1, 2, 10))
    assert m["image_retrieval_recall@1"] == pytest.approx(2 / 5)
    assert m["image_retrieval_recall@2"] == pytest.approx(3 / 5)
    assert m["image_retrieval_recall@10"] == 1.0
    # I->T, per image the column of scores over the 5 texts:
    # image 0: [.9 .1 .4 .1 .5], positives {0,1} -> best text 0 at rank 0
    # image 1: [.1 .2 .3 .2 .5], positive {2} -> .5 above -> rank 1
    # image 2: [.2 .3 .1 .8 .5], positives {3,4} -> text 3 at rank 0
    assert m["text_retrieval_recall@1"] == pytest.approx(2 / 3)
    assert m["text_retrieval_recall@2"] == 1.0


def test_retrieval_chunking_matches_single_block(monkeypatch):
    import sigserve.eval.metrics as metrics

    rng = np.random.default_rng(0)
    img, txt = rng.normal(size=(37, 8)), rng.normal(size=(90, 8))
    owner = rng.integers(0, 37, size=90)
    owner[:37] = np.arange(37)  # every image has a caption
    whole = retrieval_metrics(img, txt, owner)
    monkeypatch.setattr(metrics, "_CHUNK", 7)
    assert retrieval_metrics(img, txt, owner) == whole


def test_class_embeddings_mean_of_normalised_then_renormalised():
    prompts = np.array([[[3.0, 0.0], [0.0, 1.0]]])  # one class, two prompts of different norms
    out = class_embeddings(prompts)
    np.testing.assert_allclose(out, [[np.sqrt(0.5), np.sqrt(0.5)]], rtol=1e-6)
