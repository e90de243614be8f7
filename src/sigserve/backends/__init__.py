"""Inference backends: the numeric work behind one small interface (see base.py)."""

from __future__ import annotations

from sigserve.backends.base import Backend
from sigserve.errors import InvalidArgumentError

BACKENDS = ("torch",)
PRECISIONS = ("fp32",)


def create_backend(name: str, checkpoint, precision: str = "fp32", device: str = "cpu") -> Backend:
    """Instantiate the backend `name` for a resolved checkpoint."""
    if name not in BACKENDS:
        raise InvalidArgumentError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}", "backend")
    if precision not in PRECISIONS:
        raise InvalidArgumentError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}", "precision")
    from sigserve.backends.torch import TorchBackend

    return TorchBackend(checkpoint, precision=precision, device=device)
