"""The FastAPI application (architecture §10): :func:`create_app` wires settings, routers, errors and the job
worker over one :class:`registry.Registry`. Importing it does not import torch; the first edit, build or
word-pair search does."""

from __future__ import annotations

import contextlib
import logging
import threading
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles

from ..jobs import JobRunner
from . import errors
from .deps import State
from .routers import banks, directions, files, jobs, library, pages, search, students
from .settings import Settings

log = logging.getLogger("p2pz.web")
DESCRIPTION = """Browse, search, share and apply a team's pix2pix-zero edit directions.

Reads are open; writes (build, tag, deprecate, import, edits, previews) need `Authorization: Bearer TOKEN`
when the server was started with a token, and are refused on a `--read-only` server. Every error is
`{"error": "…"}` with a fitting status."""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    st = State(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        stop = threading.Event()
        worker = None
        if settings.worker and not settings.read_only:
            runner = JobRunner(st.jobs, model=settings.model, device=settings.device, dtype=settings.dtype,
                               captioner=settings.captioner)
            failed = runner.recover()
            if failed:
                log.warning("%d job(s) were running when the server last stopped; marked failed", failed)
            worker = threading.Thread(target=runner.loop, args=(stop,), name="p2pz-jobs", daemon=True)
            worker.start()
        app.state.worker = worker
        try:
            yield
        finally:
            stop.set()
            st.jobs.wakeup.set()
            if worker is not None:
                worker.join(timeout=2)  # a running edit finishes in the background or is failed at next start
            st.registry.close()

    from importlib.metadata import PackageNotFoundError, version

    try:
        v = version("p2pz")
    except PackageNotFoundError:
        v = "unknown"
    app = FastAPI(title="p2pz", version=v, description=DESCRIPTION, lifespan=lifespan, docs_url=None,
                  redoc_url=None)
    app.state.p2pz = st
    errors.install(app)
    limit = max(settings.max_upload_bytes, settings.max_library_bytes) + 2**20

    @app.middleware("http")
    async def guard(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            return errors._json(413, f"the request body is over this server's limit of {limit} bytes")
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        return response

    for router in (directions.router, search.router, banks.router, library.router, jobs.router, files.router,
                   students.router, pages.router):
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=str(Path(__file__).resolve().parent / "static")), name="static")
    _offline_docs(app)
    return app


def _offline_docs(app: FastAPI) -> None:
    """The OpenAPI page at ``/docs`` from the Swagger UI 5 files shipped in the ``swagger-ui-py`` wheel (OpenAPI
    3.1, which FastAPI writes, needs Swagger UI 5), so it works without reaching a CDN — FastAPI's default page
    loads Swagger UI from jsDelivr."""
    import swagger_ui
    from fastapi.openapi.docs import get_swagger_ui_html

    assets = Path(swagger_ui.__file__).resolve().parent / "static"
    app.mount("/docs-assets", StaticFiles(directory=str(assets)), name="swagger-ui")

    @app.get("/docs", include_in_schema=False)
    def docs():
        return get_swagger_ui_html(openapi_url=app.openapi_url, title="p2pz API",
                                   swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs-assets/swagger-ui.css", swagger_favicon_url="data:,")
