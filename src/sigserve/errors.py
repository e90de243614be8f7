"""Typed errors. Each one says which input item failed and why, so that the CLI can skip it
and the server can answer a 400 naming it (`param: "input[3]"`)."""

from __future__ import annotations


class SigserveError(Exception):
    """Base class for every error sigserve raises on purpose."""


class ModelLoadError(SigserveError):
    """The checkpoint could not be found, fetched or read (missing files, bad tensors)."""


class InvalidArgumentError(SigserveError, ValueError):
    """A call argument is out of range (for example max_num_patches)."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


class BatchError(SigserveError):
    """A `sigserve batch` job cannot start or continue: bad SRC or DEST, a resume that does not match,
    Ray missing. (One bad image is never this: it becomes an output row with its error.)"""


class InputError(SigserveError, ValueError):
    """One input item is unusable. `index` is its position in the caller's list."""

    code = "invalid_input"

    def __init__(self, index: int | None, reason: str):
        self.index = index
        self.reason = reason
        where = f"input[{index}]" if index is not None else "input"
        super().__init__(f"{where}: {reason}")


class ImageDecodeError(InputError):
    """Bytes that are empty, corrupt, truncated or not an image."""

    code = "invalid_image"


class ImageTooLargeError(InputError):
    """More pixels than the configured cap (decompression-bomb guard)."""

    code = "image_too_large"


class RequestTooLargeError(InputError):
    """The request as a whole asks for more than a per-request budget allows (named at the item
    where it crossed the budget)."""

    code = "request_too_large"


class TextInputError(InputError):
    """A text item that is not a string."""

    code = "invalid_text"


class ImageFetchError(InputError):
    """An image reference (URL, data URI, base64) that could not be turned into bytes."""

    code = "image_fetch_failed"


class ImageReferenceError(ImageFetchError):
    """A malformed data URI or base64 string, or a reference of an unsupported kind."""

    code = "invalid_image_reference"


class ImageURLRefusedError(ImageFetchError):
    """A URL refused by policy: scheme, or an address that is private, loopback, metadata..."""

    code = "image_url_refused"


class ImageFetchTooLargeError(ImageFetchError):
    """The download (or decoded base64) is larger than the configured byte limit."""

    code = "image_fetch_too_large"


class ImageFetchTimeoutError(ImageFetchError):
    """The download took longer than the configured total time."""

    code = "image_fetch_timeout"
