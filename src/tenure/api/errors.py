"""SPEC's one error shape on the HTTP transport, whatever raised the error.

A `TenureError` keeps its code and status; FastAPI's validation errors become
422 `invalid_input` with each problem listed; Starlette's HTTP errors (an
unknown route, a wrong method) keep their status with a code; anything else
is a 500 `internal` (logged, never leaked). `BodyLimit` refuses bodies over
1 MiB with 413 `payload_too_large`, whether they declare their length or
stream in chunks.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tenure.api.schemas import MAX_BODY_BYTES
from tenure.core.errors import TenureError

log = logging.getLogger("tenure.http")

Json = dict[str, Any]


def error_response(
    status: int, code: str, message: str, details: Json | None = None
) -> JSONResponse:
    """A JSON answer in SPEC's error shape."""
    body = {"error": {"code": code, "message": message, "details": details or {}}}
    return JSONResponse(body, status_code=status)


_HTTP_CODES = {
    400: "invalid_input",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    422: "invalid_input",
    503: "store_unavailable",
}


async def _tenure_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, TenureError)
    response = JSONResponse(exc.to_dict(), status_code=exc.http_status)
    if exc.http_status == 401:
        response.headers["WWW-Authenticate"] = "Bearer"
    return response


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problems = [
        {
            "loc": [str(part) for part in error.get("loc", ())],
            "message": str(error.get("msg", "")),
            "type": str(error.get("type", "")),
        }
        for error in exc.errors()
    ]
    first = problems[0] if problems else {"loc": [], "message": "invalid request"}
    where = ".".join(first["loc"][1:] if len(first["loc"]) > 1 else first["loc"])
    message = f"{where}: {first['message']}" if where else str(first["message"])
    return error_response(422, "invalid_input", message, {"errors": problems})


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = str(exc.detail) if exc.detail else code
    if exc.status_code == 404 and message == "Not Found":
        message = f"no route {request.method} {request.url.path}"
    response = error_response(exc.status_code, code, message)
    for name, value in (exc.headers or {}).items():
        response.headers[name] = value
    return response


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal", "the server failed to answer; see its log")


class BodyTooLarge(StarletteHTTPException):
    """Raised while reading a body that grew past the limit.

    An HTTPException, so FastAPI's body parsing passes it on unchanged and the
    error handler renders it in SPEC's shape.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes")


class BodyLimit:
    """ASGI middleware: 413 for a declared Content-Length over the limit, and for
    a body that turns out larger while it streams in (chunked uploads)."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await self._refuse(scope, receive, send)
                return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if started:
                raise
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(
            413,
            "payload_too_large",
            f"the request body is larger than {self.limit} bytes",
            {"limit": self.limit},
        )
        response.headers["connection"] = "close"
        await response(scope, receive, send)


def install_error_handlers(app: FastAPI) -> None:
    """Make every error leave in SPEC's shape."""
    app.add_exception_handler(TenureError, _tenure_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)


__all__ = ["BodyLimit", "BodyTooLarge", "error_response", "install_error_handlers"]
