"""uvicorn's access log without secrets: a key sent in the query string (`?api_key=`, `?key=`,
`?token=`, ...) is refused, but uvicorn would still write the URL, key and all, to the log.
The filter rewrites those values to `[redacted]` before the line is formatted."""

from __future__ import annotations

import logging
import re

ACCESS_LOGGER = "uvicorn.access"
SECRET_PARAMS = ("api_key", "apikey", "api-key", "key", "token", "access_token", "auth", "password", "secret")
_NAMES = "|".join(re.escape(p) for p in SECRET_PARAMS)
_SECRET = re.compile(rf"(?i)([?&;](?:{_NAMES})=)[^&;#\s]*")


def redact(path: str) -> str:
    """`/v1/models?api_key=sk-...&x=1` -> `/v1/models?api_key=[redacted]&x=1`."""
    return _SECRET.sub(r"\1[redacted]", path) if "=" in path else path


class RedactSecrets(logging.Filter):
    """For uvicorn's access records: args = (client, method, path with query, http version, status)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], redact(args[2]), *args[3:])
        elif isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


def install() -> None:
    """Attach the filter to uvicorn's access logger (once, however many apps a process starts)."""
    logger = logging.getLogger(ACCESS_LOGGER)
    if not any(isinstance(f, RedactSecrets) for f in logger.filters):
        logger.addFilter(RedactSecrets())
