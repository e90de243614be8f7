"""One settings object for the server. The CLI builds it from its flags (anything not given comes
from SIGSERVE_* environment variables, then the defaults below) and hands it to create_app."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sigserve.engine import EngineConfig
from sigserve.server.keys import default_data_dir


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SIGSERVE_", extra="ignore")

    # -- model --------------------------------------------------------------------------------
    model: str = Field("google/siglip2-base-patch16-naflex", description="hub id, HF cache name or local folder")
    served_model_name: str | None = Field(None, description="the id clients send as `model` (default: --model)")
    load_format: Literal["auto", "dummy"] = Field("auto", description="dummy: real architecture, random weights")
    backend: str | None = Field(None, description="None or auto: the library picks the fastest exact backend")
    precision: str = "fp32"
    device: str = Field("auto", description="cpu, cuda, cuda:N, or auto (cuda when torch sees a GPU)")

    # -- network ------------------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    log_level: str = "info"

    # -- access, metering (keys.py / usage.py / ratelimit.py when configured) -------------------
    api_key: SecretStr | None = Field(None, description="one static bearer key; none and no database: open access")
    data_dir: Path = Field(default_factory=default_data_dir, description="where the default SQLite database lives")
    database_url: str | None = Field(None, description="SQLAlchemy URL for keys and usage (default: SQLite in data_dir)")
    collections_uri: str | None = Field(None, description="LanceDB URI of the collections (default: data_dir/collections)")
    collections_index_threshold: int | None = Field(None, ge=0, description="rows from which a collection gets an ANN index")
    price_per_1k_images: float = Field(0.0, ge=0, description="advertised in /v1/models and used for usage cost")
    price_per_1m_tokens: float = Field(0.0, ge=0)
    default_rpm: int | None = Field(None, ge=0, description="requests per minute for keys without their own limit")
    default_images_per_min: int | None = Field(None, ge=0, description="images per minute for keys without their own")

    # -- image fetching (fetch.py) ----------------------------------------------------------------
    max_image_bytes: int = Field(20 * 1024 * 1024, ge=1, description="per image, fetched or inline")
    fetch_timeout_s: float = Field(10.0, gt=0)
    allow_private_urls: bool = Field(False, description="let image URLs reach private networks (SSRF risk)")

    # -- engine -------------------------------------------------------------------------------
    max_batch_images: int | None = Field(None, ge=1, description="default: 8 on CPU, 64 on a GPU (measured best)")
    max_batch_texts: int = Field(32, ge=1)
    max_wait_ms: float = Field(5.0, ge=0)
    max_pending_items: int = Field(256, ge=1, description="backlog bound; beyond it requests get 429")
    preprocess_threads: int = Field(2, ge=1)
    request_timeout_s: float = Field(120.0, gt=0)
    retry_after_s: float = Field(1.0, gt=0)

    # -- limits -------------------------------------------------------------------------------
    max_body_bytes: int = Field(32 * 1024 * 1024, ge=1024, description="larger request bodies get 413")
    max_items: int = Field(256, ge=1, description="input items per request")
    max_labels: int = Field(256, ge=1, description="labels per classify request")
    max_image_pixels: int | None = Field(None, ge=1, description="decompression-bomb guard (default: the model's)")
    jpeg_draft: bool = Field(False, description="decode large JPEGs at reduced DCT scale: faster, not bit-exact (docs/benchmarks.md)")
    default_max_num_patches: int = Field(256, ge=16, le=4096)
    label_cache_size: int = Field(4096, ge=0, description="text embeddings kept for classify labels (LRU)")

    @model_validator(mode="after")
    def _resolve(self) -> "Settings":
        self.data_dir = self.data_dir.expanduser()
        return self

    @property
    def model_name(self) -> str:
        return self.served_model_name or self.model

    @property
    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    @property
    def dummy(self) -> bool:
        return self.load_format == "dummy"

    def engine_config(self) -> EngineConfig:
        return EngineConfig(
            max_batch_images=self.max_batch_images or (8 if self.resolved_device == "cpu" else 64),
            max_batch_texts=self.max_batch_texts,
            max_wait_ms=self.max_wait_ms,
            max_pending_items=self.max_pending_items,
            preprocess_threads=self.preprocess_threads,
            max_image_pixels=self.max_image_pixels,
            timeout_s=self.request_timeout_s,
            retry_after_s=self.retry_after_s,
        )
