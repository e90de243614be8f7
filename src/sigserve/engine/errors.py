"""Errors the engine raises about itself (not about an input item: those are sigserve.errors)."""

from __future__ import annotations

from sigserve.errors import SigserveError


class EngineError(SigserveError):
    """Base class for engine-side failures."""


class QueueFullError(EngineError):
    """Admitting the request would exceed the bounded backlog. Callers should retry later."""

    def __init__(self, pending: int, capacity: int, retry_after_s: float):
        self.pending = pending
        self.capacity = capacity
        self.retry_after_s = retry_after_s
        super().__init__(f"server busy: {pending} items pending, capacity {capacity}")


class EngineUnavailableError(EngineError):
    """The inference worker is not running (not started, stopped, or died), or timed out."""
