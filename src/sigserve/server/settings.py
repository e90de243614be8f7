"""One settings object for the server: every field is a `sigserve serve` flag (generated from this
class, sigserve.cli.serve) and a SIGSERVE_* environment variable; flags win, then the environment,
then the defaults, which come from the module that owns each fact. docs/server.md's table is
generated from here too (`python -m sigserve.server.settings`), and a test keeps it in step."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from sigserve import defaults, paths
from sigserve.accounts import db
from sigserve.accounts.keys import database_url_for
from sigserve.accounts.shared import FailureMode
from sigserve.backends import BackendChoice, Precision
from sigserve.defaults import LoadFormat
from sigserve.engine import EngineConfig
from sigserve.server import fetch

ENV_PREFIX = "SIGSERVE_"
_ENGINE = EngineConfig()  # the engine owns its defaults; the settings only expose them


class ModelSpec(BaseModel):
    """One model to serve: from `--model SOURCE[=NAME]` (the model options and prices of the command line),
    or an entry of the models file (its own options and prices; the command line's fill in the rest)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str = Field(..., min_length=1, description="Hub id or local folder.")
    name: str | None = Field(None, min_length=1, description="The id clients send as `model` (default: `model`).")
    load_format: LoadFormat = "auto"
    backend: BackendChoice = "auto"
    precision: Precision = "fp32"
    device: str = "auto"
    price_per_1k_images: float = Field(0.0, ge=0)
    price_per_1m_tokens: float = Field(0.0, ge=0)

    @property
    def served_name(self) -> str:
        return self.name or self.model

    @property
    def dummy(self) -> bool:
        return self.load_format == "dummy"


SPEC_DEFAULTS = ("load_format", "backend", "precision", "device", "price_per_1k_images", "price_per_1m_tokens")


def split_served_name(value: str) -> tuple[str, str | None]:
    """`SOURCE=NAME` -> (SOURCE, NAME); a value without `=` (or whose tail looks like a path) has no name."""
    source, sep, name = value.rpartition("=")
    if not sep or not source or not name or "/" in name:
        return value, None
    return source, name


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    # -- model --------------------------------------------------------------------------------
    model: Annotated[list[str], NoDecode] = Field(
        default_factory=list, json_schema_extra={"shown": defaults.DEFAULT_MODEL},
        description="Hub id (fetched once, then cached) or a local folder, optionally `=served-name`. Repeat it to "
                    "serve several models, each with its own engine and queue, chosen by the request's `model`.")
    models_file: Path | None = Field(
        None, description="A TOML file of models to serve, after any --model: one table per model in the `models` "
                          "array (keys: model, name, load_format, backend, precision, device, price_per_1k_images, "
                          "price_per_1m_tokens; the command line's values fill in the rest).")
    served_model_name: str | None = Field(None, description="The id clients send as `model` (default: --model); "
                                                            "one model only (several: --model SOURCE=NAME).")
    memory_budget_mb: int | None = Field(
        None, ge=1, description="Refuse to start when the models' resident memory, measured as each loads, "
                                "would pass this (instead of swapping).")
    load_format: LoadFormat = Field(
        "auto", description="dummy: the real architecture with random weights and a stand-in tokenizer (load tests).")
    backend: BackendChoice = Field(
        "auto", description="Inference backend; auto: the measured fastest exact one for the device.")
    precision: Precision = Field(
        "fp32", description="fp32 is exact; int8 (openvino, onnx), bf16 (openvino on CPUs with bf16 instructions; "
                            "torch on CUDA) and fp16 (torch on CUDA) are opt-in approximations.")
    device: str = Field("auto", description="cpu, cuda, cuda:N, or auto (cuda when torch sees a GPU).")
    jpeg_draft: bool = Field(False, description="Decode large JPEGs at a reduced DCT scale: faster, not bit-exact.")

    # -- network ------------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Address to bind.")
    port: int = Field(8000, ge=0, le=65535, description="Port to bind.")
    header_timeout_s: float = Field(10.0, gt=0, description="A request's line and headers must arrive within this.")
    body_timeout_s: float = Field(30.0, gt=0, description="Longest wait for the next chunk of a request body (then 408).")
    keep_alive_s: float = Field(5.0, gt=0, description="Idle keep-alive connections are closed after this.")
    log_level: Literal["critical", "error", "warning", "info", "debug", "trace"] = Field(
        "info", description="uvicorn's log level.")
    playground: bool = Field(True, description="Serve the browser playground at / and /playground (its files ship "
                                               "in the package; the page loads nothing from elsewhere).")

    # -- access and metering ------------------------------------------------------------------
    api_key: SecretStr | None = Field(
        None, description="A static admin bearer key. Without it and without keys in the database: open access.")
    data_dir: Path = Field(default_factory=paths.data_dir, json_schema_extra={"shown": "~/.local/share/sigserve"},
                           description="Folder of the default SQLite database (keys, usage).")
    database_url: str | None = Field(
        None, description="Keys and usage database: sqlite:///FILE, or postgresql+psycopg://USER:PASS@HOST/DB shared "
                          "by replicas (default: SQLite in data_dir).")
    database_pool_size: int = Field(db.DEFAULT_POOL_SIZE, ge=1,
                                    description="Pooled PostgreSQL connections per replica (as many again on bursts).")
    database_timeout_s: float = Field(db.DEFAULT_TIMEOUT_S, gt=0, description="Longest wait to connect, for a pooled "
                                      "connection, or for one statement; then 503 database_unavailable.")
    database_migrate: bool = Field(True, description="Upgrade the database schema at start (else refuse an old schema: "
                                                     "run `sigserve db upgrade`).")
    redis_url: str | None = Field(None, description="redis://HOST:PORT/DB shared by replicas: rate limits and key-change "
                                                    "notices (default: limits in this process only).")
    redis_failure_mode: FailureMode = Field(
        "local", description="When Redis is unreachable: local (per-replica limits), open (no limits) or closed (503).")
    key_refresh_s: float = Field(1.0, gt=0, description="Longest a replica uses a cached key: revocations and limit "
                                                        "changes made elsewhere apply within it (with Redis: at once).")
    max_failed_auth_per_min: int = Field(10, ge=1, description="Failed key verifications allowed per minute per key id "
                                                               "and per client address; beyond, 429.")
    trusted_proxies: str = Field("127.0.0.1", description="Comma-separated addresses/networks whose X-Forwarded-For "
                                                          "names the client (your load balancer); others are ignored.")
    collections_uri: str | None = Field(None, description="LanceDB URI of the collections (default: data_dir/collections).")
    collections_index_threshold: int | None = Field(
        None, ge=0, description="Rows from which a collection gets an ANN index (default: 100000).")
    price_per_1k_images: float = Field(0.0, ge=0, description="Advertised in /v1/models; used for usage cost "
                                                              "(a models file can price each model).")
    price_per_1m_tokens: float = Field(0.0, ge=0, description="Advertised in /v1/models; used for usage cost "
                                                              "(a models file can price each model).")
    default_rpm: int | None = Field(None, ge=1, description="Requests per minute for keys without their own limit.")
    default_images_per_min: int | None = Field(None, ge=1, description="Images per minute for keys without their own limit.")

    # -- image fetching -------------------------------------------------------------------------
    max_image_bytes: int = Field(fetch.MAX_IMAGE_BYTES, ge=1, description="Bytes per image, fetched or inline.")
    fetch_timeout_s: float = Field(fetch.FETCH_TIMEOUT_S, gt=0, description="Seconds for one image URL fetch.")
    allow_private_urls: bool = Field(False, description="Let image URLs reach private networks (SSRF risk).")
    max_request_fetch_bytes: int = Field(fetch.MAX_REQUEST_BYTES, ge=1,
                                         description="Bytes that one request's image URLs may download together.")
    fetches_per_request: int = Field(fetch.FETCHES_PER_REQUEST, ge=1, description="One request's downloads at once.")
    max_fetches: int = Field(fetch.MAX_FETCHES, ge=1, description="Image downloads at once over all requests.")

    # -- engine -------------------------------------------------------------------------------
    max_batch_images: int | None = Field(None, ge=1, description="Images per inference batch "
                                         f"(default: {defaults.DEFAULT_IMAGE_BATCH} on CPU, 64 on a GPU: measured best).")
    max_batch_texts: int = Field(_ENGINE.max_batch_texts, ge=1, description="Texts per inference batch.")
    max_wait_ms: float = Field(_ENGINE.max_wait_ms, ge=0, description="How long a batch may wait to fill.")
    max_pending_items: int = Field(_ENGINE.max_pending_items, ge=1,
                                   description="Backlog bound (items admitted, unfinished); beyond it, 429.")
    max_pending_per_key: int = Field(_ENGINE.max_pending_per_owner, ge=1,
                                     description="One key's share of the backlog: the rest stays open to other keys.")
    decode_budget_pixels: int = Field(_ENGINE.decode_budget_pixels, ge=1,
                                      description="Pixels being decoded at once over all requests (beyond: decodes wait).")
    preprocess_threads: int = Field(_ENGINE.preprocess_threads, ge=1, description="Image decode and resize threads.")
    request_timeout_s: float = Field(_ENGINE.timeout_s, gt=0, description="Longest wait for inference (then 503).")
    retry_after_s: float = Field(_ENGINE.retry_after_s, gt=0, description="What a 429 for a full queue tells clients.")

    # -- request limits -------------------------------------------------------------------------
    max_body_bytes: int = Field(32 * 1024 * 1024, ge=1024, description="Larger request bodies get 413.")
    max_items: int = Field(256, ge=1, description="Input items per request.")
    max_labels: int = Field(256, ge=1, description="Labels per classify request.")
    max_templates: int = Field(81, ge=1, description="Prompt templates per classify request (CLIP's 80 + '{}' fit).")
    max_prompts: int = Field(2048, ge=1, description="Labels x templates per classify request (each is a text to embed).")
    max_text_chars: int = Field(65536, ge=64, description="Characters per text (only the first 64 tokens count anyway).")
    max_request_pixels: int = Field(4 * defaults.DEFAULT_MAX_IMAGE_PIXELS, ge=1,
                                    description="Pixels of all the images of one request together.")
    image_formats: list[str] = Field(list(defaults.IMAGE_FORMATS), min_length=1,
                                     description="Image formats decoded (Pillow's names); others are refused.")
    max_image_pixels: int = Field(defaults.DEFAULT_MAX_IMAGE_PIXELS, ge=1,
                                  description="Pixels per decoded image (decompression-bomb guard).")
    default_max_num_patches: int | None = Field(
        None, ge=defaults.MIN_PATCHES, le=defaults.MAX_PATCHES,
        description="NaFlex patches per image when a request names none (default: the model's own, "
                    f"{defaults.DEFAULT_MAX_NUM_PATCHES}); fixed-resolution models ignore it.")
    label_cache_size: int = Field(defaults.DEFAULT_TEXT_CACHE_SIZE, ge=0,
                                  description="Prompt embeddings kept for classify labels (LRU).")
    detect_image_data_uris: bool = Field(
        True, description="Embed a plain input string that is a data:image/...;base64 URI as an image (what LangChain, "
                          "LlamaIndex and LiteLLM send); off: every plain string is text.")

    @field_validator("data_dir")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @field_validator("model", mode="before")
    @classmethod
    def _models(cls, value: Any) -> Any:
        """One string (a flag, SIGSERVE_MODEL=...) or a JSON list of them (SIGSERVE_MODEL='["a", "b=x"]')."""
        if isinstance(value, str):
            return json.loads(value) if value.lstrip().startswith("[") else [value]
        return value

    def model_specs(self) -> list[ModelSpec]:
        """Every model to serve, in order: each --model, then the models file's entries; the first is the
        default in listings. Raises ValueError naming the problem (a duplicate name, a bad file)."""
        common = {k: getattr(self, k) for k in SPEC_DEFAULTS}
        given = self.model or ([] if self.models_file else [defaults.DEFAULT_MODEL])
        specs = []
        for value in given:
            source, name = split_served_name(value)
            specs.append(ModelSpec(model=source, name=name, **common))
        if self.served_model_name is not None:
            if len(specs) != 1 or specs[0].name is not None:
                raise ValueError("--served-model-name names a single --model; with several, write --model SOURCE=NAME")
            specs[0].name = self.served_model_name
        if self.models_file is not None:
            specs += read_models_file(self.models_file, common)
        names = [s.served_name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"two models are served as {sorted({n for n in names if names.count(n) > 1})}: give each "
                             "its own name (--model SOURCE=NAME, or `name` in the models file)")
        return specs

    @property
    def model_name(self) -> str:
        """The first (default) model's served name."""
        return self.model_specs()[0].served_name

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or database_url_for(self.data_dir)

    @property
    def resolved_device(self) -> str:
        return resolve_device(self.device)

    @property
    def dummy(self) -> bool:
        return self.load_format == "dummy"

    def engine_config(self, device: str | None = None) -> EngineConfig:
        cpu = resolve_device(device or self.device) == "cpu"
        return EngineConfig(
            max_batch_images=self.max_batch_images or (defaults.DEFAULT_IMAGE_BATCH if cpu else 64),
            max_batch_texts=self.max_batch_texts,
            max_wait_ms=self.max_wait_ms,
            max_pending_items=self.max_pending_items,
            max_pending_per_owner=self.max_pending_per_key,
            preprocess_threads=self.preprocess_threads,
            decode_budget_pixels=self.decode_budget_pixels,
            max_request_pixels=self.max_request_pixels,
            timeout_s=self.request_timeout_s,
            retry_after_s=self.retry_after_s,
        )


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def read_models_file(path: Path, common: dict[str, Any]) -> list[ModelSpec]:
    """The `[[models]]` tables of a TOML file, each over the command line's model options."""
    try:
        raw = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"cannot read the models file {path}: {exc}") from None
    entries = raw.get("models")
    if set(raw) != {"models"} or not isinstance(entries, list) or not entries:
        raise ValueError(f"{path}: expected one or more [[models]] tables and nothing else")
    specs = []
    for i, entry in enumerate(entries):
        try:
            specs.append(ModelSpec(**{**common, **entry}))
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'entry'}: {e['msg']}" for e in exc.errors())
            raise ValueError(f"{path}: models[{i}]: {problems}") from None
    return specs


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def env_var(name: str) -> str:
    return ENV_PREFIX + name.upper()


def markdown_table() -> str:
    """The settings table of docs/server.md: flag, environment variable, default, meaning."""
    rows = ["| flag | environment variable | default | what |", "|---|---|---|---|"]
    for name, field in Settings.model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        default = extra.get("shown", field.default)
        shown = "none" if default is None else f"`{default}`"
        rows.append(f"| `{flag(name)}` | `{env_var(name)}` | {shown} | {field.description} |")
    return "\n".join(rows)


def rewrite_table(markdown: Path) -> None:
    """Replace the settings table in a Markdown file (from its header row to the end marker)."""
    text = markdown.read_text()
    start, end = text.index("| flag | environment variable |"), text.index("<!-- end of settings table -->")
    markdown.write_text(text[:start] + markdown_table() + "\n" + text[end:])


if __name__ == "__main__":  # python -m sigserve.server.settings [docs/server.md]: print, or rewrite that file's table
    import sys

    if len(sys.argv) > 1:
        rewrite_table(Path(sys.argv[1]))
    else:
        print(markdown_table())
