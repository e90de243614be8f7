"""sigserve: SigLIP 2 NaFlex inference, faithful to the reference, as a library, a CLI and a server.

    import sigserve
    model = sigserve.load("google/siglip2-base-patch16-naflex")   # or a local folder
    model.embed_images(["cat.jpg"]), model.embed_texts(["a cat"]), model.classify(["cat.jpg"], ["cat", "dog"])
"""

from importlib.metadata import PackageNotFoundError, version

from sigserve.errors import (
    ImageDecodeError,
    ImageTooLargeError,
    InputError,
    InvalidArgumentError,
    ModelLoadError,
    SigserveError,
    TextInputError,
)
from sigserve.pipeline import Pipeline, load
from sigserve.prompts import DEFAULT_TEMPLATE

try:
    __version__ = version("sigserve")  # one place: pyproject.toml
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "DEFAULT_TEMPLATE",
    "ImageDecodeError",
    "ImageTooLargeError",
    "InputError",
    "InvalidArgumentError",
    "ModelLoadError",
    "Pipeline",
    "SigserveError",
    "TextInputError",
    "__version__",
    "load",
]
