"""The serving engine: admission control, image preprocessing off the event loop, and one
inference worker thread that owns the model and micro-batches each tower.

Layering: the engine drives a ServedModel (sigserve.Pipeline); it knows nothing about HTTP."""

from sigserve.engine.core import Engine, EngineConfig, ImageResult, TextResult
from sigserve.engine.errors import EngineError, EngineUnavailableError, QueueFullError
from sigserve.engine.protocol import ServedModel
from sigserve.engine.worker import BatchObserver

__all__ = [
    "BatchObserver",
    "Engine",
    "EngineConfig",
    "EngineError",
    "EngineUnavailableError",
    "ImageResult",
    "QueueFullError",
    "ServedModel",
    "TextResult",
]
