"""Several models in one server. Each served name has its own pipeline, engine (queue, worker thread,
backend) and Serving; a request picks one by its `model` field (Models.resolve: 404 naming the served
ones otherwise). The registry hangs off app.state.models; nothing here is global.

Loading measures memory: before each model, the process's resident set plus an estimate of what the
model will hold (its weights at the served precision, less a token table that stays memory-mapped)
must fit --memory-budget-mb; after it, one text and one small image run through both towers (so the
weights a request reads are resident) and the resident set is measured again. The growth is the
model's figure, logged and shown in /v1/models; past the budget the server refuses to start rather
than swap."""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from sigserve.backends import weight_copies
from sigserve.engine import Engine, ServedModel
from sigserve.errors import ModelLoadError
from sigserve.memory import release_freed_heap, resident_bytes
from sigserve.pipeline import Pipeline, load, resolve_checkpoint
from sigserve.server.errors import APIError
from sigserve.server.limits import shown
from sigserve.server.serving import Serving
from sigserve.server.settings import ModelSpec, Settings, resolve_device
from sigserve.weights import Checkpoint, resident_estimate

log = logging.getLogger(__name__)
MB = 1024 * 1024
TOUCH_IMAGE = np.zeros((64, 64, 3), np.uint8)  # small: the weights are read whatever the image size


class MemoryBudgetError(ModelLoadError):
    """Serving the configured models would take more resident memory than --memory-budget-mb."""


@dataclass
class LoadedModel:
    spec: ModelSpec
    pipeline: ServedModel
    rss_mb: float | None = None  # resident memory its load added (measured), None when not measured


def load_models(settings: Settings, say: Callable[[str], None] = log.info) -> list[LoadedModel]:
    """Every model of the settings, in order, each measured; MemoryBudgetError before a model that would
    not fit (estimated) or after one that did not (measured). Blocking: seconds to minutes."""
    budget = settings.memory_budget_mb
    loaded: list[LoadedModel] = []
    for spec in settings.model_specs():
        checkpoint = resolve_checkpoint(spec.model, spec.dummy)  # a download, if any, happens here
        before = _resident_mb()
        estimate = resident_estimate(checkpoint, spec.precision) / MB
        estimate *= weight_copies(spec.backend, spec.precision, resolve_device(spec.device))
        if budget is not None and before is not None and before + estimate > budget:
            raise MemoryBudgetError(_over_budget(budget, loaded, f"{spec.served_name} would add about {estimate:.0f} MB "
                                                                  f"to the {before:.0f} MB resident now"))
        pipeline = load_pipeline(settings, spec, checkpoint)
        pipeline.embed_texts(["warm-up"])
        pipeline.embed_images([TOUCH_IMAGE])
        after = _resident_mb()
        entry = LoadedModel(spec, pipeline, None if after is None or before is None else after - before)
        loaded.append(entry)
        say(f"loaded {spec.served_name}: {describe_memory(entry)}" + (f", {after:.0f} MB resident in all" if after else ""))
        if budget is not None and after is not None and after > budget:
            raise MemoryBudgetError(_over_budget(budget, loaded, f"{after:.0f} MB resident with {spec.served_name} loaded"))
    return loaded


def load_pipeline(settings: Settings, spec: ModelSpec, checkpoint: Checkpoint | None = None) -> Pipeline:
    """The library model of one spec, with the server's image options (blocking)."""
    return load(checkpoint or spec.model, dummy=spec.dummy, backend=spec.backend, precision=spec.precision,
                device=resolve_device(spec.device), max_image_pixels=settings.max_image_pixels,
                jpeg_draft=settings.jpeg_draft, text_cache_size=settings.label_cache_size,
                image_formats=settings.image_formats)


def describe_memory(entry: LoadedModel) -> str:
    return "memory not measured" if entry.rss_mb is None else f"+{entry.rss_mb:.0f} MB resident"


def _resident_mb() -> float | None:
    """Resident memory now, after freeing what is garbage (so that memory freed during a load, such as the
    heap an ONNX session build gives back, does not count against the model)."""
    gc.collect()
    release_freed_heap()
    rss = resident_bytes()
    return None if rss is None else rss / MB


def _over_budget(budget: int, loaded: list[LoadedModel], what: str) -> str:
    each = ", ".join(f"{m.spec.served_name} {describe_memory(m)}" for m in loaded) or "no model loaded yet"
    return (f"memory budget of {budget} MB exceeded: {what} ({each}). Serve fewer or smaller models, a lower "
            "precision, or raise --memory-budget-mb")


# ---------------------------------------------------------------------------------------------
# The registry


@dataclass
class Served:
    spec: ModelSpec
    engine: Engine
    serving: Serving
    rss_mb: float | None = None

    @property
    def name(self) -> str:
        return self.spec.served_name


class Models:
    """Served name -> (pipeline, engine, serving), in the order given; the first is the default."""

    def __init__(self, served: Sequence[Served]):
        self._served = list(served)
        self._by_name = {s.name: s for s in self._served}

    def __iter__(self) -> Iterator[Served]:
        return iter(self._served)

    def __len__(self) -> int:
        return len(self._served)

    @property
    def default(self) -> Served:
        return self._served[0]

    @property
    def names(self) -> list[str]:
        return [s.name for s in self._served]

    def resolve(self, name: str) -> Served:
        """The model a request names: its served name, or its source (hub id or folder) when that names
        one model only; else 404 listing what is served."""
        if name in self._by_name:
            return self._by_name[name]
        matches = [s for s in self._served if s.spec.model == name]
        if len(matches) == 1:
            return matches[0]
        listing = ", ".join(f"`{n}`" for n in self.names)
        raise APIError(404, f"The model {shown(name)} does not exist; this server serves {listing}",
                       type="invalid_request_error", param="model", code="model_not_found")

    def by_fingerprint(self, fingerprint: str) -> Served | None:
        """The served model whose weights have this content fingerprint (a collection's)."""
        for s in self._served:
            checkpoint = getattr(s.engine.model, "checkpoint", None)
            if checkpoint is not None and checkpoint.fingerprint() == fingerprint:
                return s
        return None
