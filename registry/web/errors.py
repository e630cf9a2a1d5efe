"""Every error the API returns is JSON ``{"error": "…"}`` (one line naming the problem and the fix) with the
status that fits: 400 bad input, 401/403 auth, 404 unknown, 413 too large, 422 malformed request, 429 busy with
expensive requests (with ``Retry-After``), 500 a bug or
a database failure (whose details — the database's host, user, name — go to the server log, never to a client)."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from p2pz.registry.library.records import NotFound, RegistryError

from .jobs import UploadError

log = logging.getLogger("p2pz.web")


DATABASE_ERROR = "the registry's database failed on this request; the server log has the details"


def from_database(exc: BaseException) -> bool:
    """Whether ``exc`` comes from the database driver (directly, or translated into a store or registry error
    along the way): its message is the server's business, not the client's."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, SQLAlchemyError):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


class HTTPError(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers


def _json(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(HTTPError)
    async def _http_error(request: Request, exc: HTTPError):
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else exc.headers
        return _json(exc.status, str(exc), headers)

    @app.exception_handler(NotFound)
    async def _not_found(request: Request, exc: NotFound):
        return _json(404, str(exc))

    @app.exception_handler(UploadError)
    async def _upload(request: Request, exc: UploadError):
        return _json(exc.status, str(exc), getattr(exc, "headers", None))

    @app.exception_handler(RegistryError)
    async def _registry(request: Request, exc: RegistryError):
        if from_database(exc):  # its text names the database's host, port, user and name: for the log only
            log.error("database error on %s %s: %s", request.method, request.url.path, exc)
            return _json(500, DATABASE_ERROR)
        return _json(400, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        parts = []
        for e in exc.errors()[:3]:
            where = ".".join(str(p) for p in e.get("loc", ()) if p not in ("body", "query", "path", "form"))
            parts.append(f"{where}: {e.get('msg', 'invalid')}" if where else e.get("msg", "invalid"))
        return _json(422, "invalid request: " + "; ".join(parts))

    @app.exception_handler(StarletteHTTPException)
    async def _starlette(request: Request, exc: StarletteHTTPException):
        message = {404: "not found; the API lives under /api (see /docs)",
                   405: "method not allowed here (see /docs)"}.get(exc.status_code, str(exc.detail))
        return _json(exc.status_code, message)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception):
        if from_database(exc):
            log.error("database error on %s %s: %s", request.method, request.url.path, exc)
            return _json(500, DATABASE_ERROR)
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _json(500, f"internal error ({type(exc).__name__}); the server log has the details")
