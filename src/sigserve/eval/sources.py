"""Where embeddings come from: the library in this process, or a running sigserve server.

Both give L2-normalised float32 rows, so the evaluation loop does not care which one it talks to.
A source's `fingerprint()` names the model's behaviour for the cache: it hashes the embeddings
of a few fixed probe texts (so other weights, even random ones, never share cache rows) together
with what the source says about itself (model name, backend, precision).
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from sigserve.errors import SigserveError

from .datasets import ImageFileError
from .metrics import l2_normalize

PROBE_TEXTS = ["a photo of a cat", "sigserve evaluation cache probe", "zwei hunde im schnee"]


class EmbeddingSource(Protocol):
    model_name: str
    pretrained: str

    def embed_images(self, paths: list[Path], max_num_patches: int | None) -> np.ndarray: ...

    def embed_texts(self, texts: list[str]) -> np.ndarray: ...

    def fingerprint(self) -> str: ...

    def default_length(self) -> int | None:
        """The model's default sequence length (NaFlex), or None for a fixed resolution."""
        ...


def _fingerprint(identity: dict, probe: np.ndarray) -> str:
    h = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode())
    h.update(np.round(np.asarray(probe, dtype=np.float64), 4).tobytes())
    return h.hexdigest()[:24]


class LibrarySource:
    """A model returned by `sigserve.load` (see docs/library-contract.md)."""

    def __init__(self, model, model_name: str, pretrained: str | None = None):
        self.model = model
        self.model_name = model_name
        self.pretrained = pretrained or ("dummy" if getattr(model, "dummy", False) else model_name)

    def default_length(self) -> int | None:
        return self.model.image_rules().get("default_max_num_patches")

    def embed_images(self, paths: list[Path], max_num_patches: int | None) -> np.ndarray:
        from sigserve.errors import InputError

        try:
            out = self.model.embed_images(
                [str(p) for p in paths], max_num_patches=max_num_patches, normalize=True, batch_size=len(paths)
            )
        except InputError as exc:  # name the file, not its place in this batch
            where = paths[exc.index] if exc.index is not None and exc.index < len(paths) else "an image"
            raise ImageFileError(where, exc.reason) from exc
        return np.asarray(out, dtype=np.float32)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        out = self.model.embed_texts(list(texts), normalize=True, batch_size=len(texts))
        return np.asarray(out, dtype=np.float32)

    def fingerprint(self) -> str:
        info = self.model.describe() if hasattr(self.model, "describe") else {}
        keys = ("model", "backend", "precision", "dummy", "embedding_dim", "logit_scale", "logit_bias",
                "weights_fingerprint")
        identity = {k: info.get(k) for k in keys}
        return _fingerprint(identity, self.embed_texts(PROBE_TEXTS))


def image_data_uri(path: str | Path) -> str:
    data = Path(path).read_bytes()
    try:
        with Image.open(Path(path)) as im:
            mime = Image.MIME.get(im.format or "", "image/jpeg")
    except Exception:  # let the server say what is wrong with the bytes
        mime = "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


class ServerError(SigserveError):
    """The server answered something other than embeddings (an error status, a short list)."""


class ServerSource:
    """A running sigserve server, through its OpenAI-compatible `POST /v1/embeddings`.

    Images go as OpenAI-style content parts `{"type": "image_url", "image_url": {"url": data URI}}`
    (or Jina-style `{"image": data URI}` with `image_style="jina"`), with the `max_num_patches`
    extension field; texts as plain strings.
    """

    def __init__(self, url: str, model_name: str, api_key: str | None = None, *, client=None,
                 timeout: float = 600.0, image_style: str = "openai"):
        import httpx

        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = client or httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)
        if client is not None and api_key:
            self.client.headers.update(headers)
        self.model_name = model_name
        self.pretrained = model_name
        self.url = url
        self.image_style = image_style

    def _embed(self, items: list, extra: dict, paths: list[Path] | None = None) -> np.ndarray:
        import httpx

        body = {"model": self.model_name, "input": items, "encoding_format": "float", **extra}
        try:
            resp = self.client.post("/v1/embeddings", json=body)
        except httpx.HTTPError as exc:
            raise ServerError(f"cannot reach the server at {self.url}: {type(exc).__name__}: {exc}") from None
        if resp.status_code == 413 and len(items) > 1:  # body or item count over the server's limit: halve
            half = len(items) // 2
            return np.concatenate([self._embed(items[:half], extra, paths and paths[:half]),
                                   self._embed(items[half:], extra, paths and paths[half:])])
        if resp.status_code == 400 and paths and (bad := _bad_item(resp)) is not None and bad[0] < len(paths):
            raise ImageFileError(paths[bad[0]], bad[1])  # the server names input[i]: that file
        if resp.status_code != 200:
            raise ServerError(f"POST /v1/embeddings -> {resp.status_code}: {resp.text[:500]}")
        data = sorted(resp.json()["data"], key=lambda d: d["index"])
        if len(data) != len(items):
            raise ServerError(f"asked for {len(items)} embeddings, got {len(data)}")
        return l2_normalize(np.array([d["embedding"] for d in data], dtype=np.float32))

    def _image_item(self, path: Path) -> dict:
        uri = image_data_uri(path)
        if self.image_style == "jina":
            return {"image": uri}
        return {"type": "image_url", "image_url": {"url": uri}}

    def default_length(self) -> int | None:
        """From the server's /v1/models card of this model: its NaFlex default, or None (a fixed resolution)."""
        import httpx

        try:
            resp = self.client.get("/v1/models")
        except httpx.HTTPError as exc:
            raise ServerError(f"cannot reach the server at {self.url}: {type(exc).__name__}: {exc}") from None
        try:
            cards = {c["id"]: c for c in resp.json()["data"]} if resp.status_code == 200 else {}
        except (ValueError, KeyError, TypeError) as exc:
            raise ServerError(f"cannot read the models of the server at {self.url}: {exc}") from None
        if self.model_name not in cards:
            raise ServerError(f"the server at {self.url} does not serve {self.model_name!r} (it serves "
                              f"{', '.join(cards) or 'nothing it lists'})")
        return (cards[self.model_name].get("max_num_patches") or {}).get("default")

    def embed_images(self, paths: list[Path], max_num_patches: int | None) -> np.ndarray:
        extra = {} if max_num_patches is None else {"max_num_patches": max_num_patches}
        return self._embed([self._image_item(p) for p in paths], extra, paths)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        return self._embed(list(texts), {})

    def fingerprint(self) -> str:
        return _fingerprint({"model": self.model_name, "backend": "server"}, self.embed_texts(PROBE_TEXTS))


def _bad_item(resp) -> tuple[int, str] | None:
    """(i, message) when an error envelope names `input[i]`."""
    try:
        error = resp.json()["error"]
        index = int(error["param"].removeprefix("input[").removesuffix("]"))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return index, error.get("message", "")
