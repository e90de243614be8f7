"""A bounded LRU of L2-normalised text embeddings: label sets and prompt templates repeat across calls,
so a fixed classifier costs only its images. One per loaded model (Pipeline.text_cache); the library
fills it synchronously, the server through its inference worker, both with the same two calls:

    hits, missing = cache.split(texts)           # what is cached, and what to embed
    hits.update(cache.add(missing, vectors))     # vectors: normalised embeddings of `missing`
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np


class TextEmbeddingCache:
    def __init__(self, size: int):
        self.size = size
        self._data: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._data)

    def split(self, texts: Sequence[str]) -> tuple[dict[str, np.ndarray], list[str]]:
        """(the cached vectors by text, refreshed as recently used; the texts not cached, each once, in order)."""
        hits: dict[str, np.ndarray] = {}
        with self._lock:
            for t in texts:
                if t in self._data:
                    self._data.move_to_end(t)
                    hits[t] = self._data[t]
        return hits, list(dict.fromkeys(t for t in texts if t not in hits))

    def add(self, texts: Sequence[str], vectors: np.ndarray) -> dict[str, np.ndarray]:
        """Store `vectors` (row i is texts[i]); returns them by text (usable even if evicted at once)."""
        fresh = dict(zip(texts, vectors, strict=True))
        if self.size <= 0:
            return fresh
        with self._lock:
            self._data.update(fresh)
            for t in fresh:
                self._data.move_to_end(t)
            while len(self._data) > self.size:
                self._data.popitem(last=False)
        return fresh
