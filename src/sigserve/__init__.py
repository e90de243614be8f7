"""sigserve: SigLIP 2 NaFlex inference, faithful to the reference, as a library, a CLI and a server.

    import sigserve
    model = sigserve.load("google/siglip2-base-patch16-naflex")   # or a local folder
    model.embed_images(["cat.jpg"]), model.embed_texts(["a cat"]), model.classify(["cat.jpg"], ["cat", "dog"])
"""

from sigserve.errors import (ImageDecodeError, ImageTooLargeError, InputError, InvalidArgumentError, ModelLoadError,
                             SigserveError, TextInputError)
from sigserve.pipeline import Pipeline, load
from sigserve.prompts import DEFAULT_TEMPLATE

__version__ = "0.1.0"

__all__ = ["load", "Pipeline", "DEFAULT_TEMPLATE", "SigserveError", "ModelLoadError", "InvalidArgumentError",
           "InputError", "ImageDecodeError", "ImageTooLargeError", "TextInputError", "__version__"]
