"""On-disk embedding cache, one SQLite file per model fingerprint.

Image rows are keyed by (absolute path, file size, mtime in ns, max_num_patches; 0 for a fixed resolution): a file that is
replaced or touched is embedded again. Text rows are keyed by the exact text sent to the model (the
template with the class name filled in, or the caption), so a re-run with other templates embeds
only the new prompts and no image. Rows are committed after every batch, so an interrupted run
resumes where it stopped.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np

_VARS = 500  # bound parameters per SELECT


def image_key(path: str | Path) -> str:
    p = Path(path).resolve()
    st = p.stat()
    return f"{p}|{st.st_size}|{st.st_mtime_ns}"


class EmbeddingCache:
    """get/put embeddings by key; `root=None` keeps them in memory only (no resume)."""

    def __init__(self, root: str | Path | None, model_key: str):
        self.path = None
        if root is None:
            self._db = sqlite3.connect(":memory:")
        else:
            Path(root).mkdir(parents=True, exist_ok=True)
            self.path = Path(root) / f"{model_key}.sqlite"
            self._db = sqlite3.connect(self.path, timeout=60)
        self._db.execute("CREATE TABLE IF NOT EXISTS images "
                         "(key TEXT, patches INTEGER, vec BLOB, PRIMARY KEY (key, patches))")
        self._db.execute("CREATE TABLE IF NOT EXISTS texts (key TEXT PRIMARY KEY, vec BLOB)")
        self._db.commit()

    def close(self) -> None:
        self._db.close()

    def _get(self, table: str, keys: list[str], patches: int | None) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        extra = " AND patches = ?" if patches is not None else ""
        for start in range(0, len(keys), _VARS):
            chunk = keys[start : start + _VARS]
            sql = f"SELECT key, vec FROM {table} WHERE key IN ({','.join('?' * len(chunk))}){extra}"
            args = [*chunk, patches] if patches is not None else chunk
            for key, blob in self._db.execute(sql, args):
                found[key] = np.frombuffer(blob, dtype=np.float32)
        return found

    def _put(self, table: str, keys: list[str], vecs: np.ndarray, patches: int | None) -> None:
        vecs = np.asarray(vecs, dtype=np.float32)
        if patches is None:
            text_rows = [(k, v.tobytes()) for k, v in zip(keys, vecs, strict=True)]
            self._db.executemany(f"INSERT OR REPLACE INTO {table} VALUES (?, ?)", text_rows)
        else:
            image_rows = [(k, patches, v.tobytes()) for k, v in zip(keys, vecs, strict=True)]
            self._db.executemany(f"INSERT OR REPLACE INTO {table} VALUES (?, ?, ?)", image_rows)
        self._db.commit()

    def get_images(self, keys: list[str], max_num_patches: int | None) -> dict[str, np.ndarray]:
        return self._get("images", keys, max_num_patches or 0)  # 0: the model's fixed resolution

    def put_images(self, keys: list[str], max_num_patches: int | None, vecs: np.ndarray) -> None:
        self._put("images", keys, vecs, max_num_patches or 0)

    def get_texts(self, texts: list[str]) -> dict[str, np.ndarray]:
        return self._get("texts", texts, None)

    def put_texts(self, texts: list[str], vecs: np.ndarray) -> None:
        self._put("texts", texts, vecs, None)
