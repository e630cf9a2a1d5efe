"""The FastAPI application (architecture §10): :func:`create_app` wires settings, routers, errors and the job
worker over one :class:`registry.Registry`. Importing it does not import torch; the first edit, build or
word-pair search does."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import re
import threading
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles

from p2pz.store.version import package_version

from . import errors
from .deps import State, require_write
from .guard import Gate
from .jobs import JobRunner
from .routers import banks, directions, files, jobs, library, pages, search, students
from .settings import Settings

log = logging.getLogger("p2pz.web")
DESCRIPTION = """Browse, search, share and apply a team's pix2pix-zero edit directions.

Reads are open; writes (build, tag, deprecate, import, edits, previews) need `Authorization: Bearer TOKEN`
when the server was started with a token, and are refused on a `--read-only` server. Every error is
`{"error": "…"}` with a fitting status."""


def create_app(settings: Settings | None = None, *, clock=None) -> FastAPI:
    """The app over ``settings``; ``clock`` (a callable → naive-UTC now; default the real clock) is what the job
    runner's leases read — tests pass a fake one and advance it instead of sleeping."""
    settings = settings or Settings()
    st = State(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        stop = threading.Event()
        worker = None
        if settings.worker and not settings.read_only:
            runner = JobRunner(st.jobs, model=settings.model, device=settings.device, dtype=settings.dtype,
                               captioner=settings.captioner, lease_s=settings.job_lease_s, clock=clock)
            failed = runner.recover()
            if failed:
                log.warning("%d job(s) were running on a server that stopped; marked failed", failed)
            st.jobs.clean()
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
            if st.pair_encoder is not None:
                st.pair_encoder.close()
            st.registry.close()

    app = FastAPI(title="p2pz", version=package_version(), description=DESCRIPTION, lifespan=lifespan,
                  docs_url=None, redoc_url=None)
    app.state.p2pz = st
    errors.install(app)
    routers = (directions.router, search.router, banks.router, library.router, jobs.router, files.router,
               students.router, pages.router)
    for router in routers:
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=str(Path(__file__).resolve().parent / "static")), name="static")
    docs_hash = _offline_docs(app)

    # the routes that declare require_write: the gate checks their authorization before the body is read
    write_routes = [r for router in routers for r in router.routes
                    if isinstance(r, APIRoute) and any(d.call is require_write for d in r.dependant.dependencies)]
    app.add_middleware(Gate, settings=settings, write_routes=write_routes, docs_hash=docs_hash)
    return app


def _offline_docs(app: FastAPI) -> str:
    """The OpenAPI page at ``/docs`` from the Swagger UI 5 files shipped in the ``swagger-ui-py`` wheel (OpenAPI
    3.1, which FastAPI writes, needs Swagger UI 5), so it works without reaching a CDN — FastAPI's default page
    loads Swagger UI from jsDelivr. → the CSP hash of the page's one inline script (the gate allows only it)."""
    import swagger_ui  # lazy: swagger_ui

    assets = Path(swagger_ui.__file__).resolve().parent / "static"
    app.mount("/docs-assets", StaticFiles(directory=str(assets)), name="swagger-ui")
    page = get_swagger_ui_html(openapi_url=app.openapi_url, title="p2pz API",
                               swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                               swagger_css_url="/docs-assets/swagger-ui.css", swagger_favicon_url="data:,").body
    inline = re.findall(rb"<script>(.*?)</script>", page, re.S)
    if len(inline) != 1:
        raise RuntimeError("Swagger UI's page changed: review the /docs Content-Security-Policy in guard.py")

    @app.get("/docs", include_in_schema=False)
    def docs():
        return HTMLResponse(page)

    return "sha256-" + base64.b64encode(hashlib.sha256(inline[0]).digest()).decode()
