"""Every error leaves the server as OpenAI's envelope `{"error": {"message", "type", "param",
"code"}}`, whatever raised it: our own APIError, the library's typed errors, FastAPI's request
validation (422), Starlette's 404/405/413, or an unexpected exception (500, no traceback)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from sigserve.accounts.db import DatabaseUnavailableError
from sigserve.accounts.shared import RateLimiterUnavailableError
from sigserve.engine import EngineUnavailableError, QueueFullError
from sigserve.errors import InputError, InvalidArgumentError, SigserveError

log = logging.getLogger(__name__)

# OpenAI's error types by status code, for errors that do not carry their own.
TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "server_error",
}


class APIError(Exception):
    """An error meant for the client, raised anywhere in the server layer."""

    def __init__(self, status: int, message: str, *, type: str | None = None, param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type or TYPE_BY_STATUS.get(status, "server_error")
        self.param = param
        self.code = code
        self.headers = headers or {}


def input_error(exc: InputError, param: str) -> APIError:
    """A bad item of the request, named by its place in the request (e.g. `input[3]`)."""
    return APIError(400, f"{param}: {exc.reason}", param=param, code=getattr(exc, "code", "invalid_input"))


def envelope(status: int, message: str, type: str, param: str | None = None, code: str | None = None,
             headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": type, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def from_exception(exc: BaseException) -> APIError:
    """Map the library's and the engine's typed errors onto HTTP."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, QueueFullError):
        retry = max(1, round(exc.retry_after_s))
        return APIError(429, f"{exc} - retry after {retry} s", code="queue_full", headers={"retry-after": str(retry)})
    if isinstance(exc, DatabaseUnavailableError):
        return APIError(503, str(exc), code="database_unavailable", headers={"retry-after": "1"})
    if isinstance(exc, RateLimiterUnavailableError):
        return APIError(503, str(exc), code="rate_limiter_unavailable", headers={"retry-after": "1"})
    if isinstance(exc, EngineUnavailableError):
        return APIError(503, str(exc), code="engine_unavailable")
    if isinstance(exc, InputError):
        return input_error(exc, f"input[{exc.index}]" if exc.index is not None else "input")
    if isinstance(exc, InvalidArgumentError):
        return APIError(400, str(exc), param=exc.param, code="invalid_argument")
    if isinstance(exc, SigserveError):
        return APIError(500, "internal error", code="internal_error")
    return APIError(500, "internal error", code="internal_error")


def install(app: FastAPI, on_error: Callable[[str], Any] | None = None) -> None:
    """Register the handlers. `on_error(type)` is told of each error (for the metrics)."""

    def respond(err: APIError, request: Request) -> JSONResponse:
        if on_error is not None:
            on_error(err.type)
        # Headers earned before the failure (the rate-limit state after admission) go out with it.
        headers = {**getattr(request.state, "response_headers", {}), **err.headers}
        return envelope(err.status, err.message, err.type, err.param, err.code, headers)

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return respond(exc, request)

    @app.exception_handler(SigserveError)
    async def _library_error(request: Request, exc: SigserveError) -> JSONResponse:
        err = from_exception(exc)
        if err.status >= 500 and err.code not in ("database_unavailable", "rate_limiter_unavailable"):  # logged once
            log.error("unhandled library error on %s", request.url.path, exc_info=exc)
        return respond(err, request)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return respond(validation_error(exc), request)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        code = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}.get(exc.status_code)
        err = APIError(exc.status_code, message, code=code, headers=dict(exc.headers or {}))
        return respond(err, request)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error on %s", request.url.path, exc_info=exc)
        return respond(APIError(500, "internal error", code="internal_error"), request)


def validation_error(exc: RequestValidationError) -> APIError:
    """422 naming the most specific problem, its location written the way OpenAI names params
    (`input[3].image`). With unions pydantic reports one error per member; the deepest location
    is the one that tells the client what to fix."""
    errors = exc.errors()
    if not errors:
        return APIError(422, "invalid request", code="invalid_request")
    located = [(_dotted([p for p in e.get("loc", ()) if p not in ("body", "query", "path")]), e) for e in errors]
    param, first = max(located, key=lambda pe: len(pe[0]))
    message = f"{param}: {first.get('msg', 'invalid')}" if param else first.get("msg", "invalid request")
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problem(s))"
    return APIError(422, message, param=param or None, code="invalid_request")


_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none", "null"}


def _is_union_tag(part: str) -> bool:
    # Pydantic puts the union member it tried into `loc` ("list[...]", "TextPart", "str"):
    # noise for a client, which only wants the path through its own JSON.
    return part in _TYPE_TAGS or part[:1].isupper() or any(c in part for c in "[(-'")


def _dotted(loc: list) -> str:
    out = ""
    for part in loc:
        if isinstance(part, str) and _is_union_tag(part):
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out
