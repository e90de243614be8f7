"""Past the threshold an ANN index is built and keeps recall@10 >= 0.95 against exact search
(50k synthetic clustered 768-d vectors, the benchmark's own generator)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from sigserve.collections import Collection, Store, create_collection
from sigserve.scoring import sigmoid_probabilities

ROWS, QUERIES = 50_000, 50


def bench_module():
    path = Path(__file__).parents[2] / "bench" / "collections_bench.py"
    spec = importlib.util.spec_from_file_location("collections_bench", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class VectorsOnly:
    """What a collection needs of a model when the vectors are given: identity and the scores."""

    embedding_dim = 768

    class checkpoint:
        model_id = "synthetic-768"

        @staticmethod
        def fingerprint() -> str:
            return "synthetic"

    class backend:
        logit_scale, logit_bias = float(np.log(10.0)), -10.0

    def probabilities(self, images, texts):
        return sigmoid_probabilities(images, texts, self.backend.logit_scale, self.backend.logit_bias)


@pytest.mark.timeout(300)
def test_ann_recall_at_10(tmp_path):
    bench = bench_module()
    data = bench.clustered_vectors(ROWS, seed=1)
    queries = bench.clustered_vectors(QUERIES, seed=10**9)
    store = Store(tmp_path / "store", index_threshold=40_000)
    model = VectorsOnly()
    create_collection(store, model, "ann")
    col = Collection(store, "ann", model)
    ids = [str(i) for i in range(ROWS)]
    col.add_embeddings(data, ids=ids, hashes=ids)  # past the threshold: the index is built by this add
    state = col.info()["index"]
    assert state["type"] is not None and state["unindexed_rows"] == 0
    truth = np.argsort(-(queries @ data.T), axis=1, kind="stable")[:, :10]
    recall = [len({int(h.id) for h in col.search_vectors(image_vector=q, top_k=10)} & set(t.tolist())) / 10
              for q, t in zip(queries, truth)]
    assert np.mean(recall) >= 0.95, np.mean(recall)
    # scores of what is found are exact (re-ranked on the full vectors)
    hits = col.search_vectors(image_vector=queries[0], top_k=10)
    np.testing.assert_allclose([h.score for h in hits], data[[int(h.id) for h in hits]] @ queries[0], atol=1e-6)
