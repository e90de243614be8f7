"""The serving engine: admission control, image preprocessing off the event loop, and one
inference worker thread that owns the model and micro-batches each tower.

Layering: engine uses the model and sigserve.images; it knows nothing about HTTP."""

from sigserve.engine.core import Engine, EngineConfig, ImageResult, TextResult
from sigserve.engine.errors import EngineError, EngineUnavailableError, QueueFullError
from sigserve.engine.worker import BatchObserver

__all__ = [
    "BatchObserver",
    "Engine",
    "EngineConfig",
    "EngineError",
    "EngineUnavailableError",
    "ImageResult",
    "QueueFullError",
    "TextResult",
]
